//! pcapng details that pcap-parser 0.17 gets wrong or leaves out: the obsolete Packet Block
//! (type 2), power-of-two timestamp resolutions (`if_tsresol` with the high bit set), absurd
//! resolutions, and `if_tsoffset` in big-endian sections. Captures are built in code.

mod support;

use std::io::Cursor;

use holdfast_doctor::pcap::{self, Cause, Filter, Outcome, PcapError, ResetReport, Resetter};
use support::synth::{self, Conversation, Link, Ng, Record, ACK, PSH};

/// Client request, part of an answer, then the server's abort (RST with ACK).
fn app_abort() -> Conversation {
    let mut c = Conversation::new("192.0.2.10:40000", "198.51.100.7:443");
    c.handshake()
        .send(true, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")
        .wait_ms(5)
        .send(false, ACK, b"")
        .send(false, PSH | ACK, b"HTTP/1.1 200 OK\r\n")
        .wait_ms(50);
    let ttl = c.server_ttl;
    c.server_rst(ttl, true, 7);
    c
}

/// A complete exchange, 1.5 s of idle time, then the server's reset: only the time between
/// packets tells this idle keep-alive close from an application abort.
fn idle_keepalive_close() -> Conversation {
    let mut c = Conversation::new("192.0.2.10:40001", "198.51.100.7:80");
    c.handshake()
        .send(true, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")
        .send(false, ACK, b"")
        .send(false, PSH | ACK, b"HTTP/1.1 204 No Content\r\n\r\n")
        .send(true, ACK, b"")
        .wait_ms(1500);
    let ttl = c.server_ttl;
    c.server_rst(ttl, true, 9);
    c
}

fn run(bytes: Vec<u8>) -> (Vec<ResetReport>, Outcome) {
    let mut reports = Vec::new();
    let outcome = pcap::analyze(Cursor::new(bytes), &Filter::default(), |r| reports.push(r))
        .expect("readable");
    (reports, outcome)
}

/// Seconds from the conversation's first packet to its last.
fn span(c: &Conversation) -> f64 {
    (c.packets.last().unwrap().0 - c.packets[0].0) as f64 / 1e9
}

fn assert_one(
    name: &str,
    reports: &[ResetReport],
    cause: Cause,
    frame: u64,
    time: f64,
    tolerance: f64,
) {
    let shown: Vec<String> = reports.iter().map(|r| r.human()).collect();
    assert_eq!(reports.len(), 1, "{name}: {}", shown.join("\n"));
    let report = &reports[0];
    assert_eq!(
        (report.verdict.resetter, report.verdict.cause),
        (Resetter::Server, cause),
        "{name}: {}",
        shown[0]
    );
    assert_eq!(report.frame, frame, "{name}: {}", shown[0]);
    assert!(
        (report.time - time).abs() <= tolerance,
        "{name}: time {} instead of {time}:\n{}",
        report.time,
        shown[0]
    );
}

#[test]
fn obsolete_packet_blocks_are_read_like_enhanced_ones() {
    let conv = app_abort();
    let eth = conv.records(Link::Ethernet);
    let raw = conv.records(Link::Raw);
    for big_endian in [false, true] {
        // Two interfaces, so the 16-bit interface ID matters; Packet Blocks (with a drops
        // count) alternate with Enhanced Packet Blocks.
        let mut ng = Ng::new(big_endian);
        ng.section()
            .interface(Link::Ethernet, 6, None)
            .interface(Link::Raw, 9, None);
        let mut wire_bytes = 0u64;
        for (i, (eth, raw)) in eth.iter().zip(&raw).enumerate() {
            let written = match i % 3 {
                0 => {
                    ng.packet_block(1, 3, synth::ticks(raw.time_ns, 9), raw);
                    raw
                }
                1 => {
                    ng.packet_block(0, 0xffff, synth::ticks(eth.time_ns, 6), eth);
                    eth
                }
                _ => {
                    ng.enhanced_packet(0, synth::ticks(eth.time_ns, 6), eth);
                    eth
                }
            };
            wire_bytes += u64::from(written.orig_len);
        }
        let (reports, outcome) = run(ng.bytes);
        let name = if big_endian {
            "big-endian"
        } else {
            "little-endian"
        };
        assert!(outcome.damage.is_none(), "{name}: {:?}", outcome.damage);
        assert!(
            outcome.summary.warnings.is_empty(),
            "{name}: {:?}",
            outcome.summary.warnings
        );
        let frames = conv.packets.len() as u64;
        assert_eq!(outcome.summary.packets, frames, "{name}");
        assert_eq!(outcome.summary.tcp_packets, frames, "{name}");
        assert_eq!(outcome.summary.bytes, wire_bytes, "{name}: wire lengths");
        assert_one(name, &reports, Cause::AppAbort, frames, span(&conv), 2e-6);
    }
}

#[test]
fn a_damaged_packet_block_is_skipped_with_a_warning() {
    let conv = app_abort();
    let eth = conv.records(Link::Ethernet);
    let mut ng = Ng::new(false);
    ng.section().interface(Link::Ethernet, 6, None);
    let mut damaged_at = 0;
    let mut undeclared_at = 0;
    for (i, record) in eth.iter().enumerate() {
        let ticks = synth::ticks(record.time_ns, 6);
        if i == 3 {
            // Claims more captured bytes than the block holds; both block lengths agree.
            damaged_at = ng.bytes.len();
            ng.packet_block(0, 0, ticks, record);
            ng.bytes[damaged_at + 20..damaged_at + 24].copy_from_slice(&60_000u32.to_le_bytes());
        }
        if i == 4 {
            undeclared_at = ng.bytes.len();
            ng.packet_block(7, 0, ticks, record);
        }
        ng.packet_block(0, 0, ticks, record);
    }
    // A Packet Block too short for its header, at the end.
    let short_at = ng.bytes.len();
    ng.block(2, &[0; 8]);
    let (reports, outcome) = run(ng.bytes);
    assert!(outcome.damage.is_none(), "{:?}", outcome.damage);
    let warnings = &outcome.summary.warnings;
    let has = |text: &str| warnings.iter().any(|w| w.contains(text));
    assert!(
        has(&format!(
            "byte offset {damaged_at}: damaged block skipped (a Packet Block claims 60000 \
             captured bytes"
        )),
        "{warnings:?}"
    );
    assert!(
        has(&format!(
            "byte offset {undeclared_at}: packet for undeclared interface 7 skipped"
        )),
        "{warnings:?}"
    );
    assert!(
        has(&format!(
            "byte offset {short_at}: damaged block skipped (a Packet Block of 20 bytes is \
             shorter than its 32-byte header)"
        )),
        "{warnings:?}"
    );
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert_eq!(outcome.summary.packets, eth.len() as u64);
    assert_one(
        "damaged",
        &reports,
        Cause::AppAbort,
        eth.len() as u64,
        span(&conv),
        2e-6,
    );
}

#[test]
fn a_packet_block_whose_length_fields_disagree_is_damage() {
    let conv = app_abort();
    let eth = conv.records(Link::Ethernet);
    let mut ng = Ng::new(true);
    ng.section().interface(Link::Ethernet, 6, None);
    ng.packet_block(0, 0, synth::ticks(eth[0].time_ns, 6), &eth[0]);
    let bad = ng.bytes.len();
    ng.packet_block(0, 0, synth::ticks(eth[1].time_ns, 6), &eth[1]);
    let end = ng.bytes.len();
    ng.bytes[end - 4..].copy_from_slice(&4000u32.to_be_bytes());
    let (_, outcome) = run(ng.bytes);
    match outcome.damage {
        Some(PcapError::Damaged { offset, ref detail }) => {
            assert_eq!(offset, bad as u64, "{detail}");
            assert!(detail.contains("length fields disagree"), "{detail}");
        }
        other => panic!("expected damage, got {other:?}"),
    }
    assert_eq!(outcome.summary.packets, 1);
}

/// Every byte of a Packet Block capture mutated in turn, and every cut: never a panic.
#[test]
fn mutated_packet_blocks_never_panic() {
    let conv = app_abort();
    let eth = conv.records(Link::Ethernet);
    for big_endian in [false, true] {
        let mut ng = Ng::new(big_endian);
        ng.section().interface(Link::Ethernet, 0x8A, Some(-5));
        for record in eth.iter().take(3) {
            ng.packet_block(0, 1, synth::ticks(record.time_ns, 0x8A), record);
        }
        let original = ng.bytes;
        for at in 0..original.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut bytes = original.clone();
                bytes[at] = value;
                let _ = pcap::analyze(Cursor::new(bytes), &Filter::default(), |_| {});
            }
        }
        for cut in 0..original.len() {
            let _ = pcap::analyze(
                Cursor::new(original[..cut].to_vec()),
                &Filter::default(),
                |_| {},
            );
        }
    }
}

