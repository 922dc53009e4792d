//! `holdfast audit` for real on this machine: it completes, every check group reports, and
//! the JSON has the documented shape.

use holdfast_doctor::audit::{self, AuditOptions};

#[test]
fn auditing_this_host_completes_with_valid_json() {
    let report = audit::run(&AuditOptions::default());
    let text = serde_json::to_string(&report).expect("serializes");
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let findings = json["findings"].as_array().expect("findings array");
    for check in [
        "counters", "sysctl", "sockets", "firewall", "config", "logs",
    ] {
        assert!(
            findings.iter().any(|f| f["check"] == check),
            "no {check} finding in {text}"
        );
    }
    for finding in findings {
        for key in ["check", "subject", "severity", "value", "why", "fix"] {
            assert!(finding.get(key).is_some(), "{key} missing in {finding}");
        }
        let severity = finding["severity"].as_str().unwrap();
        assert!(["skip", "ok", "info", "warn", "critical"].contains(&severity));
    }
    // /proc/net/snmp exists on every Linux host: the counters were read, not skipped.
    let counters = json["counters"].as_array().expect("counters array");
    assert!(counters
        .iter()
        .any(|c| c["name"] == "TcpOutRsts" && c["total"].is_u64()));
}
