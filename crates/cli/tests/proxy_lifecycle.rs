//! The gateway's own behaviour: overload answers, HTTP hygiene, SIGHUP reload under load,
//! SIGTERM drain, `holdfast check`, and the demo quick start.

mod proxy_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_testkit::{Behavior, Misbehaving};
use proxy_support::{admin_get, metric_sum, Client, Holdfast};

fn config(url: &str, server_extra: &str, route_extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n{server_extra}\n\n[upstreams.pool]\ntargets = [\"{url}\"]\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n{route_extra}\n"
    )
}

#[test]
fn route_overload_gets_503_with_retry_after_never_a_reset() {
    let slow = Misbehaving::start(Behavior::Slow(Duration::from_millis(800))).unwrap();
    let hf = Holdfast::start(&config(
        &slow.url(),
        "",
        "max_concurrent = 2\nqueue_size = 1\nqueue_timeout_ms = 100",
    ));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let addr = hf.addr;
            std::thread::spawn(move || Client::new(addr).get("/"))
        })
        .collect();
    let mut overloaded = 0;
    for t in threads {
        let a = t.join().unwrap().expect("an answer, never a reset");
        if a.status == 503 {
            overloaded += 1;
            assert_eq!(a.header("retry-after"), Some("1"));
            assert!(a.text().contains("overloaded"), "{}", a.text());
        } else {
            assert_eq!(a.status, 200);
        }
    }
    assert!(
        overloaded >= 4,
        "8 requests, 2 slots and 1 queue place: {overloaded} got 503"
    );
}

#[test]
fn excess_connections_get_503_and_a_fin() {
    let slow = Misbehaving::start(Behavior::Slow(Duration::from_millis(1500))).unwrap();
    let hf = Holdfast::start(&config(&slow.url(), "max_connections = 2", ""));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let addr = hf.addr;
            std::thread::spawn(move || Client::new(addr).get("/"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let mut s = TcpStream::connect(hf.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        // A reset would make read_to_string fail; a FIN ends it cleanly.
        s.read_to_string(&mut out)
            .expect("closed with a FIN, not a reset");
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.to_ascii_lowercase().contains("retry-after: 1"), "{out}");
    }
    for b in busy {
        assert_eq!(b.join().unwrap().unwrap().status, 200);
    }
}

fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn http_hygiene_statuses() {
    let up = Misbehaving::start(Behavior::Healthy).unwrap();
    let hf = Holdfast::start(&config(
        &up.url(),
        "header_timeout_ms = 300\nmax_body_bytes = 1000\nmax_header_bytes = 4096",
        "",
    ));
    let ambiguous = raw(hf.addr, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n");
    assert!(ambiguous.starts_with("HTTP/1.1 400"), "{ambiguous}");
    // The same on a later request of a keep-alive connection: the first is served, the
    // ambiguous one gets 400 and the connection ends (read_to_string returns).
    let later = raw(hf.addr, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nokPOST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n");
    let statuses: Vec<&str> = later
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &later[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{later}");
    // A later head that stalls gets 408 after header_timeout_ms, then the connection ends.
    let started = Instant::now();
    let slow = raw(
        hf.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET /slow HTTP/1.1\r\nhost",
    );
    let statuses: Vec<&str> = slow
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &slow[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "408"], "{slow}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "408 came before header_timeout_ms"
    );
    let big_header = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(6000)
    );
    let too_large = raw(hf.addr, big_header.as_bytes());
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large}");
    let a = hf
        .client()
        .request("POST", "/", &[], &[b'x'; 2000])
        .unwrap();
    assert_eq!(a.status, 413);
    let mut s = TcpStream::connect(hf.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    // Forwarding headers reach the upstream; hop-by-hop ones do not come back.
    let ok = hf
        .client()
        .request(
            "GET",
            "/",
            &[("connection", "keep-alive, x-hop"), ("x-hop", "1")],
            b"",
        )
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("via"), Some("1.1 holdfast"));
}

/// Send a request, shut down the sending side, and read what comes back.
fn half_closed_request(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("closed with a FIN");
    out
}

#[test]
fn a_half_close_is_an_abort_unless_configured_otherwise() {
    let up = Misbehaving::start(Behavior::Slow(Duration::from_millis(300))).unwrap();
    // Default: the FIN while the upstream works means the client left (as nginx and Envoy
    // read it); no answer is written, and the connection is closed with a FIN.
    let hf = Holdfast::start(&config(&up.url(), "", ""));
    let out = half_closed_request(hf.addr);
    assert_eq!(out, "", "a client that left gets nothing");
    // `ignore_client_abort = true`: the client only shut down its sending side, and still
    // gets the answer.
    let hf = Holdfast::start(&config(&up.url(), "ignore_client_abort = true", ""));
    let out = half_closed_request(hf.addr);
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "half-closed client: {out:?}"
    );
}

