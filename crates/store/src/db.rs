//! One small SQL layer over SQLite (rusqlite, run on the blocking pool) and PostgreSQL
//! (tokio-postgres), so every query is written once. Queries use `$1`-style placeholders;
//! for SQLite they become `?1`.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use crate::error::StoreError;
use crate::migrations;
use crate::pg_tls;

/// A value bound to or read from a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Value {
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            Value::Real(v) => Some(*v as i64),
            _ => None,
        }
    }
    pub fn real(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::Real(v) => Some(*v),
            _ => None,
        }
    }
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Text(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Value::Null)
    }
}

/// A result row.
pub type Row = Vec<Value>;

/// Read column `i` of a row, or a `Corrupt` error.
pub fn col(row: &Row, i: usize) -> &Value {
    row.get(i).unwrap_or(&Value::Null)
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Real(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
        }
    }
    fn accepts(_ty: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

enum Backend {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(PgShared),
}

/// How long one connection attempt to PostgreSQL may take.
const PG_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Wait after the first failed reconnect; doubled per failure up to [`PG_BACKOFF_MAX`].
const PG_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const PG_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Reconnect attempts to a database that does not answer: the first one at once, then
/// 100 ms, 200 ms, ... up to 2 s apart. Between attempts, uses fail at once with
/// [`StoreError::Unavailable`] instead of hammering the server.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
    last_error: String,
}

impl Backoff {
    /// `Err` while the last failed attempt is too recent to try again.
    fn check(&self) -> Result<(), StoreError> {
        match self.retry_at {
            Some(at) if tokio::time::Instant::now() < at => {
                let wait = at - tokio::time::Instant::now();
                Err(StoreError::Unavailable(format!(
                    "PostgreSQL is unreachable ({}); next reconnect attempt in {} ms",
                    self.last_error,
                    wait.as_millis().max(1)
                )))
            }
            _ => Ok(()),
        }
    }

    fn failed(&mut self, e: &StoreError) {
        self.failures = self.failures.saturating_add(1);
        let delay = PG_BACKOFF_MIN
            .saturating_mul(1u32 << (self.failures - 1).min(16))
            .min(PG_BACKOFF_MAX);
        self.retry_at = Some(tokio::time::Instant::now() + delay);
        self.last_error = e.to_string();
        tracing::warn!(
            error = %e,
            failures = self.failures,
            retry_in_ms = delay.as_millis() as u64,
            "postgres: reconnect failed"
        );
    }

    fn succeeded(&mut self, what: &str) {
        if self.failures > 0 || self.retry_at.is_some() || !self.last_error.is_empty() {
            tracing::info!(connection = what, "postgres: reconnected");
        }
        *self = Backoff::default();
    }
}

/// Connect once, bounded by [`PG_CONNECT_TIMEOUT`], under the backoff of `backoff`.
async fn reconnect(
    url: &str,
    backoff: &mut Backoff,
    what: &str,
) -> Result<tokio_postgres::Client, StoreError> {
    backoff.check()?;
    let result = match tokio::time::timeout(PG_CONNECT_TIMEOUT, connect_postgres(url)).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer from PostgreSQL within {} s",
            PG_CONNECT_TIMEOUT.as_secs()
        ))),
    };
    match result {
        Ok(client) => {
            backoff.succeeded(what);
            Ok(client)
        }
        Err(e) => {
            backoff.failed(&e);
            Err(match e {
                e @ StoreError::Unavailable(_) => e,
                e => StoreError::Unavailable(format!("cannot reconnect to PostgreSQL: {e}")),
            })
        }
    }
}

/// True when `e` means the connection is gone (closed, the server shutting down or
/// terminating the session, a broken socket), so the same work may succeed on a new one.
fn connection_lost(e: &tokio_postgres::Error, client: &tokio_postgres::Client) -> bool {
    e.is_closed() || client.is_closed() || connection_lost_code(e)
}

