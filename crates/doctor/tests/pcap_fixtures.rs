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

/// tshark's view in one run: frames, distinct TCP streams, frames with RST.
fn tshark_view(path: &Path) -> (u64, usize, BTreeSet<u64>) {
    let output = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(path)
        .args(["-T", "fields", "-E", "separator=/t"])
        .args([
            "-e",
            "frame.number",
            "-e",
            "tcp.stream",
            "-e",
            "tcp.flags.reset",
        ])
        .output()
        .expect("tshark runs");
    assert!(
        output.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let mut frames = 0;
    let mut streams = BTreeSet::new();
    let mut rsts = BTreeSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        frames += 1;
        if let Some(stream) = fields.get(1).filter(|s| !s.is_empty()) {
            streams.insert(stream.to_string());
        }
        let reset = fields.get(2).copied().unwrap_or("");
        if reset == "1" || reset.eq_ignore_ascii_case("true") {
            rsts.insert(fields[0].parse().unwrap());
        }
    }
    (frames, streams.len(), rsts)
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
        let (tshark_frames, tshark_streams, tshark_rsts) = tshark_view(&path);
        assert_eq!(frames, tshark_frames, "{}: frame count", scenario.name);
        assert_eq!(flows, tshark_streams, "{}: flows", scenario.name);
        assert_eq!(rsts, tshark_rsts, "{}: RST frames", scenario.name);
        assert!(
            !rsts.is_empty(),
            "{}: a reset fixture without RST",
            scenario.name
        );
        let (_, summary) = analyze_file(&path);
        assert_eq!(
            summary.connections as usize, tshark_streams,
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
    // The lab's IPv6 capture: hop limits, named as such.
    let (v6, _) = analyze_file(&fixture_dir().join("ipv6_app_abort.pcap"));
    let v6 = v6[0].human();
    assert!(v6.contains(" hlim="), "{v6}");
    assert!(!v6.contains(" ttl="), "{v6}");
    // ... in the evidence sentences too.
    assert!(
        v6.contains("frame 11: hop limit 63 matches the server's own packets"),
        "{v6}"
    );
    assert!(!v6.contains("TTL"), "{v6}");
    assert!(text.contains(" ttl=64 id="), "{text}");
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

#[test]
fn fixtures_rewritten_by_wireshark_tools_keep_their_verdicts() {
    if Command::new("editcap").arg("-h").output().is_err() {
        eprintln!("skipping: editcap is not installed (it comes with tshark)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("holdfast-pcap-editcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |program: &str, args: &[&std::ffi::OsStr]| {
        let status = Command::new(program).args(args).status().unwrap();
        assert!(status.success(), "{program} {args:?}");
    };
    for scenario in SCENARIOS {
        let original = fixture_dir().join(format!("{}.pcap", scenario.name));
        for (format, extension) in [("pcapng", "pcapng"), ("nsecpcap", "ns.pcap")] {
            let out = dir.join(format!("{}.{extension}", scenario.name));
            run(
                "editcap",
                &[
                    "-F".as_ref(),
                    format.as_ref(),
                    original.as_os_str(),
                    out.as_os_str(),
                ],
            );
            let (reports, _) = analyze_file(&out);
            assert_verdict(scenario, &reports);
        }
    }
    // Two captures merged into one pcapng (one interface per input file).
    let merged = dir.join("merged.pcapng");
    let a = fixture_dir().join("injected.pcap");
    let b = fixture_dir().join("ipv6_app_abort.pcap");
    run(
        "mergecap",
        &[
            "-F".as_ref(),
            "pcapng".as_ref(),
            "-w".as_ref(),
            merged.as_os_str(),
            a.as_os_str(),
            b.as_os_str(),
        ],
    );
    let (reports, summary) = analyze_file(&merged);
    let mut causes: Vec<_> = reports.iter().map(|r| r.verdict.cause).collect();
    causes.sort();
    assert_eq!(
        causes,
        vec![
            holdfast_doctor::pcap::Cause::AppAbort,
            holdfast_doctor::pcap::Cause::Injected
        ]
    );
    let (frames, flows, rsts) = our_view(&merged);
    assert_eq!((frames, flows, rsts), tshark_view(&merged));
    assert_eq!(summary.packets, frames);
    let _ = std::fs::remove_dir_all(&dir);
}
