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
    Postgres(Arc<tokio_postgres::Client>),
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
    tx_client: Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
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
        };
        migrations::run(&store).await?;
        Ok(store)
    }

    /// Connect to PostgreSQL and run the migrations. TLS follows the URL's `sslmode` and
    /// `sslrootcert` (see [`crate::pg_tls`]).
    pub async fn open_postgres(url: &str, secret: &[u8]) -> Result<SqlStore, StoreError> {
        let client = connect_postgres(url).await?;
        let store = SqlStore {
            backend: Arc::new(Backend::Postgres(Arc::new(client))),
            secret: secret.into(),
            pg_url: Some(url.into()),
            tx_client: Arc::default(),
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
            Backend::Postgres(client) => {
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                Ok(client.execute(sql, &refs).await?)
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
                if slot.as_ref().is_none_or(|c| c.is_closed()) {
                    *slot = Some(connect_postgres(&url).await?);
                }
                let client = slot.as_mut().expect("connected above");
                let tx = client.transaction().await?;
                let mut counts = Vec::with_capacity(stmts.len());
                for st in stmts {
                    let refs: Vec<&(dyn ToSql + Sync)> = st.params.iter().map(|p| p as _).collect();
                    let n = tx.execute(st.sql.as_str(), &refs).await?;
                    if n == 0 {
                        if let Some(e) = st.on_zero {
                            return Err(e); // dropping `tx` rolls back
                        }
                    }
                    counts.push(n);
                }
                tx.commit().await?;
                Ok(counts)
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
            Backend::Postgres(client) => Ok(client.batch_execute(sql).await?),
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
            Backend::Postgres(client) => {
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
                let rows = client.query(sql, &refs).await?;
                rows.iter().map(pg_row).collect()
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