/// The connection every query shares: replaced on the next use once it has closed.
struct PgShared {
    url: Arc<str>,
    current: Mutex<Option<Arc<tokio_postgres::Client>>>,
    /// Held while reconnecting, so one task reconnects and the others wait for it.
    connecting: tokio::sync::Mutex<Backoff>,
}

impl PgShared {
    fn new(url: &str, client: tokio_postgres::Client) -> PgShared {
        PgShared {
            url: url.into(),
            current: Mutex::new(Some(Arc::new(client))),
            connecting: tokio::sync::Mutex::new(Backoff::default()),
        }
    }

    fn open_client(&self) -> Option<Arc<tokio_postgres::Client>> {
        let current = self.current.lock().ok()?;
        current.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// The open connection, reconnecting (under the backoff) if it has closed.
    async fn client(&self) -> Result<Arc<tokio_postgres::Client>, StoreError> {
        if let Some(c) = self.open_client() {
            return Ok(c);
        }
        let mut backoff = self.connecting.lock().await;
        // Another task may have reconnected while this one waited.
        if let Some(c) = self.open_client() {
            return Ok(c);
        }
        let client = Arc::new(reconnect(&self.url, &mut backoff, "store").await?);
        if let Ok(mut current) = self.current.lock() {
            *current = Some(client.clone());
        }
        Ok(client)
    }

    /// Stop using `client` (its connection was lost), so the next use reconnects.
    fn forget(&self, client: &Arc<tokio_postgres::Client>) {
        if let Ok(mut current) = self.current.lock() {
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
                *current = None;
            }
        }
    }
}

/// A connection of its own for transactions, reconnected on the next use once it has closed.
#[derive(Default)]
struct PgOwned {
    client: Option<tokio_postgres::Client>,
    backoff: Backoff,
}

impl PgOwned {
    async fn client(
        &mut self,
        url: &str,
        what: &str,
    ) -> Result<&mut tokio_postgres::Client, StoreError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            self.client = Some(reconnect(url, &mut self.backoff, what).await?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Task("no PostgreSQL connection".into()))
    }
}

/// The PostgreSQL channel every change is announced on (payload: the new generation).
pub const CHANGES_CHANNEL: &str = "holdfast_changes";

/// The management store over SQLite or PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct SqlStore {
    backend: Arc<Backend>,
    secret: Arc<[u8]>,
    /// The PostgreSQL URL, for the change listener's own connection.
    pg_url: Option<Arc<str>>,
    /// PostgreSQL: a connection of its own for multi-statement admin writes (a transaction
    /// on the shared connection would take in the call-log writer's statements too). Opened
    /// on first use, again if it dropped.
    tx_client: Arc<tokio::sync::Mutex<PgOwned>>,
    /// PostgreSQL: the call-log writer's connection (one transaction per batch).
    log_client: Arc<tokio::sync::Mutex<PgOwned>>,
}

/// One statement of an atomic write ([`SqlStore::atomic`]).
pub(crate) struct Stmt {
    pub sql: String,
    pub params: Vec<Value>,
    /// When set and the statement changes no row, the whole write is rolled back with this.
    pub on_zero: Option<StoreError>,
}

impl Stmt {
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Stmt {
        Stmt {
            sql: sql.into(),
            params,
            on_zero: None,
        }
    }
    /// Roll everything back with `e` if this statement changes no row.
    pub fn or_fail(mut self, e: StoreError) -> Stmt {
        self.on_zero = Some(e);
        self
    }
}

/// Changes announced by any node through PostgreSQL `LISTEN` (see [`SqlStore::listen`]).
pub struct ChangeListener {
    rx: tokio::sync::mpsc::Receiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ChangeListener {
    /// Wait for the next announced change (changes announced meanwhile are folded into one).
    /// `None` once the listening connection has ended; listen again to resume.
    pub async fn changed(&mut self) -> Option<()> {
        self.rx.recv().await
    }

    /// True once the listening connection has ended and every announced change was taken.
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed() && self.rx.is_empty()
    }
}

