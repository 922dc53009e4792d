//! `holdfast doctor` against servers on 127.0.0.1 (no namespaces needed): a healthy TLS
//! server verified with a private CA file, a server that resets handshakes carrying one
//! server name (its own TLS rejection, not SNI filtering), a closed port, a dead proxy, and
//! bad input.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use holdfast_doctor::live::{
    self, DoctorError, DoctorOptions, DoctorReport, LiveCause, LiveResetter, Silent, Status,
};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use support::live::{localhost_cert, run_doctor, serve_each};

/// A self-signed certificate for `localhost`, its PEM written to a temp file.
struct Cert {
    config: Arc<ServerConfig>,
    pem_path: std::path::PathBuf,
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pem_path);
    }
}

fn cert(tag: &str) -> Cert {
    let (pem, config) = localhost_cert();
    let pem_path =
        std::env::temp_dir().join(format!("holdfast-doctor-{tag}-{}.pem", std::process::id()));
    std::fs::write(&pem_path, pem).unwrap();
    Cert { config, pem_path }
}

/// A TLS server on 127.0.0.1 answering `Connection: close`. When `blocked_sni` is set, a
/// ClientHello carrying that name is answered with a reset, as a server that rejects an
/// unknown SNI by aborting does.
fn tls_server(config: Arc<ServerConfig>, blocked_sni: Option<&'static str>) -> u16 {
    serve_each(move |stream| serve_tls(stream, config.clone(), blocked_sni))
}

fn serve_tls(stream: TcpStream, config: Arc<ServerConfig>, blocked_sni: Option<&str>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if let Some(name) = blocked_sni {
        let mut hello = [0u8; 2048];
        let n = stream.peek(&mut hello).unwrap_or(0);
        if hello[..n].windows(name.len()).any(|w| w == name.as_bytes()) {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            return;
        }
    }
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

fn doctor(url: &str, tune: impl FnOnce(&mut DoctorOptions)) -> DoctorReport {
    let mut options = DoctorOptions::new(url);
    options.timeout = Duration::from_secs(3);
    options.max_idle = Duration::from_secs(2);
    options.repeat = 2;
    options.max_hops = 4;
    options.proxy_env = Some(Vec::new());
    tune(&mut options);
    run_doctor(&options)
}

fn verdict(report: &DoctorReport) -> (LiveResetter, LiveCause) {
    (report.verdict.resetter, report.verdict.cause)
}

#[test]
fn healthy_tls_server_verified_with_a_ca_file() {
    let cert = cert("ok");
    let port = tls_server(cert.config.clone(), None);
    let pem = cert.pem_path.clone();
    let report = doctor(&format!("https://localhost:{port}/"), |o| {
        o.ca_file = Some(pem)
    });
    assert_eq!(
        verdict(&report),
        (LiveResetter::None, LiveCause::None),
        "{}",
        report.verdict.summary
    );
    let tls = report.checks.iter().find(|c| c.name == "tls").unwrap();
    assert_eq!(tls.status, Status::Pass, "{}", tls.detail);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verdict"]["resetter"], "none");
    assert!(json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ms"].is_u64()));
}

#[test]
fn untrusted_certificate_is_a_tls_failure() {
    let cert = cert("untrusted");
    let port = tls_server(cert.config.clone(), None);
    // Verified against the web roots, the self-signed certificate fails.
    let report = doctor(&format!("https://localhost:{port}/"), |_| {});
    assert_eq!(
        verdict(&report),
        (LiveResetter::None, LiveCause::Tls),
        "{}",
        report.verdict.summary
    );
}

/// A loopback server that resets the handshake for one server name (as a server does for an
/// unknown SNI) is the server rejecting the name: nothing sits between on loopback, so it is
/// no middlebox's SNI filter.
#[test]
fn a_loopback_server_resetting_one_server_name_rejects_it_itself() {
    let cert = cert("sni");
    let port = tls_server(cert.config.clone(), Some("localhost"));
    let report = doctor(&format!("https://localhost:{port}/"), |o| o.insecure = true);
    assert_eq!(
        verdict(&report),
        (LiveResetter::Server, LiveCause::Tls),
        "{}",
        report.verdict.summary
    );
    assert_eq!(report.verdict.hop, None);
    let summary = &report.verdict.summary;
    assert!(summary.contains("itself resets"), "{summary}");
    assert!(summary.contains("runs on this machine"), "{summary}");
    let advice = report.verdict.advice.join(" | ");
    assert!(
        advice.contains("configure the server for localhost"),
        "{advice}"
    );
    assert!(!advice.contains("VPN"), "{advice}");
    let tls = report.checks.iter().find(|c| c.name == "tls").unwrap();
    assert!(
        tls.detail
            .contains("control SNI example.com: handshake completed"),
        "{}",
        tls.detail
    );
}

#[test]
fn closed_port_is_refused_by_the_server() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let report = doctor(&format!("http://127.0.0.1:{port}/"), |_| {});
    assert_eq!(
        verdict(&report),
        (LiveResetter::Server, LiveCause::Refused),
        "{}",
        report.verdict.summary
    );
    assert!(report.verdict.is_failure());
}

#[test]
fn dead_proxy_in_the_environment_is_blamed() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let report = doctor("http://127.0.0.1:9/", |o| {
        o.proxy_env = Some(vec![("http_proxy".into(), format!("127.0.0.1:{dead}"))]);
    });
    assert_eq!(verdict(&report), (LiveResetter::Proxy, LiveCause::Proxy));
    assert_eq!(
        report.checks.len(),
        1,
        "the doctor stops at the failing layer"
    );
    // NO_PROXY covering the host turns the proxy off.
    let report = doctor(&format!("http://127.0.0.1:{dead}/"), |o| {
        o.proxy_env = Some(vec![
            ("HTTP_PROXY".into(), format!("127.0.0.1:{dead}")),
            ("NO_PROXY".into(), "127.0.0.1".into()),
        ]);
    });
    assert_eq!(
        report.checks[0].status,
        Status::Pass,
        "{}",
        report.checks[0].detail
    );
}

