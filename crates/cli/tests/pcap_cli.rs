//! `holdfast pcap` end to end: exit codes, stdin, gzip, JSON shape, filters, damage.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../doctor/tests/fixtures/pcap")
        .join(name)
}

fn holdfast(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("holdfast runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn json_output_has_the_documented_keys() {
    let path = fixture("firewall_reject.pcap");
    let out = holdfast(&["pcap", "--json", path.to_str().unwrap()], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(json["packets"].as_u64().unwrap() > 0);
    assert_eq!(json["connections"], 2);
    let resets = json["resets"].as_array().unwrap();
    assert_eq!(resets.len(), 1);
    let reset = &resets[0];
    assert_eq!(reset["resetter"], "middlebox");
    assert_eq!(reset["cause"], "firewall_reject");
    assert_eq!(reset["hop"], 1);
    assert_eq!(reset["server"], "10.66.2.2:8082");
    assert!(reset["client"].as_str().unwrap().starts_with("10.66.1.2:"));
    assert!(reset["frame"].as_u64().unwrap() > 0);
    assert!(reset["time"].as_f64().unwrap() >= 0.0);
    assert!(reset["confidence"].as_f64().unwrap() > 0.5);
    assert!(!reset["evidence"].as_array().unwrap().is_empty());
}

#[test]
fn stdin_and_gzip_give_the_same_answer_as_the_file() {
    let bytes = std::fs::read(fixture("content_filter.pcap")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    let gz = gz.finish().unwrap();
    let plain = holdfast(&["pcap", "--json", "-"], Some(&bytes));
    let zipped = holdfast(&["pcap", "--json", "-"], Some(&gz));
    for out in [&plain, &zipped] {
        assert_eq!(out.status.code(), Some(0));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["resets"][0]["cause"], "content_filter");
    }
}

#[test]
fn human_output_has_verdict_timeline_evidence_and_summary() {
    let path = fixture("idle_keepalive_close.pcap");
    let out = holdfast(&["pcap", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "verdict: server / idle_keepalive_close",
        "timeline",
        "S->C FIN",
        "evidence:",
        "summary:",
        "resets by cause: idle_keepalive_close 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn filters_narrow_the_report() {
    let path = fixture("refused.pcap");
    let path = path.to_str().unwrap();
    let count = |extra: &[&str]| {
        let mut args = vec!["pcap", "--json"];
        args.extend_from_slice(extra);
        args.push(path);
        let out = holdfast(&args, None);
        assert_eq!(out.status.code(), Some(0));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["resets"].as_array().unwrap().len()
    };
    assert_eq!(count(&[]), 1);
    assert_eq!(count(&["--port", "8080"]), 0);
    assert_eq!(count(&["--port", "8081"]), 1);
    assert_eq!(count(&["--host", "10.66.9.9"]), 0);
    let bad = holdfast(&["pcap", "--flow", "garbage", path], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--flow"));
}

#[test]
fn unreadable_input_exits_2_with_a_clear_error() {
    let missing = holdfast(&["pcap", "/nonexistent/capture.pcap"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/capture.pcap"));
    let text = holdfast(&["pcap", "-"], Some(b"this is not a capture file at all"));
    assert_eq!(text.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&text.stderr).contains("not a capture file"));
    let empty = holdfast(&["pcap", "-"], Some(b""));
    assert_eq!(empty.status.code(), Some(2));
}

#[test]
fn a_damaged_capture_names_the_byte_offset() {
    let mut bytes = std::fs::read(fixture("app_abort.pcap")).unwrap();
    // The first record header starts at 24; corrupt its caplen.
    bytes[24 + 8..24 + 12].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let out = holdfast(&["pcap", "-"], Some(&bytes));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("byte offset 24"), "{err}");
    // A capture cut inside its last record still runs, with a warning.
    let mut cut = std::fs::read(fixture("app_abort.pcap")).unwrap();
    cut.truncate(cut.len() - 5);
    let out = holdfast(&["pcap", "-"], Some(&cut));
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `holdfast pcap FILE | head -1`: the reader closes its end before the report is written.
    // The read end is closed before holdfast starts, so its first write finds no reader
    // (closing it after the spawn raced the report into the pipe buffer and exited 0).
    let path = fixture("accept_queue_overflow.pcap");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["pcap", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("holdfast runs");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc_sigpipe()),
        "{:?}",
        out.status
    );
}

/// SIGPIPE's number on Linux.
fn libc_sigpipe() -> i32 {
    13
}

#[test]
fn a_cut_short_gzip_capture_warns_with_the_offset_and_still_reports() {
    let bytes = std::fs::read(fixture("app_abort.pcap")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes).unwrap();
    let gz = gz.finish().unwrap();
    // Without its trailer (CRC and length): every frame is there.
    let out = holdfast(&["pcap", "--json", "-"], Some(&gz[..gz.len() - 8]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("byte offset"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["resets"][0]["cause"], "app_abort");
    assert_eq!(json["packets"], 8);
    // Cut in the middle of the deflate data: the frames decoded so far are reported.
    let out = holdfast(&["pcap", "--json", "-"], Some(&gz[..gz.len() * 3 / 4]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("gzip stream ends early at byte offset"),
        "{stderr}"
    );
    assert!(!stderr.contains("incomplete deflate"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packets = json["packets"].as_u64().unwrap();
    assert!(packets > 0 && packets < 8, "{json}");
    assert!(json["damage"].is_null());
    // Corrupt compressed data is still damage (exit 2).
    let mut bad = gz.clone();
    for byte in &mut bad[20..60] {
        *byte ^= 0x55;
    }
    let out = holdfast(&["pcap", "-"], Some(&bad));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_port_filter_keeps_the_verdict_of_the_whole_capture() {
    let path = fixture("firewall_reject.pcap");
    let path = path.to_str().unwrap();
    let verdict = |extra: &[&str]| {
        let mut args = vec!["pcap", "--json"];
        args.extend_from_slice(extra);
        args.push(path);
        let out = holdfast(&args, None);
        assert_eq!(out.status.code(), Some(0));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let reset = json["resets"][0].clone();
        (
            reset["resetter"].clone(),
            reset["cause"].clone(),
            reset["hop"].clone(),
            reset["confidence"].clone(),
        )
    };
    let whole = verdict(&[]);
    assert_eq!(whole.0, "middlebox");
    assert_eq!(verdict(&["--port", "8082"]), whole);
    assert_eq!(verdict(&["--host", "10.66.2.2", "--port", "8082"]), whole);
}