impl Drop for ChangeListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SqlStore {
    /// Open (creating if needed) an SQLite file and run the migrations.
    pub async fn open_sqlite(path: &str, secret: &[u8]) -> Result<SqlStore, StoreError> {
        let path = path.to_string();
        let conn = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let conn = rusqlite::Connection::open(&path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        let store = SqlStore {
            backend: Arc::new(Backend::Sqlite(Arc::new(Mutex::new(conn)))),
            secret: secret.into(),
            pg_url: None,
            tx_client: Arc::default(),
            log_client: Arc::default(),
        };
        migrations::run(&store).await?;
        Ok(store)
    }

    /// Connect to PostgreSQL and run the migrations. TLS follows the URL's `sslmode` and
    /// `sslrootcert` (see [`crate::pg_tls`]).
    pub async fn open_postgres(url: &str, secret: &[u8]) -> Result<SqlStore, StoreError> {
        let client = connect_postgres(url).await?;
        let store = SqlStore {
            backend: Arc::new(Backend::Postgres(PgShared::new(url, client))),
            secret: secret.into(),
            pg_url: Some(url.into()),
            tx_client: Arc::default(),
            log_client: Arc::default(),
        };
        migrations::run(&store).await?;
        Ok(store)
    }

    /// Open the store a `[management]` config names.
    pub async fn open(
        url: &holdfast_core::config::management::StoreUrl,
        secret: &[u8],
    ) -> Result<SqlStore, StoreError> {
        use holdfast_core::config::management::StoreUrl;
        match url {
            StoreUrl::Sqlite(path) => SqlStore::open_sqlite(path, secret).await,
            StoreUrl::Postgres(url) => SqlStore::open_postgres(url, secret).await,
        }
    }

    /// Listen for changes announced by every node (`LISTEN holdfast_changes` on a connection
    /// of its own, named `application_name` in `pg_stat_activity`). `None` on SQLite, where
    /// only this process changes the store.
    pub async fn listen(
        &self,
        application_name: &str,
    ) -> Result<Option<ChangeListener>, StoreError> {
        let Some(url) = &self.pg_url else {
            return Ok(None);
        };
        let mut target = pg_tls::target(url)?;
        target.config.application_name(application_name);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = match target.tls {
            Some(tls) => {
                let (client, connection) = target.config.connect(tls).await?;
                tokio::spawn(listen_on(client, connection, tx, ready_tx))
            }
            None => {
                let (client, connection) = target.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(listen_on(client, connection, tx, ready_tx))
            }
        };
        match ready_rx.await {
            Ok(Ok(())) => Ok(Some(ChangeListener { rx, task })),
            Ok(Err(e)) => {
                task.abort();
                Err(e.into())
            }
            Err(_) => {
                task.abort();
                Err(StoreError::Task(
                    "the change listener's connection ended before LISTEN".into(),
                ))
            }
        }
    }

    /// True for PostgreSQL.
    /// ` FOR KEY SHARE` on PostgreSQL (a row read under it cannot be deleted until the
    /// statement's transaction ends), nothing on SQLite (whose writes are serialized).
    pub(crate) fn lock_for_key_share(&self) -> &'static str {
        if self.is_postgres() {
            " FOR KEY SHARE"
        } else {
            ""
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(*self.backend, Backend::Postgres(_))
    }

    /// The SQLite connection, for statements written for SQLite only.
    pub(crate) fn sqlite(&self) -> Option<Arc<Mutex<rusqlite::Connection>>> {
        match &*self.backend {
            Backend::Sqlite(conn) => Some(conn.clone()),
            Backend::Postgres(_) => None,
        }
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Run a statement; returns the rows affected.
    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, StoreError> {
        match &*self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let sql = to_sqlite(sql);
                blocking(move || {
                    let conn = conn
                        .lock()
                        .map_err(|_| StoreError::Task("poisoned".into()))?;
                    let n = conn.execute(
                        &sql,
                        rusqlite::params_from_iter(params.iter().map(sqlite_value)),
                    )?;
                    Ok(n as u64)
                })
                .await
            }
            Backend::Postgres(pg) => {
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                pg_run(pg, sql, &refs, Run::Execute)
                    .await
                    .map(|done| match done {
                        Ran::Count(n) => n,
                        Ran::Rows(rows) => rows.len() as u64,
                    })
            }
        }
    }