#[test]
fn sighup_under_load_loses_nothing_and_refuses_a_bad_config() {
    let a = Misbehaving::start(Behavior::Healthy).unwrap();
    let b = Misbehaving::start(Behavior::Healthy).unwrap();
    let hf = Holdfast::start(&config(&a.url(), "", ""));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (hf.addr, stop.clone());
            std::thread::spawn(move || {
                let mut client = Client::new(addr);
                let (mut ok, mut bad) = (0, Vec::new());
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match client.request("POST", "/", &[], b"1") {
                        Ok(r) if r.status == 200 => ok += 1,
                        other => bad.push(format!("{other:?}")),
                    }
                }
                (ok, bad)
            })
        })
        .collect();
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(250));
        let text = match i {
            3 => "this is [not valid toml".to_string(),
            _ => config(&(if i % 2 == 0 { b.url() } else { a.url() }), "", ""),
        };
        std::fs::write(&hf.config, text).unwrap();
        hf.signal("HUP");
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for w in workers {
        let (ok, bad) = w.join().unwrap();
        assert!(bad.is_empty(), "lost requests during reload: {bad:?}");
        total += ok;
    }
    assert!(total > 50, "load was too light to mean anything: {total}");
    assert!(b.requests() > 0, "the reload switched targets");
    let stderr = hf.stderr.lock().unwrap().join("\n");
    assert!(stderr.contains("reload refused"), "{stderr}");
}