/// Writes `conv` on one interface with resolution `tsresol` and, when given, an offset in
/// seconds (subtracted from the packets' ticks).
fn at_resolution(conv: &Conversation, tsresol: u8, offset: Option<i64>, big: bool) -> Vec<u8> {
    let mut ng = Ng::new(big);
    ng.section().interface(Link::Raw, tsresol, offset);
    for record in conv.records(Link::Raw) {
        let time_ns = record.time_ns - offset.unwrap_or(0) * 1_000_000_000;
        ng.enhanced_packet(0, synth::ticks(time_ns, tsresol), &record);
    }
    ng.bytes
}

#[test]
fn power_of_two_and_power_of_ten_resolutions_give_the_same_times() {
    let abort = app_abort();
    let idle = idle_keepalive_close();
    // (if_tsresol, if_tsoffset): µs, ns, ms, 2^-10 s (0x8A), 2^-20 s, 2^-30 s, and the finest
    // a 64-bit count allows (10^-19 and 2^-63 s), which need an offset to reach today.
    let resolutions: [(u8, Option<i64>); 9] = [
        (6, None),
        (9, None),
        (3, None),
        (0x8A, None),
        (0x94, None),
        (0x9E, None),
        (0x80 | 40, Some(1_699_999_990)),
        (19, Some(1_700_000_000)),
        (0x80 | 63, Some(1_700_000_000)),
    ];
    for (tsresol, offset) in resolutions {
        // Rounding: at most one tick per packet time.
        let tick = match tsresol {
            r if r & 0x80 != 0 => 1.0 / 2f64.powi(i32::from(r & 0x7f)),
            r => 1.0 / 10f64.powi(i32::from(r)),
        };
        let tolerance = tick + 1e-9;
        for (conv, cause) in [
            (&abort, Cause::AppAbort),
            (&idle, Cause::IdleKeepaliveClose),
        ] {
            let (reports, outcome) = run(at_resolution(conv, tsresol, offset, false));
            assert!(
                outcome.damage.is_none() && outcome.summary.warnings.is_empty(),
                "if_tsresol {tsresol:#04x}: {:?} {:?}",
                outcome.damage,
                outcome.summary.warnings
            );
            let frames = conv.packets.len() as u64;
            let name = format!("if_tsresol {tsresol:#04x}");
            assert_one(&name, &reports, cause, frames, span(conv), tolerance);
            // The timeline's times too (seconds since the connection's first packet).
            let last = reports[0].timeline.last().unwrap();
            assert!(
                (last.time - span(conv)).abs() <= tolerance,
                "if_tsresol {tsresol:#04x}: {}",
                reports[0].human()
            );
        }
    }
}

