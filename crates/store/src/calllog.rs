//! The call log: batches packed in one buffer ([`CallBatch`]), written in one transaction of
//! cached multi-row inserts on SQLite and of one binary COPY on PostgreSQL; pruning by age;
//! the rows analytics are computed from.

use std::pin::Pin;

use async_trait::async_trait;
use holdfast_core::CallRecord;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::analytics::{CallRow, StatsQuery};
use crate::db::{col, CopyIn, SqlStore, Stmt, Value};
use crate::error::StoreError;

const COLUMNS: &str = "ts_ms, node, tenant, service, version, consumer, key_prefix, route, method, path, status, reset_class, total_ms, upstream_ms, overhead_ms, bytes_in, bytes_out, model, input_tokens, output_tokens, cost_usd";
const NCOLS: usize = 21;

/// The call log.
#[async_trait]
pub trait CallLogStore {
    /// Store a batch of finished calls recorded by gateway node `node`.
    async fn insert_calls(&self, node: &str, calls: &[CallRecord]) -> Result<(), StoreError>;
    /// [`CallLogStore::insert_calls`] for a packed batch the caller owns: it is moved to the
    /// writer (no copy) and handed back, emptied on success and intact on failure, so it can
    /// be retried and its buffers reused.
    async fn insert_call_batch(
        &self,
        node: &str,
        calls: CallBatch,
    ) -> (CallBatch, Result<(), StoreError>);
    /// Delete calls older than `before_ms`; returns how many.
    async fn prune_calls(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// The calls a stats query covers.
    async fn fetch_calls(&self, query: &StatsQuery) -> Result<Vec<CallRow>, StoreError>;
    /// How many calls are stored (for tests and `admin stats`).
    async fn count_calls(&self, tenant: Option<&str>) -> Result<u64, StoreError>;
}

/// No text: `u32::MAX` as the start of a span.
const NONE: (u32, u32) = (u32::MAX, 0);
/// Text columns of a packed call, in this order.
const TENANT: usize = 0;
const SERVICE: usize = 1;
const VERSION: usize = 2;
const CONSUMER: usize = 3;
const KEY_PREFIX: usize = 4;
const ROUTE: usize = 5;
const METHOD: usize = 6;
const PATH: usize = 7;
const MODEL: usize = 8;
const TEXTS: usize = 9;

/// One call of a [`CallBatch`]: its numbers, and spans of the batch's text for its strings.
#[derive(Debug, Clone)]
struct PackedCall {
    ts_ms: i64,
    status: u16,
    reset_class: Option<&'static str>,
    total_ms: f64,
    upstream_ms: Option<f64>,
    bytes_in: u64,
    bytes_out: u64,
    /// (input tokens, output tokens, cost) of an AI call.
    ai: Option<(u64, u64, f64)>,
    /// (start, length) in `CallBatch::text`; [`NONE`] for an absent value.
    text: [(u32, u32); TEXTS],
}

/// Call records packed for the call log: the columns the log stores, with every string in
/// one shared buffer. Queueing a record copies its bytes and, once the buffers have grown to
/// the batch size, allocates nothing (the call log's writer reuses them batch after batch).
///
/// On PostgreSQL a batch gets a random token at its first write attempt, stored in the same
/// transaction as its rows (`call_batches`). A failed batch keeps it: written again (as is,
/// without appending to it), it is skipped if the earlier attempt did commit after all (its
/// answer was lost with the connection), so a retry neither loses nor duplicates it.
#[derive(Debug, Clone, Default)]
pub struct CallBatch {
    text: String,
    calls: Vec<PackedCall>,
    token: Option<String>,
}

/// A call of a batch, borrowed.
pub(crate) struct CallView<'a> {
    batch: &'a CallBatch,
    call: &'a PackedCall,
}

impl CallView<'_> {
    fn text(&self, i: usize) -> Option<&str> {
        let (start, len) = self.call.text[i];
        if start == u32::MAX {
            return None;
        }
        let start = start as usize;
        self.batch.text.get(start..start + len as usize)
    }
}

impl CallBatch {
    pub fn new() -> CallBatch {
        CallBatch::default()
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Forget every call (and the write token), keeping the buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.calls.clear();
        self.token = None;
    }