#[test]
fn sigterm_finishes_in_flight_requests() {
    let slow = Misbehaving::start(Behavior::Slow(Duration::from_millis(1000))).unwrap();
    let mut hf = Holdfast::start(&config(&slow.url(), "drain_timeout_ms = 5000", ""));
    let addr = hf.addr;
    let in_flight = std::thread::spawn(move || Client::new(addr).get("/"));
    std::thread::sleep(Duration::from_millis(300));
    hf.signal("TERM");
    let answer = in_flight
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = hf.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "holdfast did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_request_still_waiting_when_the_drain_runs_out_gets_a_503() {
    let hang = Misbehaving::start(Behavior::Hang).unwrap();
    let mut hf = Holdfast::start(&config(&hang.url(), "drain_timeout_ms = 500", ""));
    let addr = hf.addr;
    let in_flight = std::thread::spawn(move || Client::new(addr).get("/waits"));
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    hf.signal("TERM");
    let answer = in_flight
        .join()
        .unwrap()
        .expect("an answer, not a cut connection");
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(answer.text().contains("shutting down"), "{}", answer.text());
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while hf.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "holdfast did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No access-log line is lost on a graceful stop: the lines still queued for the writer (it
/// batches every 20 ms) are written before the process exits.
#[test]
fn sigterm_writes_every_access_log_line() {
    let up = Misbehaving::start(Behavior::Healthy).unwrap();
    let mut hf = Holdfast::start(&config(&up.url(), "", ""));
    let mut client = hf.client();
    let n = 500;
    for _ in 0..n {
        assert_eq!(client.get("/").unwrap().status, 200);
    }
    drop(client);
    hf.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while hf.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "holdfast did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The process has exited; its stdout pipe is drained by the helper's reader thread.
    let records = hf.records_eventually(n);
    assert_eq!(records.len(), n, "access-log lines lost on a graceful stop");
}

#[test]
fn check_names_file_line_key_and_fix() {
    let path = std::env::temp_dir().join(format!("holdfast-check-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\n\n[[routes]]\nupstream = \"b\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("{}:5: `routes[0].upstream`", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("fix: define [upstreams.b]"), "{stderr}");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/holdfast.toml");
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["check", example])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn quick_mode_demo_answers_at_once() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let addr = loop {
        let line = lines.next().expect("holdfast printed its address").unwrap();
        if let Some(a) = line.strip_prefix("holdfast: listening on http://") {
            break a.parse().unwrap();
        }
    };
    let a = Client::new(addr).get("/hello").unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(a.status, 200);
    assert!(a.text().contains("demo upstream"), "{}", a.text());
}

#[test]
fn access_log_and_metrics_describe_every_call() {
    let up = Misbehaving::start(Behavior::Healthy).unwrap();
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_addr = refused.local_addr().unwrap();
    drop(refused); // nothing listens there now
    let cfg = format!(
        "{}\n[upstreams.dead]\ntargets = [\"http://{refused_addr}\"]\n\n[[routes]]\nname = \"dead\"\npath_prefix = \"/dead\"\nupstream = \"dead\"\n",
        config(&up.url(), "", "path_prefix = \"/ok\"")
    );
    let hf = Holdfast::start(&cfg);
    let mut client = hf.client();
    for _ in 0..3 {
        assert_eq!(client.get("/ok/x?q=1").unwrap().status, 200);
    }
    let dead = hf.client().get("/dead").unwrap();
    assert!(matches!(dead.status, 502 | 503), "{}", dead.status);
    assert_eq!(hf.client().get("/nowhere").unwrap().status, 404);

    let records = hf.records_eventually(5);
    assert_eq!(records.len(), 5, "{records:?}");
    let target = up.url().trim_start_matches("http://").to_string();
    for r in &records[..3] {
        assert_eq!(r["route"], "main", "{r}");
        assert_eq!(r["method"], "GET");
        assert_eq!(r["path"], "/ok/x");
        assert_eq!(r["status"], 200);
        assert!(r["reset_class"].is_null(), "{r}");
        assert_eq!(r["target"], target.as_str(), "{r}");
        assert_eq!(r["attempts"], 1);
        assert!(r["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
        assert!(r["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        let total = r["total_ms"].as_f64().unwrap();
        let first_byte = r["upstream_first_byte_ms"].as_f64().unwrap();
        assert!(first_byte >= 0.0 && first_byte <= total, "{r}");
        assert!(r["bytes_out"].as_u64().unwrap() > 0, "{r}");
    }
    // Only the first request opened a connection upstream; the others reused it.
    assert!(
        records[0]["upstream_connect_ms"].as_f64().is_some(),
        "{}",
        records[0]
    );
    assert!(
        records[2]["upstream_connect_ms"].is_null(),
        "{}",
        records[2]
    );
    let d = &records[3];
    assert_eq!(d["route"], "dead");
    assert_eq!(d["status"], dead.status);
    assert!(
        matches!(
            d["reset_class"].as_str(),
            Some("upstream_refused" | "no_healthy_upstream")
        ),
        "{d}"
    );
    assert_eq!(d["target"], refused_addr.to_string().as_str(), "{d}");
    let n = &records[4];
    assert_eq!(
        (n["route"].as_str(), n["status"].as_u64()),
        (Some(""), Some(404)),
        "{n}"
    );

    let page = admin_get(hf.admin.unwrap(), "/metrics");
    let count = |name: &str, labels: &str| metric_sum(&page, name, labels);
    assert_eq!(
        count("holdfast_requests_total", "route=\"main\",status=\"200\""),
        3.0,
        "{page}"
    );
    assert_eq!(
        count("holdfast_request_duration_seconds_count", "route=\"main\""),
        3.0,
        "{page}"
    );
    assert_eq!(
        count(
            "holdfast_upstream_requests_total",
            &format!("route=\"main\",target=\"{target}\"")
        ),
        3.0,
        "{page}"
    );
    assert_eq!(
        count("holdfast_requests_total", "route=\"dead\""),
        1.0,
        "{page}"
    );
    let class = d["reset_class"].as_str().unwrap();
    assert_eq!(
        count(
            "holdfast_failed_exchanges_total",
            &format!("route=\"dead\",class=\"{class}\"")
        ),
        1.0,
        "{page}"
    );
    assert_eq!(
        count("holdfast_requests_total", "route=\"\",status=\"404\""),
        1.0,
        "{page}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` for up to 5 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[test]
fn sighup_moves_listeners_and_keeps_open_connections() {
    let up = Misbehaving::start(Behavior::Healthy).unwrap();
    let (p1, p2, a1, a2) = (free_port(), free_port(), free_port(), free_port());
    let with = |listen: u16, admin: u16| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:{listen}\"]\nadmin = \"127.0.0.1:{admin}\"\n\n[upstreams.pool]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n",
            up.url()
        )
    };
    let hf = Holdfast::start(&with(p1, a1));
    assert_eq!(hf.addr.port(), p1);
    let mut old_conn = Client::new(hf.addr);
    assert_eq!(old_conn.get("/").expect("first").status, 200);

    std::fs::write(&hf.config, with(p2, a2)).unwrap();
    hf.signal("HUP");
    let new_addr: std::net::SocketAddr = format!("127.0.0.1:{p2}").parse().unwrap();
    eventually("the new listener answers", || {
        Client::new(new_addr)
            .get("/")
            .map(|r| r.status == 200)
            .unwrap_or(false)
    });
    // The connection accepted on the old address is not dropped...
    assert_eq!(old_conn.get("/").expect("old connection kept").status, 200);
    // ...but the old address takes no new connections.
    eventually("the old listener closes", || refused(p1));
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{a2}").parse().unwrap();
    eventually("the admin listener moves", || {
        std::panic::catch_unwind(|| admin_get(admin_addr, "/metrics"))
            .map(|page| page.contains("holdfast_requests_total"))
            .unwrap_or(false)
    });
    eventually("the old admin listener closes", || refused(a1));

    // An address that cannot be bound refuses the whole reload; the running listener stays.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p3 = taken.local_addr().unwrap().port();
    std::fs::write(&hf.config, with(p3, a2)).unwrap();
    hf.signal("HUP");
    eventually("the reload is refused", || {
        let stderr = hf.stderr.lock().unwrap().join("\n");
        stderr.contains("reload refused") && stderr.contains(&format!("127.0.0.1:{p3}"))
    });
    assert_eq!(
        Client::new(new_addr).get("/").expect("still up").status,
        200
    );
    assert_eq!(
        old_conn.get("/").expect("old connection still kept").status,
        200
    );
}

#[test]
fn sighup_changes_connection_limits_for_new_connections() {
    let up = Misbehaving::start(Behavior::Healthy).unwrap();
    let port = free_port();
    let with = |extra: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n{extra}\n\n[upstreams.pool]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n",
            up.url()
        )
    };
    let hf = Holdfast::start(&with("max_connections = 100"));
    // Two idle keep-alive connections are fine under the first limit.
    let mut first = Client::new(hf.addr);
    let mut second = Client::new(hf.addr);
    assert_eq!(first.get("/").expect("first").status, 200);
    assert_eq!(second.get("/").expect("second").status, 200);

    std::fs::write(
        &hf.config,
        with("max_connections = 2\nmax_header_bytes = 1024"),
    )
    .unwrap();
    hf.signal("HUP");
    eventually("the reload applies", || {
        hf.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("config reloaded"))
    });
    // The two open connections count against the new limit: a third is answered 503 + FIN.
    let third = raw(hf.addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    // The open connections carry on.
    assert_eq!(first.get("/").expect("first kept").status, 200);
    // ...with the header limit they started with: 2 KB of headers still pass on them.
    let big = "b".repeat(2048);
    let answer = first
        .request("GET", "/", &[("x-big", big.as_str())], b"")
        .expect("answered");
    assert_eq!(answer.status, 200, "{}", answer.text());
    drop(second);
    eventually("a slot frees up", || {
        raw(
            hf.addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .starts_with("HTTP/1.1 200")
    });
}

#[test]
fn warnings_reach_stderr() {
    // A reload that changes `management.store` keeps the running store and says so: the
    // warning comes from a library crate through `tracing`, so it shows only if the binary
    // installs a log output.
    let up = Misbehaving::start(Behavior::Healthy).unwrap();
    let dir = std::env::temp_dir().join(format!("holdfast-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let with = |db: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\n[upstreams.pool]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n\n[management]\nstore = \"sqlite://{}/{db}\"\nsecret = \"test-secret-0123456789abcdef\"\n",
            up.url(),
            dir.display()
        )
    };
    let hf = Holdfast::start(&with("one.db"));
    std::fs::write(&hf.config, with("two.db")).unwrap();
    hf.signal("HUP");
    eventually("the restart-only warning", || {
        hf.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("management.store changed"))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A response still streaming when the drain (and its grace for waiting requests) runs out is
/// cut while the process still runs, so it gets its access-log line (`upstream_timeout`: the
/// drain's deadline ended it) and the client sees a short body ended by a FIN.
#[test]
fn a_stream_cut_by_the_drain_deadline_is_logged() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", upstream.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut conn, _) = upstream.accept().unwrap();
        let mut head = [0u8; 4096];
        let _ = conn.read(&mut head);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n");
        let chunk = vec![b'x'; 16 * 1024];
        for _ in 0..400 {
            if conn.write_all(&chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let mut hf = Holdfast::start(&config(&url, "drain_timeout_ms = 300", ""));
    let mut client = TcpStream::connect(hf.addr).unwrap();
    client
        .write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut buf = [0u8; 65536];
        loop {
            match client.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got += n,
                Err(e) => return Err((got, e.kind())),
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    hf.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while hf.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "holdfast did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = reader
        .join()
        .unwrap()
        .expect("a FIN, not a reset or a hang");
    assert!(got > 0 && got < 100_000_000, "{got} bytes");
    let records = hf.records_eventually(1);
    let record = records
        .iter()
        .find(|r| r["path"] == "/stream")
        .unwrap_or_else(|| panic!("no access-log line for the cut stream: {records:?}"));
    assert_eq!(record["reset_class"], "upstream_timeout", "{record}");
}

/// A reload keeps what the active checks learned: a target they marked down (it answers
/// `503`, which a POST does not retry) gets no request right after a SIGHUP, instead of
/// getting its share again until `unhealthy_threshold` new checks failed.
#[test]
fn a_reload_keeps_targets_the_health_checks_marked_down() {
    let good = Misbehaving::start(Behavior::Healthy).unwrap();
    let sick = Misbehaving::start(Behavior::Unavailable).unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[upstreams.pool]\ntargets = [\"{}\", \"{}\"]\nhealth_check = {{ kind = \"http\", path = \"/\", interval_ms = 300, unhealthy_threshold = 3, healthy_threshold = 1 }}\n\n[[routes]]\nupstream = \"pool\"\n",
        good.url(),
        sick.url()
    );
    let hf = Holdfast::start(&text);
    // Three failed checks, 300 ms apart, mark the sick target down.
    std::thread::sleep(Duration::from_millis(1500));
    let mut client = hf.client();
    let post = |client: &mut Client| client.request("POST", "/", &[], b"x").unwrap().status;
    for _ in 0..10 {
        assert_eq!(
            post(&mut client),
            200,
            "the checks marked the 503 target down"
        );
    }
    let reloads = || {
        hf.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("config reloaded"))
            .count()
    };
    hf.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads() == 0 {
        assert!(Instant::now() < deadline, "no reload");
        std::thread::sleep(Duration::from_millis(5));
    }
    let statuses: Vec<u16> = (0..20).map(|_| post(&mut client)).collect();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a reload sent POSTs to the target the checks had marked down: {statuses:?}"
    );
}

/// SIGHUP applies a new `access_log` path and `drain_timeout_ms`, and reopens the same path
/// (log rotation: `mv` the file, then SIGHUP).
#[test]
fn sighup_reopens_the_access_log_and_applies_a_new_drain_timeout() {
    let up = Misbehaving::start(Behavior::Healthy).unwrap();
    let hang = Misbehaving::start(Behavior::Hang).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let with = |log: &std::path::Path, drain_ms: u64| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\naccess_log = \"{}\"\ndrain_timeout_ms = {drain_ms}\n\n[upstreams.pool]\ntargets = [\"{}\"]\n[upstreams.hang]\ntargets = [\"{}\"]\n\n[[routes]]\npath_prefix = \"/hang\"\nupstream = \"hang\"\n[[routes]]\nupstream = \"pool\"\n",
            log.display(),
            up.url(),
            hang.url()
        )
    };
    let hf = Holdfast::start(&with(&log, 30_000));
    let reloads = |hf: &Holdfast, n: usize| {
        eventually("the reload applies", || {
            hf.stderr
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("config reloaded"))
                .count()
                >= n
        })
    };
    let lines = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"path\":\"/one\"") || l.contains("\"path\":\"/two\""))
            .count()
    };
    assert_eq!(hf.client().get("/one").unwrap().status, 200);
    eventually("the first line is written", || lines(&log) == 1);
    // Rotation: the file moves away; after SIGHUP new lines go to a new file at the path.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    hf.signal("HUP");
    reloads(&hf, 1);
    assert_eq!(hf.client().get("/two").unwrap().status, 200);
    eventually("the new line is in the new file", || lines(&log) == 1);
    assert_eq!(
        lines(&rotated),
        1,
        "the rotated file got the later line too"
    );
    // A new path and a shorter drain.
    let moved = dir.path().join("moved.log");
    std::fs::write(&hf.config, with(&moved, 500)).unwrap();
    hf.signal("HUP");
    reloads(&hf, 2);
    assert_eq!(hf.client().get("/one").unwrap().status, 200);
    eventually("the line goes to the new path", || lines(&moved) == 1);
    let addr = hf.addr;
    let in_flight = std::thread::spawn(move || Client::new(addr).get("/hang"));
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    hf.signal("TERM");
    let answer = in_flight.join().unwrap().expect("an answer");
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the drain took {:?}: the reloaded 500 ms did not apply",
        asked.elapsed()
    );
    assert!(
        hf.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("draining (up to 500 ms)")),
        "{:?}",
        hf.stderr.lock().unwrap()
    );
}

