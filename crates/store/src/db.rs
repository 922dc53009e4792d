//! One small SQL layer over SQLite (rusqlite, run on the blocking pool) and PostgreSQL
//! (tokio-postgres), so every query is written once. Queries use `$1`-style placeholders;
//! for SQLite they become `?1`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    Postgres(Box<PgShared>),
}

/// How long one connection attempt to PostgreSQL may take (TCP, TLS, startup and login).
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait after the first failed reconnect; doubled per failure up to [`PG_BACKOFF_MAX`].
const PG_BACKOFF_MIN: Duration = Duration::from_millis(100);
const PG_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a use waits for a reconnect attempt under way (it goes on in the background
/// meanwhile, up to [`PG_CONNECT_TIMEOUT`]); past that the use fails at once (a 503).
const PG_RECONNECT_WAIT: Duration = Duration::from_secs(1);
/// A statement, transaction or call-log batch still unanswered after this has its server
/// checked ([`Liveness`]): one that does not answer a new connection either is hung (stopped,
/// frozen, cut off without a reset), and the connection is dropped as lost.
const PG_SLOW_AFTER: Duration = Duration::from_secs(3);
/// How long that check may take: connect and `SELECT 1`.
const PG_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// A server that answered a check this recently is taken to be up without another one.
const PG_CHECK_FRESH: Duration = Duration::from_secs(1);
/// No statement waits longer than this, even while the server answers checks (a connection
/// cut off on its own, with the server fine): it is then dropped as lost too.
const PG_STATEMENT_MAX: Duration = Duration::from_secs(300);

/// The message of an error, without the `store unavailable: ` of [`StoreError::Unavailable`].
fn reason(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable(m) => m.clone(),
        e => e.to_string(),
    }
}

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

    /// Count a failure (a failed connection attempt, or a connection that stopped answering);
    /// returns the wait before the next attempt.
    fn failed(&mut self, e: &StoreError) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = PG_BACKOFF_MIN
            .saturating_mul(1u32 << (self.failures - 1).min(16))
            .min(PG_BACKOFF_MAX);
        self.retry_at = Some(tokio::time::Instant::now() + delay);
        self.last_error = reason(e);
        delay
    }

    fn succeeded(&mut self, what: &str) {
        if self.failures > 0 || self.retry_at.is_some() || !self.last_error.is_empty() {
            tracing::info!(connection = what, "postgres: reconnected");
        }
        *self = Backoff::default();
    }
}

/// A PostgreSQL client and the task driving its connection.
struct PgClient {
    client: tokio_postgres::Client,
    connection: tokio::task::AbortHandle,
}

