//! Attribution: from a connection's state around its first reset to a [`Verdict`].
//!
//! Follows Weaver, Sommer and Paxson, "Detecting Forged TCP Reset Packets" (NDSS 2009): a
//! reset whose TTL differs from the claimed sender's other packets, data from that sender after
//! its own reset (the race), and resets whose sequence or acknowledgment numbers jump are signs
//! of a forger. Endpoint causes are told apart by what preceded the reset (SYN, FIN, data, the
//! handshake) and whether the stack answered with or without an ACK. When the signals do not
//! single out one cause, the verdict says `unknown`.

use super::decode::flags;
use super::flow::{seq_before, FirstRst, Flow};
use super::ttl;
use super::verdict::{Cause, Evidence, Resetter, Verdict};

/// Silence (ns) before a reset, or before the packet that provoked it, that counts as "long".
pub const IDLE_NS: i64 = 2_000_000_000;
/// How soon (ns) after a client packet a stack's reset counts as "right after" it.
const PROMPT_NS: i64 = 1_000_000_000;
/// Idle time (ns) after a complete exchange from which a server's unprovoked reset is an idle
/// keep-alive close rather than an abort.
const KEEPALIVE_IDLE_NS: i64 = 1_000_000_000;

/// Which flow side is the client, and whether that was inferred from ports.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    /// Index of the client side in the flow key.
    pub client: usize,
    /// True when no SYN was captured.
    pub inferred: bool,
}

impl Roles {
    /// The server side's index.
    pub fn server(self) -> usize {
        1 - self.client
    }
}

/// Decides who is client and server.
pub fn roles(flow: &Flow) -> Roles {
    if let Some(client) = flow.syn_sender {
        return Roles {
            client,
            inferred: false,
        };
    }
    let port = |i: usize| flow.key.addr(i).port();
    let (p0, p1) = (port(0), port(1));
    // The well-known (or lower) port is the server's.
    let server = if (p0 < 1024) != (p1 < 1024) {
        usize::from(p1 < 1024)
    } else {
        usize::from(p1 < p0)
    };
    Roles {
        client: 1 - server,
        inferred: true,
    }
}

/// How the reset's TTL compares with its claimed sender's other packets.
#[derive(Debug, Clone, Copy)]
enum TtlCheck {
    Unknown,
    Same {
        frame: u64,
    },
    Differs {
        baseline: u8,
        frame: u64,
    },
    /// The TTL differs but cannot point at a device closer than the sender: a loopback
    /// connection, or a sender at the capture point whose other packets had their TTL
    /// lowered on purpose (TTL-limited probes).
    Local {
        baseline: Option<(u8, u64)>,
        loopback: bool,
    },
}

/// Attributes the first reset of `flow` (which must have one).
pub fn attribute(flow: &Flow, roles: Roles) -> Verdict {
    let Some(rst) = flow.first_rst.as_ref() else {
        return Verdict::unknown(Evidence::new("no reset in this connection", vec![]));
    };
    let facts = Facts::gather(flow, rst, roles);
    let mut evidence = Vec::new();
    if roles.inferred {
        evidence.push(Evidence::new(
            format!(
                "the handshake is not in the capture: roles inferred from ports ({} is the server)",
                flow.key.addr(roles.server())
            ),
            vec![],
        ));
    }
    evidence.push(facts.describe_rst());
    let verdict = if facts.sender == roles.client {
        facts.client_side(evidence)
    } else {
        facts.server_side(evidence)
    };
    facts.finish(verdict)
}

/// The signals around one reset.
struct Facts<'a> {
    flow: &'a Flow,
    rst: &'a FirstRst,
    roles: Roles,
    sender: usize,
    frame: u64,
    ttl: TtlCheck,
    /// Both ends on one host (loopback or the same address): never a middlebox.
    loopback: bool,
    /// The IP header field the hop count is read from, as sentences name it.
    field: ttl::Field,
    /// Frames of data or FIN from the sender after its reset, with the sender's usual TTL.
    race: Vec<u64>,
    /// A later reset from the same sender with another sequence number.
    seq_change: Option<u64>,
    /// A later reset from the same sender with another acknowledgment number.
    ack_change: Option<u64>,
}

