//! The call log: batched inserts (one multi-row statement per batch), pruning by age, and the
//! rows analytics are computed from.

use async_trait::async_trait;
use holdfast_core::CallRecord;

use crate::analytics::{CallRow, StatsQuery};
use crate::db::{col, SqlStore, Value};
use crate::error::StoreError;

/// Rows per INSERT statement (SQLite allows 32766 parameters; 22 columns each).
const ROWS_PER_STATEMENT: usize = 500;
const COLUMNS: &str = "ts_ms, node, tenant, service, version, consumer, key_prefix, route, method, path, status, reset_class, total_ms, upstream_ms, overhead_ms, bytes_in, bytes_out, model, input_tokens, output_tokens, cost_usd";
const NCOLS: usize = 21;

/// The call log.
#[async_trait]
pub trait CallLogStore {
    /// Store a batch of finished calls recorded by gateway node `node`.
    async fn insert_calls(&self, node: &str, calls: &[CallRecord]) -> Result<(), StoreError>;
    /// [`CallLogStore::insert_calls`] for a batch the caller owns: it is moved to the writer
    /// (no copy) and handed back, emptied on success and intact on failure, so it can be
    /// retried and its capacity reused.
    async fn insert_call_batch(
        &self,
        node: &str,
        calls: Vec<CallRecord>,
    ) -> (Vec<CallRecord>, Result<(), StoreError>);
    /// Delete calls older than `before_ms`; returns how many.
    async fn prune_calls(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// The calls a stats query covers.
    async fn fetch_calls(&self, query: &StatsQuery) -> Result<Vec<CallRow>, StoreError>;
    /// How many calls are stored (for tests and `admin stats`).
    async fn count_calls(&self, tenant: Option<&str>) -> Result<u64, StoreError>;
}

fn record_values(node: &str, c: &CallRecord, out: &mut Vec<Value>) {
    let upstream = c.upstream_ms;
    let overhead = (c.total_ms - upstream.unwrap_or(0.0)).max(0.0);
    let ai = c.extra.ai.as_ref();
    let reset = c.reset_class.or(c.extra.reset_class).map(|r| r.as_str());
    out.extend([
        Value::Int(c.ts_ms),
        node.into(),
        c.extra.tenant.clone().into(),
        c.extra.service.clone().into(),
        c.extra.service_version.clone().into(),
        c.extra.consumer.clone().into(),
        c.extra.key_prefix.clone().into(),
        c.route.as_str().into(),
        c.method.as_str().into(),
        c.path.as_str().into(),
        Value::Int(i64::from(c.status)),
        reset.into(),
        c.total_ms.into(),
        upstream.into(),
        overhead.into(),
        Value::Int(c.bytes_in as i64),
        Value::Int(c.bytes_out as i64),
        ai.map(|a| a.model_requested.clone()).into(),
        ai.map(|a| a.input_tokens as i64).into(),
        ai.map(|a| a.output_tokens as i64).into(),
        ai.map(|a| a.cost_usd).into(),
    ]);
}

/// One row; SQLite runs it as a cached prepared statement per row inside one transaction,
/// which is cheaper than parsing a multi-row statement with thousands of parameters.
const INSERT_ONE: &str = "INSERT INTO calls (ts_ms, node, tenant, service, version, consumer, key_prefix, route, method, path, status, reset_class, total_ms, upstream_ms, overhead_ms, bytes_in, bytes_out, model, input_tokens, output_tokens, cost_usd) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)";

fn sqlite_insert(
    conn: &mut rusqlite::Connection,
    node: &str,
    calls: &[CallRecord],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(INSERT_ONE)?;
        for c in calls {
            let upstream = c.upstream_ms;
            let overhead = (c.total_ms - upstream.unwrap_or(0.0)).max(0.0);
            let ai = c.extra.ai.as_ref();
            let reset = c.reset_class.or(c.extra.reset_class).map(|r| r.as_str());
            stmt.execute(rusqlite::params![
                c.ts_ms,
                node,
                c.extra.tenant.as_deref(),
                c.extra.service.as_deref(),
                c.extra.service_version.as_deref(),
                c.extra.consumer.as_deref(),
                c.extra.key_prefix.as_deref(),
                c.route.as_str(),
                c.method.as_str(),
                c.path.as_str(),
                i64::from(c.status),
                reset,
                c.total_ms,
                upstream,
                overhead,
                c.bytes_in as i64,
                c.bytes_out as i64,
                ai.map(|a| a.model_requested.as_str()),
                ai.map(|a| a.input_tokens as i64),
                ai.map(|a| a.output_tokens as i64),
                ai.map(|a| a.cost_usd),
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

impl SqlStore {
    async fn insert_multirow(&self, node: &str, calls: &[CallRecord]) -> Result<(), StoreError> {
        for chunk in calls.chunks(ROWS_PER_STATEMENT) {
            let mut params = Vec::with_capacity(chunk.len() * NCOLS);
            let mut groups = Vec::with_capacity(chunk.len());
            for (i, c) in chunk.iter().enumerate() {
                record_values(node, c, &mut params);
                let base = i * NCOLS;
                let ph: Vec<String> = (1..=NCOLS).map(|j| format!("${}", base + j)).collect();
                groups.push(format!("({})", ph.join(", ")));
            }
            let sql = format!("INSERT INTO calls ({COLUMNS}) VALUES {}", groups.join(", "));
            self.execute(&sql, params).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl CallLogStore for SqlStore {
    async fn insert_calls(&self, node: &str, calls: &[CallRecord]) -> Result<(), StoreError> {
        match self.sqlite() {
            Some(_) => {
                let (_, result) = self.insert_call_batch(node, calls.to_vec()).await;
                result
            }
            None => self.insert_multirow(node, calls).await,
        }
    }

    async fn insert_call_batch(
        &self,
        node: &str,
        mut calls: Vec<CallRecord>,
    ) -> (Vec<CallRecord>, Result<(), StoreError>) {
        if calls.is_empty() {
            return (calls, Ok(()));
        }
        let Some(conn) = self.sqlite() else {
            let result = self.insert_multirow(node, &calls).await;
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
                Vec::new(),
                Err(StoreError::Task("call-log write task ended".into())),
            ),
        }
    }

    async fn prune_calls(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.execute("DELETE FROM calls WHERE ts_ms < $1", vec![before_ms.into()])
            .await
    }

    async fn fetch_calls(&self, q: &StatsQuery) -> Result<Vec<CallRow>, StoreError> {
        let mut params: Vec<Value> = vec![q.since_ms.into()];
        let mut filter = String::from("ts_ms >= $1");
        if let Some(t) = &q.tenant {
            params.push(t.as_str().into());
            filter.push_str(&format!(" AND tenant = ${}", params.len()));
        }
        let rows = self
            .query(
                &format!("SELECT ts_ms, node, consumer, service, route, status, reset_class, total_ms, model, input_tokens, output_tokens, cost_usd FROM calls WHERE {filter} ORDER BY ts_ms"),
                params,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| CallRow {
                ts_ms: col(r, 0).int().unwrap_or(0),
                node: col(r, 1).text().unwrap_or_default(),
                consumer: col(r, 2).text(),
                service: col(r, 3).text(),
                route: col(r, 4).text().unwrap_or_default(),
                status: col(r, 5).int().unwrap_or(0) as u16,
                reset_class: col(r, 6).text(),
                total_ms: col(r, 7).real().unwrap_or(0.0),
                model: col(r, 8).text(),
                tokens: col(r, 9).int().unwrap_or(0) as u64 + col(r, 10).int().unwrap_or(0) as u64,
                cost_usd: col(r, 11).real().unwrap_or(0.0),
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