#[test]
fn if_tsoffset_is_read_in_the_sections_byte_order() {
    let conv = idle_keepalive_close();
    for (tsresol, offset) in [(6, 1_700_000_000), (9, -1), (0x8A, 1_699_999_000)] {
        for big in [false, true] {
            let (reports, outcome) = run(at_resolution(&conv, tsresol, Some(offset), big));
            assert!(outcome.damage.is_none(), "{:?}", outcome.damage);
            let frames = conv.packets.len() as u64;
            let name = format!("if_tsresol {tsresol:#04x}, if_tsoffset {offset}, big {big}");
            assert_one(
                &name,
                &reports,
                Cause::IdleKeepaliveClose,
                frames,
                span(&conv),
                1e-3,
            );
        }
    }
    // Two interfaces with different offsets: their packets interleave in one timeline.
    let records = conv.records(Link::Raw);
    let mut ng = Ng::new(true);
    ng.section()
        .interface(Link::Raw, 6, None)
        .interface(Link::Raw, 0x8A, Some(1_600_000_000));
    for (i, record) in records.iter().enumerate() {
        if i % 2 == 0 {
            ng.enhanced_packet(0, synth::ticks(record.time_ns, 6), record);
        } else {
            let relative = record.time_ns - 1_600_000_000_000_000_000;
            ng.enhanced_packet(1, synth::ticks(relative, 0x8A), record);
        }
    }
    let (reports, outcome) = run(ng.bytes);
    assert!(outcome.damage.is_none(), "{:?}", outcome.damage);
    assert_one(
        "two interfaces",
        &reports,
        Cause::IdleKeepaliveClose,
        records.len() as u64,
        span(&conv),
        1e-3,
    );
}

#[test]
fn an_absurd_resolution_is_damage_that_says_so() {
    let conv = app_abort();
    let records: Vec<Record> = conv.records(Link::Raw);
    for (tsresol, words) in [
        (20u8, "10^-20 s"),
        (0x7f, "10^-127 s"),
        (200, "2^-72 s"),
        (0x80 | 64, "2^-64 s"),
    ] {
        // Interface 0 is fine, interface 1 absurd, interface 2 absurd but never used.
        let mut ng = Ng::new(tsresol == 200);
        ng.section()
            .interface(Link::Raw, 6, None)
            .interface(Link::Raw, tsresol, None)
            .interface(Link::Raw, tsresol, None);
        for record in &records[..3] {
            ng.enhanced_packet(0, synth::ticks(record.time_ns, 6), record);
        }
        let bad = ng.bytes.len();
        ng.packet_block(1, 0, 12345, &records[3]);
        ng.enhanced_packet(0, synth::ticks(records[4].time_ns, 6), &records[4]);
        let (_, outcome) = run(ng.bytes);
        match outcome.damage {
            Some(PcapError::Damaged { offset, ref detail }) => {
                assert_eq!(offset, bad as u64, "{detail}");
                assert!(
                    detail.contains(&format!(
                        "a packet on interface 1, whose description declares a timestamp \
                         resolution of {words} (if_tsresol {tsresol:#04x})"
                    )),
                    "{detail}"
                );
                assert!(detail.contains("cannot be read"), "{detail}");
            }
            other => panic!("if_tsresol {tsresol:#04x}: expected damage, got {other:?}"),
        }
        assert_eq!(outcome.summary.packets, 3, "frames before it are analysed");
        // The same through an Enhanced Packet Block.
        let mut ng = Ng::new(false);
        ng.section().interface(Link::Raw, tsresol, None);
        ng.enhanced_packet(0, 1, &records[0]);
        let (_, outcome) = run(ng.bytes);
        assert!(
            matches!(outcome.damage, Some(PcapError::Damaged { ref detail, .. })
                if detail.contains("if_tsresol")),
            "{:?}",
            outcome.damage
        );
    }
}
