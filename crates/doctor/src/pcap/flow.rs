//! Per-connection state: a bounded summary of each TCP connection, enough to attribute the
//! first reset, plus what arrives in the few seconds after it.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use super::decode::{flags, Segment};

/// Packets kept from the start of a connection for the timeline.
const TIMELINE_HEAD: usize = 6;
/// Packets kept from the end of a connection for the timeline.
const TIMELINE_TAIL: usize = 12;
/// Packets remembered after the first reset.
const AFTER_RST_KEPT: usize = 16;

/// The 4-tuple in a canonical order, so both directions find the same flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    low: (IpAddr, u16),
    high: (IpAddr, u16),
}

impl FlowKey {
    /// The key of `segment` and the index (0 or 1) of its sender within the key.
    pub fn of(segment: &Segment) -> (Self, usize) {
        let src = (segment.src, segment.sport);
        let dst = (segment.dst, segment.dport);
        if src <= dst {
            (
                Self {
                    low: src,
                    high: dst,
                },
                0,
            )
        } else {
            (
                Self {
                    low: dst,
                    high: src,
                },
                1,
            )
        }
    }

    /// The address of side `index` (0 or 1).
    pub fn addr(&self, index: usize) -> SocketAddr {
        let (ip, port) = if index == 0 { self.low } else { self.high };
        SocketAddr::new(ip, port)
    }
}

/// A data segment's position.
#[derive(Debug, Clone, Copy)]
pub struct DataMark {
    /// Frame number.
    pub frame: u64,
    /// Capture time (ns).
    pub time_ns: i64,
    /// Sequence number after its last byte.
    pub end_seq: u32,
}

/// What one side of a connection sent (before the first reset).
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// Packets sent.
    pub packets: u64,
    /// Payload bytes sent.
    pub bytes: u64,
    /// TTL of its latest non-RST packet, with that packet's frame.
    pub ttl: Option<(u8, u64)>,
    /// The highest TTL of its non-RST packets, with that packet's frame: the baseline for
    /// its resets (an application may lower the TTL of some packets on purpose, as
    /// TTL-limited probes do, but nothing on the path raises it).
    pub max_ttl: Option<(u8, u64)>,
    /// Whether its non-RST packets used more than one TTL.
    pub ttl_varies: bool,
    /// Last IPv4 ID of a non-RST packet.
    pub ip_id: Option<u16>,
    /// Initial sequence number (from its SYN) or first sequence number seen.
    pub isn: Option<u32>,
    /// Highest sequence number it has used, plus one.
    pub next_seq: Option<u32>,
    /// Highest acknowledgment it has sent.
    pub acked: Option<u32>,
    /// Its first FIN.
    pub fin: Option<(u64, i64)>,
    /// Its last data segment.
    pub last_data: Option<DataMark>,
    /// Its first data segment sent after the other side's FIN.
    pub data_after_peer_fin: Option<u64>,
    /// Last advertised window.
    pub window: u16,
    /// TOS / traffic class of its latest non-RST packet.
    pub tos: Option<u8>,
    /// Whether its latest packet after the handshake (not a SYN, not an RST) carried TCP
    /// options, with that packet's frame (timestamps: a stack that negotiated them puts them
    /// in every segment of the connection, its own resets with a socket included).
    pub options: Option<(bool, u64)>,
}

/// One row of the compact timeline.
#[derive(Debug, Clone, Copy)]
pub struct TimelineEntry {
    /// Frame number.
    pub frame: u64,
    /// Capture time (ns).
    pub time_ns: i64,
    /// Sender index in the flow key.
    pub side: usize,
    /// TCP flags.
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Payload length.
    pub len: u32,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 ID.
    pub ip_id: Option<u16>,
}

impl TimelineEntry {
    fn of(frame: u64, time_ns: i64, side: usize, segment: &Segment) -> Self {
        Self {
            frame,
            time_ns,
            side,
            flags: segment.flags,
            seq: segment.seq,
            ack: segment.ack,
            len: segment.payload_len,
            ttl: segment.ttl,
            ip_id: segment.ip_id,
        }
    }
}

/// The first packets and the last packets of a connection.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The first packets.
    pub head: Vec<TimelineEntry>,
    /// The latest packets.
    pub tail: VecDeque<TimelineEntry>,
    /// Packets between head and tail that were not kept.
    pub skipped: u64,
}