    /// True once a write of this batch was attempted and failed: write it again as is (see
    /// the type's documentation), do not append to it.
    pub fn was_attempted(&self) -> bool {
        self.token.is_some()
    }

    /// Add the columns of `c`. `false` (and nothing added) if the batch's text would pass
    /// 4 GiB.
    pub fn push(&mut self, c: &CallRecord) -> bool {
        let ai = c.extra.ai.as_ref();
        let texts: [Option<&str>; TEXTS] = [
            c.extra.tenant.as_deref(),
            c.extra.service.as_deref(),
            c.extra.service_version.as_deref(),
            c.extra.consumer.as_deref(),
            c.extra.key_prefix.as_deref(),
            Some(&c.route),
            Some(&c.method),
            Some(&c.path),
            ai.map(|a| a.model_requested.as_str()),
        ];
        let needed: usize = texts.iter().flatten().map(|t| t.len()).sum();
        if self.text.len() + needed >= u32::MAX as usize {
            return false;
        }
        let mut spans = [NONE; TEXTS];
        for (span, t) in spans.iter_mut().zip(texts) {
            if let Some(t) = t {
                *span = (self.text.len() as u32, t.len() as u32);
                self.text.push_str(t);
            }
        }
        self.calls.push(PackedCall {
            ts_ms: c.ts_ms,
            status: c.status,
            reset_class: c.reset_class.or(c.extra.reset_class).map(|r| r.as_str()),
            total_ms: c.total_ms,
            upstream_ms: c.upstream_ms,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            ai: ai.map(|a| (a.input_tokens, a.output_tokens, a.cost_usd)),
            text: spans,
        });
        true
    }

    /// Move every call of `other` to the end of this batch (`other` is left empty).
    pub fn append(&mut self, other: &mut CallBatch) {
        if self.is_empty() {
            // Swap, so `other` keeps this batch's (empty) buffers for reuse.
            self.clear();
            std::mem::swap(self, other);
            return;
        }
        let shift = self.text.len();
        if shift + other.text.len() >= u32::MAX as usize {
            // Cannot happen with bounded queues; never corrupt spans.
            other.clear();
            return;
        }
        self.text.push_str(&other.text);
        self.calls.extend(other.calls.drain(..).map(|mut c| {
            for span in c.text.iter_mut().filter(|s| s.0 != u32::MAX) {
                span.0 += shift as u32;
            }
            c
        }));
        other.clear();
    }

    /// Keep only the newest `n` calls.
    pub fn keep_newest(&mut self, n: usize) {
        let drop = self.calls.len().saturating_sub(n);
        if drop == 0 {
            return;
        }
        let mut kept = CallBatch {
            token: self.token.clone(),
            ..CallBatch::default()
        };
        for call in &self.calls[drop..] {
            let view = CallView { batch: self, call };
            let mut spans = [NONE; TEXTS];
            for (i, span) in spans.iter_mut().enumerate() {
                if let Some(t) = view.text(i) {
                    *span = (kept.text.len() as u32, t.len() as u32);
                    kept.text.push_str(t);
                }
            }
            kept.calls.push(PackedCall {
                text: spans,
                ..call.clone()
            });
        }
        *self = kept;
    }

    pub(crate) fn views(&self) -> impl Iterator<Item = CallView<'_>> {
        self.calls.iter().map(|call| CallView { batch: self, call })
    }
}

impl From<&[CallRecord]> for CallBatch {
    fn from(calls: &[CallRecord]) -> CallBatch {
        let mut batch = CallBatch::default();
        for c in calls {
            batch.push(c);
        }
        batch
    }
}

/// Rows per cached multi-row statement on SQLite: one statement start, cursor setup and
/// `AUTOINCREMENT` bookkeeping per group instead of per row (measured: about 35% less time per
/// row than one statement per row; larger groups gain nothing more).
const SQLITE_GROUP: usize = 16;

/// `INSERT INTO calls (...) VALUES (?,...), ...` for `rows` rows.
fn sqlite_insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; NCOLS].join(", "));
    format!(
        "INSERT INTO calls ({COLUMNS}) VALUES {}",
        vec![one.as_str(); rows].join(", ")
    )
}

