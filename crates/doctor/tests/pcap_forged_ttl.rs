//! A forger that copies the server's TTL: RSTs with window 0, no TCP options, an IP ID off the
//! server's sequence and two sequence numbers 1460 apart (RST-SEQ-CHANGE), after the server
//! had acknowledged the request. Recorded in a client/router/server lab with an on-path
//! injector in the router that forges with TTL 63 (the server's, seen from the client), next
//! to a genuine SO_LINGER 0 abort from the same server (window 64, timestamps, IP ID in
//! sequence). The captures are in `tests/fixtures/pcap-forged/`.

mod support;

use std::path::PathBuf;

use holdfast_doctor::pcap::{Cause, ResetReport, Resetter};
use support::{analyze_file, analyze_reader};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pcap-forged")
        .join(name)
}

fn one(reports: Vec<ResetReport>) -> ResetReport {
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.into_iter().next().unwrap()
}

/// The pcap records (little-endian, microseconds, Ethernet) of a capture.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push((at, 16 + caplen));
        at += 16 + caplen;
    }
    out
}

fn texts(report: &ResetReport) -> String {
    report.human()
}

#[test]
fn a_forger_with_the_servers_ttl_is_not_called_a_server_abort() {
    let report = one(analyze_file(&fixture("same_ttl_injector.pcap")).0);
    let v = &report.verdict;
    assert_eq!(
        (v.resetter, v.cause, v.hop),
        (Resetter::Middlebox, Cause::Injected, None),
        "{}",
        texts(&report)
    );
    assert!(v.confidence <= 0.6, "{}", texts(&report));
    let shown = texts(&report);
    assert!(shown.contains("RST-SEQ-CHANGE"), "{shown}");
    assert!(
        shown.contains("does not follow the server's IP ID sequence"),
        "{shown}"
    );
    assert!(shown.contains("window 0 and no TCP options"), "{shown}");
    assert!(shown.contains("3 independent signals"), "{shown}");
    assert!(
        !shown.contains("its application aborted"),
        "an overturned verdict keeps no server-abort reasoning: {shown}"
    );
}

#[test]
fn two_contradicting_signals_still_overturn_the_server_verdict() {
    // Drop the second forged RST: no RST-SEQ-CHANGE, but the IP ID and the shape remain.
    let bytes = std::fs::read(fixture("same_ttl_injector.pcap")).unwrap();
    let recs = records(&bytes);
    assert_eq!(recs.len(), 7);
    let (at, len) = recs[6];
    let mut cut = bytes.clone();
    cut.drain(at..at + len);
    let report = one(analyze_reader(std::io::Cursor::new(cut)).0);
    let v = &report.verdict;
    assert_eq!(
        (v.resetter, v.cause, v.hop),
        (Resetter::Middlebox, Cause::Injected, None),
        "{}",
        texts(&report)
    );
    assert!(v.confidence <= 0.5, "{}", texts(&report));
    assert!(texts(&report).contains("2 independent signals"));
}

#[test]
fn the_genuine_abort_from_the_same_lab_stays_a_server_abort() {
    let report = one(analyze_file(&fixture("same_lab_app_abort.pcap")).0);
    let v = &report.verdict;
    assert_eq!((v.resetter, v.cause), (Resetter::Server, Cause::AppAbort));
    assert!((v.confidence - 0.8).abs() < 1e-9, "{}", texts(&report));
}

#[test]
fn one_contradicting_signal_only_lowers_the_confidence() {
    // The genuine abort with its RST's IP ID moved off the server's sequence (frame 6; the
    // analyser does not check checksums).
    let mut bytes = std::fs::read(fixture("same_lab_app_abort.pcap")).unwrap();
    let recs = records(&bytes);
    let (at, _) = recs[5];
    let id = at + 16 + 14 + 4;
    let old = u16::from_be_bytes([bytes[id], bytes[id + 1]]);
    bytes[id..id + 2].copy_from_slice(&old.wrapping_add(20_000).to_be_bytes());
    let report = one(analyze_reader(std::io::Cursor::new(bytes)).0);
    let v = &report.verdict;
    assert_eq!((v.resetter, v.cause), (Resetter::Server, Cause::AppAbort));
    assert!(v.confidence <= 0.6, "{}", texts(&report));
    assert!(texts(&report).contains("less sure"), "{}", texts(&report));
}
