//! Root only: `holdfast doctor` against TLS faults staged in a network-namespace lab (client,
//! router, server). A router REJECTs ClientHellos with `tcp-reset`; the captured RST's TTL
//! (64, hop 1) against the server's (63, hop 2) must make the verdict a middlebox at hop 1,
//! as for http. Skips with a printed reason where `ip netns` is unavailable.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use holdfast_doctor::live::{
    self, DoctorOptions, DoctorReport, LiveCause, LiveResetter, Silent, Status,
};
use holdfast_netlab::{Lab, Netns, Topology};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// Runs `f` on a thread that joined `netns`; sockets it makes live there.
fn in_netns<T: Send + 'static>(netns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", netns.name());
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid namespace descriptor; it affects this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

fn server_config() -> Arc<ServerConfig> {
    let key = rcgen::generate_simple_self_signed(vec!["doctor.test".to_string()]).unwrap();
    let certs = vec![CertificateDer::from(key.cert.der().to_vec())];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    Arc::new(
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, private)
            .unwrap(),
    )
}

/// A TLS server in the server namespace on `port` answering `Connection: close`.
fn serve_tls(lab: &Lab, port: u16) {
    let listener = in_netns(lab.server(), move || {
        TcpListener::bind(("0.0.0.0", port)).expect("bind in the server namespace")
    });
    let config = server_config();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || handle(stream, config));
        }
    });
}

fn handle(stream: TcpStream, config: Arc<ServerConfig>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, stream);
    let mut buf = [0u8; 4096];
    if matches!(tls.read(&mut buf), Ok(n) if n > 0) {
        let _ =
            tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }
}

fn router_rule(lab: &Lab, rule: &[&str]) {
    let mut args = vec!["-A", "FORWARD"];
    args.extend_from_slice(rule);
    lab.router()
        .run("iptables", &args)
        .expect("iptables in the router");
}

/// A ClientHello's record header (handshake, TLS 1.0 record version, as rustls sends it).
const CLIENT_HELLO: &str = "|16 03 01|";

fn doctor(lab: &Lab, url: &str) -> DoctorReport {
    let mut options = DoctorOptions::new(url);
    options.timeout = Duration::from_secs(2);
    options.max_idle = Duration::from_secs(1);
    options.repeat = 1;
    options.max_hops = 4;
    options.insecure = true;
    options.proxy_env = Some(Vec::new());
    let report =
        in_netns(lab.client(), move || live::run(&options, &mut Silent)).expect("the doctor runs");
    eprintln!("{url}: {}", serde_json::to_string_pretty(&report).unwrap());
    report
}

fn check<'a>(report: &'a DoctorReport, name: &str, nth: usize) -> &'a live::Check {
    report
        .checks
        .iter()
        .filter(|c| c.name == name)
        .nth(nth)
        .unwrap_or_else(|| panic!("no check {name} #{nth}"))
}

/// The packet count at the start of the end `capture` check ("N packets, ...").
fn captured_packets(report: &DoctorReport) -> usize {
    let end = check(report, "capture", 1);
    end.detail
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {:?}", end.detail))
}