/// The insert statements, built once: a group of [`SQLITE_GROUP`] rows, and a single row for
/// the rest of a batch.
fn sqlite_statements() -> &'static (String, String) {
    static SQL: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    SQL.get_or_init(|| (sqlite_insert_sql(SQLITE_GROUP), sqlite_insert_sql(1)))
}

/// Bind one call's columns at parameter `base + 1 ..= base + NCOLS`.
fn bind_call(
    stmt: &mut rusqlite::Statement<'_>,
    base: usize,
    node: &str,
    c: &CallView<'_>,
) -> rusqlite::Result<()> {
    let p = c.call;
    let overhead = (p.total_ms - p.upstream_ms.unwrap_or(0.0)).max(0.0);
    let texts = [
        (TENANT, 3),
        (SERVICE, 4),
        (VERSION, 5),
        (CONSUMER, 6),
        (KEY_PREFIX, 7),
        (ROUTE, 8),
        (METHOD, 9),
        (PATH, 10),
        (MODEL, 18),
    ];
    stmt.raw_bind_parameter(base + 1, p.ts_ms)?;
    stmt.raw_bind_parameter(base + 2, node)?;
    for (column, at) in texts {
        stmt.raw_bind_parameter(base + at, c.text(column))?;
    }
    stmt.raw_bind_parameter(base + 11, i64::from(p.status))?;
    stmt.raw_bind_parameter(base + 12, p.reset_class)?;
    stmt.raw_bind_parameter(base + 13, p.total_ms)?;
    stmt.raw_bind_parameter(base + 14, p.upstream_ms)?;
    stmt.raw_bind_parameter(base + 15, overhead)?;
    stmt.raw_bind_parameter(base + 16, p.bytes_in as i64)?;
    stmt.raw_bind_parameter(base + 17, p.bytes_out as i64)?;
    stmt.raw_bind_parameter(base + 19, p.ai.map(|a| a.0 as i64))?;
    stmt.raw_bind_parameter(base + 20, p.ai.map(|a| a.1 as i64))?;
    stmt.raw_bind_parameter(base + 21, p.ai.map(|a| a.2))?;
    Ok(())
}

fn sqlite_insert(
    conn: &mut rusqlite::Connection,
    node: &str,
    calls: &CallBatch,
) -> Result<(), StoreError> {
    let (group_sql, one_sql) = sqlite_statements();
    let views: Vec<CallView<'_>> = calls.views().collect();
    let tx = conn.transaction()?;
    {
        let mut groups = views.chunks_exact(SQLITE_GROUP);
        if groups.len() > 0 {
            let mut stmt = tx.prepare_cached(group_sql)?;
            for group in &mut groups {
                for (i, c) in group.iter().enumerate() {
                    bind_call(&mut stmt, i * NCOLS, node, c)?;
                }
                stmt.raw_execute()?;
            }
        }
        let rest = groups.remainder();
        if !rest.is_empty() {
            let mut stmt = tx.prepare_cached(one_sql)?;
            for c in rest {
                bind_call(&mut stmt, 0, node, c)?;
                stmt.raw_execute()?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// `COPY calls (...) FROM STDIN (FORMAT binary)`.
fn copy_statement() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| format!("COPY calls ({COLUMNS}) FROM STDIN (FORMAT binary)"))
}

/// The types of [`COLUMNS`] on PostgreSQL (migration 1), for the binary COPY.
static COPY_TYPES: [Type; NCOLS] = [
    Type::INT8,   // ts_ms
    Type::TEXT,   // node
    Type::TEXT,   // tenant
    Type::TEXT,   // service
    Type::TEXT,   // version
    Type::TEXT,   // consumer
    Type::TEXT,   // key_prefix
    Type::TEXT,   // route
    Type::TEXT,   // method
    Type::TEXT,   // path
    Type::INT8,   // status
    Type::TEXT,   // reset_class
    Type::FLOAT8, // total_ms
    Type::FLOAT8, // upstream_ms
    Type::FLOAT8, // overhead_ms
    Type::INT8,   // bytes_in
    Type::INT8,   // bytes_out
    Type::TEXT,   // model
    Type::INT8,   // input_tokens
    Type::INT8,   // output_tokens
    Type::FLOAT8, // cost_usd
];

/// The calls of a batch as binary COPY rows, straight from the packed batch (no per-row
/// allocation).
struct CopyCalls<'a> {
    node: &'a str,
    calls: &'a CallBatch,
}

#[async_trait]
impl CopyIn for CopyCalls<'_> {
    fn statement(&self) -> &str {
        copy_statement()
    }

    fn types(&self) -> &[Type] {
        &COPY_TYPES
    }

    async fn write_rows(
        &self,
        mut writer: Pin<&mut BinaryCopyInWriter>,
    ) -> Result<(), tokio_postgres::Error> {
        for c in self.calls.views() {
            let p = c.call;
            let overhead = (p.total_ms - p.upstream_ms.unwrap_or(0.0)).max(0.0);
            let status = i64::from(p.status);
            let (bytes_in, bytes_out) = (p.bytes_in as i64, p.bytes_out as i64);
            let input = p.ai.map(|a| a.0 as i64);
            let output = p.ai.map(|a| a.1 as i64);
            let cost = p.ai.map(|a| a.2);
            let texts = [
                c.text(TENANT),
                c.text(SERVICE),
                c.text(VERSION),
                c.text(CONSUMER),
                c.text(KEY_PREFIX),
                c.text(ROUTE),
                c.text(METHOD),
                c.text(PATH),
                c.text(MODEL),
            ];
            let row: [&(dyn ToSql + Sync); NCOLS] = [
                &p.ts_ms,
                &self.node,
                &texts[TENANT],
                &texts[SERVICE],
                &texts[VERSION],
                &texts[CONSUMER],
                &texts[KEY_PREFIX],
                &texts[ROUTE],
                &texts[METHOD],
                &texts[PATH],
                &status,
                &p.reset_class,
                &p.total_ms,
                &p.upstream_ms,
                &overhead,
                &bytes_in,
                &bytes_out,
                &texts[MODEL],
                &input,
                &output,
                &cost,
            ];
            writer.as_mut().write(&row).await?;
        }
        Ok(())
    }
}

