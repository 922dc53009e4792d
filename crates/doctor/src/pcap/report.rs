//! What the analysis produces: one [`ResetReport`] per connection that ended in a reset, and a
//! [`Summary`]; plus their human and JSON renderings.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::Serialize;

use super::decode::flags;
use super::distinct::EXACT_UP_TO;
use super::flow::{Timeline, TimelineEntry};
use super::verdict::{Cause, Resetter, Verdict};

/// One connection that ended in a reset.
#[derive(Debug, Clone)]
pub struct ResetReport {
    /// The side that opened the connection.
    pub client: SocketAddr,
    /// The side that accepted it.
    pub server: SocketAddr,
    /// True when roles were inferred from ports (no SYN captured).
    pub roles_inferred: bool,
    /// Frame number of the reset that ended the connection.
    pub frame: u64,
    /// Its time in seconds since the first packet of the capture.
    pub time: f64,
    /// The attribution.
    pub verdict: Verdict,
    /// The connection's compact timeline.
    pub timeline: Vec<TimelineRow>,
}

/// One timeline row, ready to print.
#[derive(Debug, Clone)]
pub struct TimelineRow {
    /// Frame number, or None for an elision row.
    pub frame: Option<u64>,
    /// Seconds since the connection's first packet.
    pub time: f64,
    /// True for client-to-server.
    pub from_client: bool,
    /// The rendered row (flags, relative seq/ack, length, `ttl=` for IPv4 or `hlim=` (hop
    /// limit) for IPv6, IPv4 ID).
    pub text: String,
}

impl ResetReport {
    /// Builds the timeline rows of a connection, with sequence numbers relative to each side's
    /// first one. `ipv6` names the IP header field: an IPv6 packet has a hop limit (`hlim=`,
    /// as tcpdump prints it), an IPv4 packet a TTL (`ttl=`).
    pub fn rows(
        timeline: &Timeline,
        client: usize,
        bases: [Option<u32>; 2],
        start_ns: i64,
        ipv6: bool,
    ) -> Vec<TimelineRow> {
        let mut rows = Vec::new();
        let hops = if ipv6 { "hlim" } else { "ttl" };
        let row = |entry: &TimelineEntry| {
            let peer = 1 - entry.side;
            let seq = bases[entry.side].map_or(entry.seq, |b| entry.seq.wrapping_sub(b));
            let mut text = format!("{:<9} seq={seq}", flag_names(entry.flags));
            if entry.flags & flags::ACK != 0 {
                let ack = bases[peer].map_or(entry.ack, |b| entry.ack.wrapping_sub(b));
                let _ = write!(text, " ack={ack}");
            }
            if entry.len > 0 {
                let _ = write!(text, " len={}", entry.len);
            }
            let _ = write!(text, " {hops}={}", entry.ttl);
            if let Some(id) = entry.ip_id {
                let _ = write!(text, " id={id}");
            }
            TimelineRow {
                frame: Some(entry.frame),
                time: (entry.time_ns - start_ns) as f64 / 1e9,
                from_client: entry.side == client,
                text,
            }
        };
        rows.extend(timeline.head.iter().map(row));
        if timeline.skipped > 0 {
            rows.push(TimelineRow {
                frame: None,
                time: 0.0,
                from_client: true,
                text: format!("... {} packets ...", timeline.skipped),
            });
        }
        rows.extend(timeline.tail.iter().map(row));
        rows
    }

    /// The human report for this connection.
    pub fn human(&self) -> String {
        let v = &self.verdict;
        let mut out = String::new();
        let hop = v.hop.map(|h| format!(" at hop {h}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "RST {} -> {}  frame {}  t={:.6}s",
            self.client, self.server, self.frame, self.time
        );
        let _ = writeln!(
            out,
            "  verdict: {}{hop} / {}: {} (confidence {:.2})",
            v.resetter,
            v.cause,
            v.cause.meaning(),
            v.confidence
        );
        let _ = writeln!(
            out,
            "  timeline ({} client, {} server):",
            self.client, self.server
        );
        for row in &self.timeline {
            match row.frame {
                Some(frame) => {
                    let arrow = if row.from_client { "C->S" } else { "S->C" };
                    let _ = writeln!(
                        out,
                        "    #{frame:<7} {:>10.6}s {arrow} {}",
                        row.time, row.text
                    );
                }
                None => {
                    let _ = writeln!(out, "    {}", row.text);
                }
            }
        }
        let _ = writeln!(out, "  evidence:");
        for evidence in &v.evidence {
            let _ = writeln!(out, "    - {}", evidence.text);
        }
        out
    }

    /// The stable JSON form (see `docs/PCAP.md`).
    pub fn json(&self) -> JsonReset<'_> {
        JsonReset {
            client: self.client.to_string(),
            server: self.server.to_string(),
            frame: self.frame,
            time: (self.time * 1e6).round() / 1e6,
            resetter: self.verdict.resetter,
            cause: self.verdict.cause,
            hop: self.verdict.hop,
            confidence: self.verdict.confidence,
            evidence: self
                .verdict
                .evidence
                .iter()
                .map(|e| e.text.as_str())
                .collect(),
            roles_inferred: self.roles_inferred,
        }
    }
}

