//! Servers that stop answering without refusing anything (SIGSTOP: a frozen VM, a black-holed
//! network): uses fail within a bound instead of hanging, then fail at once (backoff) while
//! the server stays silent, and work goes on once it answers again. Each test freezes a
//! server of its own (`support/services.rs`); a failing test thaws it on the way out.

#[path = "support/records.rs"]
mod records;
#[path = "support/services.rs"]
mod services;

use std::future::Future;
use std::time::{Duration, Instant};

use holdfast_core::CallRecord;
use holdfast_store::*;
use records::{call, published_service, SECRET};
use services::{PrivatePg, PrivateRedis};

fn service(name: &str) -> Service {
    published_service(name, "t1")
}

/// `work`'s answer and how long it took; a panic (not a hung test) past 20 s.
async fn timed<T>(what: &str, work: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(20), work).await {
        Ok(v) => (v, started.elapsed()),
        Err(_) => panic!("{what}: no answer after 20 s (hangs on the silent server)"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_that_stops_answering_fails_fast_then_recovers() {
    let Some(pg) = PrivatePg::start() else {
        eprintln!("skipped: PostgreSQL binaries not installed (scripts/install-deps)");
        return;
    };
    let store = SqlStore::open_postgres(&pg.url(), SECRET)
        .await
        .expect("open");
    store.create_tenant("t1").await.expect("tenant");
    store.create_service(&service("s0")).await.expect("service");
    let calls: Vec<CallRecord> = (0..300).map(call).collect();
    store.insert_calls("n1", &calls).await.expect("call log");

    let frozen = pg.freeze();
    // A read on the shared connection, a transaction on its own connection and a call-log
    // batch on the writer's, all waiting on the silent server at once: each fails within
    // the bound (3 s unanswered, then a 2 s check of the server), none hangs.
    let s1 = service("s1");
    let ((read, t_read), (tx, t_tx), ((back, log), t_log)) = tokio::join!(
        timed("read", store.list_tenants()),
        timed("transaction", store.create_service(&s1)),
        timed(
            "call log",
            store.insert_call_batch("n1", CallBatch::from(calls.as_slice()))
        ),
    );
    eprintln!("hung: read {t_read:?}, transaction {t_tx:?}, call log {t_log:?}");
    for (what, err, took) in [
        ("read", read.err(), t_read),
        ("transaction", tx.err(), t_tx),
        ("call log", log.err(), t_log),
    ] {
        let err = err.unwrap_or_else(|| panic!("{what} succeeded on a frozen server"));
        assert!(
            matches!(err, StoreError::Unavailable(_)),
            "{what}: {err} (want `store unavailable`, a 503 in the admin API)"
        );
        assert!(took < Duration::from_secs(8), "{what} took {took:?}");
    }
    assert_eq!(
        back.len(),
        calls.len(),
        "the failed batch comes back intact"
    );

    // Meanwhile uses fail at once (backoff, a reconnect attempt in the background).
    for i in 0..5 {
        let (r, took) = timed("read while frozen", store.generation()).await;
        let e = r.expect_err("a read on a frozen server");
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        assert!(
            took < Duration::from_millis(1500),
            "use {i} while frozen took {took:?}: {e}"
        );
        let (r, took) = timed("transaction while frozen", store.create_service(&s1)).await;
        assert!(r.is_err());
        assert!(
            took < Duration::from_millis(1500),
            "transaction {i}: {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    frozen.thaw();
    let thawed = Instant::now();
    let deadline = thawed + Duration::from_secs(8);
    let took = loop {
        match store.generation().await {
            Ok(_) => break thawed.elapsed(),
            Err(e) => {
                assert!(Instant::now() < deadline, "never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    eprintln!("reads work again {took:?} after the thaw");
    loop {
        match store.create_service(&s1).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "transactions never recovered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The failed batch, written again: stored once (its first attempt was rolled back).
    let mut back = back;
    loop {
        let (again, result) = store.insert_call_batch("n1", back).await;
        back = again;
        match result {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the call log never recovered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(
        store.count_calls(None).await.expect("count"),
        2 * calls.len() as u64
    );
    let names: Vec<String> = store
        .list_tenants()
        .await
        .expect("read")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["t1"]);
}

/// A frozen Redis: the check that meets it waits the 500 ms response timeout once; then
/// Redis counts as down and checks fail at once (the caller's local limiter answers) while
/// reconnects back off; once Redis answers again, the shared counters work again.
#[tokio::test]
async fn redis_that_stops_answering_fails_at_once_then_recovers() {
    let Some(redis) = PrivateRedis::start() else {
        eprintln!("skipped: redis-server not installed (scripts/install-deps)");
        return;
    };
    let a = RedisCounters::connect(&redis.url(), "hung")
        .await
        .expect("connect");
    assert!(a.gcra("k1", 100, 60_000).await.expect("gcra").allowed);

    let frozen = redis.freeze();
    let (first, took) = timed("first check", a.gcra("k1", 100, 60_000)).await;
    assert!(first.is_err(), "a check on a frozen Redis");
    assert!(took < Duration::from_millis(1500), "first check {took:?}");

    // 2 s of checks (past several backoff windows and a background reconnect attempt): each
    // fails at once instead of waiting for the response timeout again.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut checks = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let (r, took) = timed("check while frozen", a.gcra("k1", 100, 60_000)).await;
        assert!(r.is_err(), "a check on a frozen Redis");
        slowest = slowest.max(took);
        checks += 1;
        assert!(
            took < Duration::from_millis(100),
            "check {checks} waited {took:?} on the frozen Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("{checks} checks while frozen, slowest {slowest:?}");
    let (r, _) = timed("token count while frozen", a.add_tokens("t", 0, 60_000, 3)).await;
    assert!(r.is_err());

    frozen.thaw();
    let deadline = Instant::now() + Duration::from_secs(6);
    while let Err(e) = a.gcra("k2", 5, 60_000).await {
        assert!(Instant::now() < deadline, "never recovered: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut allowed = 1;
    for _ in 0..10 {
        if a.gcra("k2", 5, 60_000).await.expect("gcra").allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5, "the shared bucket counts again");
}