impl SqlStore {
    /// PostgreSQL: the batch in one transaction on the call-log connection: its token (in
    /// `call_batches`, migration 3) and a binary COPY of its rows. A batch written again
    /// after an attempt whose answer was lost is skipped if that attempt did commit.
    async fn insert_copy(&self, node: &str, calls: &mut CallBatch) -> Result<(), StoreError> {
        let token = calls
            .token
            .get_or_insert_with(|| format!("{node}:{:032x}", rand::random::<u128>()))
            .clone();
        let oldest = calls.calls.iter().map(|c| c.ts_ms).min().unwrap_or(0);
        let marker = Stmt::new(
            "INSERT INTO call_batches (token, ts_ms) VALUES ($1, $2) ON CONFLICT (token) DO NOTHING",
            vec![token.as_str().into(), oldest.into()],
        );
        let written = self.pg_log_copy(marker, &CopyCalls { node, calls }).await?;
        if !written {
            tracing::info!(
                calls = calls.len(),
                "call log: the batch was already written by an attempt whose answer was lost"
            );
        }
        Ok(())
    }
}

#[async_trait]
impl CallLogStore for SqlStore {
    async fn insert_calls(&self, node: &str, calls: &[CallRecord]) -> Result<(), StoreError> {
        let (_, result) = self.insert_call_batch(node, CallBatch::from(calls)).await;
        result
    }

