//! The gateway's own HTTP/1.1 client (`holdfast_proxy::h1`) against a scripted upstream:
//! every body framing arrives whole, heads and bodies split across many small writes are put
//! back together, informational answers are skipped, the request body goes out with its own
//! exact length, and a connection is reused only when its last exchange ended cleanly.

mod proxy_support;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_support::{Client, Holdfast};

/// How the upstream writes an answer.
#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    /// In one write.
    Whole,
    /// Seven bytes at a time, with pauses.
    Trickle,
    /// In one write, then close the connection.
    ThenClose,
}

/// What the upstream saw of one request: its head and its body.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

type Script = dyn Fn(&str, &str) -> (Vec<u8>, Delivery) + Send + Sync;

struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Seen,
}

impl Upstream {
    fn start(script: impl Fn(&str, &str) -> (Vec<u8>, Delivery) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen: Seen = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let (count, log) = (connections.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let (script, log) = (script.clone(), log.clone());
                std::thread::spawn(move || serve(stream, &*script, &log));
            }
        });
        Upstream {
            addr,
            connections,
            seen,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, script: &Script, seen: &Seen) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let Some(head) = proxy_support::read_request_head(&mut reader) else {
            return;
        };
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let method = head.split(' ').next().unwrap_or("").to_string();
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        seen.lock().unwrap().push((head, body));
        let (answer, how) = script(&method, &path);
        let written = match how {
            Delivery::Trickle => answer.chunks(7).try_for_each(|piece| {
                std::thread::sleep(Duration::from_millis(1));
                stream.write_all(piece).and_then(|_| stream.flush())
            }),
            _ => stream.write_all(&answer),
        };
        if written.is_err() || how == Delivery::ThenClose {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

fn config(upstream: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[upstreams.pool]\ntargets = [\"{upstream}\"]\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n"
    )
}

/// A body of `n` bytes that is not one repeated byte.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 23) as u8).collect()
}

fn chunked(body: &[u8], chunk: usize, trailers: &str) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("0\r\n{trailers}\r\n").as_bytes());
    out
}

fn with_length(status: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[test]
fn every_framing_arrives_whole_on_one_reused_connection() {
    let up = Upstream::start(|method, path| match path {
        "/length" => (with_length("200 OK", &pattern(5000)), Delivery::Whole),
        "/big" => (with_length("200 OK", &pattern(3 << 20)), Delivery::Whole),
        "/chunked" => (chunked(&pattern(300_000), 1000, ""), Delivery::Whole),
        "/trailers" => (
            chunked(&pattern(100), 30, "x-checksum: 42\r\n"),
            Delivery::Whole,
        ),
        "/trickle" => (with_length("200 OK", &pattern(200)), Delivery::Trickle),
        "/trickle-chunked" => (chunked(&pattern(150), 40, ""), Delivery::Trickle),
        "/no-content" => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), Delivery::Whole),
        "/head" if method == "HEAD" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".to_vec(),
            Delivery::Whole,
        ),
        "/informational" => {
            let mut out =
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n"
                    .to_vec();
            out.extend(with_length("201 Created", b"made"));
            (out, Delivery::Whole)
        }
        "/reason" => (
            b"HTTP/1.1 200 Fine Thanks\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            Delivery::Whole,
        ),
        _ => (with_length("404 Not Found", b"no"), Delivery::Whole),
    });
    let hf = Holdfast::start(&config(&up.url()));
    let mut client = Client::new(hf.addr);
    for round in 0..2 {
        for (path, status, body) in [
            ("/length", 200, pattern(5000)),
            ("/big", 200, pattern(3 << 20)),
            ("/chunked", 200, pattern(300_000)),
            ("/trailers", 200, pattern(100)),
            ("/trickle", 200, pattern(200)),
            ("/trickle-chunked", 200, pattern(150)),
            ("/no-content", 204, Vec::new()),
            ("/informational", 201, b"made".to_vec()),
            ("/reason", 200, b"ok".to_vec()),
        ] {
            let a = client
                .get(path)
                .unwrap_or_else(|e| panic!("round {round} {path}: {e}"));
            assert_eq!(a.status, status, "round {round} {path}");
            assert_eq!(a.body.len(), body.len(), "round {round} {path}");
            assert!(a.body == body, "round {round} {path}: the body differs");
        }
        let a = client.request("HEAD", "/head", &[], b"").unwrap();
        assert_eq!(
            (a.status, a.header("content-length")),
            (200, Some("10")),
            "HEAD keeps the length of the body it does not carry"
        );
        assert!(a.body.is_empty());
    }
    assert_eq!(client.connections, 1);
    assert_eq!(
        up.connections(),
        1,
        "every answer ended cleanly, so one upstream connection served them all"
    );
}

#[test]
fn an_answer_read_to_the_close_is_whole_and_its_connection_is_not_reused() {
    let up = Upstream::start(|_, path| match path {
        "/to-close" => (
            b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it, up to the close"
                .to_vec(),
            Delivery::ThenClose,
        ),
        _ => (with_length("200 OK", b"ok"), Delivery::Whole),
    });
    let hf = Holdfast::start(&config(&up.url()));
    let mut client = Client::new(hf.addr);
    let a = client.get("/to-close").unwrap();
    assert_eq!(
        (a.status, a.text().as_str()),
        (200, "all of it, up to the close")
    );
    let records = hf.records_eventually(1);
    assert!(records[0]["reset_class"].is_null(), "{:?}", records[0]);
    assert_eq!(client.get("/next").unwrap().status, 200);
    assert_eq!(up.connections(), 2);
}

#[test]
fn bytes_behind_a_body_retire_the_connection() {
    let up = Upstream::start(|_, path| match path {
        "/extra" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokUNASKED".to_vec(),
            Delivery::Whole,
        ),
        _ => (with_length("200 OK", b"fine"), Delivery::Whole),
    });
    let hf = Holdfast::start(&config(&up.url()));
    let mut client = Client::new(hf.addr);
    assert_eq!(client.get("/extra").unwrap().text(), "ok");
    for _ in 0..3 {
        let a = client.get("/next").unwrap();
        assert_eq!((a.status, a.text().as_str()), (200, "fine"));
    }
    assert_eq!(
        up.connections(),
        2,
        "the connection with unasked bytes was dropped, the next one reused"
    );
}

#[test]
fn a_chunked_upload_goes_upstream_with_its_exact_length() {
    let up = Upstream::start(|_, _| (with_length("200 OK", b"got it"), Delivery::Whole));
    let hf = Holdfast::start(&config(&up.url()));
    let mut s = TcpStream::connect(hf.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nhost: test.local\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let a = proxy_support::read_answer(&mut reader, false).unwrap();
    assert_eq!((a.status, a.text().as_str()), (200, "got it"));
    let seen = up.seen.lock().unwrap();
    let (head, body) = &seen[0];
    assert_eq!(body, b"hello world");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\ncontent-length: 11\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(
        head.starts_with("post /upload http/1.1\r\nhost: test.local\r\n"),
        "{head}"
    );
}