#[test]
fn router_resetting_client_hellos_is_a_middlebox() {
    if let Err(reason) = Lab::available() {
        eprintln!("skipping the doctor TLS lab: {reason}");
        return;
    }
    let lab = Lab::new().expect("lab");
    let server = Topology::SERVER_V4;
    // 8443: every ClientHello is reset by the router, and the control name (example.com,
    // the only SNI sent: the URL is an address) is dropped, so the control times out.
    // 8444: every ClientHello is reset, the control's too.
    // 8445: no rule (healthy).
    serve_tls(&lab, 8443);
    serve_tls(&lab, 8444);
    serve_tls(&lab, 8445);
    let drop_control = [
        "-p",
        "tcp",
        "--dport",
        "8443",
        "-m",
        "string",
        "--string",
        "example.com",
        "--algo",
        "bm",
        "-j",
        "DROP",
    ];
    router_rule(&lab, &drop_control);
    for port in ["8443", "8444"] {
        router_rule(
            &lab,
            &[
                "-p",
                "tcp",
                "--dport",
                port,
                "-m",
                "string",
                "--hex-string",
                CLIENT_HELLO,
                "--algo",
                "bm",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ],
        );
    }

    let report = doctor(&lab, &format!("https://{server}:8445/"));
    assert_eq!(
        report.verdict.cause,
        LiveCause::None,
        "{}",
        report.verdict.summary
    );

    for port in [8443, 8444] {
        let report = doctor(&lab, &format!("https://{server}:{port}/"));
        let v = &report.verdict;
        assert_eq!(
            (v.resetter, v.cause, v.hop),
            (LiveResetter::Middlebox, LiveCause::ContentFilter, Some(1)),
            "port {port}: {}",
            v.summary
        );
        assert!(v.summary.contains("hop 1"), "{}", v.summary);
        assert!(!v.summary.contains("server's TLS set-up"), "{}", v.summary);
        assert!(
            !v.advice.iter().any(|a| a.contains("certificate")),
            "{:?}",
            v.advice
        );
        // The reset's evidence is in the tls check itself.
        let tls = check(&report, "tls", 0);
        assert_eq!(tls.status, Status::Fail);
        assert!(
            tls.detail.contains("(captured RST: TTL 64, IP ID 0)"),
            "{}",
            tls.detail
        );
        // The capture kept the packets of this fast failure: the tcp check's connects, the
        // hop probes and both handshakes, with the resets.
        let packets = captured_packets(&report);
        assert!(packets >= 10, "only {packets} packets captured");
        let end = check(&report, "capture", 1);
        assert!(end.detail.contains("middlebox"), "{}", end.detail);
        assert!(!end.detail.contains(": server "), "{}", end.detail);
    }

    // The binary itself, in the client namespace, keeps the capture of this fast failure too.
    let Some(bin) = holdfast_binary() else {
        eprintln!("skipping the CLI run: no holdfast binary next to the test (cargo build)");
        return;
    };
    let out = lab
        .client()
        .command(
            &bin.to_string_lossy(),
            &[
                "doctor",
                "--json",
                "--insecure",
                "--timeout",
                "2",
                "--max-hops",
                "4",
                &format!("https://{server}:8443/"),
            ],
        )
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .expect("run holdfast doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(json["verdict"]["resetter"], "middlebox", "{stdout}");
    assert_eq!(json["verdict"]["hop"], 1, "{stdout}");
    let end = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "capture")
        .nth(1)
        .expect("end capture check");
    let packets: usize = end["detail"]
        .as_str()
        .and_then(|d| d.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(packets >= 10, "{stdout}");
}

/// The `holdfast` binary next to this test's directory (built by `cargo build`).
fn holdfast_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("holdfast");
    bin.exists().then_some(bin)
}

/// A plain HTTP server in `netns` on `[::]:port` (v4 and v6): `abort` resets each request
/// after part of an answer, otherwise it answers `Connection: close`.
fn serve_http(netns: &Netns, port: u16, abort: bool) {
    let listener = in_netns(netns, move || {
        TcpListener::bind(("::", port)).expect("bind in the namespace")
    });
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 4096];
                if !matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                    return;
                }
                if abort {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9999\r\n\r\nab");
                    std::thread::sleep(Duration::from_millis(100));
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                } else {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                }
            });
        }
    });
}

fn plain_doctor(lab: &Lab, url: &str) -> DoctorReport {
    let mut options = DoctorOptions::new(url);
    options.timeout = Duration::from_secs(2);
    options.max_idle = Duration::from_secs(1);
    options.repeat = 1;
    options.max_hops = 4;
    options.proxy_env = Some(Vec::new());
    let report =
        in_netns(lab.client(), move || live::run(&options, &mut Silent)).expect("the doctor runs");
    eprintln!("{url}: {}", serde_json::to_string_pretty(&report).unwrap());
    report
}