    async fn insert_call_batch(
        &self,
        node: &str,
        mut calls: CallBatch,
    ) -> (CallBatch, Result<(), StoreError>) {
        if calls.is_empty() {
            return (calls, Ok(()));
        }
        let Some(conn) = self.sqlite() else {
            let result = self.insert_copy(node, &mut calls).await;
            if result.is_ok() {
                calls.clear();
            }
            return (calls, result);
        };
        let node = node.to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let result = match conn.lock() {
                Ok(mut conn) => sqlite_insert(&mut conn, &node, &calls),
                Err(_) => Err(StoreError::Task("poisoned".into())),
            };
            if result.is_ok() {
                calls.clear();
            }
            let _ = tx.send((calls, result));
        });
        match rx.await {
            Ok(answer) => answer,
            // The blocking task panicked or was cancelled: the batch is gone with it.
            Err(_) => (
                CallBatch::default(),
                Err(StoreError::Task("call-log write task ended".into())),
            ),
        }
    }

    async fn prune_calls(&self, before_ms: i64) -> Result<u64, StoreError> {
        let n = self
            .execute("DELETE FROM calls WHERE ts_ms < $1", vec![before_ms.into()])
            .await?;
        // The tokens of batches as old as the calls pruned (a batch is retried within
        // seconds, never after the retention).
        self.execute(
            "DELETE FROM call_batches WHERE ts_ms < $1",
            vec![before_ms.into()],
        )
        .await?;
        Ok(n)
    }

    async fn fetch_calls(&self, q: &StatsQuery) -> Result<Vec<CallRow>, StoreError> {
        // Too many time buckets: a 400 before any rows are read.
        q.check(crate::now_ms())?;
        let mut params: Vec<Value> = vec![q.since_ms.into()];
        let mut filter = String::from("ts_ms >= $1");
        if let Some(t) = &q.tenant {
            params.push(t.as_str().into());
            filter.push_str(&format!(" AND tenant = ${}", params.len()));
        }
        let rows = self
            .query(
                &format!("SELECT ts_ms, node, tenant, consumer, service, route, status, reset_class, total_ms, model, input_tokens, output_tokens, cost_usd FROM calls WHERE {filter} ORDER BY ts_ms"),
                params,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| CallRow {
                ts_ms: col(r, 0).int().unwrap_or(0),
                node: col(r, 1).text().unwrap_or_default(),
                tenant: col(r, 2).text(),
                consumer: col(r, 3).text(),
                service: col(r, 4).text(),
                route: col(r, 5).text().unwrap_or_default(),
                status: col(r, 6).int().unwrap_or(0) as u16,
                reset_class: col(r, 7).text(),
                total_ms: col(r, 8).real().unwrap_or(0.0),
                model: col(r, 9).text(),
                tokens: col(r, 10).int().unwrap_or(0) as u64 + col(r, 11).int().unwrap_or(0) as u64,
                cost_usd: col(r, 12).real().unwrap_or(0.0),
            })
            .collect())
    }

    async fn count_calls(&self, tenant: Option<&str>) -> Result<u64, StoreError> {
        let rows = match tenant {
            Some(t) => {
                self.query(
                    "SELECT COUNT(*) FROM calls WHERE tenant = $1",
                    vec![t.into()],
                )
                .await?
            }
            None => self.query("SELECT COUNT(*) FROM calls", vec![]).await?,
        };
        Ok(rows.first().and_then(|r| col(r, 0).int()).unwrap_or(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_core::{AiUsage, CallExtra, ResetClass};

    fn call(i: i64, tenant: Option<&str>) -> CallRecord {
        CallRecord {
            ts_ms: i,
            route: format!("r{i}"),
            method: "GET".into(),
            path: format!("/p/{i}"),
            status: 200,
            reset_class: (i % 2 == 1).then_some(ResetClass::ClientAborted),
            extra: CallExtra {
                tenant: tenant.map(str::to_string),
                consumer: Some(format!("c{i}")),
                ai: (i == 2).then(|| AiUsage {
                    model_requested: "smart".into(),
                    input_tokens: 3,
                    output_tokens: 4,
                    ..AiUsage::default()
                }),
                ..CallExtra::default()
            },
            ..CallRecord::default()
        }
    }

    type Texts = (i64, Option<String>, Option<String>, String, Option<String>);

    fn texts(b: &CallBatch) -> Vec<Texts> {
        b.views()
            .map(|v| {
                (
                    v.call.ts_ms,
                    v.text(TENANT).map(str::to_string),
                    v.text(CONSUMER).map(str::to_string),
                    v.text(PATH).unwrap_or_default().to_string(),
                    v.text(MODEL).map(str::to_string),
                )
            })
            .collect()
    }

    #[test]
    fn batches_pack_append_and_trim() {
        let mut a = CallBatch::new();
        assert!(a.push(&call(0, Some("t"))));
        assert!(a.push(&call(1, None)));
        let mut b = CallBatch::new();
        b.push(&call(2, Some("u")));
        b.push(&call(3, Some("t")));
        a.append(&mut b);
        assert!(b.is_empty());
        assert_eq!(a.len(), 4);
        let t = texts(&a);
        assert_eq!(t[1], (1, None, Some("c1".into()), "/p/1".into(), None));
        let model = Some("smart".to_string());
        assert_eq!(
            t[2],
            (2, Some("u".into()), Some("c2".into()), "/p/2".into(), model)
        );
        assert_eq!(a.calls[2].ai, Some((3, 4, 0.0)));
        assert_eq!(a.calls[1].reset_class, Some("client_aborted"));
        a.keep_newest(2);
        let t = texts(&a);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[1],
            (3, Some("t".into()), Some("c3".into()), "/p/3".into(), None)
        );
        assert_eq!(
            a.text.len(),
            "uc2r2GET/p/2smart".len() + "tc3r3GET/p/3".len()
        );
        // Appending to an empty batch swaps, leaving the other one empty.
        let mut empty = CallBatch::new();
        empty.append(&mut a);
        assert_eq!((empty.len(), a.len()), (2, 0));
        empty.clear();
        assert!(empty.is_empty());
    }

    /// A batch written again with its token (as after a COMMIT whose answer was lost with
    /// the connection) is skipped: never stored twice.
    #[tokio::test]
    async fn postgres_batch_written_again_with_its_token_is_not_duplicated() {
        let Ok(url) = std::env::var("HOLDFAST_TEST_PG_URL") else {
            eprintln!("skipped: HOLDFAST_TEST_PG_URL unset (scripts/test sets it via scripts/test-services)");
            return;
        };
        let store = SqlStore::open_postgres(&url, b"test-secret-0123456789")
            .await
            .expect("open");
        let tenant = format!("tok-{}-{}", std::process::id(), crate::now_ms());
        let calls: Vec<CallRecord> = (0..503)
            .map(|i| CallRecord {
                ts_ms: crate::now_ms(),
                ..call(i, Some(&tenant))
            })
            .collect();
        let mut batch = CallBatch::from(calls.as_slice());
        batch.token = Some(format!("{tenant}:once"));
        let (back, result) = store.insert_call_batch("n1", batch.clone()).await;
        result.expect("first write");
        assert!(back.is_empty() && !back.was_attempted());
        let (_, result) = store.insert_call_batch("n1", batch).await;
        result.expect("the same batch again is answered as written");
        assert_eq!(
            store.count_calls(Some(&tenant)).await.expect("count"),
            calls.len() as u64
        );
        // A new batch of the same calls (no token yet) is a new write.
        store.insert_calls("n1", &calls).await.expect("write");
        assert_eq!(
            store.count_calls(Some(&tenant)).await.expect("count"),
            2 * calls.len() as u64
        );
    }

    /// The binary COPY on PostgreSQL stores every column of every row at its place: texts,
    /// absent values as NULL, numbers with their types, the AI columns.
    #[tokio::test]
    async fn postgres_copy_stores_every_column() {
        let Ok(url) = std::env::var("HOLDFAST_TEST_PG_URL") else {
            eprintln!("skipped: HOLDFAST_TEST_PG_URL unset (scripts/test sets it via scripts/test-services)");
            return;
        };
        let store = SqlStore::open_postgres(&url, b"test-secret-0123456789")
            .await
            .expect("open");
        let node = format!("copy-{}-{}", std::process::id(), crate::now_ms());
        let calls: Vec<CallRecord> = (0..40i64)
            .map(|i| {
                let mut c = call(i, (i % 3 != 0).then_some("t"));
                c.upstream_ms = (i % 4 != 0).then(|| i as f64 / 4.0);
                c.total_ms = i as f64;
                c.bytes_in = i as u64 * 10;
                c.bytes_out = i as u64 * 100;
                if let Some(ai) = c.extra.ai.as_mut() {
                    ai.cost_usd = 0.25;
                }
                c.extra.key_prefix = Some(format!("hf_{i:08}"));
                c
            })
            .collect();
        store.insert_calls(&node, &calls).await.expect("copy");
        let rows = store
            .query(
                &format!("SELECT {COLUMNS} FROM calls WHERE node = $1 ORDER BY id"),
                vec![node.as_str().into()],
            )
            .await
            .expect("select");
        assert_eq!(rows.len(), calls.len());
        for (i, row) in rows.iter().enumerate() {
            let n = i as i64;
            let text = |v: &str| Value::Text(v.to_string());
            let upstream = (i % 4 != 0).then(|| n as f64 / 4.0);
            let want = vec![
                Value::Int(n),
                text(&node),
                if i % 3 != 0 { text("t") } else { Value::Null },
                Value::Null,
                Value::Null,
                text(&format!("c{i}")),
                text(&format!("hf_{i:08}")),
                text(&format!("r{i}")),
                text("GET"),
                text(&format!("/p/{i}")),
                Value::Int(200),
                if i % 2 == 1 {
                    text("client_aborted")
                } else {
                    Value::Null
                },
                Value::Real(n as f64),
                upstream.into(),
                Value::Real((n as f64 - upstream.unwrap_or(0.0)).max(0.0)),
                Value::Int(n * 10),
                Value::Int(n * 100),
                if i == 2 { text("smart") } else { Value::Null },
                if i == 2 { Value::Int(3) } else { Value::Null },
                if i == 2 { Value::Int(4) } else { Value::Null },
                if i == 2 {
                    Value::Real(0.25)
                } else {
                    Value::Null
                },
            ];
            assert_eq!(row, &want, "row {i}");
        }
    }

    /// Groups of [`SQLITE_GROUP`] rows and a single-row rest: every row lands whole, with
    /// each column at its own place.
    #[test]
    fn sqlite_insert_binds_every_row_of_groups_and_rest() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(&format!(
            "CREATE TABLE calls (id INTEGER PRIMARY KEY, {})",
            COLUMNS.replace(", ", " ANY, ") + " ANY"
        ))
        .expect("schema");
        let n = SQLITE_GROUP * 2 + 5;
        let calls: Vec<CallRecord> = (0..n as i64)
            .map(|i| {
                let mut c = call(i, (i % 3 != 0).then_some("t"));
                c.upstream_ms = Some(i as f64 / 4.0);
                c.total_ms = i as f64;
                c.bytes_in = i as u64 * 10;
                c.bytes_out = i as u64 * 100;
                c
            })
            .collect();
        sqlite_insert(&mut conn, "node-x", &CallBatch::from(calls.as_slice())).expect("insert");
        let mut stmt = conn
            .prepare(&format!("SELECT {COLUMNS} FROM calls ORDER BY id"))
            .expect("select");
        type Row = (i64, String, Option<String>, Option<String>, String, i64);
        type Rest = (Option<String>, f64, Option<f64>, f64, i64, i64);
        type Ai = (Option<String>, Option<i64>, Option<i64>);
        let rows: Vec<(Row, Rest, Ai)> = stmt
            .query_map([], |r| {
                Ok((
                    (
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(5)?,
                        r.get(9)?,
                        r.get(10)?,
                    ),
                    (
                        r.get(11)?,
                        r.get(12)?,
                        r.get(13)?,
                        r.get(14)?,
                        r.get(15)?,
                        r.get(16)?,
                    ),
                    (r.get(17)?, r.get(18)?, r.get(19)?),
                ))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows.len(), n);
        for (i, (row, rest, ai)) in rows.into_iter().enumerate() {
            let i64i = i as i64;
            let tenant = (i % 3 != 0).then(|| "t".to_string());
            assert_eq!(
                row,
                (
                    i64i,
                    "node-x".into(),
                    tenant,
                    Some(format!("c{i}")),
                    format!("/p/{i}"),
                    200
                ),
                "row {i}"
            );
            let class = (i % 2 == 1).then(|| "client_aborted".to_string());
            let overhead = (i as f64 - i as f64 / 4.0).max(0.0);
            assert_eq!(
                rest,
                (
                    class,
                    i as f64,
                    Some(i as f64 / 4.0),
                    overhead,
                    i64i * 10,
                    i64i * 100
                ),
                "row {i}"
            );
            let want_ai = if i == 2 {
                (Some("smart".into()), Some(3), Some(4))
            } else {
                (None, None, None)
            };
            assert_eq!(ai, want_ai, "row {i}");
        }
    }
}
