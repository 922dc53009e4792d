//! Data-plane fixes from the eighth audit: a target that breaks every response off mid-body
//! is ejected like one that resets, connections refused for `max_connections` are logged and
//! counted, an `h2c` upgrade is never passed on, an invalid `Host` gets a 400, and quick mode
//! refuses an admin listener on the client listener's address.

mod proxy_support;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_testkit::{Behavior, Misbehaving};
use proxy_support::{admin_get, metric_sum, Client, Holdfast};

fn config(targets: &[String], server_extra: &str, upstream_extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n{server_extra}\n\n[upstreams.pool]\ntargets = [{}]\n{upstream_extra}\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n",
        list.join(", ")
    )
}

fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// How long a failed target stays *suspect* (requests keep away from it while another target
/// is usable) in `balance.rs`: waiting this long leaves only ejection to keep requests away.
const SUSPECT_FOR: Duration = Duration::from_millis(2200);

/// Against a pool of `healthy` and `bad` (which breaks every response off mid-body) with
/// `consecutive_failures = 2`: two broken bodies, with time between them, must eject `bad`,
/// so that none of the next requests reaches it. `send` makes one request and says whether it
/// got a whole answer.
fn two_broken_bodies_eject(bad: &Misbehaving, mut send: impl FnMut() -> bool) {
    for round in 1..=2 {
        let mut tries = 0;
        while bad.requests() < round {
            tries += 1;
            assert!(tries <= 10, "the failing target was never chosen");
            send();
        }
        std::thread::sleep(SUSPECT_FOR);
    }
    // Before, the head counted as a success (and the broken body as nothing, or as a single
    // failure after it): the count of consecutive failures never reached 2.
    let failed = (0..10).filter(|_| !send()).count();
    assert_eq!(
        (bad.requests(), failed),
        (2, 0),
        "the target that broke two bodies off in a row was not ejected"
    );
}

#[test]
fn a_target_that_resets_every_response_mid_body_is_ejected() {
    let healthy = Misbehaving::start(Behavior::Healthy).unwrap();
    let bad = Misbehaving::start(Behavior::ResetMidBody).unwrap();
    let hf = Holdfast::start(&config(
        &[healthy.url(), bad.url()],
        "",
        "outlier = { consecutive_failures = 2, base_ejection_ms = 20000 }",
    ));
    let mut client = Client::new(hf.addr);
    two_broken_bodies_eject(&bad, || client.get("/echo").is_ok_and(|a| a.status == 200));
    let records = hf.records_eventually(12);
    let mid = records
        .iter()
        .filter(|r| r["reset_class"] == "upstream_reset_mid_response")
        .count();
    assert_eq!(mid, 2, "{records:?}");
}

#[test]
fn a_streamed_upload_whose_answer_breaks_off_counts_as_a_failure_too() {
    // Bodies over retry_buffer_bytes go through hyper's client: the same counting applies.
    let healthy = Misbehaving::start(Behavior::Healthy).unwrap();
    let bad = Misbehaving::start(Behavior::ResetMidBody).unwrap();
    let hf = Holdfast::start(&config(
        &[healthy.url(), bad.url()],
        "retry_buffer_bytes = 1024",
        "outlier = { consecutive_failures = 2, base_ejection_ms = 20000 }",
    ));
    let body = vec![b'u'; 8 * 1024];
    let mut client = Client::new(hf.addr);
    two_broken_bodies_eject(&bad, || {
        client
            .request("POST", "/up", &[], &body)
            .is_ok_and(|a| a.status == 200)
    });
}

