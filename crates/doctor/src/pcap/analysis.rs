//! The driver: frames in, reset reports out. Connection state lives in a table keyed by the
//! 4-tuple and is evicted when a connection has ended (a few seconds after its first reset or
//! its second FIN) or idled, so memory stays flat however long the capture is.

use std::collections::VecDeque;
use std::io::Read;
use std::net::IpAddr;
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::attribute;
use super::decode::{self, flags, Decoded, Segment};
use super::distinct::Distinct;
use super::error::PcapError;
use super::filter::Filter;
use super::flow::{Flow, FlowKey};
use super::reader::{self, Frame};
use super::report::{ResetReport, Summary};

/// How long after its first reset a connection is kept, to see what races it (ns).
const RST_GRACE_NS: i64 = 5_000_000_000;
/// How long a cleanly closed connection is kept for late packets (ns).
const CLOSED_GRACE_NS: i64 = 1_000_000_000;
/// A connection silent this long is forgotten (ns).
const IDLE_EVICT_NS: i64 = 600_000_000_000;
/// At most this many connections evicted for idleness are parked (kept aside) so that a
/// packet after a longer silence resumes them instead of starting a connection of unknown
/// roles and history: idle timeouts above [`IDLE_EVICT_NS`] are common (conntrack and
/// firewall idle timeouts of 15 to 60 minutes).
const MAX_PARKED: usize = 4096;
/// A parked connection is forgotten this long after its last packet (ns).
const PARKED_NS: i64 = 7_200_000_000_000;
/// A half-open connection (SYNs only, no answer) silent this long is forgotten (ns): Linux
/// gives up a connect after its sixth SYN retransmission, 64 s after the fifth.
const HALF_OPEN_EVICT_NS: i64 = 75_000_000_000;
/// At most this many connections are tracked at once; the packets of any other connection
/// are not analysed while the table is full, only counted (as untracked packets, and their
/// distinct 4-tuples as untracked connections).
pub const MAX_FLOWS: usize = 1_000_000;
/// At most this many hosts' TTLs are remembered.
const MAX_HOSTS: usize = 1_000_000;
/// Eviction runs at least this often in capture time (ns).
const SWEEP_EVERY_NS: i64 = 1_000_000_000;

/// The result of an analysis that ran.
#[derive(Debug)]
pub struct Outcome {
    /// Totals.
    pub summary: Summary,
    /// Damage that stopped reading early (the summary covers the frames before it).
    pub damage: Option<PcapError>,
    /// How much bookkeeping the connection table did.
    pub work: Work,
}

/// Bookkeeping counters of the connection table (to check that its cost stays linear).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Eviction sweeps run.
    pub sweeps: u64,
    /// Connections examined by those sweeps, in total.
    pub flows_examined: u64,
    /// The most connections tracked at once.
    pub peak_flows: u64,
    /// Half-open connections forgotten after their silence.
    pub half_open_evicted: u64,
}

/// Limits of one analysis.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// At most this many connections are tracked at once; while the table is full, packets
    /// of other connections are only counted (see [`Summary::untracked_packets`] and
    /// [`Summary::untracked_connections`]).
    pub max_flows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_flows: MAX_FLOWS,
        }
    }
}

/// Analyses a capture, calling `on_reset` for every connection that ended in a reset (roughly
/// in capture order). Fails only when the input is not a readable capture.
pub fn analyze<R, F>(input: R, filter: &Filter, on_reset: F) -> Result<Outcome, PcapError>
where
    R: Read + Send + 'static,
    F: FnMut(ResetReport),
{
    analyze_with(input, filter, Limits::default(), on_reset)
}

