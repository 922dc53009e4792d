//! Synthetic captures built in code: every container format and link type, truncation,
//! damage, filters, and attribution edge cases.

mod support;

use std::io::Cursor;

use holdfast_doctor::pcap::{self, Cause, Filter, PcapError, Resetter};
use support::analyze_reader;
use support::synth::{self, Conversation, Link, Record, Tcp, ACK, FIN, PSH, RST, SYN};

/// Client sends a request, the server sends part of an answer, then aborts (RST with ACK).
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

fn analyze_bytes(bytes: Vec<u8>) -> (Vec<pcap::ResetReport>, pcap::Summary) {
    analyze_reader(Cursor::new(bytes))
}

fn one_verdict(bytes: Vec<u8>) -> pcap::ResetReport {
    let (mut reports, _) = analyze_bytes(bytes);
    assert_eq!(reports.len(), 1, "{:?}", reports);
    reports.remove(0)
}

#[test]
fn every_container_and_link_type_gives_the_same_verdict() {
    let conv = app_abort();
    let mut captures: Vec<(String, Vec<u8>)> = Vec::new();
    for link in [
        Link::Ethernet,
        Link::Vlan,
        Link::Sll,
        Link::Sll2,
        Link::Raw,
        Link::Null,
    ] {
        for (big, nanos) in [(false, false), (true, true), (true, false), (false, true)] {
            captures.push((
                format!("pcap {link:?} big={big} ns={nanos}"),
                synth::pcap(link, &conv.records(link), big, nanos, 65535),
            ));
        }
    }
    // pcapng: two sections; the second has two interfaces with different link types and
    // resolutions, and the packets alternate between them.
    let records_eth = conv.records(Link::Ethernet);
    let records_raw = conv.records(Link::Raw);
    let mut ng = Vec::new();
    synth::ng_section(&mut ng);
    synth::ng_interface(&mut ng, Link::Ethernet, 6);
    synth::ng_packet(&mut ng, 0, 6, &records_eth[0]);
    synth::ng_packet(&mut ng, 0, 6, &records_eth[1]);
    synth::ng_section(&mut ng);
    synth::ng_interface(&mut ng, Link::Sll2, 6);
    synth::ng_interface(&mut ng, Link::Raw, 9);
    for (i, record) in records_raw.iter().enumerate().skip(2) {
        if i % 2 == 0 {
            synth::ng_packet(&mut ng, 1, 9, record);
        } else {
            let sll2 = Record {
                data: Link::Sll2.wrap(&record.data),
                ..record.clone()
            };
            synth::ng_packet(&mut ng, 0, 6, &sll2);
        }
    }
    captures.push(("pcapng".into(), ng.clone()));
    captures.push(("pcapng.gz".into(), synth::gzip(&ng)));
    captures.push((
        "pcap.gz".into(),
        synth::gzip(&synth::pcap(
            Link::Ethernet,
            &records_eth,
            false,
            false,
            65535,
        )),
    ));
    let expected_frame = conv.packets.len() as u64;
    for (name, bytes) in captures {
        let (reports, summary) = analyze_bytes(bytes);
        assert_eq!(reports.len(), 1, "{name}");
        let report = &reports[0];
        assert_eq!(
            (report.verdict.resetter, report.verdict.cause),
            (Resetter::Server, Cause::AppAbort),
            "{name}: {}",
            report.human()
        );
        assert_eq!(report.frame, expected_frame, "{name}");
        assert_eq!(summary.packets, expected_frame, "{name}");
        assert_eq!(summary.tcp_packets, expected_frame, "{name}");
        assert_eq!(report.client.to_string(), "192.0.2.10:40000", "{name}");
        // Same relative time whatever the resolution (0.1 ms steps, 55 ms of waits).
        let expected_time = (conv.packets.last().unwrap().0 - conv.packets[0].0) as f64 / 1e9;
        assert!(
            (report.time - expected_time).abs() < 2e-6,
            "{name}: {}",
            report.time
        );
    }
}