    /// Run statements in one transaction: all of them or none. Returns the rows each changed.
    pub(crate) async fn atomic(&self, stmts: Vec<Stmt>) -> Result<Vec<u64>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                blocking(move || {
                    let mut conn = conn
                        .lock()
                        .map_err(|_| StoreError::Task("poisoned".into()))?;
                    let tx = conn.transaction()?;
                    let mut counts = Vec::with_capacity(stmts.len());
                    for st in stmts {
                        let n = tx.execute(
                            &to_sqlite(&st.sql),
                            rusqlite::params_from_iter(st.params.iter().map(sqlite_value)),
                        )? as u64;
                        if n == 0 {
                            if let Some(e) = st.on_zero {
                                return Err(e); // dropping `tx` rolls back
                            }
                        }
                        counts.push(n);
                    }
                    tx.commit()?;
                    Ok(counts)
                })
                .await
            }
            Backend::Postgres(_) => {
                let url = self
                    .pg_url
                    .clone()
                    .ok_or_else(|| StoreError::Task("no PostgreSQL URL".into()))?;
                let mut slot = self.tx_client.lock().await;
                let mut stmts = stmts;
                let mut retried = false;
                loop {
                    let client = slot.client(&url, "transactions").await?;
                    match pg_transaction(client, &mut stmts).await {
                        Ok(counts) => return Ok(counts),
                        Err(TxError::Failed(e)) => return Err(e),
                        // Lost before COMMIT was sent: the server rolled the transaction back,
                        // so running it again on a new connection cannot apply it twice.
                        Err(TxError::Lost {
                            error,
                            before_commit,
                        }) => {
                            slot.client = None;
                            if !before_commit || retried {
                                return Err(error);
                            }
                            tracing::info!(error = %error, "postgres: connection lost mid-transaction; retrying it on a new connection");
                            retried = true;
                        }
                    }
                }
            }
        }
    }

    /// Run `body` as one transaction on the call-log writer's own PostgreSQL connection.
    /// `marker` is a statement that changes no row when the same work was committed before
    /// (the batch's token is already stored): the transaction then rolls back and the answer
    /// is `Ok(false)`. The transaction is run a second time, on a new connection, if the
    /// connection was lost at any point (COMMIT included): the marker makes that safe.
    pub(crate) async fn pg_log_transaction(
        &self,
        marker: Stmt,
        body: Vec<Stmt>,
    ) -> Result<bool, StoreError> {
        let url = self
            .pg_url
            .clone()
            .ok_or_else(|| StoreError::Task("no PostgreSQL URL".into()))?;
        let mut slot = self.log_client.lock().await;
        let mut stmts = Vec::with_capacity(body.len() + 1);
        stmts.push(marker.or_fail(StoreError::Conflict("already written".into())));
        stmts.extend(body);
        let mut retried = false;
        loop {
            let client = slot.client(&url, "call log").await?;
            match pg_transaction(client, &mut stmts).await {
                Ok(_) => return Ok(true),
                Err(TxError::Failed(StoreError::Conflict(_))) => return Ok(false),
                Err(TxError::Failed(e)) => return Err(e),
                Err(TxError::Lost { error, .. }) => {
                    slot.client = None;
                    if retried {
                        return Err(error);
                    }
                    tracing::info!(error = %error, "postgres: call-log connection lost; writing the batch again on a new connection");
                    retried = true;
                }
            }
        }
    }

    /// Run a batch of statements without parameters (migrations).
    pub(crate) async fn batch(&self, sql: &str) -> Result<(), StoreError> {
        match &*self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let sql = sql.to_string();
                blocking(move || {
                    let conn = conn
                        .lock()
                        .map_err(|_| StoreError::Task("poisoned".into()))?;
                    conn.execute_batch(&sql)?;
                    Ok(())
                })
                .await
            }
            Backend::Postgres(pg) => {
                // Not retried: a batch's statements may have run before the connection was lost.
                let client = pg.client().await?;
                client.batch_execute(sql).await.map_err(|e| {
                    if connection_lost(&e, &client) {
                        pg.forget(&client);
                    }
                    e.into()
                })
            }
        }
    }

    /// Run a query and return all rows.
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let sql = to_sqlite(sql);
                blocking(move || {
                    let conn = conn
                        .lock()
                        .map_err(|_| StoreError::Task("poisoned".into()))?;
                    let mut stmt = conn.prepare_cached(&sql)?;
                    let ncols = stmt.column_count();
                    let mut rows =
                        stmt.query(rusqlite::params_from_iter(params.iter().map(sqlite_value)))?;
                    let mut out = Vec::new();
                    while let Some(row) = rows.next()? {
                        let mut r = Vec::with_capacity(ncols);
                        for i in 0..ncols {
                            r.push(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => Value::Null,
                                rusqlite::types::ValueRef::Integer(v) => Value::Int(v),
                                rusqlite::types::ValueRef::Real(v) => Value::Real(v),
                                rusqlite::types::ValueRef::Text(v) => {
                                    Value::Text(String::from_utf8_lossy(v).into_owned())
                                }
                                rusqlite::types::ValueRef::Blob(_) => {
                                    return Err(StoreError::Corrupt("unexpected blob".into()))
                                }
                            });
                        }
                        out.push(r);
                    }
                    Ok(out)
                })
                .await
            }
            Backend::Postgres(pg) => {
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                match pg_run(pg, sql, &refs, Run::Query).await? {
                    Ran::Rows(rows) => rows.iter().map(pg_row).collect(),
                    Ran::Count(_) => Ok(Vec::new()),
                }
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

fn to_sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

fn sqlite_value(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(v) => rusqlite::types::Value::Integer(*v),
        Value::Real(v) => rusqlite::types::Value::Real(*v),
        Value::Text(v) => rusqlite::types::Value::Text(v.clone()),
    }
}