/// [`analyze`] with explicit [`Limits`].
pub fn analyze_with<R, F>(
    input: R,
    filter: &Filter,
    limits: Limits,
    mut on_reset: F,
) -> Result<Outcome, PcapError>
where
    R: Read + Send + 'static,
    F: FnMut(ResetReport),
{
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut tracker = Tracker {
        max_flows: limits.max_flows.max(1),
        ..Tracker::default()
    };
    // Link types that cannot be decoded, with their frame counts (few: one per interface).
    let mut unsupported: Vec<(i32, u64)> = Vec::new();
    let outcome = reader::read_frames(input, |frame: &Frame<'_>| {
        summary.packets += 1;
        // Times count from the capture's first frame, whatever it holds (as tshark's
        // relative times do).
        tracker.capture_start.get_or_insert(frame.time_ns);
        if !decode::supported_linktype(frame.linktype) {
            match unsupported.iter().position(|(lt, _)| *lt == frame.linktype) {
                Some(at) => unsupported[at].1 += 1,
                None if unsupported.len() < 64 => unsupported.push((frame.linktype, 1)),
                None => {}
            }
        }
        summary.bytes += u64::from(frame.orig_len);
        match decode::decode(frame.linktype, frame.data) {
            Decoded::Tcp(segment) if filter.accepts(&segment) => {
                summary.tcp_packets += 1;
                tracker.packet(frame.number, frame.time_ns, &segment, &mut |report| {
                    summary.count(&report);
                    on_reset(report);
                });
            }
            Decoded::Tcp(segment) => {
                // Filters choose which connections are reported, not which packets teach
                // each address's usual TTL.
                summary.skipped_packets += 1;
                tracker.observe(frame.number, &segment);
            }
            Decoded::OtherIp => summary.skipped_packets += 1,
            Decoded::NotIp => summary.non_ip_packets += 1,
            Decoded::Malformed => summary.malformed_packets += 1,
        }
    })?;
    tracker.finish(&mut |report| {
        summary.count(&report);
        on_reset(report);
    });
    summary.connections = tracker.connections;
    summary.untracked_packets = tracker.untracked_packets;
    summary.untracked_connections = tracker.untracked_connections.count().0;
    summary.warnings = outcome.warnings;
    for (linktype, frames) in unsupported {
        summary.warnings.push(format!(
            "link type {linktype} is not supported ({frames} frames not analysed, counted as \
             non-IP); supported: Ethernet (1), Linux cooked SLL (113) and SLL2 (276), raw IP \
             (101, 12, 14, 228, 229), BSD null/loopback (0, 108); convert the capture, e.g. \
             `editcap -T ether`, or capture on another interface"
        ));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(Outcome {
        summary,
        damage: outcome.damage,
        work: tracker.work,
    })
}

/// The first packet of a connection, kept in a small fixed struct until a second one
/// arrives: a lone SYN (a scan, a flood, an unanswered connect) never costs a full [`Flow`].
/// The addresses and ports are the table's key.
#[derive(Debug, Clone, Copy)]
struct Pending {
    frame: u64,
    time_ns: i64,
    host_ttl: Option<(u8, u64)>,
    seq: u32,
    ack: u32,
    payload_len: u32,
    window: u16,
    ip_id: Option<u16>,
    flags: u8,
    ttl: u8,
    tos: u8,
    side: u8,
    df: bool,
    has_options: bool,
}

impl Pending {
    fn of(
        frame: u64,
        time_ns: i64,
        side: usize,
        segment: &Segment,
        host_ttl: Option<(u8, u64)>,
    ) -> Self {
        Self {
            frame,
            time_ns,
            host_ttl,
            seq: segment.seq,
            ack: segment.ack,
            payload_len: segment.payload_len,
            window: segment.window,
            ip_id: segment.ip_id,
            flags: segment.flags,
            ttl: segment.ttl,
            tos: segment.tos,
            side: u8::from(side == 1),
            df: segment.df,
            has_options: segment.has_options,
        }
    }

    /// The packet as it was decoded.
    fn segment(&self, key: &FlowKey) -> Segment {
        let side = usize::from(self.side);
        let src = key.addr(side);
        let dst = key.addr(1 - side);
        Segment {
            src: src.ip(),
            dst: dst.ip(),
            sport: src.port(),
            dport: dst.port(),
            seq: self.seq,
            ack: self.ack,
            flags: self.flags,
            window: self.window,
            payload_len: self.payload_len,
            ttl: self.ttl,
            ip_id: self.ip_id,
            df: self.df,
            tos: self.tos,
            has_options: self.has_options,
        }
    }

    /// How long it is kept without a second packet (ns).
    fn evict_after(&self) -> i64 {
        if self.flags & (flags::SYN | flags::ACK | flags::FIN) == flags::SYN
            && self.payload_len == 0
        {
            HALF_OPEN_EVICT_NS
        } else {
            IDLE_EVICT_NS
        }
    }
}

/// One connection in the table.
#[derive(Debug)]
enum Slot {
    /// Only its first packet has been seen.
    Pending(Pending),
    /// Followed in full (boxed, so that the table's slots stay small and growing the table
    /// moves little memory).
    Open(Box<Flow>),
}

impl Slot {
    fn open(&self) -> Option<&Flow> {
        match self {
            Slot::Open(flow) => Some(flow),
            Slot::Pending(_) => None,
        }
    }
}