/// The JSON object of one reset (stable key names).
#[derive(Debug, Serialize)]
pub struct JsonReset<'a> {
    /// "ip:port" of the client.
    pub client: String,
    /// "ip:port" of the server.
    pub server: String,
    /// Frame number of the reset.
    pub frame: u64,
    /// Seconds since the first packet of the capture.
    pub time: f64,
    /// Who sent it.
    pub resetter: Resetter,
    /// Why.
    pub cause: Cause,
    /// Middlebox hop distance, or null.
    pub hop: Option<u8>,
    /// 0 to 1.
    pub confidence: f64,
    /// Evidence sentences.
    pub evidence: Vec<&'a str>,
    /// True when the roles were inferred from ports.
    pub roles_inferred: bool,
}

/// Totals over the whole capture.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Frames read.
    pub packets: u64,
    /// Bytes on the wire (original lengths).
    pub bytes: u64,
    /// TCP segments analysed (after filters).
    pub tcp_packets: u64,
    /// IP packets that were not TCP, or TCP filtered out.
    pub skipped_packets: u64,
    /// Frames that were not IP.
    pub non_ip_packets: u64,
    /// Frames cut off or malformed before the TCP header ended.
    pub malformed_packets: u64,
    /// TCP connections tracked (those past the connection cap are counted in
    /// `untracked_connections` instead).
    pub connections: u64,
    /// Connections that ended in a reset.
    pub reset_connections: u64,
    /// Resets by resetter.
    pub by_resetter: BTreeMap<Resetter, u64>,
    /// Resets by cause.
    pub by_cause: BTreeMap<Cause, u64>,
    /// Distinct connections (4-tuples) with packets that were not analysed because the
    /// connection table was full: exact up to 1024, an estimate (within about 2%) above.
    pub untracked_connections: u64,
    /// Packets not analysed because the connection table was full (exact).
    pub untracked_packets: u64,
    /// Non-fatal reading problems.
    pub warnings: Vec<String>,
    /// Wall-clock seconds the analysis took.
    pub seconds: f64,
}

impl Summary {
    /// Counts one report.
    pub fn count(&mut self, report: &ResetReport) {
        self.reset_connections += 1;
        *self.by_resetter.entry(report.verdict.resetter).or_default() += 1;
        *self.by_cause.entry(report.verdict.cause).or_default() += 1;
    }

    /// The human summary block.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "summary:");
        let _ = writeln!(
            out,
            "  {} packets ({} bytes), {} TCP, {} other IP or filtered, {} non-IP, {} malformed",
            self.packets,
            self.bytes,
            self.tcp_packets,
            self.skipped_packets,
            self.non_ip_packets,
            self.malformed_packets
        );
        let _ = writeln!(
            out,
            "  {} connections, {} ended in a reset",
            self.connections, self.reset_connections
        );
        if self.reset_connections > 0 {
            let by = |items: Vec<(String, u64)>| {
                items
                    .into_iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let resetters = self
                .by_resetter
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect();
            let causes = self
                .by_cause
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect();
            let _ = writeln!(out, "  resets by resetter: {}", by(resetters));
            let _ = writeln!(out, "  resets by cause: {}", by(causes));
        }
        if self.untracked_packets > 0 {
            let about = if self.untracked_connections > EXACT_UP_TO {
                "about "
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {about}{} ({}) not analysed: the connection table was full (too many \
                 connections open at once)",
                counted(self.untracked_connections, "connection"),
                counted(self.untracked_packets, "packet"),
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
        let _ = writeln!(out, "  analysed in {:.3} s", self.seconds);
        out
    }
}

/// "1 packet", "2 packets".
fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// "SYN", "SYN,ACK", "PSH,ACK", ...
fn flag_names(bits: u8) -> String {
    let names = [
        (flags::SYN, "SYN"),
        (flags::FIN, "FIN"),
        (flags::RST, "RST"),
        (flags::PSH, "PSH"),
        (flags::ACK, "ACK"),
    ];
    let list: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}
