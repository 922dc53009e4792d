//! Retries that must not happen and failures that must not linger: a POST that an upstream
//! worked on before it reset a reused connection is not sent again (that is not the idle
//! race), GETs keep away from targets that just failed (with most of a pool resetting), and a
//! client that leaves while queued gives its place in the route's queue back.

mod proxy_support;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_testkit::{Behavior, Misbehaving};
use proxy_support::{read_request_head, Client, Holdfast};

/// An upstream that answers `GET`s at once (keep-alive) and, for each `POST`, reads it, works
/// on it for 300 ms and then resets the connection without an answer. Counts the POSTs.
fn slow_resetting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let posts = Arc::new(AtomicUsize::new(0));
    let counter = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                while let Some(head) = read_request_head(&mut reader) {
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
                    if head.starts_with("POST") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(300));
                        let _ = socket2::SockRef::from(&out).set_linger(Some(Duration::ZERO));
                        return;
                    }
                    let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                }
            });
        }
    });
    (addr, posts)
}

fn config(targets: &str, extra_route: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\n[upstreams.pool]\ntargets = [{targets}]\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n{extra_route}\n"
    )
}

#[test]
fn a_post_the_upstream_worked_on_is_not_sent_again_on_a_reused_connection() {
    let (addr, posts) = slow_resetting_upstream();
    let hf = Holdfast::start(&config(&format!("\"http://{addr}\""), ""));
    let mut client = hf.client();
    // A GET leaves a connection in the pool; the POST goes out on it.
    assert_eq!(client.get("/warm").unwrap().status, 200);
    let a = client
        .request("POST", "/pay", &[("x-request-id", "pay-1")], b"charge=100")
        .unwrap();
    assert_eq!(a.status, 502, "{}", a.text());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        posts.load(Ordering::SeqCst),
        1,
        "the POST reached the upstream twice"
    );
    let rec = hf
        .records_eventually(2)
        .into_iter()
        .find(|r| r["path"] == "/pay")
        .expect("record");
    assert_eq!(rec["attempts"], 1, "{rec}");
    assert_eq!(
        rec["reset_class"], "upstream_reset_before_response",
        "{rec}"
    );
}

#[test]
fn gets_keep_away_from_targets_that_just_failed() {
    // One healthy target and two that reset every connection: most of the pool is bad, so
    // the panic threshold spreads requests over ejected targets too.
    let good = Misbehaving::start(Behavior::Healthy).unwrap();
    let bad1 = Misbehaving::start(Behavior::ResetOnAccept).unwrap();
    let bad2 = Misbehaving::start(Behavior::ResetOnAccept).unwrap();
    let targets = format!("\"{}\", \"{}\", \"{}\"", good.url(), bad1.url(), bad2.url());
    let hf = Holdfast::start(&config(&targets, ""));
    let mut client = hf.client();
    let mut failed = 0;
    for i in 0..300 {
        let a = client
            .get(&format!("/g{i}"))
            .expect("an answer, never a reset");
        if a.status != 200 {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "GETs failed with a healthy target in the pool");
}

#[test]
fn a_client_that_leaves_while_queued_gives_its_place_back() {
    let slow = Misbehaving::start(Behavior::Slow(Duration::from_millis(600))).unwrap();
    let hf = Holdfast::start(&config(
        &format!("\"{}\"", slow.url()),
        "max_concurrent = 1\nqueue_size = 2\nqueue_timeout_ms = 5000",
    ));
    let addr = hf.addr;
    let send = move |path: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .unwrap();
        s
    };
    for round in 0..3 {
        // One request holds the slot; two queue behind it and leave.
        let holder = std::thread::spawn(move || Client::new(addr).get("/hold").map(|a| a.status));
        std::thread::sleep(Duration::from_millis(100));
        let leaving: Vec<TcpStream> = (0..2)
            .map(|i| send(&format!("/leave{round}-{i}")))
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        drop(leaving);
        assert_eq!(holder.join().unwrap().unwrap(), 200, "round {round}");
    }
    // The queue still has both places: two requests wait behind a third and are served.
    let holder = std::thread::spawn(move || Client::new(addr).get("/hold").map(|a| a.status));
    std::thread::sleep(Duration::from_millis(100));
    let queued: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || Client::new(addr).get(&format!("/q{i}")).map(|a| a.status))
        })
        .collect();
    assert_eq!(holder.join().unwrap().unwrap(), 200);
    for q in queued {
        assert_eq!(q.join().unwrap().unwrap(), 200, "queued request refused");
    }
}
