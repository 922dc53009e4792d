//! The doctor's capture keeps only its own probe connections (root, loopback): another
//! application's connections to the same server, reset or not, are neither evidence for the
//! verdict nor listed by the end `capture` check.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_doctor::live::capture::Probes;
use holdfast_doctor::live::{DoctorOptions, LiveCause, LiveResetter, Status};
use support::live::{end_capture, is_root, run_doctor, serve_each};

/// A server on 127.0.0.1 answering `200 OK` and closing.
fn healthy_server() -> u16 {
    serve_each(|mut stream| {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 4096];
        if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    })
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Another application: connects to `port` on the same server again and again (each one
/// refused with a reset) until dropped.
struct Background {
    stop: Arc<AtomicBool>,
}

impl Background {
    fn hammer(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while !flag.load(Ordering::Relaxed) {
                let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { stop }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn options(url: &str) -> DoctorOptions {
    let mut options = DoctorOptions::new(url);
    options.timeout = Duration::from_secs(3);
    options.max_idle = Duration::from_secs(1);
    options.repeat = 2;
    options.max_hops = 2;
    options.proxy_env = Some(Vec::new());
    options
}

#[test]
fn other_connections_to_the_server_are_not_in_the_capture() {
    if !is_root() {
        eprintln!("skipped: the capture needs root (AF_PACKET)");
        return;
    }
    let good = healthy_server();
    let closed = closed_port();
    let _noise = Background::hammer(closed);
    std::thread::sleep(Duration::from_millis(100));
    let report = run_doctor(&options(&format!("http://127.0.0.1:{good}/")));
    assert_eq!(
        (report.verdict.resetter, report.verdict.cause),
        (LiveResetter::None, LiveCause::None)
    );
    let end = end_capture(&report);
    assert_eq!(end.status, Status::Pass, "{}", end.detail);
    assert!(
        end.detail.contains("no reset"),
        "the other application's refused connects are not the doctor's: {}",
        end.detail
    );
    assert!(
        !end.detail.contains(&format!(":{closed}")),
        "{}",
        end.detail
    );
}

#[test]
fn a_refused_probe_is_judged_on_its_own_reset() {
    if !is_root() {
        eprintln!("skipped: the capture needs root (AF_PACKET)");
        return;
    }
    let closed = closed_port();
    let other = closed_port();
    let _noise = Background::hammer(other);
    std::thread::sleep(Duration::from_millis(100));
    let report = run_doctor(&options(&format!("http://127.0.0.1:{closed}/")));
    assert_eq!(
        (report.verdict.resetter, report.verdict.cause),
        (LiveResetter::Server, LiveCause::Refused)
    );
    let end = end_capture(&report);
    assert!(!end.detail.contains(&format!(":{other}")), "{}", end.detail);
    assert!(end.detail.contains(&format!(":{closed}")), "{}", end.detail);
}

/// The registry matches a packet by its exact 4-tuple and time.
#[test]
fn probes_own_only_their_four_tuples_after_they_were_made() {
    let probes = Probes::default();
    let server: SocketAddr = "10.0.0.2:80".parse().unwrap();
    probes.add(40000, server);
    let since = probes.list()[0].since_ns;
    let packet = |src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16| {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x14, 0, 0, 0, 0, 0, 0]);
        p
    };
    let later = since + 1;
    assert!(probes.owns(&packet([10, 0, 0, 1], 40000, [10, 0, 0, 2], 80), later));
    assert!(probes.owns(&packet([10, 0, 0, 2], 80, [10, 0, 0, 1], 40000), later));
    // Another local port, another server port, or a packet from before the probe.
    assert!(!probes.owns(&packet([10, 0, 0, 2], 80, [10, 0, 0, 1], 40001), later));
    assert!(!probes.owns(&packet([10, 0, 0, 2], 81, [10, 0, 0, 1], 40000), later));
    assert!(!probes.owns(&packet([10, 0, 0, 2], 80, [10, 0, 0, 1], 40000), since - 1));
}
