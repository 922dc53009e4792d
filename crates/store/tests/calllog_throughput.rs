//! Call-log write throughput (rows/s) on PostgreSQL and on a SQLite file, for
//! `docs/BENCHMARKS.md`. Ignored by default (they are measurements, not checks); run them in
//! release (PostgreSQL: the test server):
//!
//! ```sh
//! source scripts/test-services
//! cargo test --release -p holdfast-store --test calllog_throughput -- --ignored --nocapture
//! ```
//!
//! `HOLDFAST_BENCH_ROWS` (default 200 000) records are written in batches of
//! `HOLDFAST_BENCH_BATCH` (default 20 000: one second of calls at 20k req/s), the way the
//! call-log writer writes them.

use std::time::Instant;

use holdfast_core::{CallExtra, CallRecord};
use holdfast_store::{CallBatch, CallLogStore, SqlStore};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture, in release"]
async fn postgres_call_log_rows_per_second() {
    let Ok(url) = std::env::var("HOLDFAST_TEST_PG_URL") else {
        eprintln!("skipped: HOLDFAST_TEST_PG_URL unset (source scripts/test-services)");
        return;
    };
    let store = SqlStore::open_postgres(&url, b"bench-secret-0123456789abcdef")
        .await
        .expect("open");
    measure(&store, "postgres").await;
}

#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture, in release"]
async fn sqlite_call_log_rows_per_second() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bench.db");
    let store = SqlStore::open_sqlite(&path.to_string_lossy(), b"bench-secret-0123456789abcdef")
        .await
        .expect("open");
    measure(&store, "sqlite").await;
}

/// This process's (user, kernel) CPU time in seconds, from `/proc/self/stat` (0 elsewhere).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let field = |n: usize| {
        rest.split_whitespace()
            .nth(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    (field(14), field(15))
}

/// Write the configured number of rows in batches, print rows/s, check they all landed and
/// delete them.
async fn measure(store: &SqlStore, label: &str) {
    let rows = env_usize("HOLDFAST_BENCH_ROWS", 200_000);
    let per_batch = env_usize("HOLDFAST_BENCH_BATCH", 20_000).max(1);
    let tenant = format!("bench-{}-{}", std::process::id(), holdfast_store::now_ms());
    let record = CallRecord {
        ts_ms: holdfast_store::now_ms(),
        route: "bench".into(),
        method: "GET".into(),
        path: "/pay/a".into(),
        status: 200,
        total_ms: 0.4,
        upstream_ms: Some(0.3),
        bytes_out: 104,
        extra: CallExtra {
            tenant: Some(tenant.clone()),
            service: Some("pay".into()),
            service_version: Some("v1".into()),
            consumer: Some("c1".into()),
            key_prefix: Some("hf_eaadb9ed".into()),
            ..CallExtra::default()
        },
        ..CallRecord::default()
    };
    let mut batch = CallBatch::new();
    let mut written = 0;
    let mut slowest = 0f64;
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    while written < rows {
        let n = per_batch.min(rows - written);
        for i in 0..n {
            let mut r = record.clone();
            r.ts_ms += ((written + i) / 20) as i64;
            batch.push(&r);
        }
        let t = Instant::now();
        let (back, result) = store.insert_call_batch("bench-node", batch).await;
        slowest = slowest.max(t.elapsed().as_secs_f64());
        result.expect("insert");
        batch = back;
        written += n;
    }
    let took = started.elapsed().as_secs_f64();
    let (user, sys) = cpu_seconds();
    let per_row = |now: f64, before: f64| (now - before) * 1e6 / rows as f64;
    println!(
        "{label} call log: {rows} rows in batches of {per_batch}: {took:.3} s, {:.0} rows/s, slowest batch {:.0} ms; this process's CPU per row: {:.2} µs user + {:.2} µs kernel",
        rows as f64 / took,
        slowest * 1000.0,
        per_row(user, cpu_before.0),
        per_row(sys, cpu_before.1),
    );
    assert_eq!(
        store.count_calls(Some(&tenant)).await.expect("count"),
        rows as u64
    );
    store
        .execute("DELETE FROM calls WHERE tenant = $1", vec![tenant.into()])
        .await
        .expect("clean up");
}
