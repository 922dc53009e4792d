//! Root only: stages every cause for real in a network-namespace lab (client, router, server),
//! records the client-side capture and asserts the verdict on it. Skips with a printed reason
//! where `ip netns` is unavailable.
//!
//! With `HOLDFAST_PCAP_FIXTURES_OUT=DIR` set, the captures are also copied to DIR
//! (`scripts/gen-pcap-fixtures` uses this to regenerate the committed fixtures).

mod support;

use holdfast_netlab::Lab;
use support::{analyze_file, assert_verdict, stage::stage, SCENARIOS};

#[test]
fn every_cause_staged_live_gets_its_verdict() {
    if let Err(reason) = Lab::available() {
        eprintln!("skipping live staging: {reason}");
        return;
    }
    let dir = std::env::temp_dir().join(format!("holdfast-pcap-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let only = std::env::var("HOLDFAST_PCAP_SCENARIO").ok();
    let export = std::env::var_os("HOLDFAST_PCAP_FIXTURES_OUT").map(std::path::PathBuf::from);
    let mut failures = Vec::new();
    for scenario in SCENARIOS {
        if only.as_deref().is_some_and(|o| o != scenario.name) {
            continue;
        }
        let path = dir.join(format!("{}.pcap", scenario.name));
        if let Err(err) = stage(scenario.name, &path) {
            failures.push(format!("{}: staging failed: {err}", scenario.name));
            continue;
        }
        let (reports, _) = analyze_file(&path);
        let checked = std::panic::catch_unwind(|| assert_verdict(scenario, &reports));
        match checked {
            Ok(()) => {
                if let Some(out) = &export {
                    std::fs::create_dir_all(out).unwrap();
                    std::fs::copy(&path, out.join(format!("{}.pcap", scenario.name))).unwrap();
                }
            }
            Err(_) => failures.push(format!("{}: wrong verdict (see above)", scenario.name)),
        }
    }
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        failures.is_empty(),
        "{}\n(captures kept in {})",
        failures.join("\n"),
        dir.display()
    );
}