impl Timeline {
    fn push(&mut self, entry: TimelineEntry) {
        if self.head.len() < TIMELINE_HEAD {
            // A half-open connection (a lone SYN, as in a scan or a flood) keeps one entry:
            // allocate for one first, not for the default four.
            if self.head.capacity() == 0 {
                self.head.reserve_exact(1);
            } else if self.head.len() == self.head.capacity() {
                self.head.reserve_exact(TIMELINE_HEAD - self.head.len());
            }
            self.head.push(entry);
            return;
        }
        if self.tail.len() == TIMELINE_TAIL {
            self.tail.pop_front();
            self.skipped += 1;
        }
        self.tail.push_back(entry);
    }

    /// Every kept entry in order.
    pub fn entries(&self) -> impl Iterator<Item = &TimelineEntry> {
        self.head.iter().chain(self.tail.iter())
    }
}

/// The first reset of a connection and the facts just before it.
#[derive(Debug, Clone)]
pub struct FirstRst {
    /// The reset itself.
    pub entry: TimelineEntry,
    /// Its full header fields.
    pub segment: Segment,
    /// Both sides as they were just before it.
    pub sides: [Side; 2],
    /// The packet just before it in this connection, and the gap before that one (ns).
    pub previous: Option<(TimelineEntry, Option<i64>)>,
    /// The highest TTL the sender's address used in other connections before (with a frame).
    pub host_ttl: Option<(u8, u64)>,
}

/// A packet seen after the first reset.
pub type AfterRst = (TimelineEntry, Segment);

/// Everything kept about one connection.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The 4-tuple.
    pub key: FlowKey,
    /// Index of the side that sent the SYN, if seen.
    pub syn_sender: Option<usize>,
    /// Frame of the SYN.
    pub syn_frame: Option<u64>,
    /// Frame of the SYN-ACK.
    pub synack_frame: Option<u64>,
    /// Frame of the client's packet that completed the handshake.
    pub handshake_done: Option<u64>,
    /// Per-side state (index as in the key).
    pub sides: [Side; 2],
    /// First and last packet times (ns).
    pub first_ns: i64,
    /// Last packet time (ns).
    pub last_ns: i64,
    /// Compact timeline.
    pub timeline: Timeline,
    /// The first reset, if any (boxed: most connections never have one, and a half-open
    /// connection must stay small).
    pub first_rst: Option<Box<FirstRst>>,
    /// Packets after the first reset (bounded).
    pub after_rst: Vec<AfterRst>,
    /// Packets after the first reset that were not kept.
    pub after_rst_skipped: u64,
    previous: Option<TimelineEntry>,
    previous_gap: Option<i64>,
}

impl Flow {
    /// A new connection whose first packet is about to be added.
    pub fn new(key: FlowKey, time_ns: i64) -> Self {
        Self {
            key,
            syn_sender: None,
            syn_frame: None,
            synack_frame: None,
            handshake_done: None,
            sides: [Side::default(), Side::default()],
            first_ns: time_ns,
            last_ns: time_ns,
            timeline: Timeline::default(),
            first_rst: None,
            after_rst: Vec::new(),
            after_rst_skipped: 0,
            previous: None,
            previous_gap: None,
        }
    }

    /// Whether only one side has been heard from and nothing but SYNs came (a half-open
    /// connection: a scan, a flood, or an unanswered connect).
    pub fn half_open(&self) -> bool {
        self.first_rst.is_none()
            && self.synack_frame.is_none()
            && self.sides.iter().filter(|side| side.packets > 0).count() <= 1
            && self
                .sides
                .iter()
                .all(|side| side.bytes == 0 && side.fin.is_none())
    }