impl<'a> Facts<'a> {
    fn gather(flow: &'a Flow, rst: &'a FirstRst, roles: Roles) -> Self {
        let sender = rst.entry.side;
        let segment = &rst.segment;
        // The highest TTL is the baseline: applications lower TTLs on purpose (TTL-limited
        // probes), nothing on the path raises them.
        let baseline = rst.sides[sender].max_ttl.or(rst.host_ttl);
        let (a, b) = (flow.key.addr(0).ip(), flow.key.addr(1).ip());
        let loopback = a.is_loopback() || b.is_loopback() || a == b;
        let ttl = match baseline {
            Some((ttl, frame)) if ttl == segment.ttl => TtlCheck::Same { frame },
            // Both ends on one host: no device between them to forge anything.
            _ if loopback => TtlCheck::Local {
                baseline,
                loopback: true,
            },
            None => TtlCheck::Unknown,
            // An initial TTL (no router passed) above the sender's other packets: the sender
            // is at the capture point and nothing can be closer. The client is on the capture
            // side by assumption; for the server, only when its TTLs vary (probes).
            Some((base, _))
                if segment.ttl > base
                    && ttl::routers_passed(segment.ttl) == 0
                    && (sender == roles.client || rst.sides[sender].ttl_varies) =>
            {
                TtlCheck::Local {
                    baseline,
                    loopback: false,
                }
            }
            Some((baseline, frame)) => TtlCheck::Differs { baseline, frame },
        };
        let usual = baseline.map(|(t, _)| t);
        let mut race = Vec::new();
        let mut seq_change = None;
        let mut ack_change = None;
        for (entry, later) in flow.after_rst.iter().filter(|(e, _)| e.side == sender) {
            if later.has(flags::RST) {
                if later.seq != segment.seq && seq_change.is_none() {
                    seq_change = Some(entry.frame);
                }
                if later.has(flags::ACK)
                    && segment.has(flags::ACK)
                    && later.ack != segment.ack
                    && ack_change.is_none()
                {
                    ack_change = Some(entry.frame);
                }
            } else if (later.payload_len > 0 || later.has(flags::FIN))
                && usual.is_none_or(|t| t == later.ttl)
            {
                race.push(entry.frame);
            }
        }
        Self {
            flow,
            rst,
            roles,
            sender,
            frame: rst.entry.frame,
            ttl,
            loopback,
            field: ttl::Field::of(a.is_ipv6()),
            race,
            seq_change,
            ack_change,
        }
    }

    /// Whether the TTL says the claimed sender sent the reset.
    fn ttl_trusted(&self) -> bool {
        matches!(self.ttl, TtlCheck::Same { .. } | TtlCheck::Local { .. })
    }

