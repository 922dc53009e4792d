//! `holdfast audit` end to end: bad usage, and logs that must not exhaust memory.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn staged_proc() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../doctor/tests/fixtures/audit/proc")
}

/// Runs `holdfast audit ARGS` under a data-segment limit of `data_kib` KiB (heap and
/// anonymous mappings), failing the test when it takes longer than 60 s.
fn audit_limited(args: &[&str], data_kib: u64) -> Output {
    let script = format!("ulimit -d {data_kib} && exec \"$0\" audit \"$@\"");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_holdfast"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("holdfast audit {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn json_of(out: &Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn a_missing_proc_root_is_bad_usage() {
    for root in ["/nonexistent-holdfast-proc", "/etc/hostname"] {
        let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["audit", "--proc-root", root])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{root}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--proc-root") && stderr.contains(root),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "no report for bad usage");
    }
}

#[test]
fn dev_zero_as_a_log_is_skipped_in_bounded_memory() {
    let proc_root = staged_proc();
    let out = audit_limited(
        &[
            "--json",
            "--proc-root",
            proc_root.to_str().unwrap(),
            "--log",
            "/dev/zero",
        ],
        256 * 1024,
    );
    let json = json_of(&out);
    let finding = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "logs" && f["subject"] == "/dev/zero")
        .expect("a finding for /dev/zero")
        .clone();
    assert_eq!(finding["severity"], "skip", "{finding}");
    assert!(
        finding["value"]
            .as_str()
            .unwrap()
            .contains("character device"),
        "{finding}"
    );
}

#[test]
fn a_huge_line_without_newline_is_read_in_bounded_memory() {
    let dir = std::env::temp_dir().join(format!("holdfast-audit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("one-line.log");
    // 60 MiB without a newline: reading it as one line needs over 120 MiB.
    let mut text = "x".repeat(60 * 1024 * 1024);
    text.push_str(" Connection reset by peer");
    std::fs::write(&path, text).unwrap();
    let proc_root = staged_proc();
    let out = audit_limited(
        &[
            "--json",
            "--proc-root",
            proc_root.to_str().unwrap(),
            "--log",
            path.to_str().unwrap(),
        ],
        96 * 1024,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let json = json_of(&out);
    let finding = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "logs" && f["subject"].as_str().unwrap().ends_with("one-line.log"))
        .expect("a finding for the log")
        .clone();
    assert_eq!(finding["severity"], "ok", "{finding}");
    assert!(
        finding["value"]
            .as_str()
            .unwrap()
            .contains("1 line(s) over 64 KiB"),
        "{finding}"
    );
}
