//! SYN-heavy captures (scans, floods: every SYN a new connection): the connection table's
//! cost per half-open connection and at its cap. The captures are generated on the fly, so
//! nothing large is written; the assertions count work, not time.

use std::io::Read;

use holdfast_doctor::pcap::{self, Filter, Limits};

/// A classic pcap (Ethernet) of `count` lone SYNs from distinct 4-tuples to 10.0.0.2:80,
/// `gap_us` microseconds apart, produced lazily. With `copies` above 1, each 4-tuple's SYN
/// is sent that many times in a row (retransmissions).
struct SynFlood {
    count: u64,
    next: u64,
    gap_us: u64,
    copies: u64,
    pending: Vec<u8>,
    at: usize,
}

impl SynFlood {
    fn new(count: u64, gap_us: u64) -> Self {
        let mut header = Vec::new();
        header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&[0; 8]);
        header.extend_from_slice(&65535u32.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes());
        Self {
            count,
            next: 0,
            gap_us,
            copies: 1,
            pending: header,
            at: 0,
        }
    }

    /// Each SYN `copies` times.
    fn repeated(mut self, copies: u64) -> Self {
        self.copies = copies;
        self
    }

    /// Frame `n` (from 0): the SYN of connection `n / copies`.
    fn record(&self, n: u64) -> Vec<u8> {
        let i = n / self.copies;
        let sport = 1024 + (i % 60_000) as u16;
        let host = i / 60_000;
        let src = [10, 1 + (host / 250 % 250) as u8, (host % 250) as u8, 1];
        let mut frame = vec![0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 6, 0x08, 0x00];
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&80u16.to_be_bytes());
        tcp.extend_from_slice(&(i as u32).to_be_bytes());
        tcp.extend_from_slice(&0u32.to_be_bytes());
        tcp.extend_from_slice(&[5 << 4, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        frame.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
        frame.extend_from_slice(&src);
        frame.extend_from_slice(&[10, 0, 0, 2]);
        frame.extend_from_slice(&tcp);
        let micros = 1_000_000_000 + n * self.gap_us;
        let mut record = Vec::new();
        record.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        record.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        record.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        record.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        record.extend_from_slice(&frame);
        record
    }
}

impl Read for SynFlood {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.pending.len() {
            if self.next == self.count * self.copies {
                return Ok(0);
            }
            self.pending = self.record(self.next);
            self.at = 0;
            self.next += 1;
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// At the cap, packets of new connections are counted as untracked at a constant cost: the
/// table is not
/// swept once per packet (the old code examined the whole table for every SYN past the cap,
/// which made 1.2M SYNs run for minutes).
#[test]
fn connections_past_the_cap_cost_no_sweep_each() {
    let limits = Limits { max_flows: 10_000 };
    // 50,000 SYNs 10 µs apart: 0.5 s of capture time.
    let outcome = pcap::analyze_with(
        SynFlood::new(50_000, 10),
        &Filter::default(),
        limits,
        |_| {},
    )
    .expect("a readable capture");
    let summary = &outcome.summary;
    assert_eq!(summary.packets, 50_000);
    assert_eq!(summary.connections, 10_000);
    assert_eq!(summary.untracked_packets, 40_000);
    // 40,000 distinct connections: past 1024 an estimate from a fixed-size sketch.
    let estimate = summary.untracked_connections;
    assert!((39_000..=41_000).contains(&estimate), "{estimate}");
    assert_eq!(outcome.work.peak_flows, 10_000);
    // One sweep per second of capture time at most, each over at most the cap.
    assert!(outcome.work.sweeps <= 2, "{:?}", outcome.work);
    assert!(
        outcome.work.flows_examined <= 2 * 10_000,
        "{:?}",
        outcome.work
    );
}

/// Half-open connections are forgotten after 75 s of silence, so a long, slow scan does not
/// fill the table.
#[test]
fn stale_half_open_connections_are_evicted() {
    // 200,000 SYNs 1 ms apart: 200 s of capture time.
    let outcome = pcap::analyze_with(
        SynFlood::new(200_000, 1_000),
        &Filter::default(),
        Limits::default(),
        |_| {},
    )
    .expect("a readable capture");
    assert_eq!(outcome.summary.connections, 200_000);
    assert_eq!(outcome.summary.untracked_connections, 0);
    assert_eq!(outcome.summary.untracked_packets, 0);
    assert!(!outcome.summary.human().contains("not analysed"));
    assert!(
        outcome.work.peak_flows <= 77_000,
        "at most 75 s of SYNs are tracked at once: {:?}",
        outcome.work
    );
    assert!(
        outcome.work.half_open_evicted >= 120_000,
        "{:?}",
        outcome.work
    );
    // The sweeps stay linear: about one per second of capture time.
    assert!(outcome.work.sweeps <= 202, "{:?}", outcome.work);
}

/// Past the cap, packets and connections are counted apart: a retransmitted SYN is a second
/// untracked packet of the same untracked connection. Few connections are counted exactly,
/// and the text and JSON say the same.
#[test]
fn untracked_packets_and_connections_are_counted_apart() {
    let limits = Limits { max_flows: 100 };
    // 600 connections, each SYN sent 3 times: 500 connections (1500 packets) past the cap.
    let outcome = pcap::analyze_with(
        SynFlood::new(600, 10).repeated(3),
        &Filter::default(),
        limits,
        |_| {},
    )
    .expect("a readable capture");
    let summary = &outcome.summary;
    assert_eq!(summary.packets, 1_800);
    assert_eq!(summary.connections, 100);
    assert_eq!(summary.untracked_packets, 1_500);
    assert_eq!(summary.untracked_connections, 500);
    let text = summary.human();
    assert!(
        text.contains("500 connections (1500 packets) not analysed: the connection table was full"),
        "{text}"
    );
    let json = serde_json::to_value(summary).unwrap();
    assert_eq!(json["untracked_packets"], 1_500, "{json}");
    assert_eq!(json["untracked_connections"], 500, "{json}");

    // One connection past the cap, in words.
    let outcome = pcap::analyze_with(
        SynFlood::new(101, 10).repeated(2),
        &Filter::default(),
        limits,
        |_| {},
    )
    .expect("a readable capture");
    let text = outcome.summary.human();
    assert!(
        text.contains("  1 connection (2 packets) not analysed"),
        "{text}"
    );
}

/// A flood far past the cap: the connection count is an estimate (said as such), not the
/// packet count, and it costs fixed memory (no set of every 4-tuple).
#[test]
fn a_flood_past_the_cap_estimates_its_connections() {
    let limits = Limits { max_flows: 1_000 };
    // 100,000 connections, each SYN sent twice: 99,000 connections past the cap.
    let outcome = pcap::analyze_with(
        SynFlood::new(100_000, 1).repeated(2),
        &Filter::default(),
        limits,
        |_| {},
    )
    .expect("a readable capture");
    let summary = &outcome.summary;
    assert_eq!(summary.untracked_packets, 198_000);
    let estimate = summary.untracked_connections;
    assert!((97_000..=101_000).contains(&estimate), "{estimate}");
    let text = summary.human();
    assert!(
        text.contains(&format!(
            "about {estimate} connections (198000 packets) not analysed"
        )),
        "{text}"
    );
}