impl std::ops::Deref for PgClient {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &tokio_postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgClient {
    fn deref_mut(&mut self) -> &mut tokio_postgres::Client {
        &mut self.client
    }
}

impl PgClient {
    /// Drop the connection now (its socket closes; every statement waiting on it fails at
    /// once). For a connection that stopped answering: dropping the client alone would leave
    /// its task waiting on the socket for as long as the server stays silent.
    fn kill(&self) {
        self.connection.abort();
    }
}

/// Connect once, bounded by [`PG_CONNECT_TIMEOUT`].
async fn connect_bounded(url: &str) -> Result<PgClient, StoreError> {
    match tokio::time::timeout(PG_CONNECT_TIMEOUT, connect_postgres(url)).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer from PostgreSQL within {} s",
            PG_CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// One connection attempt at a time, under a [`Backoff`]. The attempt runs in a task of its
/// own: a use waits for it up to [`PG_RECONNECT_WAIT`] from its start, and fails at once after
/// that while the attempt goes on (a server that does not answer costs each admin call at most
/// that wait, not the whole connect timeout).
#[derive(Default)]
struct Reconnector {
    backoff: Backoff,
    attempt: Option<(
        tokio::time::Instant,
        tokio::task::JoinHandle<Result<PgClient, StoreError>>,
    )>,
}

impl Reconnector {
    async fn connect(&mut self, url: &Arc<str>, what: &str) -> Result<PgClient, StoreError> {
        let (started, attempt) = match &mut self.attempt {
            Some((started, attempt)) => (*started, attempt),
            slot @ None => {
                self.backoff.check()?;
                let url = url.clone();
                let attempt = tokio::spawn(async move { connect_bounded(&url).await });
                let (started, attempt) = slot.insert((tokio::time::Instant::now(), attempt));
                (*started, attempt)
            }
        };
        let wait = PG_RECONNECT_WAIT.saturating_sub(started.elapsed());
        let joined = match tokio::time::timeout(wait, attempt).await {
            Ok(joined) => joined,
            Err(_) => {
                let mut why = format!(
                    "a connection attempt has had no answer for {} ms",
                    started.elapsed().as_millis()
                );
                if !self.backoff.last_error.is_empty() {
                    why = format!("{}; {why}", self.backoff.last_error);
                }
                return Err(StoreError::Unavailable(format!(
                    "PostgreSQL is unreachable ({why}); reconnecting"
                )));
            }
        };
        self.attempt = None;
        let result = joined.unwrap_or_else(|e| Err(StoreError::Task(e.to_string())));
        match result {
            Ok(client) => {
                self.backoff.succeeded(what);
                Ok(client)
            }
            Err(e) => {
                let delay = self.backoff.failed(&e);
                tracing::warn!(
                    error = %e,
                    connection = what,
                    failures = self.backoff.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "postgres: reconnect failed"
                );
                Err(match e {
                    e @ StoreError::Unavailable(_) => e,
                    e => StoreError::Unavailable(format!("cannot reconnect to PostgreSQL: {e}")),
                })
            }
        }
    }

    /// The connection `what` stopped answering (see [`answered`]): count it as a failure, so
    /// uses back off as after a failed reconnect.
    fn hung(&mut self, what: &str, e: &StoreError) {
        let delay = self.backoff.failed(e);
        tracing::warn!(
            error = %e,
            connection = what,
            retry_in_ms = delay.as_millis() as u64,
            "postgres: no answer; the connection is dropped and will be reopened"
        );
    }
}

/// Whether the server still answers: a new connection and `SELECT 1`, at most one check at
/// a time; its outcome holds for [`PG_CHECK_FRESH`] (every statement waiting on a silent
/// server learns it from the same check).
struct Liveness {
    url: Arc<str>,
    /// When the last check ended, and whether the server answered it.
    last: Mutex<Option<(tokio::time::Instant, bool)>>,
    checking: tokio::sync::Mutex<()>,
}

impl Liveness {
    fn new(url: &Arc<str>) -> Liveness {
        Liveness {
            url: url.clone(),
            last: Mutex::new(None),
            checking: tokio::sync::Mutex::new(()),
        }
    }

    fn recent(&self) -> Option<bool> {
        let last = *self.last.lock().ok()?;
        last.filter(|(at, _)| at.elapsed() < PG_CHECK_FRESH)
            .map(|(_, answered)| answered)
    }

    async fn server_answers(&self) -> bool {
        if let Some(answered) = self.recent() {
            return answered;
        }
        let _one = self.checking.lock().await;
        if let Some(answered) = self.recent() {
            return answered;
        }
        let check = async {
            let client = connect_postgres(&self.url).await?;
            client.batch_execute("SELECT 1").await?;
            Ok::<_, StoreError>(())
        };
        let answered = match tokio::time::timeout(PG_CHECK_TIMEOUT, check).await {
            Ok(Ok(())) => true,
            // An error from the server itself (too many connections, ...) is an answer.
            Ok(Err(StoreError::Postgres(e))) => e.as_db_error().is_some(),
            Ok(Err(_)) | Err(_) => false,
        };
        if let Ok(mut last) = self.last.lock() {
            *last = Some((tokio::time::Instant::now(), answered));
        }
        answered
    }
}

/// Wait for `work` on a connection: as long as it takes while the server answers, but once
/// it has been unanswered for [`PG_SLOW_AFTER`] the server is checked, and `Err` (an
/// [`StoreError::Unavailable`] to answer) when it does not answer the check either, or after
/// [`PG_STATEMENT_MAX`] in any case. The caller then drops the connection as lost.
async fn answered<F: std::future::Future>(
    live: &Liveness,
    work: F,
) -> Result<F::Output, StoreError> {
    let started = tokio::time::Instant::now();
    let mut work = std::pin::pin!(work);
    loop {
        if let Ok(done) = tokio::time::timeout(PG_SLOW_AFTER, work.as_mut()).await {
            return Ok(done);
        }
        let waited = started.elapsed();
        let answers = waited < PG_STATEMENT_MAX
            && tokio::select! {
                done = work.as_mut() => return Ok(done),
                answers = live.server_answers() => answers,
            };
        if !answers {
            let waited = started.elapsed();
            return Err(StoreError::Unavailable(if waited >= PG_STATEMENT_MAX {
                format!(
                    "PostgreSQL has not answered a statement in {} s",
                    waited.as_secs()
                )
            } else {
                format!(
                    "PostgreSQL did not answer for {} ms, nor a new connection within {} s",
                    waited.as_millis(),
                    PG_CHECK_TIMEOUT.as_secs()
                )
            }));
        }
    }
}

/// True when `e` means the connection is gone (closed, the server shutting down or
/// terminating the session, a broken socket), so the same work may succeed on a new one.
fn connection_lost(e: &tokio_postgres::Error, client: &tokio_postgres::Client) -> bool {
    e.is_closed() || client.is_closed() || connection_lost_code(e)
}

/// The connection every query shares: replaced on the next use once it has closed, or once
/// it stopped answering (see [`answered`]).
struct PgShared {
    url: Arc<str>,
    current: Mutex<Option<Arc<PgClient>>>,
    /// Locked while waiting for a reconnect attempt (at most [`PG_RECONNECT_WAIT`]).
    reconnect: tokio::sync::Mutex<Reconnector>,
    live: Liveness,
}

impl PgShared {
    fn new(url: &str, client: PgClient) -> PgShared {
        let url: Arc<str> = url.into();
        PgShared {
            live: Liveness::new(&url),
            url,
            current: Mutex::new(Some(Arc::new(client))),
            reconnect: tokio::sync::Mutex::new(Reconnector::default()),
        }
    }

    fn open_client(&self) -> Option<Arc<PgClient>> {
        let current = self.current.lock().ok()?;
        current.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// The open connection, reconnecting (under the backoff) if it has closed.
    async fn client(&self) -> Result<Arc<PgClient>, StoreError> {
        if let Some(c) = self.open_client() {
            return Ok(c);
        }
        let Ok(mut reconnect) =
            tokio::time::timeout(PG_RECONNECT_WAIT, self.reconnect.lock()).await
        else {
            return Err(StoreError::Unavailable(
                "PostgreSQL is unreachable; a reconnect attempt is under way".into(),
            ));
        };
        // Another task may have reconnected while this one waited.
        if let Some(c) = self.open_client() {
            return Ok(c);
        }
        let client = Arc::new(reconnect.connect(&self.url, "store").await?);
        if let Ok(mut current) = self.current.lock() {
            *current = Some(client.clone());
        }
        Ok(client)
    }

    /// Stop using `client` (its connection was lost), so the next use reconnects. True when
    /// it was the current connection.
    fn forget(&self, client: &Arc<PgClient>) -> bool {
        if let Ok(mut current) = self.current.lock() {
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
                *current = None;
                return true;
            }
        }
        false
    }

    /// `client` stopped answering: drop its connection and back off as after a failed
    /// reconnect (the first use to notice counts it).
    fn hung(&self, client: &Arc<PgClient>, e: &StoreError) {
        client.kill();
        if self.forget(client) {
            if let Ok(mut reconnect) = self.reconnect.try_lock() {
                reconnect.hung("store", e);
            }
        }
    }
}

/// A connection of its own for transactions, reconnected on the next use once it has closed
/// or stopped answering.
#[derive(Default)]
struct PgOwned {
    client: Option<PgClient>,
    reconnect: Reconnector,
}

impl PgOwned {
    async fn client(&mut self, url: &Arc<str>, what: &str) -> Result<&mut PgClient, StoreError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            self.client = Some(self.reconnect.connect(url, what).await?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Task("no PostgreSQL connection".into()))
    }

    /// The connection was lost: the next use reconnects.
    fn lost(&mut self) {
        self.client = None;
    }

    /// The connection stopped answering: drop it and back off.
    fn hung(&mut self, what: &str, e: &StoreError) {
        if let Some(c) = self.client.take() {
            c.kill();
        }
        self.reconnect.hung(what, e);
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
        let client = connect_bounded(url).await?;
        let store = SqlStore {
            backend: Arc::new(Backend::Postgres(Box::new(PgShared::new(url, client)))),
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
        // Connecting and LISTEN together are bounded like any connection attempt (a server
        // that does not answer would otherwise hold the listener's restart forever).
        let deadline = tokio::time::Instant::now() + PG_CONNECT_TIMEOUT;
        let no_answer = || {
            StoreError::Unavailable(format!(
                "no answer from PostgreSQL within {} s (change listener)",
                PG_CONNECT_TIMEOUT.as_secs()
            ))
        };
        let connect = async {
            Ok::<_, StoreError>(match target.tls {
                Some(tls) => {
                    let (client, connection) = target.config.connect(tls).await?;
                    tokio::spawn(listen_on(client, connection, tx, ready_tx))
                }
                None => {
                    let (client, connection) = target.config.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(listen_on(client, connection, tx, ready_tx))
                }
            })
        };
        let task = tokio::time::timeout_at(deadline, connect)
            .await
            .map_err(|_| no_answer())??;
        match tokio::time::timeout_at(deadline, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(Some(ChangeListener { rx, task })),
            Ok(Ok(Err(e))) => {
                task.abort();
                Err(e.into())
            }
            Ok(Err(_)) => {
                task.abort();
                Err(StoreError::Task(
                    "the change listener's connection ended before LISTEN".into(),
                ))
            }
            Err(_) => {
                task.abort();
                Err(no_answer())
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
            Backend::Postgres(pg) => {
                let mut slot = self.tx_client.lock().await;
                let mut stmts = stmts;
                let mut retried = false;
                loop {
                    let client = slot.client(&pg.url, "transactions").await?;
                    let mut committing = false;
                    let outcome = answered(
                        &pg.live,
                        pg_transaction(client, &mut stmts, &mut committing),
                    )
                    .await;
                    let (error, before_commit) = match outcome {
                        Ok(Ok(counts)) => return Ok(counts),
                        Ok(Err(TxError::Failed(e))) => return Err(e),
                        Ok(Err(TxError::Lost {
                            error,
                            before_commit,
                        })) => {
                            slot.lost();
                            (error, before_commit)
                        }
                        Err(hung) => {
                            slot.hung("transactions", &hung);
                            (hung, !committing)
                        }
                    };
                    // Lost before COMMIT was sent: the server rolled the transaction back,
                    // so running it again on a new connection cannot apply it twice.
                    if !before_commit || retried {
                        return Err(error);
                    }
                    tracing::info!(error = %error, "postgres: connection lost mid-transaction; retrying it on a new connection");
                    retried = true;
                }
            }
        }
    }

    /// Run `marker` then the binary COPY `copy` as one transaction on the call-log writer's
    /// own PostgreSQL connection. `marker` is a statement that changes no row when the same
    /// work was committed before (the batch's token is already stored): the transaction then
    /// rolls back and the answer is `Ok(false)`. The transaction is run a second time, on a
    /// new connection, if the connection was lost (or stopped answering) at any point, COMMIT
    /// included: the marker makes that safe.
    pub(crate) async fn pg_log_copy(
        &self,
        marker: Stmt,
        copy: &dyn CopyIn,
    ) -> Result<bool, StoreError> {
        let Backend::Postgres(pg) = &*self.backend else {
            return Err(StoreError::Task("not PostgreSQL".into()));
        };
        let mut slot = self.log_client.lock().await;
        let mut retried = false;
        loop {
            let client = slot.client(&pg.url, "call log").await?;
            let error = match answered(&pg.live, pg_copy_transaction(client, &marker, copy)).await {
                Ok(Ok(written)) => return Ok(written),
                Ok(Err(TxError::Failed(e))) => return Err(e),
                Ok(Err(TxError::Lost { error, .. })) => {
                    slot.lost();
                    error
                }
                Err(hung) => {
                    slot.hung("call log", &hung);
                    hung
                }
            };
            if retried {
                return Err(error);
            }
            tracing::info!(error = %error, "postgres: call-log connection lost; writing the batch again on a new connection");
            retried = true;
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
                match answered(&pg.live, client.batch_execute(sql)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => {
                        if connection_lost(&e, &client) {
                            pg.forget(&client);
                        }
                        Err(e.into())
                    }
                    Err(hung) => {
                        pg.hung(&client, &hung);
                        Err(hung)
                    }
                }
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
/// write answers the error (it may or may not have been applied). A connection that stops
/// answering ([`answered`]) counts as lost at the step it stopped in, and is dropped.
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
        let lost: StoreError = match answered(&pg.live, client.prepare(sql)).await {
            Ok(Err(e)) if connection_lost(&e, &client) => {
                pg.forget(&client);
                e.into()
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(hung) => {
                pg.hung(&client, &hung);
                hung
            }
            Ok(Ok(stmt)) => {
                let result = answered(&pg.live, async {
                    match run {
                        Run::Execute => client.execute(&stmt, params).await.map(Ran::Count),
                        Run::Query => client.query(&stmt, params).await.map(Ran::Rows),
                    }
                })
                .await;
                let lost = match result {
                    Ok(Ok(done)) => return Ok(done),
                    Ok(Err(e)) if connection_lost(&e, &client) => {
                        pg.forget(&client);
                        e.into()
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(hung) => {
                        pg.hung(&client, &hung);
                        hung
                    }
                };
                if !read {
                    return Err(lost);
                }
                lost
            }
        };
        if retried {
            return Err(lost);
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

/// Classify an error of a statement in a transaction.
fn tx_error(e: tokio_postgres::Error, client_closed: bool, before_commit: bool) -> TxError {
    if e.is_closed() || client_closed || connection_lost_code(&e) {
        TxError::Lost {
            error: e.into(),
            before_commit,
        }
    } else {
        TxError::Failed(e.into())
    }
}

/// Run `stmts` in one transaction on `client`. A statement's `on_zero` error is taken out
/// of it only when it is answered. `committing` is set once COMMIT is sent.
async fn pg_transaction(
    client: &mut tokio_postgres::Client,
    stmts: &mut [Stmt],
    committing: &mut bool,
) -> Result<Vec<u64>, TxError> {
    if client.is_closed() {
        return Err(TxError::Lost {
            error: StoreError::Unavailable("the PostgreSQL connection is closed".into()),
            before_commit: true,
        });
    }
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        // BEGIN failed: nothing of the transaction ran.
        Err(e) => return Err(tx_error(e, false, true)),
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
                return Err(tx_error(e, closed, true));
            }
        }
    }
    *committing = true;
    match tx.commit().await {
        Ok(()) => Ok(counts),
        Err(e) => Err(tx_error(e, false, false)),
    }
}

/// Rows written by a binary `COPY ... FROM STDIN (FORMAT binary)` ([`SqlStore::pg_log_copy`]).
/// `write_rows` may be called twice (the transaction is run again after a lost connection).
#[async_trait::async_trait]
pub(crate) trait CopyIn: Sync {
    /// The `COPY` statement.
    fn statement(&self) -> &str;
    /// The column types, in the statement's order (binary COPY takes exact types).
    fn types(&self) -> &[Type];
    /// Write every row.
    async fn write_rows(
        &self,
        writer: std::pin::Pin<&mut tokio_postgres::binary_copy::BinaryCopyInWriter>,
    ) -> Result<(), tokio_postgres::Error>;
}

/// `marker` then `copy` in one transaction on `client`; `Ok(false)` (rolled back) when the
/// marker changed no row.
async fn pg_copy_transaction(
    client: &mut tokio_postgres::Client,
    marker: &Stmt,
    copy: &dyn CopyIn,
) -> Result<bool, TxError> {
    if client.is_closed() {
        return Err(TxError::Lost {
            error: StoreError::Unavailable("the PostgreSQL connection is closed".into()),
            before_commit: true,
        });
    }
    let tx = client
        .transaction()
        .await
        .map_err(|e| tx_error(e, false, true))?;
    let refs: Vec<&(dyn ToSql + Sync)> = marker.params.iter().map(|p| p as _).collect();
    let failed = |e: tokio_postgres::Error, tx: &tokio_postgres::Transaction<'_>| {
        let closed = tx.client().is_closed();
        tx_error(e, closed, true)
    };
    match tx.execute(marker.sql.as_str(), &refs).await {
        Ok(0) => return Ok(false), // dropping `tx` rolls back
        Ok(_) => {}
        Err(e) => return Err(failed(e, &tx)),
    }
    let sink = match tx.copy_in(copy.statement()).await {
        Ok(sink) => sink,
        Err(e) => return Err(failed(e, &tx)),
    };
    let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, copy.types());
    let mut writer = std::pin::pin!(writer);
    let copied = match copy.write_rows(writer.as_mut()).await {
        Ok(()) => writer.as_mut().finish().await,
        Err(e) => Err(e),
    };
    if let Err(e) = copied {
        return Err(failed(e, &tx));
    }
    tx.commit().await.map_err(|e| tx_error(e, false, false))?;
    Ok(true)
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
/// Not bounded in time: see [`connect_bounded`].
async fn connect_postgres(url: &str) -> Result<PgClient, StoreError> {
    let target = pg_tls::target(url)?;
    Ok(match target.tls {
        Some(tls) => {
            let (client, connection) = target.config.connect(tls).await?;
            PgClient {
                client,
                connection: spawn_connection(connection),
            }
        }
        None => {
            let (client, connection) = target.config.connect(tokio_postgres::NoTls).await?;
            PgClient {
                client,
                connection: spawn_connection(connection),
            }
        }
    })
}

/// Drive a PostgreSQL connection in the background, logging how it ended.
fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>) -> tokio::task::AbortHandle
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("postgres connection ended: {e}");
        }
    })
    .abort_handle()
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
