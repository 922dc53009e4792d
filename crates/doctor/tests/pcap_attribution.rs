//! Attribution regressions: TTL baselines that ignore deliberately low TTLs, loopback
//! captures, filters that must not change verdicts, and idle keep-alive resets.

mod support;

use std::io::Cursor;
use std::path::Path;

use holdfast_doctor::pcap::{self, Cause, Filter, ResetReport, Resetter};
use support::synth::{self, Conversation, Link, Tcp, ACK, PSH, RST, SYN};

fn capture(c: &Conversation) -> Vec<u8> {
    synth::pcap(
        Link::Ethernet,
        &c.records(Link::Ethernet),
        false,
        false,
        65535,
    )
}

fn reports(bytes: Vec<u8>, filter: &Filter) -> Vec<ResetReport> {
    let mut out = Vec::new();
    let outcome = pcap::analyze(Cursor::new(bytes), filter, |r| out.push(r)).expect("readable");
    assert!(outcome.damage.is_none());
    out
}

fn only(bytes: Vec<u8>) -> ResetReport {
    let mut all = reports(bytes, &Filter::default());
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

fn verdict(report: &ResetReport) -> (Resetter, Cause) {
    (report.verdict.resetter, report.verdict.cause)
}

/// A client-side capture of a TTL-limited replay (as `holdfast doctor`'s locate check does):
/// handshake at TTL 64, the request sent with TTL 1 (it dies at the first router), then the
/// client's own kernel RST with TTL 64.
fn ttl_limited_replay(with_handshake: bool) -> Conversation {
    let mut c = Conversation::new("10.66.1.2:41000", "10.66.2.2:8084");
    c.client_ttl = 64;
    c.server_ttl = 62;
    if with_handshake {
        c.handshake();
    }
    c.client_ttl = 1;
    c.send(true, PSH | ACK, b"GET /blocked HTTP/1.1\r\n\r\n");
    c.wait_ms(200);
    c.send(true, PSH | ACK, b"GET /blocked HTTP/1.1\r\n\r\n");
    c.wait_ms(300);
    c.client_ttl = 64;
    c.send(true, RST | ACK, b"");
    c
}

#[test]
fn the_clients_own_rst_after_ttl_limited_packets_is_not_a_middlebox() {
    for with_handshake in [true, false] {
        let report = only(capture(&ttl_limited_replay(with_handshake)));
        assert_eq!(
            verdict(&report),
            (Resetter::Client, Cause::ClientAbort),
            "handshake {with_handshake}: {}",
            report.human()
        );
        assert_eq!(report.verdict.hop, None);
        let text = report.human();
        assert!(!text.contains("hops closer"), "{text}");
    }
}

#[test]
fn loopback_captures_never_give_middlebox_verdicts() {
    // TTL-limited connects to a closed loopback port: SYNs with TTL 1, 2, then 64; the kernel
    // answers each with an RST at TTL 64. Then a working connection and an abort.
    let mut c = Conversation::new("127.0.0.1:50000", "127.0.0.1:29109");
    c.server_ttl = 64;
    let mut packets = Vec::new();
    for (i, ttl) in [1u8, 2, 64].into_iter().enumerate() {
        let mut attempt = Conversation::new(&format!("127.0.0.1:{}", 50000 + i), "127.0.0.1:29109");
        attempt.now_ns = c.now_ns + i as i64 * 10_000_000;
        attempt.client_ttl = ttl;
        attempt.server_ttl = 64;
        attempt.send(true, SYN, b"");
        let syn_seq = attempt.client_seq;
        attempt.push(Tcp {
            src: attempt.server.0,
            dst: attempt.client.0,
            sport: attempt.server.1,
            dport: attempt.client.1,
            seq: 0,
            ack: syn_seq,
            flags: RST | ACK,
            ttl: 64,
            ip_id: 0,
            df: true,
            window: 0,
            payload: Vec::new(),
        });
        packets.extend(attempt.packets);
    }
    c.packets = packets;
    let all = reports(capture(&c), &Filter::default());
    assert_eq!(all.len(), 3, "{all:#?}");
    for report in &all {
        assert_eq!(
            verdict(report),
            (Resetter::Server, Cause::Refused),
            "{}",
            report.human()
        );
    }
    // On ::1 with a server whose data used another hop limit than its RST: still no middlebox.
    let mut v6 = Conversation::new("[::1]:40000", "[::1]:8080");
    v6.server_ttl = 64;
    v6.handshake()
        .send(true, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")
        .send(false, PSH | ACK, b"HTTP/1.1 200 OK\r\n");
    v6.server_rst(255, true, 0);
    let report = only(capture(&v6));
    assert_ne!(
        report.verdict.resetter,
        Resetter::Middlebox,
        "{}",
        report.human()
    );
    assert!(report.human().contains("loopback"), "{}", report.human());
}

#[test]
fn filters_choose_reported_connections_not_ttl_baselines() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pcap/firewall_reject.pcap");
    let bytes = std::fs::read(path).unwrap();
    let all = reports(bytes.clone(), &Filter::default());
    assert_eq!(all.len(), 1);
    let unfiltered = &all[0];
    assert_eq!(
        verdict(unfiltered),
        (Resetter::Middlebox, Cause::FirewallReject)
    );
    let port = unfiltered.server.port();
    for filter in [
        Filter::parse(None, Some(port), None).unwrap(),
        Filter::parse(
            None,
            None,
            Some(&format!("{},{}", unfiltered.client, unfiltered.server)),
        )
        .unwrap(),
    ] {
        let filtered = reports(bytes.clone(), &filter);
        assert_eq!(filtered.len(), 1, "{filter:?}");
        let report = &filtered[0];
        assert_eq!(verdict(report), verdict(unfiltered), "{}", report.human());
        assert_eq!(report.verdict.hop, unfiltered.verdict.hop);
        assert_eq!(report.verdict.confidence, unfiltered.verdict.confidence);
        assert_eq!(report.frame, unfiltered.frame);
        assert_eq!(report.time, unfiltered.time);
        assert!(
            !report.human().contains("no other packet"),
            "{}",
            report.human()
        );
    }
}

#[test]
fn a_server_rst_on_an_idle_kept_alive_connection_is_an_idle_keepalive_close() {
    let exchange = |idle_ms: i64| {
        let mut c = Conversation::new("192.0.2.10:40000", "198.51.100.7:8080");
        c.handshake()
            .send(true, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")
            .send(false, ACK, b"")
            .send(
                false,
                PSH | ACK,
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            )
            .send(true, ACK, b"")
            .wait_ms(idle_ms);
        let ttl = c.server_ttl;
        c.server_rst(ttl, true, 0);
        only(capture(&c))
    };
    let idle = exchange(1500);
    assert_eq!(
        verdict(&idle),
        (Resetter::Server, Cause::IdleKeepaliveClose),
        "{}",
        idle.human()
    );
    assert!(
        idle.human().contains("1.5 s of idle time"),
        "{}",
        idle.human()
    );
    let idle_long = exchange(30_000);
    assert_eq!(
        verdict(&idle_long),
        (Resetter::Server, Cause::IdleKeepaliveClose),
        "{}",
        idle_long.human()
    );
    // Right after the answer it is an abort, as in the app_abort fixture.
    let abort = exchange(200);
    assert_eq!(verdict(&abort), (Resetter::Server, Cause::AppAbort));
}
