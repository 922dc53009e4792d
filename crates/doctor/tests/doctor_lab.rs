//! Root only: `holdfast doctor` against faults staged in a network-namespace lab (client,
//! router, server). The doctor runs in the client namespace (its thread joins it with
//! setns), the test servers in the server namespace, iptables rules in the router.
//! Skips with a printed reason where `ip netns` is unavailable.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use holdfast_doctor::live::{self, DoctorOptions, DoctorReport, LiveCause, LiveResetter, Silent};
use holdfast_netlab::{Lab, Netns, Topology};

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

/// How a test server answers.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Keep-alive; close an idle connection with a FIN after this long.
    KeepAlive(Duration),
    /// Read the request, send part of an answer, then abort with a reset (SO_LINGER 0).
    Abort,
}

/// Starts a threaded HTTP server in the server namespace on `port`.
fn serve(lab: &Lab, port: u16, behaviour: Behaviour) {
    let listener = in_netns(lab.server(), move || {
        TcpListener::bind(("::", port)).expect("bind (v4 and v6) in the server namespace")
    });
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || handle(stream, behaviour));
        }
    });
}

fn handle(mut stream: TcpStream, behaviour: Behaviour) {
    let mut buf = [0u8; 4096];
    match behaviour {
        Behaviour::Abort => {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                let _ =
                    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial");
                std::thread::sleep(Duration::from_millis(100));
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            }
        }
        Behaviour::KeepAlive(idle) => {
            let _ = stream.set_read_timeout(Some(idle));
            // One request per read is enough for the doctor's small GETs.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        }
    }
}

fn router_rule(lab: &Lab, rule: &[&str]) {
    let mut args = vec!["-A", "FORWARD"];
    args.extend_from_slice(rule);
    lab.router()
        .run("iptables", &args)
        .expect("iptables in the router");
}

fn doctor(lab: &Lab, url: &str, tune: impl FnOnce(&mut DoctorOptions)) -> DoctorReport {
    let mut options = DoctorOptions::new(url);
    options.timeout = Duration::from_secs(3);
    options.max_idle = Duration::from_secs(4);
    options.repeat = 2;
    options.max_hops = 4;
    options.proxy_env = Some(Vec::new());
    tune(&mut options);
    let report =
        in_netns(lab.client(), move || live::run(&options, &mut Silent)).expect("the doctor runs");
    eprintln!("{url}: {}", serde_json::to_string_pretty(&report).unwrap());
    report
}

/// The `holdfast` binary next to this test's directory (built by `cargo build --workspace`).
fn holdfast_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("holdfast");
    bin.exists().then_some(bin)
}

