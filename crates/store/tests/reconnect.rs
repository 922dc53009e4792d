//! The store outlives restarts of its servers: after PostgreSQL or Redis restarts, the next
//! use reconnects (with backoff while the server is down) and work goes on. Each test runs
//! its own server (`support/services.rs`), so restarting it disturbs no other test.

#[path = "support/records.rs"]
mod records;
#[path = "support/services.rs"]
mod services;

use std::time::{Duration, Instant};

use holdfast_core::CallRecord;
use holdfast_store::*;
use records::{call, published_service, SECRET};
use services::{PrivatePg, PrivateRedis};

#[tokio::test]
async fn postgres_restart_reconnects_reads_writes_and_the_call_log() {
    let Some(pg) = PrivatePg::start() else {
        eprintln!("skipped: PostgreSQL binaries not installed (scripts/install-deps)");
        return;
    };
    let store = SqlStore::open_postgres(&pg.url(), SECRET)
        .await
        .expect("open");
    store.create_tenant("t1").await.expect("tenant");
    let calls: Vec<CallRecord> = (0..700).map(call).collect();
    store.insert_calls("n1", &calls).await.expect("insert");

    pg.restart();
    // The old connection was terminated by the restart: the next use reconnects.
    let started = Instant::now();
    let tenants = store
        .list_tenants()
        .await
        .expect("a read after the restart");
    assert_eq!(tenants.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(3));
    store
        .create_tenant("t2")
        .await
        .expect("a write after the restart");
    store
        .create_service(&published_service("pay", "t1"))
        .await
        .expect("a transaction after the restart (its own connection)");
    let (back, result) = store
        .insert_call_batch("n1", CallBatch::from(calls.as_slice()))
        .await;
    result.expect("call log after the restart (its own connection)");
    assert!(back.is_empty());
    assert_eq!(store.count_calls(None).await.expect("count"), 1400);

    // Down: uses fail fast (backoff), they do not hang; up again: work goes on.
    pg.down();
    let started = Instant::now();
    for _ in 0..5 {
        assert!(store.generation().await.is_err());
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "a down database fails fast: {:?}",
        started.elapsed()
    );
    let (back, result) = store
        .insert_call_batch("n1", CallBatch::from(&calls[..10]))
        .await;
    assert!(result.is_err());
    assert_eq!(back.len(), 10, "a failed batch comes back intact");
    pg.up();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match store.generation().await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "never reconnected: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The failed batch written again, once.
    let (back, result) = store.insert_call_batch("n1", back).await;
    result.expect("the batch written again");
    assert!(back.is_empty());
    assert_eq!(store.count_calls(None).await.expect("count"), 1410);
}

/// A session killed from the server side (`pg_terminate_backend`) mid-use: the store
/// reconnects on the next use.
#[tokio::test]
async fn postgres_terminated_sessions_reconnect() {
    let Some(pg) = PrivatePg::start() else {
        eprintln!("skipped: PostgreSQL binaries not installed (scripts/install-deps)");
        return;
    };
    let store = SqlStore::open_postgres(&pg.url(), SECRET)
        .await
        .expect("open");
    let other = SqlStore::open_postgres(&pg.url(), SECRET)
        .await
        .expect("open");
    store.create_tenant("t1").await.expect("tenant");
    store.insert_calls("n1", &[call(1)]).await.expect("insert");
    // Every session but `other`'s own.
    other
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
            vec![],
        )
        .await
        .expect("terminate");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.list_tenants().await.expect("read").len(), 1);
    store.create_tenant("t2").await.expect("write");
    store
        .insert_calls("n1", &[call(2)])
        .await
        .expect("call log");
    assert_eq!(store.count_calls(None).await.expect("count"), 2);
}

#[tokio::test]
async fn redis_restart_reconnects_and_the_shared_limit_holds_again() {
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: redis-server not installed (scripts/install-deps)");
        return;
    };
    let a = RedisCounters::connect(&redis.url(), "rr")
        .await
        .expect("connect a");
    let b = RedisCounters::connect(&redis.url(), "rr")
        .await
        .expect("connect b");
    async fn allowed(a: &RedisCounters, b: &RedisCounters, key: &str) -> u32 {
        let mut n = 0;
        for i in 0..20 {
            let c = if i % 2 == 0 { a } else { b };
            if c.gcra(key, 5, 60_000).await.expect("gcra").allowed {
                n += 1;
            }
        }
        n
    }
    assert_eq!(allowed(&a, &b, "k1").await, 5, "5 in total across both");

    redis.restart();
    // The first use after the restart reconnects (and runs the check on the new connection).
    let deadline = Instant::now() + Duration::from_secs(5);
    for c in [&a, &b] {
        while let Err(e) = c.gcra("warmup", 1000, 60_000).await {
            assert!(Instant::now() < deadline, "never reconnected: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        allowed(&a, &b, "k2").await,
        5,
        "the shared limit holds again after the restart"
    );
    assert_eq!(a.add_tokens("t", 0, 60_000, 7).await.expect("add"), 7);
    assert_eq!(b.tokens("t", 0).await.expect("tokens"), 7);

    // Down: checks fail fast, not hanging on the request path.
    redis.down();
    let started = Instant::now();
    for _ in 0..20 {
        assert!(a.gcra("k3", 5, 60_000).await.is_err());
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a down Redis fails fast: {:?}",
        started.elapsed()
    );
    redis.up();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = a.gcra("k4", 5, 60_000).await {
        assert!(Instant::now() < deadline, "never reconnected: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while b.gcra("k4", 5, 60_000).await.is_err() {
        assert!(Instant::now() < deadline, "b never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(allowed(&a, &b, "k5").await, 5);
}

#[tokio::test]
async fn redis_down_at_start_is_an_outage_not_an_error() {
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: redis-server not installed (scripts/install-deps)");
        return;
    };
    redis.down();
    // A node started during a Redis outage comes up like one that lost Redis later.
    let a = RedisCounters::connect(&redis.url(), "rs")
        .await
        .expect("an unreachable Redis at start is not an error");
    let started = Instant::now();
    for _ in 0..20 {
        assert!(a.gcra("k", 5, 60_000).await.is_err());
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "checks fail fast while Redis is down: {:?}",
        started.elapsed()
    );
    redis.up();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = a.gcra("k2", 5, 60_000).await {
        assert!(Instant::now() < deadline, "never connected: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = RedisCounters::connect(&redis.url(), "rs").await.expect("b");
    let mut n = 1;
    for i in 0..20 {
        let c = if i % 2 == 0 { &a } else { &b };
        if c.gcra("k2", 5, 60_000).await.expect("gcra").allowed {
            n += 1;
        }
    }
    assert_eq!(n, 5, "shared once Redis answers");
    // A bad URL stays an error.
    assert!(RedisCounters::connect("redis://[::1", "rs").await.is_err());
}
