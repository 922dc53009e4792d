//! A node whose PostgreSQL or Redis stops answering without refusing (SIGSTOP: a frozen VM,
//! a black-holed network). With PostgreSQL silent, admin calls answer 503 + `Retry-After`
//! within a bound and then at once, and a graceful stop ends within its 5 s, counting what it
//! could not write. With Redis silent, rate-limited requests are decided by the local limiter
//! at once instead of each waiting for Redis's response timeout, and the shared limiter is
//! used again once Redis answers. The servers are private to each test (frozen, then thawed
//! even when the test fails).

mod common;
#[path = "../../store/tests/support/services.rs"]
mod services;

use std::time::{Duration, Instant};

use common::*;
use holdfast_core::config::management::StoreUrl;
use holdfast_store::CallLogStore;
use services::{PrivatePg, PrivateRedis};

/// An admin call's status, `Retry-After` and body, and how long it took (a panic, not a
/// hung test, past 20 s).
async fn timed_api(node: &Node, path: &str) -> (u16, Option<String>, String, Duration) {
    let started = Instant::now();
    let send = node
        .http
        .get(format!("{}{path}", node.admin))
        .bearer_auth(SUPER)
        .send();
    let resp = tokio::time::timeout(Duration::from_secs(20), send)
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer after 20 s"))
        .expect("admin API answers");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.text().await.unwrap_or_default();
    (status, retry, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_postgres_admin_answers_503_and_graceful_stop_ends_in_5_s() {
    let Some(pg) = PrivatePg::start() else {
        eprintln!("skipped: PostgreSQL binaries not installed (scripts/install-deps)");
        return;
    };
    let node = Node::start_as(config(StoreUrl::Postgres(pg.url()), "hs-a", "hs-b"), "hs1").await;
    let (s, v) = node
        .api("POST", "/admin/tenants", SUPER, Some(r#"{"name":"hs-a"}"#))
        .await;
    assert_eq!(s, 201, "{v}");
    let rec = record("hs-a", "hs-pay");
    push(&node, &rec, 20);
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.mgmt.call_log_stats().written < 20 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            node.mgmt.call_log_stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let frozen = pg.freeze();
    push(&node, &rec, 30);
    // The first call waits for the silent server to be noticed (3 s unanswered, then a 2 s
    // check), the next ones fail at once: 503 + Retry-After, never a hang.
    let (s, retry, body, took) = timed_api(&node, "/admin/tenants/hs-a").await;
    eprintln!("first admin call on the frozen database: {s} after {took:?}: {body}");
    assert_eq!(s, 503, "{body}");
    assert_eq!(retry.as_deref(), Some("2"));
    assert!(body.contains("unavailable"), "{body}");
    assert!(took < Duration::from_secs(8), "first call took {took:?}");
    for path in [
        "/admin/tenants",
        "/admin/tenants/hs-a/keys",
        "/admin/tenants/hs-a",
    ] {
        let (s, retry, body, took) = timed_api(&node, path).await;
        assert_eq!(s, 503, "{path}: {body}");
        assert_eq!(retry.as_deref(), Some("2"), "{path}");
        assert!(took < Duration::from_millis(1500), "{path} took {took:?}");
    }
    let stats = node.mgmt.call_log_stats();
    assert_eq!(stats.backlog, 30, "{stats:?}");
    assert!(stats.backlog_ms > 0, "{stats:?}");

    // Graceful stop: the writer tries for 5 s, then reports the 30 records it could not write.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), node.mgmt.shutdown())
        .await
        .expect("the graceful stop hangs on the frozen database");
    let took = started.elapsed();
    eprintln!("graceful stop on the frozen database took {took:?}");
    assert!(took < Duration::from_millis(6500), "stop took {took:?}");
    let stats = node.mgmt.call_log_stats();
    assert_eq!(stats.overflow, 30, "{stats:?}");
    assert_eq!(stats.written, 20, "{stats:?}");
    assert_eq!(stats.backlog, 0, "{stats:?}");
    frozen.thaw();
}

/// `evalsha` + `eval` calls Redis has served: the node's shared GCRA checks.
fn gcra_calls(redis: &PrivateRedis) -> u64 {
    let port = redis
        .url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port, "info", "commandstats"])
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split([':', ','])
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_rate_limited_requests_use_the_local_limiter_at_once() {
    let Some(redis) = PrivateRedis::start() else {
        eprintln!("skipped: redis-server not installed (scripts/install-deps)");
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("m.db").to_string_lossy().into_owned();
    let mut cfg = config(StoreUrl::Sqlite(path), "acme", "beta");
    cfg.redis = Some(redis.url());
    let node = Node::start(cfg).await;
    let (s, v) = node
        .api("POST", "/admin/tenants", SUPER, Some(r#"{"name":"acme"}"#))
        .await;
    assert_eq!(s, 201, "{v}");
    let svc = "hs-lim";
    let key = provision(
        &node,
        ADMIN_A,
        "acme",
        svc,
        r#"{"name":"hs-lim","limits":{"rpm":100000}}"#,
    )
    .await;
    subscribe(&node, "c1", "hs-lim").await;
    assert_eq!(node.call(svc, Some(&key)).await.0, 200);
    let before = gcra_calls(&redis);
    assert_eq!(node.call(svc, Some(&key)).await.0, 200);
    assert!(gcra_calls(&redis) > before, "the limit is checked in Redis");

    let frozen = redis.freeze();
    let timed_call = || async {
        let started = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(20), node.call(svc, Some(&key)))
            .await
            .expect("a rate-limited request hangs on the frozen Redis")
            .0;
        (status, started.elapsed())
    };
    // The first request meets the silence (Redis's 500 ms response timeout), then the local
    // limiter answers.
    let (status, took) = timed_call().await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(1500), "first request {took:?}");
    // Every later one is decided at once for the whole outage (backoff windows and
    // background reconnect attempts included), not after another 500 ms each.
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let (status, took) = timed_call().await;
        n += 1;
        assert_eq!(status, 200);
        assert!(
            took < Duration::from_millis(100),
            "request {n} waited {took:?} on the frozen Redis"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!("{n} requests with Redis frozen, each decided at once");

    frozen.thaw();
    let thawed = Instant::now();
    let before = gcra_calls(&redis);
    loop {
        assert_eq!(node.call(svc, Some(&key)).await.0, 200);
        if gcra_calls(&redis) > before {
            break;
        }
        assert!(
            thawed.elapsed() < Duration::from_secs(6),
            "the node never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("shared limiter back {:?} after the thaw", thawed.elapsed());
}

/// A writer that falls behind (here: the `calls` table locked for 1.5 s by another session,
/// so a batch takes far longer than the 100 ms flush interval) is never silent: it is
/// counted in `behind` while the write is stuck, and `backlog` / `backlog_ms` /
/// `last_write_ms` show by how much, in `GET /admin/calllog` too. Every record is still
/// written once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_log_writer_falling_behind_is_counted_and_shown() {
    let Ok(url) = std::env::var("HOLDFAST_TEST_PG_URL") else {
        eprintln!(
            "skipped: HOLDFAST_TEST_PG_URL unset (scripts/test sets it via scripts/test-services)"
        );
        return;
    };
    let tenant = format!("hsb-{}-{}", std::process::id(), holdfast_store::now_ms());
    let node = Node::start_as(
        config(StoreUrl::Postgres(url.clone()), &tenant, "hsb-b"),
        "hsb1",
    )
    .await;
    let rec = record(&tenant, "hsb-pay");
    push(&node, &rec, 10);
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.mgmt.call_log_stats().written < 10 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            node.mgmt.call_log_stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let healthy = node.mgmt.call_log_stats();
    assert_eq!(healthy.behind, 0, "{healthy:?}");
    assert_eq!(healthy.backlog, 0, "{healthy:?}");

    let locker = holdfast_store::SqlStore::open_postgres(&url, b"unused-secret-0123456789")
        .await
        .expect("open");
    let lock = tokio::spawn(async move {
        locker
            .execute(
                "DO $$ BEGIN LOCK TABLE calls IN EXCLUSIVE MODE; PERFORM pg_sleep(1.5); END $$",
                vec![],
            )
            .await
    });
    // Calls keep coming while the table is locked.
    let mut pushed = 10;
    let (mut backlog_ms, mut behind) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1300) {
        push(&node, &rec, 10);
        pushed += 10;
        let stats = node.mgmt.call_log_stats();
        backlog_ms = backlog_ms.max(stats.backlog_ms);
        behind = behind.max(stats.behind);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Shown while the write is stuck, not only once it is done.
    assert!(backlog_ms >= 500, "backlog_ms while locked: {backlog_ms}");
    assert!(behind >= 1, "behind while locked: {behind}");
    lock.await.expect("lock task").expect("lock the table");

    let deadline = Instant::now() + Duration::from_secs(5);
    while node.mgmt.call_log_stats().written < pushed {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            node.mgmt.call_log_stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = node.mgmt.call_log_stats();
    eprintln!("after the lock: {stats:?}");
    assert!(stats.behind >= 1, "{stats:?}");
    assert_eq!(stats.overflow, 0, "{stats:?}");
    let (s, v) = node.api("GET", "/admin/calllog", SUPER, None).await;
    assert_eq!(s, 200, "{v}");
    let w = &v["writer"];
    assert!(w["behind"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert!(w["last_write_ms"].is_u64() && w["backlog"].is_u64(), "{v}");
    assert!(w["backlog_ms"].is_u64(), "{v}");
    let store = holdfast_store::SqlStore::open_postgres(&url, b"unused-secret-0123456789")
        .await
        .expect("open");
    assert_eq!(
        store.count_calls(Some(&tenant)).await.expect("count"),
        pushed,
        "every record written once"
    );
}
