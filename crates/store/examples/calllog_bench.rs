//! Time the SQLite call-log insert: `cargo run --release -p holdfast-store --example
//! calllog_bench [ROWS] [BATCH]` writes ROWS records (default 200000) in batches of BATCH
//! (default 60000, about one second of calls at full speed) and prints µs per row.

use holdfast_core::{CallExtra, CallRecord};
use holdfast_store::{CallBatch, CallLogStore, SqlStore};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let per_batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(60_000);
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bench.db");
    let store = SqlStore::open_sqlite(&path.to_string_lossy(), b"bench-secret-0123456789abcdef")
        .await
        .expect("open");
    let record = CallRecord {
        ts_ms: holdfast_store::now_ms(),
        route: "bench".into(),
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        total_ms: 0.4,
        upstream_ms: Some(0.3),
        bytes_out: 104,
        extra: CallExtra {
            tenant: Some("bench".into()),
            service: Some("bench".into()),
            consumer: Some("c1".into()),
            key_prefix: Some("hf_eaadb9ed".into()),
            ..CallExtra::default()
        },
        ..CallRecord::default()
    };
    let mut written = 0;
    let started = std::time::Instant::now();
    let mut batch = CallBatch::new();
    while written < rows {
        let n = per_batch.min(rows - written);
        for i in 0..n {
            let mut r = record.clone();
            r.ts_ms += (written + i) as i64 / 60;
            batch.push(&r);
        }
        let (back, result) = store.insert_call_batch("node-1", batch).await;
        result.expect("insert");
        batch = back;
        written += n;
    }
    let took = started.elapsed();
    println!(
        "{rows} rows in batches of {per_batch}: {:.3} s, {:.2} µs per row",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / rows as f64
    );
}