#[test]
fn http_resets_carry_their_ttl_and_the_capture_agrees_with_the_verdict() {
    if let Err(reason) = Lab::available() {
        eprintln!("skipping the doctor lab: {reason}");
        return;
    }
    let lab = Lab::new().expect("lab");
    let server = Topology::SERVER_V4;
    serve_http(lab.server(), 8082, true);
    serve_http(lab.server(), 8083, false);
    serve_http(lab.server(), 8090, false);
    router_rule(
        &lab,
        &[
            "-p",
            "tcp",
            "--dport",
            "8083",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    );
    // Every request to 8090 is reset by the router, the controls' too.
    router_rule(
        &lab,
        &[
            "-p",
            "tcp",
            "--dport",
            "8090",
            "-m",
            "string",
            "--string",
            "GET ",
            "--algo",
            "bm",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    );

    // The server's own abort: the http check shows the RST's TTL (63: hop 2, the server).
    let report = plain_doctor(&lab, &format!("http://{server}:8082/x"));
    assert_eq!(
        (report.verdict.resetter, report.verdict.cause),
        (LiveResetter::Server, LiveCause::AppAbort),
        "{}",
        report.verdict.summary
    );
    let http = check(&report, "http", 0);
    assert!(
        http.detail.contains("(captured RST: TTL 63, IP ID"),
        "{}",
        http.detail
    );

    // Forged by the router for every request: the summary follows the verdict.
    let report = plain_doctor(&lab, &format!("http://{server}:8090/x"));
    let v = &report.verdict;
    assert_eq!(
        (v.resetter, v.cause, v.hop),
        (LiveResetter::Middlebox, LiveCause::Injected, Some(1)),
        "{}",
        v.summary
    );
    assert!(!v.summary.contains("server aborts"), "{}", v.summary);
    assert!(v.summary.contains("hop 1"), "{}", v.summary);
    let http = check(&report, "http", 0);
    assert!(
        http.detail.contains("(captured RST: TTL 64, IP ID 0)"),
        "{}",
        http.detail
    );
    let end = check(&report, "capture", 1);
    assert!(!end.detail.contains(": server "), "{}", end.detail);
    assert!(end.detail.contains("middlebox"), "{}", end.detail);

    // A firewall REJECT on the port: the capture check does not call it a server refusal.
    let report = plain_doctor(&lab, &format!("http://{server}:8083/"));
    assert_eq!(
        (
            report.verdict.resetter,
            report.verdict.cause,
            report.verdict.hop
        ),
        (LiveResetter::Middlebox, LiveCause::FirewallReject, Some(1)),
        "{}",
        report.verdict.summary
    );
    let end = check(&report, "capture", 1);
    assert!(
        end.detail.contains("middlebox firewall_reject hop 1"),
        "{}",
        end.detail
    );
    assert!(!end.detail.contains("server refused"), "{}", end.detail);
}

#[test]
fn ipv6_zone_ids_reach_a_link_local_address() {
    if let Err(reason) = Lab::available() {
        eprintln!("skipping the doctor lab: {reason}");
        return;
    }
    let lab = Lab::new().expect("lab");
    lab.client()
        .run("ip", &["addr", "add", "fe80::1/64", "dev", "lo", "nodad"])
        .expect("a link-local address on the client's lo");
    serve_http(lab.client(), 29011, false);
    let report = plain_doctor(&lab, "http://[fe80::1%25lo]:29011/");
    assert_eq!(
        report.verdict.cause,
        LiveCause::None,
        "{}",
        report.verdict.summary
    );
    // An unknown zone is bad usage, not a DNS failure.
    let err = in_netns(lab.client(), || {
        live::run(
            &DoctorOptions::new("http://[fe80::1%25nosuch9]:29011/"),
            &mut Silent,
        )
        .unwrap_err()
    });
    assert!(err.to_string().contains("nosuch9"), "{err}");
}