fn pg_row(row: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let v = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?.map(Value::Real)
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?.map(Value::from)
        } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else {
            return Err(StoreError::Corrupt(format!("unexpected column type {ty}")));
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(out)
}

/// What [`pg_run`] runs.
#[derive(Clone, Copy, PartialEq)]
enum Run {
    Execute,
    Query,
}

enum Ran {
    Count(u64),
    Rows(Vec<tokio_postgres::Row>),
}

/// A read: it may run again after a lost connection (a write only if it was not sent).
fn is_read(sql: &str) -> bool {
    let head = sql.trim_start().get(..6).unwrap_or("");
    head.eq_ignore_ascii_case("select")
}

/// Run one statement on the shared connection. The statement is prepared first: if the
/// connection is lost while preparing, the statement never ran, and it is sent again once on
/// a new connection. A connection lost after that is retried only for a read (`SELECT`); a
/// write answers the error (it may or may not have been applied).
async fn pg_run(
    pg: &PgShared,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    run: Run,
) -> Result<Ran, StoreError> {
    let read = is_read(sql);
    let mut client = pg.client().await?;
    let mut retried = false;
    loop {
        let lost = match client.prepare(sql).await {
            Err(e) if connection_lost(&e, &client) => e,
            Err(e) => return Err(e.into()),
            Ok(stmt) => {
                let result = match run {
                    Run::Execute => client.execute(&stmt, params).await.map(Ran::Count),
                    Run::Query => client.query(&stmt, params).await.map(Ran::Rows),
                };
                match result {
                    Ok(done) => return Ok(done),
                    Err(e) if connection_lost(&e, &client) => {
                        if !read {
                            pg.forget(&client);
                            return Err(e.into());
                        }
                        e
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        pg.forget(&client);
        if retried {
            return Err(lost.into());
        }
        tracing::info!(error = %lost, "postgres: connection lost; running the statement again on a new connection");
        retried = true;
        client = pg.client().await?;
    }
}

/// How a transaction failed.
enum TxError {
    /// A statement failed (the transaction was rolled back); the connection is fine.
    Failed(StoreError),
    /// The connection was lost; `before_commit`: COMMIT had not been sent yet.
    Lost {
        error: StoreError,
        before_commit: bool,
    },
}

/// Run `stmts` in one transaction on `client`. A statement's `on_zero` error is taken out
/// of it only when it is answered.
async fn pg_transaction(
    client: &mut tokio_postgres::Client,
    stmts: &mut [Stmt],
) -> Result<Vec<u64>, TxError> {
    let lost = |e: tokio_postgres::Error, client_closed: bool, before_commit: bool| {
        if e.is_closed() || client_closed || connection_lost_code(&e) {
            TxError::Lost {
                error: e.into(),
                before_commit,
            }
        } else {
            TxError::Failed(e.into())
        }
    };
    if client.is_closed() {
        return Err(TxError::Lost {
            error: StoreError::Unavailable("the PostgreSQL connection is closed".into()),
            before_commit: true,
        });
    }
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        // BEGIN failed: nothing of the transaction ran.
        Err(e) => return Err(lost(e, false, true)),
    };
    let mut counts = Vec::with_capacity(stmts.len());
    for st in stmts.iter_mut() {
        let refs: Vec<&(dyn ToSql + Sync)> = st.params.iter().map(|p| p as _).collect();
        match tx.execute(st.sql.as_str(), &refs).await {
            Ok(n) => {
                if n == 0 {
                    if let Some(e) = st.on_zero.take() {
                        return Err(TxError::Failed(e)); // dropping `tx` rolls back
                    }
                }
                counts.push(n);
            }
            Err(e) => {
                let closed = tx.client().is_closed();
                return Err(lost(e, closed, true));
            }
        }
    }
    match tx.commit().await {
        Ok(()) => Ok(counts),
        Err(e) => Err(lost(e, false, false)),
    }
}

/// The SQLSTATE part of [`connection_lost`]: 57P01 admin_shutdown, 57P02 crash_shutdown,
/// 57P03 cannot_connect_now, 08xxx connection exceptions; or, without a SQLSTATE, an I/O
/// error of the socket.
fn connection_lost_code(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => code.code().starts_with("57P") || code.code().starts_with("08"),
        None => std::error::Error::source(e)
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
    }
}

/// Connect to PostgreSQL (TLS as the URL says) and drive the connection in the background.
async fn connect_postgres(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let target = pg_tls::target(url)?;
    Ok(match target.tls {
        Some(tls) => {
            let (client, connection) = target.config.connect(tls).await?;
            spawn_connection(connection);
            client
        }
        None => {
            let (client, connection) = target.config.connect(tokio_postgres::NoTls).await?;
            spawn_connection(connection);
            client
        }
    })
}

/// Drive a PostgreSQL connection in the background, logging how it ended.
fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("postgres connection ended: {e}");
        }
    });
}

/// `LISTEN` for changes on `client`'s connection; each notification is a wake-up on `tx`.
/// `ready` gets the outcome of the `LISTEN` statement.
async fn listen_on<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    tx: tokio::sync::mpsc::Sender<()>,
    ready_tx: tokio::sync::oneshot::Sender<Result<(), tokio_postgres::Error>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use std::future::Future;

    let mut ready = Some(ready_tx);
    let mut listen = Box::pin(async move {
        let r = client
            .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
            .await;
        (client, r)
    });
    let mut client = None;
    loop {
        // Drive the connection; the LISTEN statement completes through it.
        let message = std::future::poll_fn(|cx| {
            if client.is_none() {
                if let std::task::Poll::Ready((c, r)) = listen.as_mut().poll(cx) {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(r);
                    }
                    client = Some(c);
                }
            }
            connection.poll_message(cx)
        })
        .await;
        match message {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                // A full channel already holds a wake-up: changes fold into it.
                let _ = tx.try_send(());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "store change listener: connection failed");
                break;
            }
            None => break,
        }
    }
    // Dropping `tx` tells the listener's owner that it ended.
}