#[test]
fn bad_input_is_an_error_not_a_verdict() {
    for url in ["not a url", "ftp://example.com/", "example.com"] {
        let err = live::run(&DoctorOptions::new(url), &mut Silent).unwrap_err();
        assert!(matches!(err, DoctorError::BadUrl { .. }), "{url}: {err}");
        assert!(err.to_string().contains("http://"), "{err}");
    }
    let mut options = DoctorOptions::new("http://127.0.0.1/");
    options.max_hops = 0;
    assert!(matches!(
        live::run(&options, &mut Silent),
        Err(DoctorError::BadOption { .. })
    ));
}

/// A plain HTTP server on 127.0.0.1: `answer(n, stream)` handles the n-th request (from 1).
fn http_server(answer: fn(usize, &mut TcpStream)) -> u16 {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    serve_each(move |mut stream| {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = [0u8; 4096];
        if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            answer(n, &mut stream);
        }
    })
}

fn abort(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[test]
fn intermittent_resets_show_their_pattern() {
    // Every even request is aborted with a reset; the first one (the http check) passes.
    let port = http_server(|n, stream| {
        if n % 2 == 0 {
            abort(stream);
        } else {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let report = doctor(&format!("http://127.0.0.1:{port}/"), |o| o.repeat = 4);
    assert_eq!(
        verdict(&report),
        (LiveResetter::Unknown, LiveCause::Unknown)
    );
    let stability = report
        .checks
        .iter()
        .find(|c| c.name == "stability")
        .unwrap();
    assert_eq!(stability.status, Status::Warn);
    assert_eq!(stability.detail, "2 of 4 failed: RST ok RST ok");
}

#[test]
fn idle_connection_reset_is_an_idle_keepalive_problem() {
    // Keep-alive answer, then a reset after 0.5 s of idleness.
    let port = http_server(|_, stream| {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=30\r\n\r\nok");
        std::thread::sleep(Duration::from_millis(500));
        abort(stream);
    });
    let report = doctor(&format!("http://127.0.0.1:{port}/"), |o| o.repeat = 1);
    assert_eq!(
        verdict(&report),
        (LiveResetter::Server, LiveCause::IdleKeepaliveClose),
        "{}",
        report.verdict.summary
    );
    let keepalive = report
        .checks
        .iter()
        .find(|c| c.name == "keepalive")
        .unwrap();
    assert!(
        keepalive.detail.starts_with("reset after 0.5"),
        "{}",
        keepalive.detail
    );
    assert!(
        keepalive.detail.contains("timeout=30"),
        "{}",
        keepalive.detail
    );
}

#[test]
fn announced_idle_close_passes() {
    // Announces 1 s and closes with a FIN after 1 s idle: well-behaved.
    let port = http_server(|_, stream| {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=1\r\n\r\nok");
        std::thread::sleep(Duration::from_secs(1));
    });
    let report = doctor(&format!("http://127.0.0.1:{port}/"), |o| o.repeat = 1);
    assert_eq!(
        verdict(&report),
        (LiveResetter::None, LiveCause::None),
        "{}",
        report.verdict.summary
    );
    let keepalive = report
        .checks
        .iter()
        .find(|c| c.name == "keepalive")
        .unwrap();
    assert_eq!(keepalive.status, Status::Pass, "{}", keepalive.detail);
    assert!(keepalive.detail.contains("FIN"), "{}", keepalive.detail);
}

/// A DNS server on 127.0.0.1 (UDP) answering every A query with `v4` and every AAAA query
/// with ::1.
fn fake_resolver(v4: [u8; 4]) -> std::net::SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let query = &buf[..n];
            // The question ends after the name's zero label and 4 bytes of type and class.
            let Some(end) = query[12..].iter().position(|b| *b == 0).map(|p| 12 + p + 5) else {
                continue;
            };
            if end > n {
                continue;
            }
            let qtype = u16::from_be_bytes([query[end - 4], query[end - 3]]);
            let rdata: Vec<u8> = match qtype {
                1 => v4.to_vec(),
                28 => std::net::Ipv6Addr::LOCALHOST.octets().to_vec(),
                _ => Vec::new(),
            };
            let mut reply = Vec::new();
            reply.extend_from_slice(&query[..2]);
            reply.extend_from_slice(&[
                0x81,
                0x80,
                0,
                1,
                0,
                u8::from(!rdata.is_empty()),
                0,
                0,
                0,
                0,
            ]);
            reply.extend_from_slice(&query[12..end]);
            if !rdata.is_empty() {
                reply.extend_from_slice(&[0xc0, 0x0c]);
                reply.extend_from_slice(&qtype.to_be_bytes());
                reply.extend_from_slice(&[0, 1, 0, 0, 0, 60, 0, rdata.len() as u8]);
                reply.extend_from_slice(&rdata);
            }
            let _ = socket.send_to(&reply, from);
        }
    });
    addr
}

#[test]
fn chosen_resolver_is_asked_on_its_port() {
    // Only the fake resolver is asked (no system lookup, so nothing leaves the machine).
    let liar = fake_resolver([127, 0, 0, 2]);
    let got = live::dns::with_resolver("probe.holdfast.test", liar, Duration::from_secs(3))
        .expect("the fake resolver answers");
    let want: std::collections::BTreeSet<std::net::IpAddr> =
        ["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()].into();
    assert_eq!(got, want);
    // A resolver that does not answer is an error, not a hang: one deadline bounds the
    // whole lookup (A and AAAA, UDP then TCP), not each query.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    let err = live::dns::with_resolver(
        "probe.holdfast.test",
        silent.local_addr().unwrap(),
        Duration::from_millis(500),
    );
    let took = started.elapsed();
    assert!(err.is_err(), "{err:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}