/// SIGHUP turns the access log on (from `"off"`) and off again, without a restart.
#[test]
fn sighup_turns_the_access_log_on_and_off() {
    let up = Misbehaving::start(Behavior::Healthy).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let with = |access_log: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\naccess_log = \"{access_log}\"\n\n[upstreams.pool]\ntargets = [\"{}\"]\n\n[[routes]]\nupstream = \"pool\"\n",
            up.url()
        )
    };
    let on = with(&log.display().to_string());
    let hf = Holdfast::start(&with("off"));
    let mut reloaded = 0;
    let mut reload = |hf: &Holdfast, config: &str| {
        std::fs::write(&hf.config, config).unwrap();
        hf.signal("HUP");
        reloaded += 1;
        eventually("the reload applies", || {
            hf.stderr
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("config reloaded"))
                .count()
                >= reloaded
        });
    };
    let paths = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|r| r["path"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(hf.client().get("/while-off").unwrap().status, 200);
    reload(&hf, &on);
    assert_eq!(hf.client().get("/now-on").unwrap().status, 200);
    eventually("the call after turning it on is logged", || {
        paths() == ["/now-on"]
    });
    reload(&hf, &with("off"));
    assert_eq!(hf.client().get("/off-again").unwrap().status, 200);
    reload(&hf, &on);
    assert_eq!(hf.client().get("/on-again").unwrap().status, 200);
    eventually("only the calls made while on are logged", || {
        paths() == ["/now-on", "/on-again"]
    });
    assert!(
        !hf.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("restart")),
        "{:?}",
        hf.stderr.lock().unwrap()
    );
}
