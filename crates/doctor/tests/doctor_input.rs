//! `holdfast doctor` on 127.0.0.1: URLs and options that must be refused (exit status 2 with
//! a message naming the fix), a non-http proxy in the environment, a server that closes
//! without answering, and a self-signed CA certificate pinned with `--ca-file`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use holdfast_doctor::live::{
    self, DoctorError, DoctorOptions, DoctorReport, LiveCause, LiveResetter, Silent, Status,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use support::live::{quick_options, run_doctor, serve_each, tls_config};

fn doctor(url: &str, tune: impl FnOnce(&mut DoctorOptions)) -> DoctorReport {
    let mut options = quick_options(url, Duration::from_secs(3));
    tune(&mut options);
    run_doctor(&options)
}

/// A plain server on 127.0.0.1: `answer` handles each connection after its request.
fn server(answer: fn(&mut TcpStream)) -> u16 {
    serve_each(move |mut stream| {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = [0u8; 4096];
        if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
            answer(&mut stream);
        }
    })
}

fn ok_close(stream: &mut TcpStream) {
    let _ =
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

#[test]
fn invalid_ports_are_bad_usage_naming_the_port() {
    for (url, port) in [
        ("http://127.0.0.1:99999/", "99999"),
        ("http://127.0.0.1:65536/", "65536"),
        ("http://127.0.0.1:abc/", "abc"),
        ("http://127.0.0.1:-1/", "-1"),
        ("http://127.0.0.1:0/", "0"),
        ("https://127.0.0.1:99999/", "99999"),
    ] {
        let err = live::run(&DoctorOptions::new(url), &mut Silent).unwrap_err();
        assert!(matches!(err, DoctorError::BadUrl { .. }), "{url}: {err}");
        let text = err.to_string();
        assert!(text.contains(&format!("port \"{port}\"")), "{url}: {text}");
        assert!(text.contains("1 to 65535"), "{url}: {text}");
    }
}

#[test]
fn options_out_of_range_say_the_same_range() {
    let bad = |tune: fn(&mut DoctorOptions)| {
        let mut options = DoctorOptions::new("http://127.0.0.1/");
        tune(&mut options);
        live::run(&options, &mut Silent).unwrap_err().to_string()
    };
    for text in [
        bad(|o| o.timeout = Duration::ZERO),
        bad(|o| o.max_idle = Duration::ZERO),
        bad(|o| o.max_idle = Duration::from_secs(3601)),
    ] {
        assert!(text.contains("greater than 0 and at most 3600"), "{text}");
        assert!(!text.contains("between 0"), "{text}");
    }
    assert!(bad(|o| o.timeout = Duration::ZERO).starts_with("--timeout"));
    assert!(bad(|o| o.max_idle = Duration::ZERO).starts_with("--max-idle"));
    for text in [bad(|o| o.max_hops = 0), bad(|o| o.max_hops = 65)] {
        assert!(text.contains("from 1 to 64"), "{text}");
    }
    let text = bad(|o| {
        o.insecure = true;
        o.ca_file = Some("x.pem".into());
    });
    assert!(text.contains("--ca-file"), "{text}");
}

#[test]
fn cli_refuses_bad_ports_and_options_with_exit_2() {
    let Some(bin) = holdfast_binary() else {
        eprintln!("skipping the CLI run: no holdfast binary next to the test (cargo build)");
        return;
    };
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .arg("doctor")
            .args(args)
            .output()
            .expect("run holdfast doctor");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (url, port) in [
        ("http://127.0.0.1:99999/", "99999"),
        ("http://127.0.0.1:0/", "0"),
        ("https://127.0.0.1:abc/", "abc"),
    ] {
        let (code, stderr) = run(&["--no-capture", url]);
        assert_eq!(code, Some(2), "{url}: {stderr}");
        assert!(stderr.contains(port), "{url}: {stderr}");
    }
    for (args, want) in [
        (&["--timeout", "0"][..], "greater than 0 and at most 3600"),
        (&["--max-idle", "0"][..], "greater than 0 and at most 3600"),
        (&["--max-hops", "300"][..], "from 1 to 64"),
        (&["--max-hops", "65"][..], "from 1 to 64"),
        (
            &["--insecure", "--ca-file", "x.pem"][..],
            "cannot be used with",
        ),
    ] {
        let mut all = args.to_vec();
        all.push("http://127.0.0.1:1/");
        let (code, stderr) = run(&all);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// The `holdfast` binary next to this test's directory (built by `cargo build`).
fn holdfast_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("holdfast");
    bin.exists().then_some(bin)
}

#[test]
fn socks_proxy_in_the_environment_is_skipped_for_the_direct_path() {
    let port = server(ok_close);
    let report = doctor(&format!("http://127.0.0.1:{port}/"), |o| {
        o.proxy_env = Some(vec![("ALL_PROXY".into(), "socks5://127.0.0.1:1".into())]);
    });
    assert_eq!(
        (report.verdict.resetter, report.verdict.cause),
        (LiveResetter::None, LiveCause::None),
        "{}",
        report.verdict.summary
    );
    let env = &report.checks[0];
    assert_eq!(env.name, "environment");
    assert_eq!(env.status, Status::Warn, "{}", env.detail);
    assert!(env.detail.contains("socks5"), "{}", env.detail);
    assert!(env.detail.contains("direct path"), "{}", env.detail);
}

#[test]
fn close_without_answer_is_not_a_reset() {
    // Reads the request and closes with a FIN, as a TLS server does to plain HTTP.
    let port = server(|_| {});
    let report = doctor(&format!("http://127.0.0.1:{port}/"), |_| {});
    assert_eq!(
        (report.verdict.resetter, report.verdict.cause),
        (LiveResetter::None, LiveCause::EarlyClose),
        "{}",
        report.verdict.summary
    );
    assert!(
        report.verdict.summary.contains("FIN"),
        "{}",
        report.verdict.summary
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verdict"]["cause"], "early_close");
}

/// A self-signed certificate for localhost with `CA:TRUE` (as `openssl req -x509` makes).
fn ca_cert(tag: &str) -> (Arc<ServerConfig>, std::path::PathBuf) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem_path =
        std::env::temp_dir().join(format!("holdfast-doctor-{tag}-{}.pem", std::process::id()));
    std::fs::write(&pem_path, cert.pem()).unwrap();
    (
        tls_config(cert.der().to_vec(), key.serialize_der()),
        pem_path,
    )
}

fn tls_server(config: Arc<ServerConfig>) -> u16 {
    serve_each(move |stream| {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(conn) = ServerConnection::new(config.clone()) else {
            return;
        };
        let mut tls = StreamOwned::new(conn, stream);
        let mut buf = [0u8; 4096];
        if matches!(tls.read(&mut buf), Ok(n) if n > 0) {
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    })
}

#[test]
fn self_signed_ca_certificate_is_pinned_by_ca_file() {
    let (config, pem) = ca_cert("pinned");
    let (_, other_pem) = ca_cert("other");
    let port = tls_server(config);
    let url = format!("https://localhost:{port}/");
    let report = doctor(&url, |o| o.ca_file = Some(pem.clone()));
    assert_eq!(
        report.verdict.cause,
        LiveCause::None,
        "{}",
        report.verdict.summary
    );
    // Against an unrelated CA: a TLS failure in words, and advice that knows --ca-file was
    // given.
    let report = doctor(&url, |o| o.ca_file = Some(other_pem.clone()));
    assert_eq!(
        report.verdict.cause,
        LiveCause::Tls,
        "{}",
        report.verdict.summary
    );
    let summary = &report.verdict.summary;
    assert!(!summary.contains("OtherError"), "{summary}");
    assert!(summary.contains("the server's certificate"), "{summary}");
    let advice = report.verdict.advice.join(" | ");
    assert!(
        advice.contains(&other_pem.display().to_string()),
        "{advice}"
    );
    assert!(!advice.contains("use --ca-file"), "{advice}");
    let _ = std::fs::remove_file(pem);
    let _ = std::fs::remove_file(other_pem);
}