/// `holdfast doctor --json` itself, run with `ip netns exec` in the client namespace: exit
/// status 0 for a working URL, 1 for a failure, 2 for bad usage.
fn cli_in_client_namespace(lab: &Lab, server: &str, healthy: u16) {
    let Some(bin) = holdfast_binary() else {
        eprintln!(
            "skipping the CLI run: no holdfast binary next to the test (cargo build --workspace)"
        );
        return;
    };
    let bin = bin.to_string_lossy().into_owned();
    let run = |url: &str| {
        let out = lab
            .client()
            .command(
                &bin,
                &["doctor", "--json", "--max-idle", "1", "--repeat", "1", url],
            )
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .output()
            .expect("run holdfast doctor");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, stdout) = run(&format!("http://{server}:{healthy}/"));
    assert_eq!(code, Some(0), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(json["verdict"]["cause"], "none");
    let (code, stdout) = run(&format!("http://{server}:8084/blocked"));
    assert_eq!(code, Some(1), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(json["verdict"]["resetter"], "middlebox");
    assert_eq!(json["verdict"]["cause"], "content_filter");
    assert_eq!(json["verdict"]["hop"], 1);
    let (code, _) = run("http://[::1");
    assert_eq!(code, Some(2));
}

fn assert_verdict(
    report: &DoctorReport,
    resetter: LiveResetter,
    cause: LiveCause,
    hop: Option<u8>,
) {
    let v = &report.verdict;
    assert_eq!(
        (v.resetter, v.cause, v.hop),
        (resetter, cause, hop),
        "{}: {}",
        report.url,
        v.summary
    );
    assert!(!v.summary.is_empty());
    if cause != LiveCause::None {
        assert!(!v.advice.is_empty(), "advice for {cause:?}");
    }
}

#[test]
fn staged_faults_get_their_verdicts() {
    if let Err(reason) = Lab::available() {
        eprintln!("skipping the doctor lab: {reason}");
        return;
    }
    let lab = Lab::new().expect("lab");
    let server = Topology::SERVER_V4;
    let healthy = 8086;
    serve(&lab, 8082, Behaviour::Abort);
    serve(&lab, 8083, Behaviour::KeepAlive(Duration::from_secs(30)));
    serve(&lab, 8084, Behaviour::KeepAlive(Duration::from_secs(30)));
    serve(
        &lab,
        8085,
        Behaviour::KeepAlive(Duration::from_millis(1500)),
    );
    serve(&lab, healthy, Behaviour::KeepAlive(Duration::from_secs(30)));
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
    router_rule(
        &lab,
        &[
            "-p",
            "tcp",
            "--dport",
            "8084",
            "-m",
            "string",
            "--string",
            "/blocked",
            "--algo",
            "bm",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    );

    // Healthy: every layer passes, keep-alive outlives --max-idle.
    let report = doctor(&lab, &format!("http://{server}:{healthy}/"), |_| {});
    assert_verdict(&report, LiveResetter::None, LiveCause::None, None);
    let tcp = report.checks.iter().find(|c| c.name == "tcp").unwrap();
    assert!(tcp.detail.contains("server at hop 2"), "{}", tcp.detail);

    // Closed port: the server refuses.
    let report = doctor(&lab, &format!("http://{server}:8081/"), |_| {});
    assert_verdict(&report, LiveResetter::Server, LiveCause::Refused, None);

    // Server abort: every request reset by the server.
    let report = doctor(&lab, &format!("http://{server}:8082/x"), |_| {});
    assert_verdict(&report, LiveResetter::Server, LiveCause::AppAbort, None);

    // Router REJECT on the port: a firewall at hop 1 answers for the server.
    let report = doctor(&lab, &format!("http://{server}:8083/"), |_| {});
    assert_verdict(
        &report,
        LiveResetter::Middlebox,
        LiveCause::FirewallReject,
        Some(1),
    );

    // Router string match on the path: content filter located at hop 1.
    let report = doctor(&lab, &format!("http://{server}:8084/blocked"), |_| {});
    assert_verdict(
        &report,
        LiveResetter::Middlebox,
        LiveCause::ContentFilter,
        Some(1),
    );
    let locate = report
        .checks
        .iter()
        .find(|c| c.name == "locate")
        .expect("locate check");
    assert!(locate.detail.contains("2:RST"), "{}", locate.detail);

    // Without a capture (no root), the replay's first RST at the server's own distance cannot
    // be pinned on the router: the doctor says so instead of guessing.
    let report = doctor(&lab, &format!("http://{server}:8084/blocked"), |o| {
        o.capture = false
    });
    assert_verdict(
        &report,
        LiveResetter::Unknown,
        LiveCause::ContentFilter,
        None,
    );
    let locate = report
        .checks
        .iter()
        .find(|c| c.name == "locate")
        .expect("locate check");
    assert!(locate.detail.contains("lacking"), "{}", locate.detail);

    // Keep-alive idle close after 1.5 s, measured within 20%.
    let report = doctor(&lab, &format!("http://{server}:8085/"), |_| {});
    assert_verdict(
        &report,
        LiveResetter::Server,
        LiveCause::IdleKeepaliveClose,
        None,
    );
    let keepalive = report
        .checks
        .iter()
        .find(|c| c.name == "keepalive")
        .unwrap();
    let measured: f64 = keepalive
        .detail
        .split("after ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no idle time in {:?}", keepalive.detail));
    assert!(
        (measured - 1.5).abs() <= 0.3,
        "measured {measured}s for a 1.5 s idle close"
    );
    assert!(keepalive.detail.contains("FIN"), "{}", keepalive.detail);

    // IPv6: the hop limit plays the TTL's part.
    let report = doctor(
        &lab,
        &format!("http://[{}]:{healthy}/", Topology::SERVER_V6),
        |o| {
            o.max_idle = Duration::from_secs(1);
            o.repeat = 1;
        },
    );
    assert_verdict(&report, LiveResetter::None, LiveCause::None, None);
    let tcp = report.checks.iter().find(|c| c.name == "tcp").unwrap();
    assert!(tcp.detail.contains("server at hop 2"), "{}", tcp.detail);

    cli_in_client_namespace(&lab, server, healthy);

    // A dead proxy in the environment: nothing listens on the router's port 3128.
    let proxy = format!("http://{}:3128", Topology::ROUTER_CLIENT_V4);
    let report = doctor(&lab, &format!("http://{server}:{healthy}/"), |o| {
        o.proxy_env = Some(vec![("HTTP_PROXY".into(), proxy.clone())]);
    });
    assert_verdict(&report, LiveResetter::Proxy, LiveCause::Proxy, None);
}
