//! Root only: the doctor's verdicts for a router's ICMP reject (iptables' default `REJECT`)
//! and a router's conntrack idle timeout that resets reused connections, staged in a
//! network-namespace lab as in `doctor_lab.rs`. Skips with a printed reason where `ip netns`
//! is unavailable.

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

/// A keep-alive HTTP server in the server namespace that keeps idle connections 30 s.
fn serve(lab: &Lab, port: u16) {
    let listener = in_netns(lab.server(), move || {
        TcpListener::bind(("::", port)).expect("bind (v4 and v6) in the server namespace")
    });
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || handle(stream));
        }
    });
}

fn handle(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
}

fn router(lab: &Lab, args: &[&str]) {
    lab.router()
        .run("iptables", args)
        .expect("iptables in the router");
}

fn doctor(lab: &Lab, url: &str, tune: impl FnOnce(&mut DoctorOptions)) -> DoctorReport {
    let mut options = DoctorOptions::new(url);
    options.timeout = Duration::from_secs(3);
    options.max_idle = Duration::from_secs(4);
    options.repeat = 1;
    options.max_hops = 4;
    options.proxy_env = Some(Vec::new());
    tune(&mut options);
    let report =
        in_netns(lab.client(), move || live::run(&options, &mut Silent)).expect("the doctor runs");
    eprintln!("{url}: {}", serde_json::to_string_pretty(&report).unwrap());
    report
}

fn detail<'a>(report: &'a DoctorReport, name: &str) -> &'a str {
    &report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check"))
        .detail
}

/// One test for both labs: `Lab::available` probes with a per-process namespace name, so
/// two lab tests of one binary must not run it at the same time.
#[test]
fn router_rejects_and_idle_resets_are_the_router_s() {
    if let Err(reason) = Lab::available() {
        eprintln!("skipping the doctor lab: {reason}");
        return;
    }
    a_router_icmp_reject_is_a_firewall_at_hop_1();
    a_router_conntrack_idle_reset_is_a_middlebox_idle_timeout();
}

/// Audit D2: `REJECT --reject-with icmp-port-unreachable` at the router is a firewall at
/// hop 1, not the server's RST, and the running capture is not "suggested".
fn a_router_icmp_reject_is_a_firewall_at_hop_1() {
    let lab = Lab::new().expect("lab");
    let server = Topology::SERVER_V4;
    serve(&lab, 8091);
    router(
        &lab,
        &[
            "-A",
            "FORWARD",
            "-p",
            "tcp",
            "--dport",
            "8091",
            "-j",
            "REJECT",
            "--reject-with",
            "icmp-port-unreachable",
        ],
    );
    let report = doctor(&lab, &format!("http://{server}:8091/"), |_| {});
    let v = &report.verdict;
    assert_eq!(
        (v.resetter, v.cause, v.hop),
        (LiveResetter::Middlebox, LiveCause::FirewallReject, Some(1)),
        "{}",
        v.summary
    );
    assert!(v.summary.contains("ICMP"), "{}", v.summary);
    let tcp = detail(&report, "tcp");
    assert!(!tcp.contains("reset answering"), "{tcp}");
    assert!(!tcp.contains("no-capture"), "{tcp}");
}

/// Audit D1: the router's conntrack forgets an idle connection after 2 s and resets it on
/// reuse (TTL of hop 1, the server at hop 2): a device's idle timeout, not the server's.
fn a_router_conntrack_idle_reset_is_a_middlebox_idle_timeout() {
    let lab = Lab::new().expect("lab");
    let server = Topology::SERVER_V4;
    serve(&lab, 8092);
    router(
        &lab,
        &[
            "-A",
            "FORWARD",
            "-p",
            "tcp",
            "-m",
            "conntrack",
            "--ctstate",
            "INVALID",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    );
    lab.router()
        .sysctl("net.netfilter.nf_conntrack_tcp_loose", "0")
        .expect("sysctl");
    lab.router()
        .sysctl("net.netfilter.nf_conntrack_tcp_timeout_established", "2")
        .expect("sysctl");
    let report = doctor(&lab, &format!("http://{server}:8092/"), |_| {});
    let v = &report.verdict;
    assert_eq!(
        (v.resetter, v.cause, v.hop),
        (
            LiveResetter::Middlebox,
            LiveCause::IdleTimeoutMiddlebox,
            Some(1)
        ),
        "{}",
        v.summary
    );
    let keepalive = detail(&report, "keepalive");
    assert!(!keepalive.contains("silently"), "{keepalive}");
    assert!(keepalive.contains("reset"), "{keepalive}");
}