/// The table of open connections.
#[derive(Default)]
struct Tracker {
    flows: FxHashMap<FlowKey, Slot>,
    /// Connections evicted for idleness, without a reset, bounded by [`MAX_PARKED`] and
    /// [`PARKED_NS`]; resumed by their next packet.
    parked: FxHashMap<FlowKey, Box<Flow>>,
    /// The parked 4-tuples in eviction order, with their last packet's time.
    parked_order: VecDeque<(FlowKey, i64)>,
    /// The highest TTL seen from each address (in any connection, filtered or not).
    host_ttl: FxHashMap<IpAddr, (u8, u64)>,
    capture_start: Option<i64>,
    now: i64,
    last_sweep: i64,
    connections: u64,
    /// Packets not analysed because the table was full.
    untracked_packets: u64,
    /// The distinct 4-tuples of those packets (bounded memory: exact while few, then an
    /// estimate).
    untracked_connections: Distinct,
    max_flows: usize,
    work: Work,
}

impl Tracker {
    fn packet(
        &mut self,
        frame: u64,
        time_ns: i64,
        segment: &Segment,
        emit: &mut dyn FnMut(ResetReport),
    ) {
        let start = *self.capture_start.get_or_insert(time_ns);
        self.now = self.now.max(time_ns);
        if self.now - self.last_sweep >= SWEEP_EVERY_NS {
            self.sweep(emit);
            self.last_sweep = self.now;
        }
        let (key, side) = FlowKey::of(segment);
        let host_ttl = self.host_ttl.get(&segment.src).copied();
        let reused = self
            .flows
            .get(&key)
            .and_then(Slot::open)
            .is_some_and(|flow| flow.is_reused_by(side, segment));
        if reused {
            if let Some(Slot::Open(old)) = self.flows.remove(&key) {
                if old.first_rst.is_some() {
                    emit(report(&old, start));
                }
            }
        }
        let slot = match self.flows.get_mut(&key) {
            Some(slot) => slot,
            None => {
                if self.flows.len() >= self.max_flows {
                    // The table is full: the regular sweep (at most once per second of
                    // capture time) is what frees room. Sweeping here for every new
                    // connection would cost the whole table per packet. Counting the
                    // 4-tuple costs a hash and fixed memory, however many there are.
                    self.untracked_packets += 1;
                    self.untracked_connections.insert(&key);
                    self.observe(frame, segment);
                    return;
                }
                if let Some(flow) = self.parked.remove(&key) {
                    if !flow.is_reused_by(side, segment) {
                        // A packet after a long silence: the same connection goes on.
                        let mut flow = flow;
                        flow.add(frame, time_ns, side, segment, host_ttl);
                        self.flows.insert(key, Slot::Open(flow));
                        self.work.peak_flows = self.work.peak_flows.max(self.flows.len() as u64);
                        self.observe(frame, segment);
                        return;
                    }
                }
                self.connections += 1;
                let slot = if segment.has(flags::RST) {
                    let mut flow = Box::new(Flow::new(key, time_ns));
                    flow.add(frame, time_ns, side, segment, host_ttl);
                    Slot::Open(flow)
                } else {
                    Slot::Pending(Pending::of(frame, time_ns, side, segment, host_ttl))
                };
                self.flows.insert(key, slot);
                self.work.peak_flows = self.work.peak_flows.max(self.flows.len() as u64);
                self.observe(frame, segment);
                return;
            }
        };
        if let Slot::Pending(first) = slot {
            let first = *first;
            let mut flow = Box::new(Flow::new(key, first.time_ns));
            flow.add(
                first.frame,
                first.time_ns,
                usize::from(first.side),
                &first.segment(&key),
                first.host_ttl,
            );
            *slot = Slot::Open(flow);
        }
        if let Slot::Open(flow) = slot {
            flow.add(frame, time_ns, side, segment, host_ttl);
        }
        self.observe(frame, segment);
    }

    /// Learns the sender address's usual TTL from a packet (resets excluded): the highest
    /// one seen, since applications lower TTLs on purpose (TTL-limited probes) but nothing
    /// on the path raises them.
    fn observe(&mut self, frame: u64, segment: &Segment) {
        if segment.has(flags::RST) {
            return;
        }
        if self.host_ttl.len() >= MAX_HOSTS && !self.host_ttl.contains_key(&segment.src) {
            self.host_ttl.clear();
        }
        let known = self
            .host_ttl
            .entry(segment.src)
            .or_insert((segment.ttl, frame));
        if segment.ttl > known.0 {
            *known = (segment.ttl, frame);
        }
    }