#[test]
fn snaplen_cut_packets_keep_their_wire_lengths() {
    let conv = app_abort();
    let bytes = synth::pcap(
        Link::Ethernet,
        &conv.records(Link::Ethernet),
        false,
        false,
        54,
    );
    let report = one_verdict(bytes);
    assert_eq!(report.verdict.cause, Cause::AppAbort, "{}", report.human());
    assert!(
        report.timeline.iter().any(|r| r.text.contains("len=18")),
        "payload length from the IP header: {}",
        report.human()
    );
}

#[test]
fn a_cut_short_file_warns_and_still_reports() {
    let conv = app_abort();
    let mut bytes = synth::pcap(
        Link::Ethernet,
        &conv.records(Link::Ethernet),
        false,
        false,
        65535,
    );
    let full = bytes.len();
    bytes.truncate(full - 10);
    let mut reports = Vec::new();
    let outcome =
        pcap::analyze(Cursor::new(bytes), &Filter::default(), |r| reports.push(r)).unwrap();
    assert!(outcome.damage.is_none(), "{:?}", outcome.damage);
    assert_eq!(outcome.summary.packets, conv.packets.len() as u64 - 1);
    assert!(
        outcome
            .summary
            .warnings
            .iter()
            .any(|w| w.contains("byte offset")),
        "{:?}",
        outcome.summary.warnings
    );
}

#[test]
fn a_damaged_record_is_reported_with_its_byte_offset() {
    let conv = app_abort();
    let records = conv.records(Link::Ethernet);
    let mut bytes = synth::pcap(Link::Ethernet, &records, false, false, 65535);
    // Corrupt the caplen of the third record to claim 1 GiB.
    let third = 24 + (16 + records[0].data.len()) + (16 + records[1].data.len());
    bytes[third + 8..third + 12].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    let outcome = pcap::analyze(Cursor::new(bytes), &Filter::default(), |_| {}).unwrap();
    match outcome.damage {
        Some(PcapError::Damaged { offset, ref detail }) => {
            assert_eq!(offset, third as u64, "{detail}");
        }
        other => panic!("expected damage, got {other:?}"),
    }
    assert_eq!(
        outcome.summary.packets, 2,
        "frames before the damage are analysed"
    );

    // pcapng: a block whose trailing length disagrees.
    let mut ng = Vec::new();
    synth::ng_section(&mut ng);
    synth::ng_interface(&mut ng, Link::Ethernet, 6);
    let good = ng.len();
    synth::ng_packet(&mut ng, 0, 6, &records[0]);
    let last = ng.len() - 4;
    ng[last..].copy_from_slice(&7u32.to_le_bytes());
    let outcome = pcap::analyze(Cursor::new(ng), &Filter::default(), |_| {}).unwrap();
    match outcome.damage {
        Some(PcapError::Damaged { offset, .. }) => assert_eq!(offset, good as u64),
        other => panic!("expected damage, got {other:?}"),
    }
}

#[test]
fn a_damaged_pcapng_block_is_skipped_and_analysis_goes_on() {
    let conv = app_abort();
    let records = conv.records(Link::Ethernet);
    let mut ng = Vec::new();
    synth::ng_section(&mut ng);
    synth::ng_interface(&mut ng, Link::Ethernet, 6);
    let mut damaged_at = 0;
    for (i, record) in records.iter().enumerate() {
        if i == 4 {
            damaged_at = ng.len();
            synth::ng_packet(&mut ng, 0, 6, record);
            // Claim more captured bytes than the block holds; both block lengths still agree.
            ng[damaged_at + 20..damaged_at + 24].copy_from_slice(&60_000u32.to_le_bytes());
        } else {
            synth::ng_packet(&mut ng, 0, 6, record);
        }
    }
    let mut reports = Vec::new();
    let outcome = pcap::analyze(Cursor::new(ng), &Filter::default(), |r| reports.push(r)).unwrap();
    assert!(outcome.damage.is_none(), "{:?}", outcome.damage);
    assert!(
        outcome
            .summary
            .warnings
            .iter()
            .any(|w| w.contains(&format!("byte offset {damaged_at}"))),
        "{:?}",
        outcome.summary.warnings
    );
    assert_eq!(
        outcome.summary.packets,
        records.len() as u64 - 1,
        "{:?}",
        outcome.summary.warnings
    );
    assert_eq!(
        reports.len(),
        1,
        "the reset after the damaged block is still analysed"
    );
}

