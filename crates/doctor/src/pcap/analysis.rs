//! The driver: frames in, reset reports out. Connection state lives in a table keyed by the
//! 4-tuple and is evicted when a connection has ended (a few seconds after its first reset or
//! its second FIN) or idled, so memory stays flat however long the capture is.

use std::io::Read;
use std::net::IpAddr;
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::attribute;
use super::decode::{self, flags, Decoded, Segment};
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
/// At most this many connections are tracked at once; more are counted as untracked.
const MAX_FLOWS: usize = 1_000_000;
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
}

/// Analyses a capture, calling `on_reset` for every connection that ended in a reset (roughly
/// in capture order). Fails only when the input is not a readable capture.
pub fn analyze<R, F>(input: R, filter: &Filter, mut on_reset: F) -> Result<Outcome, PcapError>
where
    R: Read + Send + 'static,
    F: FnMut(ResetReport),
{
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut tracker = Tracker::default();
    let outcome = reader::read_frames(input, |frame: &Frame<'_>| {
        summary.packets += 1;
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
                tracker.capture_start.get_or_insert(frame.time_ns);
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
    summary.untracked_connections = tracker.untracked;
    summary.warnings = outcome.warnings;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(Outcome {
        summary,
        damage: outcome.damage,
    })
}

/// The table of open connections.
#[derive(Default)]
struct Tracker {
    flows: FxHashMap<FlowKey, Flow>,
    /// The highest TTL seen from each address (in any connection, filtered or not).
    host_ttl: FxHashMap<IpAddr, (u8, u64)>,
    capture_start: Option<i64>,
    now: i64,
    last_sweep: i64,
    connections: u64,
    untracked: u64,
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
            .is_some_and(|flow| flow.is_reused_by(side, segment));
        if reused {
            if let Some(old) = self.flows.remove(&key) {
                if old.first_rst.is_some() {
                    emit(report(&old, start));
                }
            }
        }
        let flow = match self.flows.get_mut(&key) {
            Some(flow) => flow,
            None => {
                if self.flows.len() >= MAX_FLOWS {
                    self.sweep(emit);
                    if self.flows.len() >= MAX_FLOWS {
                        self.untracked += 1;
                        return;
                    }
                }
                self.connections += 1;
                self.flows
                    .entry(key)
                    .or_insert_with(|| Flow::new(key, time_ns))
            }
        };
        flow.add(frame, time_ns, side, segment, host_ttl);
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
        self.flows.retain(|_, flow| {
            let keep = match &flow.first_rst {
                Some(rst) => now - rst.entry.time_ns < RST_GRACE_NS,
                None if flow.closed() => now - flow.last_ns < CLOSED_GRACE_NS,
                None => now - flow.last_ns < IDLE_EVICT_NS,
            };
            if !keep && flow.first_rst.is_some() {
                done.push(std::mem::replace(flow, Flow::new(flow.key, 0)));
            }
            keep
        });
        self.report_all(done, emit);
    }

    /// Reports every remaining reset connection (end of input).
    fn finish(&mut self, emit: &mut dyn FnMut(ResetReport)) {
        let done: Vec<Flow> = self
            .flows
            .drain()
            .map(|(_, flow)| flow)
            .filter(|flow| flow.first_rst.is_some())
            .collect();
        self.report_all(done, emit);
    }

    fn report_all(&self, mut done: Vec<Flow>, emit: &mut dyn FnMut(ResetReport)) {
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
        timeline: ResetReport::rows(&flow.timeline, roles.client, bases, flow.first_ns),
    }
}
