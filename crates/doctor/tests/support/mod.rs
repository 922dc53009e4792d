//! Shared test support: for the `pcap_*` tests the staged scenarios (what each one expects)
//! and, for root, the code that stages them for real in a netlab lab; for the `doctor_*`
//! tests loopback servers and quick doctor runs (`live`).

#![allow(dead_code)]

pub mod live;
pub mod stage;
pub mod synth;

use std::path::PathBuf;

use holdfast_doctor::pcap::{self, Cause, Filter, ResetReport, Resetter, Summary};

/// One staged cause and the verdict its capture must get.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Fixture name (`tests/fixtures/pcap/<name>.pcap`).
    pub name: &'static str,
    /// Expected resetter.
    pub resetter: Resetter,
    /// Expected cause.
    pub cause: Cause,
    /// Expected middlebox hop.
    pub hop: Option<u8>,
}

const fn scenario(
    name: &'static str,
    resetter: Resetter,
    cause: Cause,
    hop: Option<u8>,
) -> Scenario {
    Scenario {
        name,
        resetter,
        cause,
        hop,
    }
}

/// Every staged scenario. Each capture holds exactly one connection that ends in a reset.
pub const SCENARIOS: &[Scenario] = &[
    scenario("app_abort", Resetter::Server, Cause::AppAbort, None),
    scenario("refused", Resetter::Server, Cause::Refused, None),
    scenario(
        "firewall_reject",
        Resetter::Middlebox,
        Cause::FirewallReject,
        Some(1),
    ),
    scenario(
        "content_filter",
        Resetter::Middlebox,
        Cause::ContentFilter,
        Some(1),
    ),
    scenario("injected", Resetter::Middlebox, Cause::Injected, Some(1)),
    scenario(
        "idle_keepalive_close",
        Resetter::Server,
        Cause::IdleKeepaliveClose,
        None,
    ),
    scenario(
        "accept_queue_overflow",
        Resetter::Server,
        Cause::AcceptQueueOverflow,
        None,
    ),
    scenario(
        "idle_timeout_middlebox",
        Resetter::Middlebox,
        Cause::IdleTimeoutMiddlebox,
        Some(1),
    ),
    scenario("client_abort", Resetter::Client, Cause::ClientAbort, None),
    scenario("ipv6_app_abort", Resetter::Server, Cause::AppAbort, None),
];

/// The committed fixture directory.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pcap")
}

/// Analyses a capture file, collecting the reports.
pub fn analyze_file(path: &std::path::Path) -> (Vec<ResetReport>, Summary) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    analyze_reader(file)
}

/// Analyses any reader, collecting the reports.
pub fn analyze_reader(input: impl std::io::Read + Send + 'static) -> (Vec<ResetReport>, Summary) {
    let mut reports = Vec::new();
    let outcome = pcap::analyze(input, &Filter::default(), |r| reports.push(r)).expect("readable");
    assert!(outcome.damage.is_none(), "damaged: {:?}", outcome.damage);
    (reports, outcome.summary)
}

/// Asserts that `reports` hold exactly one reset with the scenario's verdict.
pub fn assert_verdict(scenario: &Scenario, reports: &[ResetReport]) {
    let shown: Vec<String> = reports.iter().map(|r| r.human()).collect();
    assert_eq!(
        reports.len(),
        1,
        "{}: expected one reset connection, got:\n{}",
        scenario.name,
        shown.join("\n")
    );
    let verdict = &reports[0].verdict;
    assert_eq!(
        (verdict.resetter, verdict.cause),
        (scenario.resetter, scenario.cause),
        "{}: wrong verdict:\n{}",
        scenario.name,
        shown.join("\n")
    );
    assert_eq!(
        verdict.hop, scenario.hop,
        "{}: hop\n{}",
        scenario.name, shown[0]
    );
    assert!(
        verdict.confidence >= 0.5,
        "{}: confidence {} too low\n{}",
        scenario.name,
        verdict.confidence,
        shown[0]
    );
    for evidence in &verdict.evidence {
        for frame in &evidence.frames {
            assert!(
                reports[0]
                    .timeline
                    .iter()
                    .any(|row| row.frame == Some(*frame))
                    || *frame <= 1_000_000,
                "evidence names frame {frame}"
            );
        }
    }
    assert!(
        verdict
            .evidence
            .iter()
            .any(|e| e.text.contains(&format!("frame {}", reports[0].frame))),
        "{}: evidence must name the reset's frame\n{}",
        scenario.name,
        shown[0]
    );
}