#[test]
fn unreadable_inputs_are_errors_not_panics() {
    let empty = pcap::analyze(Cursor::new(Vec::new()), &Filter::default(), |_| {});
    assert!(matches!(empty, Err(PcapError::Empty)), "{empty:?}");
    let text = pcap::analyze(
        Cursor::new(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec()),
        &Filter::default(),
        |_| {},
    );
    assert!(
        matches!(text, Err(PcapError::NotACapture { .. })),
        "{text:?}"
    );
    let short = pcap::analyze(
        Cursor::new(vec![0xd4, 0xc3, 0xb2]),
        &Filter::default(),
        |_| {},
    );
    assert!(short.is_err());
}

#[test]
fn non_tcp_and_unknown_link_types_are_counted_and_skipped() {
    let conv = app_abort();
    let mut records = conv.records(Link::Ethernet);
    records.insert(
        3,
        Record {
            time_ns: records[2].time_ns,
            data: Link::Ethernet.wrap(&synth::udp_v4()),
            orig_len: 42,
        },
    );
    let (reports, summary) =
        analyze_bytes(synth::pcap(Link::Ethernet, &records, false, false, 65535));
    assert_eq!(reports.len(), 1);
    assert_eq!(summary.skipped_packets, 1);
    assert_eq!(
        reports[0].frame,
        records.len() as u64,
        "frame numbers count the UDP packet"
    );
    let mut ng = Vec::new();
    synth::ng_section(&mut ng);
    synth::ng_interface(&mut ng, Link::Ethernet, 6);
    // Rewrite the link type to 147 (user-defined).
    let iface_start = ng.len() - 32;
    ng[iface_start + 8..iface_start + 10].copy_from_slice(&147u16.to_le_bytes());
    synth::ng_packet(&mut ng, 0, 6, &records[0]);
    let (_, summary) = analyze_bytes(ng);
    assert_eq!(summary.non_ip_packets, 1);
}

