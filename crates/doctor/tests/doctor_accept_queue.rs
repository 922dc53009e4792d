//! A full accept queue (listen backlog overflow) on loopback: a listener with backlog 1 that
//! never calls accept(), filled by a few connections. Its kernel then drops new SYNs; the
//! doctor names the server's full queue, with the queue and backlog as evidence and the fix,
//! instead of a plain timeout or "run again".

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use holdfast_doctor::live::{DoctorReport, LiveCause, LiveResetter, Status};
use socket2::{Domain, Socket, Type};
use support::live::{check, quick_options, run_doctor};

/// A listener on 127.0.0.1 with backlog 1 that never accepts.
fn listener() -> (Socket, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(1).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}

/// Connects `n` times (at most), keeping the connections; stops at the first connect that
/// gets no answer (the queue is full).
fn fill(addr: SocketAddr, n: usize) -> Vec<Socket> {
    let mut held = Vec::new();
    for _ in 0..n {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let connected = socket
            .connect_timeout(&addr.into(), Duration::from_millis(300))
            .is_ok();
        held.push(socket);
        if !connected {
            break;
        }
    }
    held
}

fn doctor(url: &str) -> DoctorReport {
    let mut options = quick_options(url, Duration::from_millis(1500));
    options.max_hops = 1;
    run_doctor(&options)
}

fn assert_full_queue(report: &DoctorReport) {
    let v = &report.verdict;
    assert_eq!(
        (v.resetter, v.cause),
        (LiveResetter::Server, LiveCause::AcceptQueueOverflow),
        "{}",
        v.summary
    );
    assert!(v.summary.contains("accept queue"), "{}", v.summary);
    assert!(v.summary.contains("listen backlog"), "{}", v.summary);
    assert!(
        v.summary.contains("backlog of 1: full"),
        "the queue and its backlog are the evidence: {}",
        v.summary
    );
    let advice = v.advice.join(" | ");
    assert!(
        advice.contains("somaxconn") && advice.contains("accept"),
        "{advice}"
    );
    assert!(!advice.contains("run again"), "{advice}");
    let json = serde_json::to_value(report).unwrap();
    assert_eq!(json["verdict"]["cause"], "accept_queue_overflow");
}

#[test]
fn a_full_accept_queue_is_named_with_its_backlog() {
    let (_listener, addr) = listener();
    let _held = fill(addr, 4);
    let report = doctor(&format!("http://{addr}/"));
    assert_full_queue(&report);
    let tcp = check(&report, "tcp");
    assert_eq!(tcp.status, Status::Fail, "{}", tcp.detail);
    assert!(tcp.detail.contains("backlog of 1"), "{}", tcp.detail);
}

#[test]
fn a_queue_the_probe_itself_fills_is_named_not_a_retry() {
    // One place left: the tcp check's connect takes it, and every later SYN is dropped.
    let (_listener, addr) = listener();
    let held = fill(addr, 1);
    assert_eq!(held.len(), 1);
    let report = doctor(&format!("http://{addr}/"));
    let tcp = check(&report, "tcp");
    assert_ne!(tcp.status, Status::Fail, "{}", tcp.detail);
    assert_full_queue(&report);
    assert!(
        !report.verdict.summary.contains("run again"),
        "{}",
        report.verdict.summary
    );
}