    /// Bytes this connection occupies on the heap besides its fixed struct (an estimate
    /// from the buffers' capacities).
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<TimelineEntry>();
        self.timeline.head.capacity() * entry
            + self.timeline.tail.capacity() * entry
            + self.after_rst.capacity() * std::mem::size_of::<AfterRst>()
            + self
                .first_rst
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<FirstRst>())
    }

    /// Whether both sides have sent a FIN (the connection closed cleanly, so far).
    pub fn closed(&self) -> bool {
        self.sides[0].fin.is_some() && self.sides[1].fin.is_some()
    }

    /// Whether a fresh SYN on this 4-tuple starts a new connection.
    pub fn is_reused_by(&self, side: usize, segment: &Segment) -> bool {
        segment.has(flags::SYN)
            && !segment.has(flags::ACK)
            && (self.first_rst.is_some() || self.closed())
            && self.sides[side].isn != Some(segment.seq)
    }

    /// Adds one packet. `host_ttl` is what other connections saw from the sender's address.
    pub fn add(
        &mut self,
        frame: u64,
        time_ns: i64,
        side: usize,
        segment: &Segment,
        host_ttl: Option<(u8, u64)>,
    ) {
        let entry = TimelineEntry::of(frame, time_ns, side, segment);
        self.last_ns = self.last_ns.max(time_ns);
        self.timeline.push(entry);
        if self.first_rst.is_some() {
            if self.after_rst.len() < AFTER_RST_KEPT {
                self.after_rst.push((entry, *segment));
            } else {
                self.after_rst_skipped += 1;
            }
            return;
        }
        if segment.has(flags::RST) {
            self.first_rst = Some(Box::new(FirstRst {
                entry,
                segment: *segment,
                sides: self.sides.clone(),
                previous: self.previous.map(|p| (p, self.previous_gap)),
                host_ttl,
            }));
            return;
        }
        self.previous_gap = self.previous.map(|p| time_ns - p.time_ns);
        self.previous = Some(entry);
        self.track_handshake(frame, side, segment);
        self.track_side(frame, time_ns, side, segment);
    }

    fn track_handshake(&mut self, frame: u64, side: usize, segment: &Segment) {
        let syn = segment.has(flags::SYN);
        let ack = segment.has(flags::ACK);
        if syn && !ack && self.syn_sender.is_none() {
            self.syn_sender = Some(side);
            self.syn_frame = Some(frame);
        } else if syn && ack && self.synack_frame.is_none() && self.syn_sender != Some(side) {
            self.synack_frame = Some(frame);
        } else if !syn
            && ack
            && self.synack_frame.is_some()
            && self.handshake_done.is_none()
            && self.syn_sender == Some(side)
        {
            self.handshake_done = Some(frame);
        }
    }

    fn track_side(&mut self, frame: u64, time_ns: i64, side: usize, segment: &Segment) {
        let peer_fin = self.sides[1 - side].fin;
        let me = &mut self.sides[side];
        me.packets += 1;
        me.bytes += u64::from(segment.payload_len);
        match me.ttl {
            Some((ttl, _)) if ttl != segment.ttl => me.ttl_varies = true,
            _ => {}
        }
        me.ttl = Some((segment.ttl, frame));
        if me.max_ttl.is_none_or(|(max, _)| segment.ttl > max) {
            me.max_ttl = Some((segment.ttl, frame));
        }
        me.ip_id = segment.ip_id;
        me.tos = Some(segment.tos);
        me.window = segment.window;
        if !segment.has(flags::SYN) {
            me.options = Some((segment.has_options, frame));
        }
        if segment.has(flags::SYN) || me.isn.is_none() {
            me.isn = Some(segment.seq);
        }
        let consumed = segment.payload_len
            + u32::from(segment.has(flags::SYN))
            + u32::from(segment.has(flags::FIN));
        let end = segment.seq.wrapping_add(consumed);
        me.next_seq = Some(match me.next_seq {
            Some(old) if seq_before(end, old) => old,
            _ => end,
        });
        if segment.has(flags::ACK) {
            me.acked = Some(match me.acked {
                Some(old) if seq_before(segment.ack, old) => old,
                _ => segment.ack,
            });
        }
        if segment.payload_len > 0 {
            me.last_data = Some(DataMark {
                frame,
                time_ns,
                end_seq: segment.seq.wrapping_add(segment.payload_len),
            });
            if peer_fin.is_some() && me.data_after_peer_fin.is_none() {
                me.data_after_peer_fin = Some(frame);
            }
        }
        if segment.has(flags::FIN) && me.fin.is_none() {
            me.fin = Some((frame, time_ns));
        }
    }
}

/// Sequence-space comparison: whether `a` comes before `b` (RFC 1982 style).
pub fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
