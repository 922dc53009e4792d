//! API management through real `holdfast serve` processes: two nodes sharing PostgreSQL and
//! Redis (rate limit across both, revocation on node 1 refused by node 2 within 2 s, both
//! nodes' calls in one analytics query), and the call log on graceful stop and on `kill -9`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_store::{CallLogStore, SqlStore};
use serde_json::{json, Value};

const TOKEN: &str = "serve-super-token-0123456789abcdef";
const SECRET: &str = "serve-secret-0123456789abcdef";

/// A tiny keep-alive HTTP/1.1 upstream answering 200 "ok" on 127.0.0.1, with
/// `x-saw-credential: yes|no` saying whether the request carried `Authorization`.
fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut w = conn;
                loop {
                    let mut len = 0usize;
                    let mut credential = false;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        credential |= lower.starts_with("authorization:");
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    // Says whether the consumer's credential reached the upstream.
                    let saw = if credential { "yes" } else { "no" };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nx-saw-credential: {saw}\r\ncontent-length: 2\r\n\r\nok"
                    );
                    if w.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct Serve {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    config: std::path::PathBuf,
}

impl Serve {
    fn start(name: &str, upstream: SocketAddr, service: &str, management: &str) -> Serve {
        let config = format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"

[upstreams.up]
targets = ["http://{upstream}"]

[[routes]]
name = "managed"
path_prefix = "/"
upstream = "up"
service = "{service}"

[management]
secret = "{SECRET}"
{management}

[[management.admin_tokens]]
token = "{TOKEN}"
role = "super_admin"
"#
        );
        let path =
            std::env::temp_dir().join(format!("holdfast-mgmt-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, config).expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("HOLDFAST_NODE", name)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn holdfast");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut admin, mut seen) = (None, None, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        while (addr.is_none() || admin.is_none()) && Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
                break;
            };
            if let Some(a) = line.strip_prefix("holdfast: listening on http://") {
                addr = a.parse().ok();
            }
            if let Some(a) = line.strip_prefix("holdfast: admin on http://") {
                admin = a.parse().ok();
            }
            seen.push(line);
        }
        let (Some(addr), Some(admin)) = (addr, admin) else {
            let _ = child.kill();
            panic!("holdfast serve did not start: {seen:?}");
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Serve {
            child,
            addr,
            admin,
            config: path,
        }
    }

    fn stop(&mut self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("holdfast did not stop on SIG{signal}");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

async fn admin(
    client: &reqwest::Client,
    node: &Serve,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            format!("http://{}{path}", node.admin),
        )
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn call(
    client: &reqwest::Client,
    node: &Serve,
    key: &str,
) -> (u16, reqwest::header::HeaderMap) {
    let resp = client
        .get(format!("http://{}/x", node.addr))
        .bearer_auth(key)
        .send()
        .await
        .expect("gateway answers");
    (resp.status().as_u16(), resp.headers().clone())
}

/// Create tenant, service, consumer, key and an active subscription; returns the key.
async fn provision(
    client: &reqwest::Client,
    node: &Serve,
    tenant: &str,
    service: &str,
    limits: Value,
) -> String {
    let steps = [
        ("/admin/tenants".to_string(), json!({ "name": tenant })),
        (
            format!("/admin/tenants/{tenant}/services"),
            json!({ "name": service, "limits": limits }),
        ),
        (
            format!("/admin/tenants/{tenant}/consumers"),
            json!({ "name": "c1" }),
        ),
    ];
    for (path, body) in steps {
        let (s, v) = admin(client, node, "POST", &path, Some(body)).await;
        assert_eq!(s, 201, "{path}: {v}");
    }
    let (s, key) = admin(
        client,
        node,
        "POST",
        &format!("/admin/tenants/{tenant}/consumers/c1/keys"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 201, "{key}");
    let (s, v) = admin(
        client,
        node,
        "POST",
        &format!("/admin/tenants/{tenant}/subscriptions"),
        Some(json!({ "consumer": "c1", "service": service })),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    key["key"].as_str().expect("key").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_nodes_share_postgres_and_redis() {
    let (Ok(pg), Ok(redis)) = (
        std::env::var("HOLDFAST_TEST_PG_URL"),
        std::env::var("HOLDFAST_TEST_REDIS_URL"),
    ) else {
        eprintln!("skipped: HOLDFAST_TEST_PG_URL / HOLDFAST_TEST_REDIS_URL unset (scripts/test sets them via scripts/test-services)");
        return;
    };
    let id = std::process::id();
    let (tenant, service) = (format!("serve-{id}"), format!("svc-{id}"));
    let up = upstream();
    let mgmt = format!("store = \"{pg}\"\nredis = \"{redis}\"\nflush_interval_ms = 200");
    let n1 = Serve::start(&format!("n1-{id}"), up, &service, &mgmt);
    let n2 = Serve::start(&format!("n2-{id}"), up, &service, &mgmt);
    let client = reqwest::Client::new();
    let key = provision(&client, &n1, &tenant, &service, json!({ "rpm": 12 })).await;

    // Node 2 learns the new key from the store within its refresh interval.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut allowed = 0;
    loop {
        let (s, _) = call(&client, &n2, &key).await;
        if s == 200 {
            allowed += 1;
            break;
        }
        // 401 until node 2 knows the key; 403 for a moment if it learns the key before the
        // subscription (changes arrive one by one through LISTEN/NOTIFY).
        assert!(
            s == 401 || s == 403,
            "before node 2 knows the key and its subscription: {s}"
        );
        assert!(
            Instant::now() < deadline,
            "node 2 never accepted the new key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..40 {
        let node = if i % 2 == 0 { &n1 } else { &n2 };
        let (s, h) = call(&client, node, &key).await;
        match s {
            200 => allowed += 1,
            429 => {
                assert!(h.contains_key("retry-after"));
                assert_eq!(h["ratelimit-limit"], "12");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(allowed, 12, "12 per minute in total across both nodes");

    // Revoke through node 1: node 2 refuses within 2 s.
    let (s, v) = admin(
        &client,
        &n1,
        "POST",
        &format!("/admin/tenants/{tenant}/keys/{}/revoke", &key[..11]),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let t0 = Instant::now();
    while call(&client, &n2, &key).await.0 != 401 {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "node 2 still accepts a revoked key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("revoked key refused by node 2 after {:?}", t0.elapsed());

    // Both nodes' call logs in one analytics query.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (s, v) = admin(
        &client,
        &n2,
        "GET",
        &format!("/admin/tenants/{tenant}/stats?since=1h"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let by_node = v["calls_by_node"].as_object().expect("calls_by_node");
    assert!(
        by_node.contains_key(&format!("n1-{id}")) && by_node.contains_key(&format!("n2-{id}")),
        "{v}"
    );
    assert!(v["calls"].as_u64().unwrap_or(0) >= 41, "{v}");
}

async fn sqlite_count(path: &str, tenant: &str) -> u64 {
    let store = SqlStore::open_sqlite(path, SECRET.as_bytes())
        .await
        .expect("open");
    store.count_calls(Some(tenant)).await.expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_log_survives_graceful_stop_and_kill_9_loses_at_most_the_flush_interval() {
    let dir = std::env::temp_dir().join(format!("holdfast-mgmt-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let up = upstream();
    let client = reqwest::Client::new();

    // Graceful stop with a long flush interval: everything is still written.
    let db = dir.join("graceful.db").to_string_lossy().into_owned();
    let mut node = Serve::start(
        "g",
        up,
        "svc",
        &format!("store = \"sqlite://{db}\"\nflush_interval_ms = 30000"),
    );
    let key = provision(&client, &node, "t", "svc", json!({})).await;
    for _ in 0..300 {
        assert_eq!(call(&client, &node, &key).await.0, 200);
    }
    node.stop("TERM");
    assert_eq!(
        sqlite_count(&db, "t").await,
        300,
        "a graceful stop writes every call"
    );

    // kill -9: calls answered more than one flush interval (+ slack) before the kill are stored.
    let db = dir.join("kill.db").to_string_lossy().into_owned();
    let mut node = Serve::start(
        "k",
        up,
        "svc",
        &format!("store = \"sqlite://{db}\"\nflush_interval_ms = 300"),
    );
    let key = provision(&client, &node, "t", "svc", json!({})).await;
    let start = Instant::now();
    let mut answered = Vec::new();
    while start.elapsed() < Duration::from_secs(2) {
        assert_eq!(call(&client, &node, &key).await.0, 200);
        answered.push(Instant::now());
    }
    let killed = Instant::now();
    node.stop("KILL");
    let must_have = answered
        .iter()
        .filter(|t| killed.duration_since(**t) > Duration::from_millis(300 + 500))
        .count() as u64;
    let stored = sqlite_count(&db, "t").await;
    eprintln!(
        "kill -9: {} answered, {stored} stored, {must_have} older than interval + slack",
        answered.len()
    );
    assert!(
        stored >= must_have,
        "lost more than the flush interval: {stored} < {must_have}"
    );
    assert!(stored <= answered.len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_key_stays_at_the_gateway_unless_forward_key() {
    let dir = std::env::temp_dir().join(format!("holdfast-fwdkey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let up = upstream();
    let client = reqwest::Client::new();
    for (name, forward, expect) in [("strip", "false", "no"), ("keep", "true", "yes")] {
        let mgmt = format!(
            "store = \"sqlite://{}/{name}.db\"\nforward_key = {forward}",
            dir.display()
        );
        let node = Serve::start(name, up, "svc", &mgmt);
        let key = provision(&client, &node, "t1", "svc", json!({})).await;
        let (status, headers) = call(&client, &node, &key).await;
        assert_eq!(status, 200);
        assert_eq!(
            headers.get("x-saw-credential").map(|v| v.to_str().unwrap()),
            Some(expect),
            "forward_key = {forward}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
