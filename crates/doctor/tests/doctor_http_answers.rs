//! How the doctor reads answers (loopback, no capture): interim `1xx` answers before the
//! final one, bodies larger than any buffer (read and counted, a reset in the middle still
//! seen), and `--timeout` as one deadline for a whole step, so a server that trickles its
//! answer (HTTP head, HTTP body or TLS handshake) cannot hold a probe.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use holdfast_doctor::live::{self, DoctorReport, LiveCause, LiveResetter, Silent, Status};
use support::live::{check, print_report, quick_options, send, serve_each, trickle};

/// A server on 127.0.0.1: `answer` handles each connection after its request head.
fn server(answer: fn(&mut TcpStream)) -> u16 {
    serve_each(move |mut stream| {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        answer(&mut stream);
    })
}

/// Runs the doctor on `url` on its own thread and fails (instead of hanging) when it takes
/// longer than `limit` seconds.
fn doctor_within(
    url: &str,
    limit: u64,
    tune: impl FnOnce(&mut live::DoctorOptions),
) -> DoctorReport {
    let limit = Duration::from_secs(limit);
    let mut options = quick_options(url, Duration::from_secs(2));
    tune(&mut options);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(live::run(&options, &mut Silent));
    });
    let report = rx
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no verdict for {url} within {limit:?}"))
        .expect("the doctor runs");
    print_report(&report);
    report
}

/// [`doctor_within`] on `path` of the server at `port` on 127.0.0.1.
fn doctor_at(
    port: u16,
    path: &str,
    limit: u64,
    tune: impl FnOnce(&mut live::DoctorOptions),
) -> DoctorReport {
    doctor_within(&format!("http://127.0.0.1:{port}{path}"), limit, tune)
}

/// Asserts the verdict's cause, showing its summary when it is not `cause`.
fn assert_cause(report: &DoctorReport, cause: LiveCause) {
    assert_eq!(report.verdict.cause, cause, "{}", report.verdict.summary);
}

/// Asserts the verdict's resetter and cause, showing its summary when they differ.
fn assert_verdict(report: &DoctorReport, resetter: LiveResetter, cause: LiveCause) {
    assert_eq!(
        (report.verdict.resetter, report.verdict.cause),
        (resetter, cause),
        "{}",
        report.verdict.summary
    );
}

/// Asserts that a check's detail contains `text`, showing the detail when it does not.
fn assert_detail(check: &live::Check, text: &str) {
    assert!(check.detail.contains(text), "{}", check.detail);
}