#[test]
fn without_a_handshake_roles_come_from_ports_and_say_so() {
    let mut c = Conversation::new("192.0.2.10:40000", "198.51.100.7:443");
    c.send(true, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")
        .send(false, PSH | ACK, b"partial");
    let ttl = c.server_ttl;
    c.server_rst(ttl, true, 9);
    // Write the server's packets first so that address order cannot decide the roles.
    c.packets.swap(0, 1);
    let report = one_verdict(synth::pcap(
        Link::Raw,
        &c.records(Link::Raw),
        false,
        false,
        65535,
    ));
    assert!(report.roles_inferred);
    assert_eq!(report.server.to_string(), "198.51.100.7:443");
    assert!(report.verdict.evidence[0].text.contains("roles inferred"));
    assert_eq!(
        report.verdict.resetter,
        Resetter::Server,
        "{}",
        report.human()
    );
}

#[test]
fn syn_answers_are_refused_or_rejected_by_ttl_and_unknown_when_it_fits_neither() {
    let capture = |rst_ttl: Option<u8>, baseline: bool| {
        let mut c = Conversation::new("192.0.2.10:40000", "198.51.100.7:443");
        if baseline {
            // A working connection to the same host on another port, for its TTL.
            let mut ok = Conversation::new("192.0.2.10:39999", "198.51.100.7:80");
            ok.handshake()
                .send(true, FIN | ACK, b"")
                .send(false, FIN | ACK, b"");
            c.packets = ok.packets;
        }
        c.send(true, SYN, b"");
        let tcp = Tcp {
            src: c.server.0,
            dst: c.client.0,
            sport: 443,
            dport: 40000,
            seq: 0,
            ack: c.client_seq,
            flags: RST | ACK,
            ttl: rst_ttl.unwrap_or(61),
            ip_id: 0,
            df: true,
            window: 0,
            payload: vec![],
        };
        c.push(tcp);
        one_verdict(synth::pcap(
            Link::Ethernet,
            &c.records(Link::Ethernet),
            false,
            false,
            65535,
        ))
    };
    let refused = capture(Some(61), true);
    assert_eq!(refused.verdict.cause, Cause::Refused, "{}", refused.human());
    assert!(refused.verdict.confidence >= 0.8);
    let rejected = capture(Some(63), true);
    assert_eq!(
        rejected.verdict.cause,
        Cause::FirewallReject,
        "{}",
        rejected.human()
    );
    assert_eq!(rejected.verdict.hop, Some(2));
    let weird = capture(Some(50), true);
    assert_eq!(weird.verdict.cause, Cause::Unknown, "{}", weird.human());
    assert_eq!(weird.verdict.resetter, Resetter::Unknown);
    let alone = capture(Some(61), false);
    assert_eq!(alone.verdict.cause, Cause::Refused);
    assert!(
        alone.verdict.confidence <= 0.5,
        "no baseline: {}",
        alone.human()
    );
}

#[test]
fn hop_counts_not_raw_ttls_are_compared_across_initial_ttls() {
    // A Windows-like (initial 128) or router-like (initial 255) server behind a Linux
    // firewall (initial 64) one hop away: REJECT of a SYN, with a working connection earlier.
    for (server_ttl, server_hop) in [(127u8, 2u8), (253, 3)] {
        let mut ok = Conversation::new("192.0.2.10:39999", "198.51.100.7:80");
        ok.server_ttl = server_ttl;
        ok.handshake()
            .send(true, FIN | ACK, b"")
            .send(false, FIN | ACK, b"");
        let mut c = Conversation::new("192.0.2.10:40000", "198.51.100.7:443");
        c.server_ttl = server_ttl;
        c.packets = ok.packets;
        c.send(true, SYN, b"");
        let tcp = Tcp {
            src: c.server.0,
            dst: c.client.0,
            sport: 443,
            dport: 40000,
            seq: 0,
            ack: c.client_seq,
            flags: RST | ACK,
            ttl: 64,
            ip_id: 0,
            df: true,
            window: 0,
            payload: vec![],
        };
        c.push(tcp);
        let report = one_verdict(synth::pcap(
            Link::Ethernet,
            &c.records(Link::Ethernet),
            false,
            false,
            65535,
        ));
        let human = report.human();
        assert_eq!(report.verdict.resetter, Resetter::Middlebox, "{human}");
        assert_eq!(report.verdict.cause, Cause::FirewallReject, "{human}");
        assert_eq!(report.verdict.hop, Some(1), "{human}");
        let closer = format!(
            "sent {} {} closer",
            server_hop - 1,
            if server_hop == 2 { "hop" } else { "hops" }
        );
        assert!(
            report
                .verdict
                .evidence
                .iter()
                .any(|e| e.text.contains(&closer)),
            "{human}"
        );
        assert!(!human.contains("farther"), "{human}");
    }

    // A content filter at hop 1 in front of a TTL-128 server: right verdict, and evidence
    // that speaks of hops, not of raw TTL differences.
    let mut c = Conversation::new("192.0.2.10:40002", "198.51.100.7:80");
    c.server_ttl = 127;
    c.handshake()
        .send(true, PSH | ACK, b"GET /blocked HTTP/1.1\r\n\r\n");
    c.server_rst(64, true, 0);
    let report = one_verdict(synth::pcap(
        Link::Ethernet,
        &c.records(Link::Ethernet),
        false,
        false,
        65535,
    ));
    let human = report.human();
    assert_eq!(report.verdict.resetter, Resetter::Middlebox, "{human}");
    assert_eq!(report.verdict.hop, Some(1), "{human}");
    assert!(!human.contains("63 hops"), "{human}");
    assert!(human.contains("sent 1 hop closer"), "{human}");
}

#[test]
fn a_reset_after_more_than_ten_minutes_of_idle_is_still_an_idle_reset() {
    // A complete exchange, a long silence, a new request, then a reset: from a middlebox
    // (foreign TTL) or from the server itself. Past the table's idle eviction (10 minutes)
    // the verdict must stay what it is for a shorter silence.
    let capture = |idle_ms: i64, rst_ttl: Option<u8>| {
        let mut c = Conversation::new("192.0.2.10:40003", "198.51.100.7:80");
        c.handshake()
            .send(true, PSH | ACK, b"GET /1 HTTP/1.1\r\n\r\n")
            .send(false, PSH | ACK, b"HTTP/1.1 200 OK\r\n\r\n")
            .send(true, ACK, b"")
            .wait_ms(idle_ms)
            .send(true, PSH | ACK, b"GET /2 HTTP/1.1\r\n\r\n")
            .wait_ms(1);
        let ttl = rst_ttl.unwrap_or(c.server_ttl);
        c.server_rst(ttl, true, 0);
        one_verdict(synth::pcap(
            Link::Ethernet,
            &c.records(Link::Ethernet),
            false,
            false,
            65535,
        ))
    };
    for rst_ttl in [Some(64), None] {
        let short = capture(400_000, rst_ttl);
        let long = capture(700_000, rst_ttl);
        let long_human = long.human();
        assert!(!long.roles_inferred, "{long_human}");
        assert_eq!(
            (long.verdict.resetter, long.verdict.cause, long.verdict.hop),
            (
                short.verdict.resetter,
                short.verdict.cause,
                short.verdict.hop
            ),
            "{long_human}\n---\n{}",
            short.human()
        );
        assert!(
            rst_ttl.is_none()
                || matches!(
                    long.verdict.cause,
                    Cause::IdleTimeoutMiddlebox | Cause::IdleKeepaliveClose
                ),
            "{long_human}"
        );
    }
}

#[test]
fn times_count_from_the_first_frame_of_the_capture() {
    // A UDP frame at 0 s, the TCP connection from 5 s on.
    let conv = app_abort();
    let mut records = conv.records(Link::Ethernet);
    let first = records[0].time_ns;
    for record in &mut records {
        record.time_ns += 5_000_000_000;
    }
    let rst_offset = records.last().unwrap().time_ns - first;
    records.insert(
        0,
        Record {
            time_ns: first,
            data: Link::Ethernet.wrap(&synth::udp_v4()),
            orig_len: 42,
        },
    );
    let report = one_verdict(synth::pcap(Link::Ethernet, &records, false, false, 65535));
    let expected = rst_offset as f64 / 1e9;
    assert!(
        (report.time - expected).abs() < 1e-6,
        "time {} != {expected}",
        report.time
    );
}

#[test]
fn keepalive_race_accept_overflow_and_idle_middlebox_from_synthetic_packets() {
    // Server FIN, then a client request crossing it, then a bare RST.
    let mut c = Conversation::new("192.0.2.10:40000", "198.51.100.7:80");
    c.handshake()
        .send(true, PSH | ACK, b"GET /1 HTTP/1.1\r\n\r\n")
        .send(false, PSH | ACK, b"HTTP/1.1 200 OK\r\n\r\n")
        .wait_ms(5000)
        .send(false, FIN | ACK, b"")
        .send(true, PSH | ACK, b"GET /2 HTTP/1.1\r\n\r\n");
    let ttl = c.server_ttl;
    c.server_rst(ttl, false, 0);
    let report = one_verdict(synth::pcap(
        Link::Ethernet,
        &c.records(Link::Ethernet),
        false,
        false,
        65535,
    ));
    assert_eq!(
        report.verdict.cause,
        Cause::IdleKeepaliveClose,
        "{}",
        report.human()
    );

    // Handshake, request, immediate bare RST at the server's ISN + 1.
    let mut c = Conversation::new("192.0.2.10:40001", "198.51.100.7:80");
    c.handshake()
        .send(true, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n");
    let ttl = c.server_ttl;
    c.server_rst(ttl, false, 0);
    let report = one_verdict(synth::pcap(
        Link::Ethernet,
        &c.records(Link::Ethernet),
        false,
        false,
        65535,
    ));
    assert_eq!(
        report.verdict.cause,
        Cause::AcceptQueueOverflow,
        "{}",
        report.human()
    );

    // Long silence, then an unprovoked RST from closer than the server.
    let mut c = Conversation::new("192.0.2.10:40002", "198.51.100.7:80");
    c.handshake()
        .send(true, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")
        .send(false, PSH | ACK, b"HTTP/1.1 200 OK\r\n\r\n")
        .send(true, ACK, b"")
        .wait_ms(350_000);
    c.server_rst(64, true, 0);
    let report = one_verdict(synth::pcap(
        Link::Ethernet,
        &c.records(Link::Ethernet),
        false,
        false,
        65535,
    ));
    assert_eq!(
        report.verdict.cause,
        Cause::IdleTimeoutMiddlebox,
        "{}",
        report.human()
    );
    assert_eq!(report.verdict.resetter, Resetter::Middlebox);
    assert_eq!(report.verdict.hop, Some(1));
}

#[test]
fn an_out_of_window_reset_costs_confidence_and_says_so() {
    let mut c = app_abort();
    let last = c.packets.last_mut().unwrap();
    last.1.seq = last.1.seq.wrapping_add(50_000_000);
    let report = one_verdict(synth::pcap(
        Link::Ethernet,
        &c.records(Link::Ethernet),
        false,
        false,
        65535,
    ));
    assert!(
        report
            .verdict
            .evidence
            .iter()
            .any(|e| e.text.contains("out of window")),
        "{}",
        report.human()
    );
    assert!(report.verdict.confidence < 0.8);
}

#[test]
fn a_client_reset_with_a_foreign_ttl_is_a_middlebox() {
    // Captured near the server: the client's packets arrive with TTL 57, a forged client RST
    // with 250.
    let mut c = Conversation::new("192.0.2.10:40000", "198.51.100.7:443");
    c.client_ttl = 57;
    c.server_ttl = 64;
    c.handshake().send(true, PSH | ACK, b"hello");
    c.client_ttl = 250;
    c.send(true, RST | ACK, b"");
    c.client_ttl = 57;
    c.send(true, PSH | ACK, b"more");
    let report = one_verdict(synth::pcap(
        Link::Ethernet,
        &c.records(Link::Ethernet),
        false,
        false,
        65535,
    ));
    assert_eq!(
        report.verdict.resetter,
        Resetter::Middlebox,
        "{}",
        report.human()
    );
    assert_eq!(report.verdict.cause, Cause::Injected);
    let mut honest = Conversation::new("192.0.2.10:40000", "198.51.100.7:443");
    honest.handshake().send(true, RST | ACK, b"");
    let report = one_verdict(synth::pcap(
        Link::Ethernet,
        &honest.records(Link::Ethernet),
        false,
        false,
        65535,
    ));
    assert_eq!(
        (report.verdict.resetter, report.verdict.cause),
        (Resetter::Client, Cause::ClientAbort)
    );
}

#[test]
fn ipv6_hop_limits_are_compared_like_ttls() {
    let mut c = Conversation::new("[2001:db8::10]:40000", "[2001:db8:1::7]:443");
    c.handshake()
        .send(true, PSH | ACK, b"GET /blocked HTTP/1.1\r\n\r\n");
    c.server_rst(64, true, 0);
    let report = one_verdict(synth::pcap(
        Link::Ethernet,
        &c.records(Link::Ethernet),
        false,
        false,
        65535,
    ));
    assert_eq!(
        report.verdict.cause,
        Cause::ContentFilter,
        "{}",
        report.human()
    );
    assert_eq!(report.client.to_string(), "[2001:db8::10]:40000");
}

/// The timeline names the IP field as it is: a hop limit (`hlim=`) for IPv6, a TTL (`ttl=`)
/// for IPv4 (which alone also has an IP ID).
#[test]
fn the_timeline_shows_hop_limits_for_ipv6_and_ttls_for_ipv4() {
    let timeline = |client: &str, server: &str| {
        let mut c = Conversation::new(client, server);
        c.handshake()
            .send(true, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n");
        let ttl = c.server_ttl;
        c.server_rst(ttl, true, 7);
        let report = one_verdict(synth::pcap(
            Link::Ethernet,
            &c.records(Link::Ethernet),
            false,
            false,
            65535,
        ));
        let rows: Vec<String> = report.timeline.iter().map(|r| r.text.clone()).collect();
        assert_eq!(rows.len(), 5, "{}", report.human());
        (rows, report.human())
    };
    let (rows, text) = timeline("[2001:db8::10]:40000", "[2001:db8:1::7]:443");
    assert!(rows[0].ends_with(" hlim=64"), "{text}");
    assert!(rows[1].ends_with(" hlim=61"), "{text}");
    assert!(rows.iter().all(|r| r.contains(" hlim=")), "{text}");
    assert!(!text.contains("ttl="), "{text}");
    assert!(text.contains("C->S SYN       seq=0 hlim=64\n"), "{text}");
    let (rows, text) = timeline("192.0.2.10:40000", "198.51.100.7:443");
    assert!(rows[0].ends_with(" ttl=64 id=101"), "{text}");
    assert!(rows.iter().all(|r| r.contains(" ttl=")), "{text}");
    assert!(!text.contains("hlim="), "{text}");
}

fn three_connections() -> Vec<u8> {
    let mut all = Vec::new();
    for (client, server) in [
        ("192.0.2.10:40000", "198.51.100.7:443"),
        ("192.0.2.11:40001", "198.51.100.7:80"),
        ("192.0.2.10:40002", "198.51.100.8:443"),
    ] {
        let mut c = Conversation::new(client, server);
        c.handshake().send(true, PSH | ACK, b"x");
        let ttl = c.server_ttl;
        c.server_rst(ttl, true, 1);
        all.extend(c.records(Link::Ethernet));
    }
    synth::pcap(Link::Ethernet, &all, false, false, 65535)
}

#[test]
fn host_port_and_flow_filters_select_connections() {
    let count = |filter: Filter| {
        let mut n = 0;
        pcap::analyze(Cursor::new(three_connections()), &filter, |_| n += 1).unwrap();
        n
    };
    assert_eq!(count(Filter::default()), 3);
    assert_eq!(
        count(Filter::parse(Some("192.0.2.10"), None, None).unwrap()),
        2
    );
    assert_eq!(count(Filter::parse(None, Some(443), None).unwrap()), 2);
    assert_eq!(
        count(Filter::parse(Some("198.51.100.7"), Some(80), None).unwrap()),
        1
    );
    assert_eq!(
        count(Filter::parse(None, None, Some("198.51.100.8:443,192.0.2.10:40002")).unwrap()),
        1
    );
    assert!(matches!(
        Filter::parse(None, None, Some("nonsense")),
        Err(PcapError::Filter { key: "--flow", .. })
    ));
    assert!(matches!(
        Filter::parse(Some("not-an-ip"), None, None),
        Err(PcapError::Filter { key: "--host", .. })
    ));
}

#[test]
fn a_new_syn_on_a_reset_four_tuple_is_a_new_connection() {
    let mut c = app_abort();
    c.client_seq = 900_000;
    c.server_seq = 700_000;
    c.wait_ms(100).handshake().send(true, PSH | ACK, b"again");
    let ttl = c.server_ttl;
    c.server_rst(ttl, true, 3);
    let (reports, summary) = analyze_bytes(synth::pcap(
        Link::Ethernet,
        &c.records(Link::Ethernet),
        false,
        false,
        65535,
    ));
    assert_eq!(summary.connections, 2);
    assert_eq!(reports.len(), 2);
}

#[test]
fn many_short_connections_over_a_long_capture_are_all_reported_in_order() {
    // 3000 connections over 50 minutes of capture time: the tracker evicts as it goes.
    let mut records = Vec::new();
    for i in 0..3000u32 {
        let client = format!("10.1.{}.{}:{}", i / 250, i % 250 + 1, 20000 + i % 1000);
        let mut c = Conversation::new(&client, "10.9.9.9:443");
        c.now_ns += i64::from(i) * 1_000_000_000;
        c.handshake().send(true, PSH | ACK, b"x");
        if i % 10 == 0 {
            let ttl = c.server_ttl;
            c.server_rst(ttl, true, 1);
        } else {
            c.send(true, FIN | ACK, b"")
                .send(false, FIN | ACK, b"")
                .send(true, ACK, b"");
        }
        records.extend(c.records(Link::Raw));
    }
    let (reports, summary) = analyze_bytes(synth::pcap(Link::Raw, &records, false, false, 65535));
    assert_eq!(summary.connections, 3000);
    assert_eq!(reports.len(), 300);
    assert!(reports.windows(2).all(|w| w[0].frame < w[1].frame));
}
