//! The committed captures of every staged cause (recorded in the namespace lab by
//! `scripts/gen-pcap-fixtures`) get their verdicts, and our parsing agrees with tshark on
//! every fixture: frame count, flows and RST frames.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use holdfast_doctor::pcap::decode::{decode, flags, Decoded};
use holdfast_doctor::pcap::flow::FlowKey;
use holdfast_doctor::pcap::reader::read_frames;
use support::{analyze_file, assert_verdict, fixture_dir, SCENARIOS};

#[test]
fn every_staged_cause_gets_its_verdict_from_its_fixture() {
    for scenario in SCENARIOS {
        let path = fixture_dir().join(format!("{}.pcap", scenario.name));
        let (reports, summary) = analyze_file(&path);
        assert_verdict(scenario, &reports);
        assert!(summary.tcp_packets > 0);
    }
}

#[test]
fn fixtures_are_small() {
    for scenario in SCENARIOS {
        let path = fixture_dir().join(format!("{}.pcap", scenario.name));
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 16 * 1024, "{} is {size} bytes", path.display());
    }
}

/// What our reader and decoder see: frames, distinct TCP 4-tuples, frames with RST.
fn our_view(path: &Path) -> (u64, usize, BTreeSet<u64>) {
    let file = std::fs::File::open(path).unwrap();
    let mut flows = BTreeSet::new();
    let mut rsts = BTreeSet::new();
    let outcome = read_frames(file, |frame| {
        if let Decoded::Tcp(segment) = decode(frame.linktype, frame.data) {
            flows.insert(format!("{:?}", FlowKey::of(&segment).0));
            if segment.has(flags::RST) {
                rsts.insert(frame.number);
            }
        }
    })
    .unwrap();
    assert!(outcome.damage.is_none());
    (outcome.frames, flows.len(), rsts)
}

fn tshark_fields(path: &Path, filter: Option<&str>, field: &str) -> Vec<String> {
    let mut command = Command::new("tshark");
    command.arg("-n").arg("-r").arg(path);
    if let Some(filter) = filter {
        command.args(["-Y", filter]);
    }
    command.args(["-T", "fields", "-e", field]);
    let output = command.output().expect("tshark runs");
    assert!(
        output.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn parsing_agrees_with_tshark_on_every_fixture() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("skipping: tshark is not installed (scripts/install-deps installs it)");
        return;
    }
    for scenario in SCENARIOS {
        let path = fixture_dir().join(format!("{}.pcap", scenario.name));
        let (frames, flows, rsts) = our_view(&path);
        let tshark_frames = tshark_fields(&path, None, "frame.number").len() as u64;
        assert_eq!(frames, tshark_frames, "{}: frame count", scenario.name);
        let streams: BTreeSet<String> = tshark_fields(&path, Some("tcp"), "tcp.stream")
            .into_iter()
            .collect();
        assert_eq!(flows, streams.len(), "{}: flows", scenario.name);
        let tshark_rsts: BTreeSet<u64> =
            tshark_fields(&path, Some("tcp.flags.reset==1"), "frame.number")
                .iter()
                .map(|n| n.parse().unwrap())
                .collect();
        assert_eq!(rsts, tshark_rsts, "{}: RST frames", scenario.name);
        assert!(
            !rsts.is_empty(),
            "{}: a reset fixture without RST",
            scenario.name
        );
        let (_, summary) = analyze_file(&path);
        assert_eq!(
            summary.connections as usize,
            streams.len(),
            "{}",
            scenario.name
        );
        assert_eq!(summary.packets, tshark_frames, "{}", scenario.name);
    }
}

#[test]
fn cli_prints_verdict_timeline_evidence_and_summary() {
    // The library renders what the CLI prints; check the human form on one fixture.
    let (reports, summary) = analyze_file(&fixture_dir().join("injected.pcap"));
    let text = reports[0].human();
    assert!(
        text.contains("verdict: middlebox at hop 1 / injected"),
        "{text}"
    );
    assert!(text.contains("timeline"), "{text}");
    assert!(text.contains("C->S SYN"), "{text}");
    assert!(text.contains("evidence:"), "{text}");
    let summary = summary.human();
    assert!(summary.contains("resets by cause: injected 1"), "{summary}");
    assert!(
        text.contains("does not follow the server's IP ID sequence"),
        "{text}"
    );
    let (genuine, _) = analyze_file(&fixture_dir().join("app_abort.pcap"));
    let genuine = genuine[0].human();
    assert!(
        !genuine.contains("does not follow"),
        "a genuine RST continues the IP IDs: {genuine}"
    );
    let json = serde_json::to_value(reports[0].json()).unwrap();
    for key in [
        "client",
        "server",
        "frame",
        "time",
        "resetter",
        "cause",
        "hop",
        "confidence",
        "evidence",
    ] {
        assert!(json.get(key).is_some(), "missing key {key}: {json}");
    }
    assert_eq!(json["cause"], "injected");
    assert_eq!(json["hop"], 1);
}