#[test]
fn interim_answers_are_skipped_for_the_final_one() {
    // 100 Continue and 103 Early Hints, each in its own segment, then the real answer.
    let port = server(|s| {
        send(s, b"HTTP/1.1 100 Continue\r\n\r\n");
        std::thread::sleep(Duration::from_millis(50));
        send(
            s,
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
        );
        std::thread::sleep(Duration::from_millis(50));
        send(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        );
    });
    let report = doctor_at(port, "/", 20, |_| {});
    assert_verdict(&report, LiveResetter::None, LiveCause::None);
    let http = check(&report, "http");
    assert_eq!(http.status, Status::Pass, "{}", http.detail);
    assert_detail(http, "answered 200");
    assert!(
        http.detail.contains("100 Continue") && http.detail.contains("103 Early Hints"),
        "the interim answers are mentioned: {}",
        http.detail
    );
    assert_detail(http, "(5 body bytes)");
    assert!(
        report.verdict.summary.contains("answered 200"),
        "{}",
        report.verdict.summary
    );

    // The final status decides, not the interim one: a 503 after 100 Continue is an error
    // status.
    let port = server(|s| {
        send(
            s,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    });
    let report = doctor_at(port, "/", 20, |_| {});
    assert_eq!(check(&report, "http").status, Status::Warn);
    assert!(
        report.verdict.summary.contains("HTTP 503"),
        "{}",
        report.verdict.summary
    );
}

const SIX_MIB: usize = 6 << 20;

#[test]
fn a_large_body_is_read_and_counted_not_a_failure() {
    // 6 MiB with a Content-Length: more than the doctor ever buffers.
    let port = server(|s| {
        send(
            s,
            format!("HTTP/1.1 200 OK\r\nContent-Length: {SIX_MIB}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        send(s, &vec![b'x'; SIX_MIB]);
    });
    let report = doctor_at(port, "/big", 30, |_| {});
    assert_cause(&report, LiveCause::None);
    let http = check(&report, "http");
    assert_eq!(http.status, Status::Pass, "{}", http.detail);
    assert_detail(http, &format!("({SIX_MIB} body bytes)"));

    // The same body chunked, in 64 KiB chunks. The server keeps the connection open after
    // the last chunk: the body ends there, not at a close (which would miss the deadline).
    let port = server(|s| {
        send(
            s,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        let chunk = vec![b'y'; 64 << 10];
        for _ in 0..SIX_MIB / chunk.len() {
            send(s, format!("{:x}\r\n", chunk.len()).as_bytes());
            send(s, &chunk);
            send(s, b"\r\n");
        }
        send(s, b"0\r\n\r\n");
        std::thread::sleep(Duration::from_secs(4));
    });
    let report = doctor_at(port, "/big", 30, |_| {});
    assert_cause(&report, LiveCause::None);
    let http = check(&report, "http");
    assert_detail(http, &format!("({SIX_MIB} body bytes)"));
}

#[test]
fn a_body_beyond_the_read_limit_is_enough_to_know_the_server_answers() {
    // A 1 GiB body: the doctor reads a good part of it, stops, and says so.
    let port = server(|s| {
        send(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\nKeep-Alive: timeout=30\r\n\r\n",
        );
        let block = vec![b'z'; 1 << 20];
        while s.write_all(&block).is_ok() {}
    });
    let report = doctor_at(port, "/huge", 60, |o| o.timeout = Duration::from_secs(20));
    assert_cause(&report, LiveCause::None);
    let http = check(&report, "http");
    assert_eq!(http.status, Status::Pass, "{}", http.detail);
    // 64 MiB, the doctor's read limit.
    assert_detail(http, "read 67108864 of 1073741824 body bytes, then stopped");
    // The connection holds the unread rest: it is not reused for the keep-alive check.
    let keepalive = check(&report, "keepalive");
    assert_eq!(keepalive.status, Status::Skip, "{}", keepalive.detail);
    assert_detail(keepalive, "not read to its end");
}

#[test]
fn a_large_body_still_arriving_at_the_deadline_is_answered_not_a_timeout() {
    // 2 MiB at once, then a slow stream: a big download on a slow link, not a trickle.
    let port = server(|s| {
        send(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\nConnection: close\r\n\r\n",
        );
        send(s, &vec![b'x'; 2 << 20]);
        let block = [b'x'; 4096];
        trickle(s, &block, Duration::from_millis(100));
    });
    let report = doctor_at(port, "/download", 20, |o| {
        o.timeout = Duration::from_secs(1)
    });
    assert_cause(&report, LiveCause::None);
    let http = check(&report, "http");
    assert_eq!(http.status, Status::Pass, "{}", http.detail);
    assert_detail(http, "before the --timeout deadline");
    assert!(http.ms < 2500, "{} ms", http.ms);
}

#[test]
fn a_reset_in_the_middle_of_a_large_body_is_still_a_reset() {
    // 5 MiB of a 16 MiB body, a pause for the doctor to read them, then an abort.
    let port = server(|s| {
        send(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 16777216\r\nConnection: close\r\n\r\n",
        );
        send(s, &vec![b'x'; 5 << 20]);
        std::thread::sleep(Duration::from_millis(300));
        let _ = socket2::SockRef::from(&*s).set_linger(Some(Duration::ZERO));
    });
    let report = doctor_at(port, "/big", 30, |_| {});
    assert_verdict(&report, LiveResetter::Server, LiveCause::AppAbort);
    let http = check(&report, "http");
    assert_eq!(http.status, Status::Fail, "{}", http.detail);
    let after: u64 = http
        .detail
        .strip_prefix("reset after ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", http.detail));
    assert!(
        after > 4 << 20,
        "the reset came after 5 MiB: {}",
        http.detail
    );
}

#[test]
fn a_server_trickling_its_head_times_out_at_the_deadline() {
    // A head that never ends, one byte every 200 ms: each read gets a byte well within the
    // timeout, but the whole answer never comes.
    let port = server(|s| {
        send(s, b"HTTP/1.1 200 OK\r\nX-Slow: ");
        trickle(s, b"a", Duration::from_millis(200));
    });
    let started = Instant::now();
    let report = doctor_at(port, "/", 20, |o| o.timeout = Duration::from_secs(1));
    assert_verdict(&report, LiveResetter::None, LiveCause::Timeout);
    let http = check(&report, "http");
    assert!(
        http.ms < 2500,
        "the exchange is bounded by --timeout as a whole: {} ms",
        http.ms
    );
    assert_detail(http, "--timeout deadline");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_server_trickling_its_body_times_out_at_the_deadline() {
    let port = server(|s| {
        send(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
        );
        trickle(s, b"b", Duration::from_millis(200));
    });
    let report = doctor_at(port, "/", 20, |o| o.timeout = Duration::from_secs(1));
    assert_cause(&report, LiveCause::Timeout);
    assert!(check(&report, "http").ms < 2500);
}

#[test]
fn a_tls_server_trickling_its_handshake_times_out_at_the_deadline() {
    // After the ClientHello: a handshake record header announcing 16 KiB, then its bytes
    // one every 200 ms.
    let port = serve_each(|mut stream| {
        let mut hello = [0u8; 4096];
        if !matches!(stream.read(&mut hello), Ok(n) if n > 0) {
            return;
        }
        send(&mut stream, &[0x16, 0x03, 0x03, 0x40, 0x00, 0x02]);
        trickle(&mut stream, &[0], Duration::from_millis(200));
    });
    let report = doctor_within(&format!("https://localhost:{port}/"), 20, |o| {
        o.timeout = Duration::from_secs(1);
        o.insecure = true;
    });
    assert_verdict(&report, LiveResetter::None, LiveCause::Timeout);
    let tls = check(&report, "tls");
    assert_eq!(tls.status, Status::Fail, "{}", tls.detail);
    // The real handshake and the control one, each bounded by the deadline.
    assert!(tls.ms < 4000, "{} ms: {}", tls.ms, tls.detail);
}
