//! The doctor's words for failures that are not resets (loopback): a slow server, an HTTP
//! 5xx answer, and a proxy set in a lowercase variable.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use holdfast_doctor::live::{DoctorOptions, DoctorReport, LiveCause, LiveResetter};
use support::live::{quick_options, run_doctor, serve_each};

/// A server that reads each request and answers `answer` after `delay`.
fn server(delay: Duration, answer: &'static str) -> u16 {
    serve_each(move |mut stream| {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        std::thread::sleep(delay);
        let _ = stream.write_all(answer.as_bytes());
        std::thread::sleep(Duration::from_millis(200));
    })
}

fn doctor(url: &str, tune: impl FnOnce(&mut DoctorOptions)) -> DoctorReport {
    let mut options = quick_options(url, Duration::from_secs(1));
    tune(&mut options);
    run_doctor(&options)
}

#[test]
fn a_slow_server_is_said_to_have_taken_the_request_not_to_drop_packets() {
    let port = server(
        Duration::from_secs(3),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let report = doctor(&format!("http://127.0.0.1:{port}/slow"), |_| {});
    let v = &report.verdict;
    assert_eq!(v.cause, LiveCause::Timeout);
    assert!(
        v.summary
            .contains("accepted the connection and the request")
            && v.summary.contains("within the timeout"),
        "{}",
        v.summary
    );
    let advice = v.advice.join(" | ");
    assert!(!advice.contains("DROP"), "{advice}");
    assert!(advice.contains("--timeout"), "{advice}");
}

#[test]
fn a_5xx_answer_is_no_reset_but_the_report_says_it_is_an_error_status() {
    let port = server(
        Duration::ZERO,
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let report = doctor(&format!("http://127.0.0.1:{port}/"), |_| {});
    let v = &report.verdict;
    assert_eq!((v.resetter, v.cause), (LiveResetter::None, LiveCause::None));
    assert!(!v.is_failure(), "exit status 0 as documented");
    assert!(
        v.summary.contains("HTTP 503") && v.summary.contains("error status"),
        "{}",
        v.summary
    );
    assert!(!v.summary.contains(" works:"), "{}", v.summary);
    assert!(!v.advice.is_empty());
}

#[test]
fn a_lowercase_proxy_variable_is_named_as_set() {
    // A dead proxy: a port nothing listens on.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let port = server(
        Duration::ZERO,
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let report = doctor(&format!("http://127.0.0.1:{port}/"), |o| {
        o.proxy_env = Some(vec![(
            "http_proxy".into(),
            format!("http://127.0.0.1:{dead_port}"),
        )]);
    });
    let v = &report.verdict;
    assert_eq!(v.cause, LiveCause::Proxy);
    assert!(v.summary.contains("http_proxy"), "{}", v.summary);
    assert!(!v.summary.contains("HTTP_PROXY"), "{}", v.summary);
    assert!(v.advice.join(" ").contains("http_proxy"), "{:?}", v.advice);
    // NO_PROXY as a CIDR block covers the address: no proxy.
    let report = doctor(&format!("http://127.0.0.1:{port}/"), |o| {
        o.proxy_env = Some(vec![
            ("http_proxy".into(), format!("http://127.0.0.1:{dead_port}")),
            ("no_proxy".into(), "127.0.0.0/8".into()),
        ]);
    });
    assert_eq!(
        report.verdict.cause,
        LiveCause::None,
        "{:?}",
        report.verdict
    );
}
