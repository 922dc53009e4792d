//! Resets the doctor's own probes cause (root, loopback): a healthy URL shows no RST
//! evidence; the doctor's own closes (a TLS session ticket left unread, a body not read to
//! its end) are labelled as its own, not blamed on anyone.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use holdfast_doctor::live::{DoctorOptions, LiveCause, LiveResetter};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use support::live::{end_capture, is_root, localhost_cert, run_doctor, serve_each, trickle};

/// A keep-alive TLS server on 127.0.0.1 answering every request on a connection.
fn tls_keepalive_server() -> u16 {
    let (_, config) = localhost_cert();
    serve_each(move |stream| serve(stream, config.clone()))
}

fn serve(stream: TcpStream, config: Arc<ServerConfig>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, stream);
    let mut buf = [0u8; 4096];
    while matches!(tls.read(&mut buf), Ok(n) if n > 0) {
        if tls
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=30\r\n\r\nok")
            .and_then(|_| tls.flush())
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn a_healthy_tls_url_shows_no_reset_evidence() {
    if !is_root() {
        eprintln!("skipped: the capture needs root (AF_PACKET)");
        return;
    }
    let port = tls_keepalive_server();
    let mut options = DoctorOptions::new(format!("https://localhost:{port}/"));
    options.insecure = true;
    options.timeout = Duration::from_secs(3);
    options.max_idle = Duration::from_millis(500);
    options.repeat = 3;
    options.max_hops = 2;
    options.proxy_env = Some(Vec::new());
    let report = run_doctor(&options);
    assert_eq!(
        (report.verdict.resetter, report.verdict.cause),
        (LiveResetter::None, LiveCause::None),
        "{}",
        report.verdict.summary
    );
    let end = end_capture(&report);
    assert!(end.detail.contains("no reset"), "{}", end.detail);
    for check in &report.checks {
        assert!(
            !check.detail.contains("client_abort") && !check.detail.contains("captured RST"),
            "{}: {}",
            check.name,
            check.detail
        );
    }
}

/// A plain server that answers with a large body that keeps coming slowly: the doctor reads
/// until its deadline and closes with data unread, which resets the connection from its
/// side.
fn endless_body_server() -> u16 {
    serve_each(|mut stream| {
        let mut buf = [0u8; 4096];
        if !matches!(stream.read(&mut buf), Ok(n) if n > 0) {
            return;
        }
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\nConnection: close\r\n\r\n",
        );
        let _ = stream.write_all(&vec![b'z'; 2 << 20]);
        let block = [b'z'; 4096];
        trickle(&mut stream, &block, Duration::from_millis(50));
    })
}

#[test]
fn the_doctor_s_own_close_of_an_unread_body_is_labelled_not_evidence() {
    if !is_root() {
        eprintln!("skipped: the capture needs root (AF_PACKET)");
        return;
    }
    let port = endless_body_server();
    let mut options = DoctorOptions::new(format!("http://127.0.0.1:{port}/download"));
    options.timeout = Duration::from_secs(1);
    options.repeat = 1;
    options.max_hops = 2;
    options.proxy_env = Some(Vec::new());
    let report = run_doctor(&options);
    assert_eq!(
        report.verdict.cause,
        LiveCause::None,
        "{}",
        report.verdict.summary
    );
    let end = end_capture(&report);
    assert!(
        end.detail.contains("no reset from the server or the path"),
        "{}",
        end.detail
    );
    assert!(
        end.detail.contains("sent by holdfast doctor (expected"),
        "the doctor's own RST is labelled as its own: {}",
        end.detail
    );
    assert!(!end.detail.contains("client_abort"), "{}", end.detail);
}