#[test]
fn connections_over_max_connections_are_logged_and_counted_as_overloaded() {
    let slow = Misbehaving::start(Behavior::Slow(Duration::from_millis(1500))).unwrap();
    let hf = Holdfast::start(&config(&[slow.url()], "max_connections = 2", ""));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let addr = hf.addr;
            std::thread::spawn(move || Client::new(addr).get("/busy"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut s = TcpStream::connect(hf.addr).unwrap();
    let client_addr = s.local_addr().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /refused HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    for b in busy {
        assert_eq!(b.join().unwrap().unwrap().status, 200);
    }
    let records = hf.records_eventually(3);
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r["reset_class"] == "overloaded")
        .collect();
    assert_eq!(refused.len(), 1, "{records:?}");
    let r = refused[0];
    assert_eq!(r["status"], 503, "{r}");
    assert_eq!(r["route"], "", "{r}");
    assert_eq!(r["client"], client_addr.to_string().as_str(), "{r}");
    // The request is never read: no method or path.
    assert_eq!(
        (r["method"].as_str(), r["path"].as_str()),
        (Some(""), Some(""))
    );
    assert_eq!(r["bytes_out"].as_u64(), Some(out.len() as u64), "{r}");
    assert!(r["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
    let page = admin_get(hf.admin.unwrap(), "/metrics");
    assert_eq!(
        metric_sum(
            &page,
            "holdfast_failed_exchanges_total",
            "class=\"overloaded\""
        ),
        1.0,
        "{page}"
    );
    assert_eq!(
        metric_sum(
            &page,
            "holdfast_requests_total",
            "route=\"\",status=\"503\""
        ),
        1.0,
        "{page}"
    );
}

/// An upstream that answers every request with its head as the body, and keeps every head.
fn head_echo() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                while let Some(head) = proxy_support::read_request_head(&mut reader) {
                    seen.lock().unwrap().push(head.clone());
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{head}",
                        head.len()
                    );
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[test]
fn an_h2c_upgrade_is_never_passed_on() {
    let (up, heads) = head_echo();
    let hf = Holdfast::start(&config(&[format!("http://{up}")], "", ""));
    let mut s = TcpStream::connect(hf.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    s.write_all(b"GET /h2c HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        .unwrap();
    let first = proxy_support::read_answer(&mut reader, false).expect("an answer");
    // A plain HTTP/1.1 exchange: no switch, and the connection serves the next request.
    assert_eq!(first.status, 200, "{}", first.text());
    s.write_all(b"GET /after HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let second = proxy_support::read_answer(&mut reader, false).expect("a second answer");
    assert_eq!(second.status, 200, "{}", second.text());
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    let upgrade = heads[0].to_ascii_lowercase();
    assert!(upgrade.starts_with("get /h2c http/1.1\r\n"), "{upgrade}");
    for forbidden in ["upgrade", "http2-settings", "connection: upgrade"] {
        assert!(
            !upgrade.contains(forbidden),
            "`{forbidden}` reached the upstream: {upgrade}"
        );
    }
    // Other upgrades listed with h2c still go (without h2c).
    let mut s = TcpStream::connect(hf.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    s.write_all(
        b"GET /both HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: h2c, websocket\r\n\r\n",
    )
    .unwrap();
    let both = proxy_support::read_answer(&mut reader, false).expect("an answer");
    let head = both.text().to_ascii_lowercase();
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(!head.contains("h2c"), "{head}");
}

#[test]
fn an_invalid_host_gets_a_400() {
    let (up, heads) = head_echo();
    let hf = Holdfast::start(&config(&[format!("http://{up}")], "", ""));
    for host in ["a\"b", "a b", "a/b", "exa<mple>.com", "a:80x", "[::1"] {
        let out = raw(
            hf.addr,
            format!("GET /bad HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes(),
        );
        assert!(out.starts_with("HTTP/1.1 400"), "Host: {host}: {out}");
    }
    for host in ["example.com", "Example.com:8443", "[::1]:80", "127.0.0.1"] {
        let out = raw(
            hf.addr,
            format!("GET /good HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
        );
        assert!(out.starts_with("HTTP/1.1 200"), "Host: {host}: {out}");
    }
    let heads = heads.lock().unwrap().clone();
    assert!(
        heads.iter().all(|h| h.starts_with("GET /good ")),
        "an invalid Host reached the upstream: {heads:?}"
    );
    let records = hf.records_eventually(10);
    assert_eq!(
        records
            .iter()
            .filter(|r| r["status"] == 400 && r["reset_class"] == "bad_request")
            .count(),
        6,
        "{records:?}"
    );
}

#[test]
fn quick_mode_refuses_an_admin_address_equal_to_the_listen_address() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args([
            "serve",
            "--listen",
            &addr,
            "--upstream",
            "http://127.0.0.1:9",
            "--admin",
            &addr,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--admin") && stderr.contains("--listen") && stderr.contains(&addr),
        "the error names the conflict: {stderr}"
    );
    // It never got as far as starting a listener.
    assert!(!stderr.contains("admin on http://"), "{stderr}");
    assert!(!stderr.contains("cannot listen"), "{stderr}");
}
