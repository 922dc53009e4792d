//! Edge cases of HTTP framing and headers, both ways: odd upstream responses (Content-Length
//! with Transfer-Encoding, codings other than chunked, trailers), request heads the gateway
//! must refuse (and log), the host an upstream sees, and retries after the idle race.

mod proxy_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proxy_support::{Client, Holdfast};

/// A scripted upstream: for each request it reads the head (no bodies) and writes what
/// `answer(path, head, nth request on this connection)` returns; `None` resets the connection.
struct Scripted {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

type Script = dyn Fn(&str, &str, usize) -> Option<Vec<u8>> + Send + Sync;

impl Scripted {
    fn start(
        answer: impl Fn(&str, &str, usize) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let answer: Arc<Script> = Arc::new(answer);
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let answer = answer.clone();
                let counter = counter.clone();
                std::thread::spawn(move || serve(stream, &*answer, &counter));
            }
        });
        Scripted { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn serve(stream: TcpStream, answer: &Script, counter: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    for nth in 0.. {
        let Some(head) = proxy_support::read_request_head(&mut reader) else {
            return;
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        match answer(&path, &head, nth) {
            Some(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
            None => {
                reset_on_close(&stream);
                return;
            }
        }
    }
}

/// SO_LINGER 0: closing sends a reset.
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn config(url: &str, extra_server: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n{extra_server}\n\n[upstreams.pool]\ntargets = [\"{url}\"]\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n"
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

/// The record of the call to `path`, once it is logged.
fn record_of(hf: &Holdfast, path: &str) -> serde_json::Value {
    for _ in 0..200 {
        if let Some(r) = hf.records().into_iter().find(|r| r["path"] == path) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no access-log record for {path}: {:?}", hf.records());
}

#[test]
fn odd_upstream_framing_reaches_the_client_whole_or_as_a_502() {
    let up = Scripted::start(|path, _, _| {
        Some(match path {
            // Both headers: Transfer-Encoding wins; the stale length must not reach the client.
            "/clte" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(),
            "/gzip" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\nconnection: close\r\n\r\nnot really gzip".to_vec(),
            "/trailers" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\nx-t: 1\r\n\r\n".to_vec(),
            "/switch" => b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n".to_vec(),
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        })
    });
    let hf = Holdfast::start(&config(&up.url(), ""));
    let mut client = Client::new(hf.addr);
    for _ in 0..3 {
        let a = client
            .get("/clte")
            .expect("a whole answer, never a truncated one");
        assert_eq!(a.status, 200);
        assert_eq!(a.text(), "abc");
        assert_eq!(a.header("content-length"), None);
    }
    let r = record_of(&hf, "/clte");
    assert!(r["reset_class"].is_null(), "{r}");

    let a = client.get("/gzip").expect("an answer");
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(a.text().contains("transfer coding"), "{}", a.text());

    // A 101 the client did not ask for is the upstream breaking the protocol.
    let a = Client::new(hf.addr).get("/switch").expect("an answer");
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(a.text().contains("101"), "{}", a.text());

    let a = client.get("/trailers").expect("an answer");
    assert_eq!((a.status, a.text().as_str()), (200, "body"));
    let r = record_of(&hf, "/trailers");
    assert!(r["reset_class"].is_null(), "trailers are a clean end: {r}");
    assert_eq!(client.get("/after").expect("connection kept").status, 200);
}

#[test]
fn bad_request_heads_are_answered_logged_and_end_the_connection() {
    let up =
        Scripted::start(|_, _, _| Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()));
    let hf = Holdfast::start(&config(&up.url(), "max_header_bytes = 2048"));
    let long_uri = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(4000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"GET / HTTP/1.1\r\nhost: x\r\nx-folded: a\r\n b\r\n\r\n".to_vec(),
            "400",
        ),
        (b"GET / HTTP/1.1\nhost: x\n\n".to_vec(), "400"),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "400"),
        (
            b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n".to_vec(),
            "400",
        ),
        (
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +2\r\n\r\nok".to_vec(),
            "400",
        ),
        (
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            "501",
        ),
        (b"GET / HTTP/1.7\r\nhost: x\r\n\r\n".to_vec(), "505"),
        (
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999999999999999999\r\n\r\n"
                .to_vec(),
            "413",
        ),
        (long_uri.into_bytes(), "431"),
    ];
    let before = up.requests.load(Ordering::SeqCst);
    for (request, status) in &cases {
        let mut with_smuggled = request.clone();
        with_smuggled.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n");
        let out = raw(hf.addr, &with_smuggled);
        assert!(
            out.starts_with(&format!("HTTP/1.1 {status}")),
            "{}\n=> {out}",
            String::from_utf8_lossy(request)
        );
        assert!(
            !out.contains("\r\nHTTP/1.1 "),
            "one answer, then the end: {out}"
        );
    }
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        before,
        "nothing was forwarded"
    );
    let records = hf.records_eventually(cases.len());
    let refused = records
        .iter()
        .filter(|r| r["reset_class"] == "bad_request")
        .count();
    assert_eq!(refused, cases.len(), "{records:?}");
}

#[test]
fn the_upstream_sees_the_host_the_client_asked_for() {
    let up = Scripted::start(|_, head, _| {
        let body = head;
        Some(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let hf = Holdfast::start(&config(&up.url(), ""));
    // The Host header as received (port and case kept) in X-Forwarded-Host and Forwarded.
    let out = raw(
        hf.addr,
        b"GET /h HTTP/1.1\r\nHost: Admin.Local:8443\r\nconnection: close\r\n\r\n",
    );
    assert!(out.contains("x-forwarded-host: Admin.Local:8443"), "{out}");
    assert!(out.contains("host=\"Admin.Local:8443\""), "{out}");
    // `Connection: host` cannot remove the Host the request was routed by.
    let out = raw(
        hf.addr,
        b"GET /h HTTP/1.1\r\nhost: pub.example\r\nconnection: host, close\r\n\r\n",
    );
    assert!(out.contains("\r\nhost: pub.example\r\n"), "{out}");
    // An absolute-form target's host wins over the Host header.
    let out = raw(
        hf.addr,
        b"GET http://api.example/h HTTP/1.1\r\nhost: pub.example\r\nconnection: close\r\n\r\n",
    );
    assert!(out.contains("\r\nhost: api.example\r\n"), "{out}");
    assert!(!out.contains("\r\nhost: pub.example\r\n"), "{out}");
    // HTTP/1.0 needs no Host, HTTP/1.1 does: the upstream gets the target's.
    let out = raw(hf.addr, b"GET /h HTTP/1.0\r\n\r\n");
    let target = up.url().trim_start_matches("http://").to_string();
    assert!(out.contains(&format!("\r\nhost: {target}\r\n")), "{out}");
    // Dot segments are resolved before routing, and the upstream gets the resolved path.
    let out = raw(
        hf.addr,
        b"GET /api/%2e%2e/h?q=1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(out.contains("GET /h?q=1 HTTP/1.1\r\n"), "{out}");
    let out = raw(
        hf.addr,
        b"GET /../etc/passwd HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("bad_path"), "{out}");
}

#[test]
fn after_the_idle_race_the_retry_uses_a_fresh_connection() {
    // Every connection answers its first request and resets on the next: each pooled
    // connection is stale. A GET must still get its answer, whatever the pool holds.
    let up = Scripted::start(|_, _, nth| {
        (nth == 0).then(|| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec())
    });
    let hf = Holdfast::start(&config(&up.url(), ""));
    // Fill the pool with several connections, then reuse them.
    let fill: Vec<_> = (0..6)
        .map(|_| {
            let addr = hf.addr;
            std::thread::spawn(move || Client::new(addr).get("/fill").map(|a| a.status))
        })
        .collect();
    for f in fill {
        assert_eq!(f.join().unwrap().expect("answer"), 200);
    }
    let mut client = Client::new(hf.addr);
    for i in 0..20 {
        let a = client.get(&format!("/again{i}")).expect("an answer");
        assert_eq!(a.status, 200, "request {i}: {}", a.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_cancelled_before_its_answer_is_logged_as_client_aborted() {
    let slow = holdfast_testkit::Misbehaving::start(holdfast_testkit::Behavior::Slow(
        Duration::from_millis(1500),
    ))
    .unwrap();
    let hf = Holdfast::start(&config(&slow.url(), ""));
    let tcp = tokio::net::TcpStream::connect(hf.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{}/cancelled", hf.addr))
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    // The client gives up (RST_STREAM) long before the upstream answers.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), sender.send_request(req)).await;
    assert!(gave_up.is_err(), "the upstream is slower than that");
    let r = tokio::task::spawn_blocking(move || record_of(&hf, "/cancelled"))
        .await
        .unwrap();
    assert_eq!(r["reset_class"], "client_aborted", "{r}");
    assert_eq!(r["status"], 499, "{r}");
}

#[test]
fn an_http1_client_that_leaves_before_its_answer_is_logged_as_client_aborted() {
    let slow = holdfast_testkit::Misbehaving::start(holdfast_testkit::Behavior::Slow(
        Duration::from_millis(3000),
    ))
    .unwrap();
    let hf = Holdfast::start(&config(&slow.url(), ""));
    let mut s = std::net::TcpStream::connect(hf.addr).unwrap();
    s.write_all(b"GET /left HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    let r = record_of(&hf, "/left");
    assert_eq!(r["reset_class"], "client_aborted", "{r}");
    assert_eq!(r["status"], 499, "{r}");
    // Logged when the client left, not when the upstream would have answered; with the
    // attempt that was under way.
    let total = r["total_ms"].as_f64().unwrap();
    assert!((250.0..2500.0).contains(&total), "{r}");
    assert_eq!(r["attempts"], 1, "{r}");
    assert_eq!(
        r["target"].as_str(),
        Some(slow.url().trim_start_matches("http://")),
        "{r}"
    );
}

#[test]
fn a_malformed_first_chunk_from_the_upstream_is_a_502_not_an_empty_reply() {
    // Head and a broken chunk-size line in one write: the client used to get the connection
    // closed with nothing on it ("Empty reply from server").
    let up = Scripted::start(|_, _, _| {
        Some(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n".to_vec())
    });
    let hf = Holdfast::start(&config(&format!("http://{}", up.addr), ""));
    let out = raw(
        hf.addr,
        b"GET /badchunk HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 502"), "{out:?}");
    assert!(out.contains("malformed"), "{out}");
    let r = record_of(&hf, "/badchunk");
    assert_eq!(r["status"], 502, "{r}");
    assert_eq!(r["reset_class"], "upstream_reset_before_response", "{r}");
}

#[test]
fn a_malformed_chunk_is_a_bad_request_and_a_client_leaving_mid_upload_an_abort() {
    let up = holdfast_testkit::Misbehaving::start(holdfast_testkit::Behavior::Healthy).unwrap();
    let hf = Holdfast::start(&config(&up.url(), ""));
    let bad = raw(
        hf.addr,
        b"POST /badchunk HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    );
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let r = record_of(&hf, "/badchunk");
    assert_eq!(r["reset_class"], "bad_request", "{r}");
    assert_eq!(r["status"], 400, "{r}");
    let mut s = TcpStream::connect(hf.addr).unwrap();
    s.write_all(b"POST /gone HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\nabc")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(s);
    let r = record_of(&hf, "/gone");
    assert_eq!(r["reset_class"], "client_aborted", "{r}");
    assert_eq!(r["status"], 499, "{r}");
}

/// An upstream that switches to an "echo" protocol on `Upgrade: echo` and then sends back
/// every byte it gets; without the upgrade headers it answers 426.
fn echo_upgrade_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push_str(&line.to_ascii_lowercase());
                    if line == "\r\n" {
                        break;
                    }
                }
                if !(head.contains("\r\nupgrade: echo\r\n") && head.contains("connection: upgrade"))
                {
                    let _ = stream.write_all(
                        b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    return;
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n",
                );
                let mut buf = [0u8; 1024];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn an_upgrade_such_as_websocket_becomes_a_tunnel() {
    let up = echo_upgrade_upstream();
    let hf = Holdfast::start(&config(&format!("http://{up}"), ""));
    let mut s = TcpStream::connect(hf.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: echo\r\nconnection: Upgrade\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "head cut: {head}");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    // Bytes now flow both ways, several times over.
    for msg in ["ping", "a longer message", "last"] {
        s.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        reader.read_exact(&mut back).unwrap();
        assert_eq!(String::from_utf8_lossy(&back), msg);
    }
    // The switch is in the access log; a plain request on a new connection still works.
    let r = record_of(&hf, "/ws");
    assert_eq!(r["status"], 101, "{r}");
    let plain = raw(
        hf.addr,
        b"GET /plain HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
}

/// An h2c (HTTP/2 without TLS) upstream: answers `VERSION URI te=TE` with a `grpc-status`
/// trailer, and counts its connections.
async fn h2c_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let te = req
                            .headers()
                            .get("te")
                            .map(|v| v.to_str().unwrap_or("").to_string())
                            .unwrap_or_default();
                        let info = format!("{:?} {} te={te}", req.version(), req.uri());
                        let mut trailers = hyper::HeaderMap::new();
                        trailers
                            .insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                        let body = http_body_util::Full::new(hyper::body::Bytes::from(info))
                            .with_trailers(async move { Some(Ok(trailers)) });
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    (addr, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_pool_shares_one_connection_and_passes_trailers() {
    use http_body_util::BodyExt;
    let (up, upstream_conns) = h2c_upstream().await;
    let hf = Holdfast::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\n[upstreams.pool]\ntargets = [\"http://{up}\"]\nprotocol = \"http2\"\nhealth_check = {{ kind = \"http\", path = \"/health\", interval_ms = 200 }}\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n"
    ));
    // An HTTP/1.1 client: the body arrives whole; the upstream saw HTTP/2 with :authority
    // from the client's Host.
    let addr = hf.addr;
    let text = tokio::task::spawn_blocking(move || Client::new(addr).get("/one").unwrap().text())
        .await
        .unwrap();
    assert!(text.starts_with("HTTP/2.0 http://test.local/one"), "{text}");

    // HTTP/2 clients, many streams at once: one upstream connection carries them all (the
    // health checker's probes use connections of their own), and trailers come back.
    let tcp = tokio::net::TcpStream::connect(hf.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let before = upstream_conns.load(Ordering::SeqCst);
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let req = hyper::Request::post(format!("http://grpc.local/svc/{i}"))
                    .header("te", "trailers")
                    .body(http_body_util::Full::new(hyper::body::Bytes::from("x")))
                    .unwrap();
                let resp = sender.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                let collected = resp.into_body().collect().await.unwrap();
                let trailers = collected.trailers().cloned();
                (
                    String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
                    trailers,
                )
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let (text, trailers) = call.await.unwrap();
        assert_eq!(
            text,
            format!("HTTP/2.0 http://grpc.local/svc/{i} te=trailers")
        );
        let trailers = trailers.expect("trailers passed on");
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    }
    let data_conns = upstream_conns.load(Ordering::SeqCst) - before;
    // Health probes (every 200 ms, one connection each) may add a few; requests add none.
    assert!(
        data_conns <= 3,
        "{data_conns} new upstream connections for 20 requests"
    );
}

/// An HTTP/2 (prior knowledge) client connection to `addr`, driven on its own task.
async fn h2_client(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_the_configured_header_limit() {
    let up =
        Scripted::start(|_, _, _| Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()));
    let hf = Holdfast::start(&config(&up.url(), "max_header_bytes = 65536"));
    let mut sender = h2_client(hf.addr).await;
    // 30 KB of headers: over hyper's 16 KiB default, under the configured 64 KiB.
    let req = hyper::Request::get(format!("http://{}/big", hf.addr))
        .header("x-big", "a".repeat(30_000))
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("an answer");
    assert_eq!(resp.status(), 200);
    // Over the limit: the gateway's own 431, with a body that says why.
    let req = hyper::Request::get(format!("http://{}/bigger", hf.addr))
        .header("x-big", "a".repeat(70_000))
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("an answer");
    assert_eq!(resp.status(), 431);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("headers_too_large"), "{body}");
}

/// An upstream that answers every request with a response head promising 100 bytes, then
/// resets the connection (SO_LINGER 0) without sending any of them.
fn resets_after_head() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n");
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            });
        }
    });
    addr
}

#[test]
fn an_upstream_reset_right_after_its_head_never_leaves_an_empty_reply() {
    let bad = resets_after_head();
    let hf = Holdfast::start(&config(&format!("http://{bad}"), ""));
    for i in 0..20 {
        let out = raw(
            hf.addr,
            format!("GET /head-then-reset-{i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        );
        // Either the gateway caught the reset before the head went out (an honest 502 with
        // a body), or the client got the head and a body that is visibly short. Never
        // nothing at all.
        assert!(out.starts_with("HTTP/1.1 "), "request {i}: an empty reply");
        if out.starts_with("HTTP/1.1 502") || out.starts_with("HTTP/1.1 503") {
            // Caught in time (or the target was ejected after such failures): a body that
            // says why.
            assert!(
                out.contains("\"error\":\"upstream_reset_before_response\"")
                    || out.contains("\"error\":\"no_healthy_upstream\""),
                "{out}"
            );
            assert!(out.contains("right after its response head"), "{out}");
        } else {
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
            let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            assert!(body.len() < 100, "{out}");
        }
    }
    // With a healthy target beside it, GETs are retried there: every one succeeds.
    let good =
        Scripted::start(|_, _, _| Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()));
    let hf = Holdfast::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\n[upstreams.pool]\ntargets = [\"http://{bad}\", \"{}\"]\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n",
        good.url()
    ));
    let mut ok = 0;
    for i in 0..20 {
        let out = raw(
            hf.addr,
            format!("GET /retry-{i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        );
        assert!(out.starts_with("HTTP/1.1 "), "request {i}: an empty reply");
        if out.starts_with("HTTP/1.1 200") && out.ends_with("ok") {
            ok += 1;
        }
    }
    assert!(ok >= 18, "{ok} of 20 GETs succeeded");
}

#[test]
fn a_request_sent_with_its_fin_is_logged() {
    // `nc -N` style: the request and the client's FIN in one go. Whether hyper drops the
    // request before or after it starts, the call is logged as the client's abort.
    let up = Scripted::start(|_, _, _| {
        std::thread::sleep(Duration::from_millis(200));
        Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec())
    });
    let hf = Holdfast::start(&config(&up.url(), ""));
    for i in 0..5 {
        let path = format!("/with-fin-{i}");
        let mut s = TcpStream::connect(hf.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let r = record_of(&hf, &path);
        assert_eq!(r["status"], 499, "{r}");
        assert_eq!(r["reset_class"], "client_aborted", "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_with_a_bad_or_conflicting_host_get_a_400() {
    let up =
        Scripted::start(|_, _, _| Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()));
    let hf = Holdfast::start(&config(&up.url(), ""));
    let mut sender = h2_client(hf.addr).await;
    let authority = hf.addr.to_string();
    let cases: Vec<(Vec<String>, u16)> = vec![
        (vec![], 200),
        (vec![authority.clone()], 200),
        (vec![authority.to_ascii_uppercase()], 200),
        (vec!["a b".into()], 400),
        (vec!["exa<mple>.com".into()], 400),
        (vec!["other.example".into()], 400),
        (vec![authority.clone(), authority.clone()], 400),
    ];
    for (hosts, want) in cases {
        let mut req = hyper::Request::get(format!("http://{authority}/h2host"));
        for h in &hosts {
            req = req.header("host", h.as_str());
        }
        let req = req
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.expect("an answer");
        let status = resp.status().as_u16();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            status,
            want,
            "Host {hosts:?}: {}",
            String::from_utf8_lossy(&body)
        );
        if want == 400 {
            assert!(String::from_utf8_lossy(&body).contains("Host"), "{hosts:?}");
        }
    }
}

#[test]
fn a_stalled_request_body_gets_a_408_and_frees_its_slot() {
    let up =
        Scripted::start(|_, _, _| Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()));
    let hf = Holdfast::start(&config(&up.url(), "body_timeout_ms = 300"));
    // Buffered (small) and streamed (past retry_buffer_bytes) bodies alike.
    for (path, declared, sent) in [("/small", 100, 10), ("/big", 3_000_000, 1_200_000)] {
        let started = std::time::Instant::now();
        let mut request =
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {declared}\r\n\r\n")
                .into_bytes();
        request.extend(std::iter::repeat_n(b'a', sent));
        let mut s = TcpStream::connect(hf.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: took {:?}",
            started.elapsed()
        );
        if path == "/small" {
            assert!(out.starts_with("HTTP/1.1 408"), "{path}: {out}");
            assert!(out.contains("body_timeout"), "{path}: {out}");
            let r = record_of(&hf, path);
            assert_eq!(
                (r["status"].as_u64(), r["reset_class"].as_str()),
                (Some(408), Some("bad_request")),
                "{r}"
            );
            // What did arrive is counted.
            assert_eq!(r["bytes_in"].as_u64(), Some(sent as u64), "{r}");
        }
    }
    // The connection slots are free again.
    let a = hf.client().get("/after").unwrap();
    assert_eq!(a.status, 200);
}