    /// Evicts connections that ended or idled, reporting the reset ones in frame order.
    fn sweep(&mut self, emit: &mut dyn FnMut(ResetReport)) {
        let now = self.now;
        let mut done = Vec::new();
        let mut half_open = 0;
        let mut idle = Vec::new();
        self.work.sweeps += 1;
        self.work.flows_examined += self.flows.len() as u64;
        self.flows.retain(|_, slot| {
            let flow = match slot {
                Slot::Pending(first) => {
                    let keep = now - first.time_ns < first.evict_after();
                    half_open += u64::from(!keep && first.evict_after() == HALF_OPEN_EVICT_NS);
                    return keep;
                }
                Slot::Open(flow) => flow,
            };
            let keep = match &flow.first_rst {
                Some(rst) => now - rst.entry.time_ns < RST_GRACE_NS,
                None if flow.closed() => now - flow.last_ns < CLOSED_GRACE_NS,
                None if flow.half_open() => {
                    let keep = now - flow.last_ns < HALF_OPEN_EVICT_NS;
                    half_open += u64::from(!keep);
                    keep
                }
                None => {
                    let keep = now - flow.last_ns < IDLE_EVICT_NS;
                    if !keep {
                        idle.push(std::mem::replace(flow, Box::new(Flow::new(flow.key, 0))));
                    }
                    keep
                }
            };
            if !keep && flow.first_rst.is_some() {
                done.push(std::mem::replace(flow, Box::new(Flow::new(flow.key, 0))));
            }
            keep
        });
        self.work.half_open_evicted += half_open;
        for flow in idle {
            self.park(flow);
        }
        while let Some(&(key, last_ns)) = self.parked_order.front() {
            if now - last_ns < PARKED_NS && self.parked_order.len() <= MAX_PARKED {
                break;
            }
            self.parked_order.pop_front();
            if self.parked.get(&key).is_some_and(|f| f.last_ns == last_ns) {
                self.parked.remove(&key);
            }
        }
        if self.flows.capacity() > 4 * self.flows.len().max(1024) {
            self.flows.shrink_to_fit();
        }
        self.report_all(done, emit);
    }

    /// Keeps a connection evicted for idleness aside, in case it resumes.
    fn park(&mut self, flow: Box<Flow>) {
        self.parked_order.push_back((flow.key, flow.last_ns));
        self.parked.insert(flow.key, flow);
    }

    /// Reports every remaining reset connection (end of input).
    fn finish(&mut self, emit: &mut dyn FnMut(ResetReport)) {
        let done: Vec<Box<Flow>> = self
            .flows
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Open(flow) if flow.first_rst.is_some() => Some(flow),
                _ => None,
            })
            .collect();
        self.report_all(done, emit);
    }

    #[allow(clippy::vec_box)] // the flows come out of the table boxed; unboxing would copy them
    fn report_all(&self, mut done: Vec<Box<Flow>>, emit: &mut dyn FnMut(ResetReport)) {
        let start = self.capture_start.unwrap_or(0);
        done.sort_by_key(|flow| flow.first_rst.as_ref().map(|r| r.entry.frame));
        for flow in &done {
            emit(report(flow, start));
        }
    }
}

/// Attributes a finished connection's first reset.
fn report(flow: &Flow, capture_start: i64) -> ResetReport {
    let roles = attribute::roles(flow);
    let verdict = attribute::attribute(flow, roles);
    let (frame, time_ns) = flow
        .first_rst
        .as_ref()
        .map_or((0, capture_start), |r| (r.entry.frame, r.entry.time_ns));
    let bases = [flow.sides[0].isn, flow.sides[1].isn];
    ResetReport {
        client: flow.key.addr(roles.client),
        server: flow.key.addr(roles.server()),
        roles_inferred: roles.inferred,
        frame,
        time: (time_ns - capture_start) as f64 / 1e9,
        verdict,
        timeline: ResetReport::rows(
            &flow.timeline,
            roles.client,
            bases,
            flow.first_ns,
            flow.key.addr(0).is_ipv6(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lone SYN costs one table slot and nothing on the heap.
    #[test]
    fn a_half_open_connection_is_a_small_fixed_struct() {
        let slot = std::mem::size_of::<(FlowKey, Slot)>();
        assert!(slot <= 112, "a table slot is {slot} bytes");
    }
}