    fn role_name(&self, side: usize) -> &'static str {
        if side == self.roles.client {
            "client"
        } else {
            "server"
        }
    }

    fn describe_rst(&self) -> Evidence {
        let s = &self.rst.segment;
        let ack = if s.has(flags::ACK) {
            format!("ack {}", s.ack)
        } else {
            "no ACK flag".to_string()
        };
        let id = s
            .ip_id
            .map(|id| format!(", IP ID {id}{}", if s.df { ", DF" } else { "" }))
            .unwrap_or_default();
        Evidence::new(
            format!(
                "frame {}: RST from the {}'s address {} (seq {}, {}, {} {}{}, window {}, {})",
                self.frame,
                self.role_name(self.sender),
                self.flow.key.addr(self.sender),
                s.seq,
                ack,
                self.field.name(),
                s.ttl,
                id,
                s.window,
                if s.has_options {
                    "with TCP options"
                } else {
                    "no options"
                }
            ),
            vec![self.frame],
        )
    }

    fn ttl_evidence(&self) -> Option<Evidence> {
        let who = self.role_name(self.sender);
        let field = self.field.name();
        let own = self.rst.sides[self.sender].max_ttl.is_some();
        let whose = if own {
            format!("the {who}'s own packets in this connection")
        } else {
            format!("the {who}'s address in other connections")
        };
        match self.ttl {
            TtlCheck::Local {
                baseline,
                loopback: true,
            } => Some(Evidence::new(
                format!(
                    "frame {}: a loopback connection (both ends on one host): no device sits \
                     between them, so its {field} {}{} does not point at a middlebox",
                    self.frame,
                    self.rst.segment.ttl,
                    baseline
                        .filter(|(t, _)| *t != self.rst.segment.ttl)
                        .map(|(t, f)| format!(" (against {field} {t} in frame {f})"))
                        .unwrap_or_default()
                ),
                vec![self.frame],
            )),
            TtlCheck::Local {
                baseline,
                loopback: false,
            } => {
                let (base, frame) = baseline.unwrap_or((0, 0));
                Some(Evidence::new(
                    format!(
                        "frame {}: {field} {} is an initial {field} (no router passed) and higher \
                         than {whose} ({field} {base}, frame {frame}): the {who} is at the capture \
                         point and its other packets had their {field} lowered on purpose ({} \
                         probes); nothing is closer than the capture point, so this is the \
                         {who}'s own stack",
                        self.frame,
                        self.rst.segment.ttl,
                        self.field.limited()
                    ),
                    vec![self.frame, frame],
                ))
            }
            TtlCheck::Unknown => Some(Evidence::new(
                format!(
                    "frame {}: no other packet from the {who}'s address to compare its {field} {} \
                     with",
                    self.frame, self.rst.segment.ttl
                ),
                vec![self.frame],
            )),
            TtlCheck::Same { frame } => Some(Evidence::new(
                format!(
                    "frame {}: {field} {} matches {whose} (frame {frame})",
                    self.frame, self.rst.segment.ttl
                ),
                vec![self.frame, frame],
            )),
            TtlCheck::Differs { baseline, frame } => {
                let rst_ttl = self.rst.segment.ttl;
                let (hop, base_hop) = (ttl::hop_distance(rst_ttl), ttl::hop_distance(baseline));
                let comparison = match hop.cmp(&base_hop) {
                    std::cmp::Ordering::Equal => format!(
                        "the RST comes from the {who}'s hop distance but with another initial \
                         {field} ({} against {}): another stack at that distance",
                        ttl::initial(rst_ttl),
                        ttl::initial(baseline)
                    ),
                    order => {
                        let diff = hop.abs_diff(base_hop);
                        format!(
                            "the RST was sent {diff} {} {} than the {who}",
                            if diff == 1 { "hop" } else { "hops" },
                            if order == std::cmp::Ordering::Less {
                                "closer"
                            } else {
                                "farther"
                            }
                        )
                    }
                };
                Some(Evidence::new(
                    format!(
                        "frame {}: {field} {rst_ttl} (initial {}, hop {hop}) but {whose} arrive \
                         with {field} {baseline} (initial {}, hop {base_hop}; frame {frame}): \
                         {comparison}",
                        self.frame,
                        ttl::initial(rst_ttl),
                        ttl::initial(baseline),
                    ),
                    vec![self.frame, frame],
                ))
            }
        }
    }

    /// A middlebox's hop distance, when its TTL puts it before the real sender.
    fn middlebox_hop(&self) -> Option<u8> {
        let TtlCheck::Differs { baseline, .. } = self.ttl else {
            return None;
        };
        let hop = ttl::hop_distance(self.rst.segment.ttl);
        (hop < ttl::hop_distance(baseline)).then_some(hop)
    }

    /// The sender's last IP ID and the reset's, when the reset's does not follow the sender's
    /// sequence. A stack that numbers IP IDs per connection continues its sequence in its own
    /// RST (or uses 0 when it has no socket); a forger rarely knows the sequence.
    fn ip_id_off(&self) -> Option<(u16, u16)> {
        let side = &self.rst.sides[self.sender];
        let (last, id) = (side.ip_id.filter(|&id| id != 0)?, self.rst.segment.ip_id?);
        let step = id.wrapping_sub(last);
        (id != 0 && !(1..=64).contains(&step)).then_some((last, id))
    }

    /// The frame of the sender's own packet whose shape the reset does not have: an RST with
    /// ACK (sent on a connection the stack still has), window 0 and no TCP options, while the
    /// sender's latest segments advertise a window and carry options (timestamps). Linux
    /// sends a reset of a live socket (SO_LINGER 0, close with unread data) with both; only a
    /// socket-less reset (no ACK flag mid-connection) has neither.
    fn shape_unlike(&self) -> Option<u64> {
        let side = &self.rst.sides[self.sender];
        let rst = &self.rst.segment;
        let (options, frame) = side.options?;
        (rst.has(flags::ACK) && rst.window == 0 && !rst.has_options && options && side.window != 0)
            .then_some(frame)
    }

    /// How many independent signals say the claimed sender's stack did not send the reset:
    /// a later reset with another sequence number (RST-SEQ-CHANGE), an IP ID off the
    /// sender's sequence, and a window and options unlike the sender's own packets.
    fn contradictions(&self) -> Vec<&'static str> {
        let mut found = Vec::new();
        if self.seq_change.is_some() {
            found.push("RST-SEQ-CHANGE");
        }
        if self.ip_id_off().is_some() {
            found.push("an IP ID off its sequence");
        }
        if self.shape_unlike().is_some() {
            found.push("a window and options unlike its own packets");
        }
        found
    }

    /// Weighs the signals against a genuine-server verdict (one with the server's usual TTL
    /// and no race): one contradicting signal lowers the confidence; two or more mean the
    /// server's stack did not send it. Then, when the server acknowledged or answered the
    /// request, a device forged it with the server's TTL (`injected`, hop unknown); otherwise
    /// `unknown`. The accept-queue-overflow rule (a bare RST at the server's ISN+1) stands.
    /// `shared` is how many evidence lines came before the genuine-server reasoning (dropped
    /// when the verdict is overturned).
    fn weigh_contradictions(&self, mut verdict: Verdict, shared: usize) -> Verdict {
        if verdict.cause == Cause::AcceptQueueOverflow {
            return verdict;
        }
        let found = self.contradictions();
        match found.len() {
            0 => verdict,
            1 => {
                verdict.confidence -= 0.25;
                verdict.evidence.push(Evidence::new(
                    format!(
                        "frame {}: {} does not fit the server's own packets, so this verdict is \
                         less sure",
                        self.frame, found[0]
                    ),
                    vec![self.frame],
                ));
                verdict
            }
            n => {
                let answered = match self.client_data_fate() {
                    Some((data, Some(answer))) if !self.loopback => Some((data, answer)),
                    _ => None,
                };
                let mut evidence = verdict.evidence;
                evidence.truncate(shared);
                let list = found.join(", ");
                let field = self.field.name();
                match answered {
                    Some((data, answer)) => {
                        evidence.push(Evidence::new(
                            format!(
                                "frame {}: {n} independent signals say the server's stack did not \
                                 send this RST ({list}), although its {field} matches; frame \
                                 {answer}: the server acknowledged or answered the client's data \
                                 (frame {data}): a device forged the RST with the server's \
                                 {field}, so its hop cannot be told",
                                self.frame
                            ),
                            vec![self.frame, data, answer],
                        ));
                        Verdict {
                            resetter: Resetter::Middlebox,
                            cause: Cause::Injected,
                            hop: None,
                            confidence: if n >= 3 { 0.6 } else { 0.5 },
                            evidence,
                        }
                    }
                    None => {
                        evidence.push(Evidence::new(
                            format!(
                                "frame {}: {n} independent signals say the server's stack did not \
                                 send this RST ({list}), although its {field} matches: the \
                                 sender cannot be named",
                                self.frame
                            ),
                            vec![self.frame],
                        ));
                        Verdict {
                            resetter: Resetter::Unknown,
                            cause: Cause::Unknown,
                            hop: None,
                            confidence: 0.3,
                            evidence,
                        }
                    }
                }
            }
        }
    }

    fn forgery_evidence(&self, evidence: &mut Vec<Evidence>) {
        let who = self.role_name(self.sender);
        let side = &self.rst.sides[self.sender];
        let rst = &self.rst.segment;
        if let Some((last, id)) = self.ip_id_off() {
            evidence.push(Evidence::new(
                format!(
                    "frame {}: IP ID {id} does not follow the {who}'s IP ID sequence (last {last})",
                    self.frame
                ),
                vec![self.frame],
            ));
        }
        if let Some(frame) = self.shape_unlike() {
            evidence.push(Evidence::new(
                format!(
                    "frame {}: window 0 and no TCP options, but the {who}'s own packets carry \
                     a window of {} and TCP options (frame {frame}): a stack that resets a \
                     connection it still has (an RST with ACK) sends them as in its other \
                     segments",
                    self.frame, side.window
                ),
                vec![self.frame, frame],
            ));
        }
        if let Some(tos) = side.tos.filter(|&tos| tos != rst.tos) {
            evidence.push(Evidence::new(
                format!(
                    "frame {}: TOS {:#04x} differs from the {who}'s other packets ({tos:#04x})",
                    self.frame, rst.tos
                ),
                vec![self.frame],
            ));
        }
        if let Some(&first) = self.race.first() {
            evidence.push(Evidence::new(
                format!(
                    "frame {first}: the {who}'s address sent data after its own RST (frame {}), \
                     with its usual {}: the RST raced genuine traffic{}",
                    self.frame,
                    self.field.name(),
                    if self.race.len() > 1 {
                        format!(" ({} such packets)", self.race.len())
                    } else {
                        String::new()
                    }
                ),
                vec![self.frame, first],
            ));
        }
        if let Some(frame) = self.seq_change {
            evidence.push(Evidence::new(
                format!(
                    "frame {frame}: another RST from the {who}'s address with a different sequence \
                     number than frame {} (RST-SEQ-CHANGE)",
                    self.frame
                ),
                vec![self.frame, frame],
            ));
        }
        if let Some(frame) = self.ack_change {
            evidence.push(Evidence::new(
                format!(
                    "frame {frame}: another RST from the {who}'s address with a different \
                     acknowledgment number than frame {} (RST-ACK-CHANGE)",
                    self.frame
                ),
                vec![self.frame, frame],
            ));
        }
    }

    fn client_side(&self, mut evidence: Vec<Evidence>) -> Verdict {
        evidence.extend(self.ttl_evidence());
        self.forgery_evidence(&mut evidence);
        match self.ttl {
            TtlCheck::Differs { .. } => Verdict {
                resetter: Resetter::Middlebox,
                cause: if self.race.is_empty() && self.seq_change.is_none() {
                    Cause::Unknown
                } else {
                    Cause::Injected
                },
                hop: self.middlebox_hop(),
                confidence: 0.6,
                evidence,
            },
            TtlCheck::Same { .. } | TtlCheck::Local { .. } | TtlCheck::Unknown => {
                let confidence = if self.ttl_trusted() { 0.9 } else { 0.7 };
                Verdict {
                    resetter: Resetter::Client,
                    cause: Cause::ClientAbort,
                    hop: None,
                    confidence,
                    evidence,
                }
            }
        }
    }

    fn server_side(&self, mut evidence: Vec<Evidence>) -> Verdict {
        let server = self.roles.server();
        let answers_syn = self.flow.syn_frame.is_some() && self.rst.sides[server].packets == 0;
        if answers_syn {
            return self.answer_to_syn(evidence);
        }
        evidence.extend(self.ttl_evidence());
        self.forgery_evidence(&mut evidence);
        let forged = !self.loopback
            && (matches!(self.ttl, TtlCheck::Differs { .. }) || !self.race.is_empty());
        if forged {
            self.forged_server_reset(evidence)
        } else {
            let shared = evidence.len();
            let verdict = self.genuine_server_reset(evidence);
            self.weigh_contradictions(verdict, shared)
        }
    }

    fn answer_to_syn(&self, mut evidence: Vec<Evidence>) -> Verdict {
        let syn = self.flow.syn_frame.unwrap_or(0);
        let expected_ack = self.rst.sides[self.roles.client]
            .isn
            .map(|isn| isn.wrapping_add(1));
        let acks_syn =
            self.rst.segment.has(flags::ACK) && Some(self.rst.segment.ack) == expected_ack;
        evidence.push(Evidence::new(
            if acks_syn {
                format!(
                    "frame {}: answers the SYN (frame {syn}) before any SYN-ACK: its ACK number is \
                     the SYN's sequence number plus one",
                    self.frame
                )
            } else {
                format!(
                    "frame {}: arrives after the SYN (frame {syn}) and before any SYN-ACK",
                    self.frame
                )
            },
            vec![syn, self.frame],
        ));
        evidence.extend(self.ttl_evidence());
        let s = &self.rst.segment;
        if s.ip_id == Some(0) && s.df && s.window == 0 && !s.has_options {
            evidence.push(Evidence::new(
                format!(
                    "frame {}: IP ID 0, DF, window 0 and no options, like a netfilter REJECT; Linux \
                     answers a closed port the same way, so this alone does not name the sender",
                    self.frame
                ),
                vec![self.frame],
            ));
        }
        match self.ttl {
            TtlCheck::Same { .. } | TtlCheck::Local { .. } => Verdict {
                resetter: Resetter::Server,
                cause: Cause::Refused,
                hop: None,
                confidence: 0.9,
                evidence,
            },
            TtlCheck::Differs { baseline, .. }
                if ttl::hop_distance(s.ttl) < ttl::hop_distance(baseline) =>
            {
                Verdict {
                    resetter: Resetter::Middlebox,
                    cause: Cause::FirewallReject,
                    hop: self.middlebox_hop(),
                    confidence: 0.85,
                    evidence,
                }
            }
            TtlCheck::Differs { baseline, .. } => {
                evidence.push(Evidence::new(
                    if ttl::hop_distance(s.ttl) == ttl::hop_distance(baseline) {
                        format!(
                            "a reset from the server's distance with another initial {} fits \
                             neither the server's own stack nor a firewall in front of it",
                            self.field.name()
                        )
                    } else {
                        "a reset from farther away than the server itself fits neither the server \
                         nor a firewall in front of it"
                            .to_string()
                    },
                    vec![self.frame],
                ));
                Verdict {
                    resetter: Resetter::Unknown,
                    cause: Cause::Unknown,
                    hop: None,
                    confidence: 0.2,
                    evidence,
                }
            }
            TtlCheck::Unknown => {
                evidence.push(Evidence::new(
                    "a firewall answering for the server would look the same here; capture a \
                     working connection to the same host to tell them apart",
                    vec![],
                ));
                Verdict {
                    resetter: Resetter::Server,
                    cause: Cause::Refused,
                    hop: None,
                    confidence: 0.5,
                    evidence,
                }
            }
        }
    }

    /// The client's last data before the reset, and whether the server acknowledged or
    /// answered it (before or after the reset).
    fn client_data_fate(&self) -> Option<(u64, Option<u64>)> {
        let client = self.roles.client;
        let server = self.roles.server();
        let data = self.rst.sides[client].last_data?;
        let covers = |ack: u32| !seq_before(ack, data.end_seq);
        if let Some(acked) = self.rst.sides[server].acked {
            if covers(acked) {
                let frame = self.rst.sides[server].ttl.map(|(_, f)| f).unwrap_or(0);
                return Some((data.frame, Some(frame)));
            }
        }
        let later = self.flow.after_rst.iter().find(|(entry, seg)| {
            entry.side == server
                && !seg.has(flags::RST)
                && ((seg.has(flags::ACK) && covers(seg.ack)) || seg.payload_len > 0)
        });
        Some((data.frame, later.map(|(entry, _)| entry.frame)))
    }

    /// Silence before the reset and before the packet just before it.
    fn silences(&self) -> (Option<i64>, Option<i64>) {
        match self.rst.previous {
            Some((previous, gap)) => (Some(self.rst.entry.time_ns - previous.time_ns), gap),
            None => (None, None),
        }
    }

    fn forged_server_reset(&self, mut evidence: Vec<Evidence>) -> Verdict {
        let hop = self.middlebox_hop();
        let fate = self.client_data_fate();
        let (silence, silence_before_trigger) = self.silences();
        let previous = self.rst.previous.map(|(p, _)| p);
        let verdict = |cause, confidence, evidence| Verdict {
            resetter: Resetter::Middlebox,
            cause,
            hop,
            confidence,
            evidence,
        };
        let answered = |evidence: &mut Vec<Evidence>| {
            if let Some((data, Some(answer))) = fate {
                evidence.push(Evidence::new(
                    format!(
                        "frame {answer}: the server acknowledged or answered the client's data \
                         (frame {data}), so the request reached it: the RST did not come from \
                         the server"
                    ),
                    vec![data, answer],
                ));
                true
            } else {
                false
            }
        };
        let ttl_differs = matches!(self.ttl, TtlCheck::Differs { .. });
        if !self.race.is_empty() {
            answered(&mut evidence);
            return verdict(
                Cause::Injected,
                if ttl_differs { 0.95 } else { 0.75 },
                evidence,
            );
        }
        if let Some(silence) = silence.filter(|&s| s >= IDLE_NS) {
            evidence.push(Evidence::new(
                format!(
                    "frame {}: sent after {:.1} s of silence, not provoked by any packet",
                    self.frame,
                    silence as f64 / 1e9
                ),
                vec![self.frame],
            ));
            return verdict(Cause::IdleTimeoutMiddlebox, 0.75, evidence);
        }
        let provoked_by_client = previous.filter(|p| p.side == self.roles.client);
        if let (Some(trigger), Some(quiet)) = (provoked_by_client, silence_before_trigger) {
            if quiet >= IDLE_NS {
                evidence.push(Evidence::new(
                    format!(
                        "frame {}: the client's first packet after {:.1} s of silence (frame {}) \
                         drew the RST: a device on the path had forgotten the connection",
                        self.frame,
                        quiet as f64 / 1e9,
                        trigger.frame
                    ),
                    vec![trigger.frame, self.frame],
                ));
                return verdict(Cause::IdleTimeoutMiddlebox, 0.7, evidence);
            }
        }
        if answered(&mut evidence) {
            return verdict(Cause::Injected, 0.8, evidence);
        }
        if let Some((data, None)) = fate {
            evidence.push(Evidence::new(
                format!(
                    "frame {data}: the server never acknowledged the client's data, before or after \
                     the RST (frame {}): the request was stopped on the path",
                    self.frame
                ),
                vec![data, self.frame],
            ));
            return verdict(Cause::ContentFilter, 0.8, evidence);
        }
        verdict(Cause::Unknown, 0.4, evidence)
    }

    fn genuine_server_reset(&self, mut evidence: Vec<Evidence>) -> Verdict {
        let client = self.roles.client;
        let server = self.roles.server();
        let sides = &self.rst.sides;
        let sure = self.ttl_trusted();
        let scale = |confidence: f64| if sure { confidence } else { confidence - 0.2 };
        let server_verdict = |cause, confidence, evidence| Verdict {
            resetter: Resetter::Server,
            cause,
            hop: None,
            confidence,
            evidence,
        };
        if let (Some((fin, _)), Some(data)) = (sides[server].fin, sides[client].data_after_peer_fin)
        {
            evidence.push(Evidence::new(
                format!(
                    "frame {fin}: the server closed the connection (FIN); frame {data}: the client \
                     then sent data; frame {}: the server answered it with RST",
                    self.frame
                ),
                vec![fin, data, self.frame],
            ));
            return server_verdict(Cause::IdleKeepaliveClose, scale(0.9), evidence);
        }
        if let Some((request, response, idle)) = self.idle_after_complete_exchange() {
            evidence.push(Evidence::new(
                format!(
                    "frame {response}: the server answered the client's last request (frame \
                     {request}) and the client acknowledged all of it; frame {}: after {:.1} s of \
                     idle time, with no new request, the server reset the kept-alive connection \
                     instead of closing it with a FIN",
                    self.frame,
                    idle as f64 / 1e9
                ),
                vec![request, response, self.frame],
            ));
            return server_verdict(Cause::IdleKeepaliveClose, scale(0.75), evidence);
        }
        let segment = &self.rst.segment;
        let no_socket = !segment.has(flags::ACK);
        let server_isn_next = sides[server].isn.map(|isn| isn.wrapping_add(1));
        let client_isn_next = sides[client].isn.map(|isn| isn.wrapping_add(1));
        let nothing_read = sides[server].bytes == 0
            && sides[server]
                .acked
                .is_none_or(|a| Some(a) == client_isn_next);
        let prompt = self
            .rst
            .previous
            .filter(|(p, _)| p.side == client)
            .map(|(p, _)| (p.frame, self.rst.entry.time_ns - p.time_ns))
            .filter(|&(_, gap)| gap <= PROMPT_NS);
        if let (Some(done), true, true, Some((trigger, _))) =
            (self.flow.handshake_done, no_socket, nothing_read, prompt)
        {
            if Some(segment.seq) == server_isn_next {
                evidence.push(Evidence::new(
                    format!(
                        "frame {done}: the handshake completed, but the server never acknowledged \
                         or sent any data; frame {}: its stack answered the client's packet (frame \
                         {trigger}) with a bare RST (no ACK flag, sequence right after its SYN-ACK): \
                         no socket was ever accepted",
                        self.frame
                    ),
                    vec![done, trigger, self.frame],
                ));
                return server_verdict(Cause::AcceptQueueOverflow, scale(0.8), evidence);
            }
        }
        let fin_note = if sides[server].fin.is_none() {
            "without a FIN first"
        } else {
            "after its FIN"
        };
        let (silence, _) = self.silences();
        if no_socket {
            evidence.push(Evidence::new(
                format!(
                    "frame {}: the server's stack reset {fin_note} and with no ACK flag: it had \
                     no socket for this connection any more",
                    self.frame
                ),
                vec![self.frame],
            ));
        } else {
            evidence.push(Evidence::new(
                format!(
                    "frame {}: the server reset {fin_note}, mid-exchange, acknowledging up to \
                     {}: its application aborted the connection",
                    self.frame, segment.ack
                ),
                vec![self.frame],
            ));
        }
        if silence.is_some_and(|s| s >= IDLE_NS) && !sure {
            evidence.push(Evidence::new(
                format!(
                    "frame {}: an unprovoked reset after a long silence, and no {} to tell the \
                     server from a middlebox",
                    self.frame,
                    self.field.name()
                ),
                vec![self.frame],
            ));
            return Verdict {
                resetter: Resetter::Unknown,
                cause: Cause::Unknown,
                hop: None,
                confidence: 0.3,
                evidence,
            };
        }
        server_verdict(
            Cause::AppAbort,
            scale(if no_socket { 0.6 } else { 0.8 }),
            evidence,
        )
    }

    /// For a server reset that ends a complete exchange (the client's data acknowledged and
    /// answered, the answer acknowledged, no client FIN) after at least
    /// [`KEEPALIVE_IDLE_NS`] of silence that no client data broke: the request frame, the
    /// answer frame and the idle time.
    fn idle_after_complete_exchange(&self) -> Option<(u64, u64, i64)> {
        let client = &self.rst.sides[self.roles.client];
        let server = &self.rst.sides[self.roles.server()];
        let request = client.last_data?;
        let response = server.last_data?;
        if client.fin.is_some() || response.frame < request.frame {
            return None;
        }
        let covers = |acked: Option<u32>, end: u32| acked.is_some_and(|a| !seq_before(a, end));
        if !covers(server.acked, request.end_seq) || !covers(client.acked, response.end_seq) {
            return None;
        }
        let (previous, _) = self.rst.previous?;
        if previous.side == self.roles.client && previous.len > 0 {
            return None;
        }
        let idle = self.rst.entry.time_ns - previous.time_ns;
        (idle >= KEEPALIVE_IDLE_NS).then_some((request.frame, response.frame, idle))
    }

    /// Adds the in-window note and clamps confidence.
    fn finish(&self, mut verdict: Verdict) -> Verdict {
        let segment = &self.rst.segment;
        if let Some(next) = self.rst.sides[self.sender].next_seq {
            let offset = segment.seq.wrapping_sub(next) as i32;
            let window = u32::from(self.rst.sides[1 - self.sender].window) << 14;
            let text = if offset == 0 {
                format!(
                    "frame {}: its sequence number is exactly the next one expected from that side",
                    self.frame
                )
            } else if offset > 0 && (offset as u32) <= window.max(65_535) {
                format!(
                    "frame {}: its sequence number is {offset} bytes ahead, inside the window",
                    self.frame
                )
            } else {
                verdict.confidence -= 0.1;
                format!(
                    "frame {}: its sequence number is {offset} bytes off the expected one: out of \
                     window, a receiver would ignore it",
                    self.frame
                )
            };
            verdict.evidence.push(Evidence::new(text, vec![self.frame]));
        }
        verdict.evidence.retain(|e| !e.text.is_empty());
        verdict.confidence = (verdict.confidence * 100.0).round().clamp(0.0, 100.0) / 100.0;
        verdict
    }
}
