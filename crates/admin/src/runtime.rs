//! [`Management`]: the running API-management state shared by the admin API and the gateway
//! extension (store, cached index, limiter, call-log writer), and [`ManagementFactory`], the
//! `PluginFactory` that plugs it into the data plane.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use holdfast_core::config::management::ManagementConfig;
use holdfast_core::config::Config;
use holdfast_core::CallRecord;
use holdfast_proxy::plugin::{
    Body, BoxFuture, CallObserver, GuardHeaders, PluginFactory, Plugins, RequestContext,
    RequestGuard,
};
use holdfast_store::{
    ChangeFeed, ChangeListener, EntityStore, KeyHasher, RedisCounters, SqlStore, StoreError,
};

use crate::cache::Index;
use crate::calllog::{CallLogStats, CallLogWriter};
use crate::jwt::Verifiers;
use crate::limiter::Limiter;

/// Why management could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("management.store: cannot open the store: {0}")]
    Store(StoreError),
    #[error("management.redis: cannot connect to Redis: {0}")]
    Redis(StoreError),
    #[error("{0}")]
    Jwt(String),
    #[error("management.key_header: `{0}` is not a valid header name")]
    KeyHeader(String),
}

/// The running API management of one gateway node.
pub struct Management {
    config: ManagementConfig,
    pub(crate) store: SqlStore,
    /// Hashes presented keys (HMAC keyed once with the server secret).
    pub(crate) key_hasher: KeyHasher,
    /// The header that carries the API key (`authorization` by default).
    pub(crate) key_header: http::HeaderName,
    index: ArcSwap<Index>,
    refreshing: tokio::sync::Mutex<()>,
    cache: CacheCounters,
    pub(crate) limiter: Limiter,
    pub(crate) calllog: CallLogWriter,
    pub(crate) jwt: Verifiers,
    node: String,
}

impl Management {
    /// Open the store (running migrations), connect Redis if configured, load the cache and
    /// start the refresh and call-log tasks. Needs a Tokio runtime.
    pub async fn start(config: &ManagementConfig) -> Result<Arc<Management>, StartError> {
        let node = std::env::var("HOLDFAST_NODE").unwrap_or_else(|_| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        Management::start_as(config, &node).await
    }

    /// [`Management::start`] with an explicit node name for the call log.
    pub async fn start_as(
        config: &ManagementConfig,
        node: &str,
    ) -> Result<Arc<Management>, StartError> {
        let node = node.to_string();
        let jwt = Verifiers::start(&config.jwt).map_err(StartError::Jwt)?;
        let store = SqlStore::open(&config.store, config.secret.as_bytes())
            .await
            .map_err(StartError::Store)?;
        let redis = match &config.redis {
            Some(url) => Some(
                RedisCounters::connect(url, "holdfast")
                    .await
                    .map_err(StartError::Redis)?,
            ),
            None => None,
        };
        let key_header = http::HeaderName::from_bytes(config.key_header.as_bytes())
            .map_err(|_| StartError::KeyHeader(config.key_header.clone()))?;
        let limiter = Limiter::new(redis);
        let snapshot = store.snapshot().await.map_err(StartError::Store)?;
        let calllog = CallLogWriter::start(
            store.clone(),
            node.clone(),
            config.call_log_buffer,
            Duration::from_millis(config.flush_interval_ms),
            Duration::from_secs(u64::from(config.retention_days) * 86_400),
        );
        let m = Arc::new(Management {
            config: config.clone(),
            key_hasher: KeyHasher::new(config.secret.as_bytes()),
            key_header,
            store,
            index: ArcSwap::from_pointee(Index::build(snapshot, config, &limiter)),
            refreshing: tokio::sync::Mutex::new(()),
            cache: CacheCounters::default(),
            limiter,
            calllog,
            jwt,
            node,
        });
        let listener = listen(&m.store, &m.node).await;
        m.cache
            .listening
            .store(listener.is_some(), Ordering::Relaxed);
        tokio::spawn(refresh_loop(
            Arc::downgrade(&m),
            m.store.clone(),
            listener,
            Duration::from_millis(config.cache_refresh_ms),
        ));
        Ok(m)
    }

    pub fn config(&self) -> &ManagementConfig {
        &self.config
    }

    /// This node's name in the call log (`HOLDFAST_NODE`, or host-pid).
    pub fn node(&self) -> &str {
        &self.node
    }

    pub(crate) fn index(&self) -> arc_swap::Guard<Arc<Index>> {
        self.index.load()
    }

    /// The current index, held for as long as a request needs it.
    pub(crate) fn index_full(&self) -> Arc<Index> {
        self.index.load_full()
    }

    /// Reload the cache now if the store changed; `true` when it did.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        // One refresh at a time, so an older snapshot never replaces a newer one.
        let _one = self.refreshing.lock().await;
        let generation = self.store.generation().await?;
        if generation == self.index.load().generation {
            return Ok(false);
        }
        let snapshot = self.store.snapshot().await?;
        let index = Index::build(snapshot, &self.config, &self.limiter);
        self.index.store(Arc::new(index));
        self.limiter.prune();
        Ok(true)
    }

    /// The admin API, to mount on the admin listener.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        crate::api::router(self.clone())
    }

    /// How this node's cache learns of changes.
    pub fn cache_status(&self) -> CacheStatus {
        let c = &self.cache;
        CacheStatus {
            generation: self.index.load().generation,
            listening: c.listening.load(Ordering::Relaxed),
            notified_reloads: c.notified_reloads.load(Ordering::Relaxed),
            polled_reloads: c.polled_reloads.load(Ordering::Relaxed),
            listener_restarts: c.listener_restarts.load(Ordering::Relaxed),
        }
    }

    /// Call-log writer counters (queued, written, overflow...).
    pub fn call_log_stats(&self) -> CallLogStats {
        self.calllog.stats()
    }

    /// Graceful stop: write every queued call record. Call once the data plane has drained.
    pub async fn shutdown(&self) {
        self.calllog.shutdown().await;
    }
}

/// How this node's cache learns of changes to the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStatus {
    /// The store generation the cache holds.
    pub generation: i64,
    /// True while a PostgreSQL `LISTEN` connection announces changes.
    pub listening: bool,
    /// Reloads triggered by an announced change.
    pub notified_reloads: u64,
    /// Reloads found by polling (SQLite, a lost notification, or the listener down).
    pub polled_reloads: u64,
    /// How often the listener was connected again after it dropped.
    pub listener_restarts: u64,
}

#[derive(Default)]
struct CacheCounters {
    listening: AtomicBool,
    notified_reloads: AtomicU64,
    polled_reloads: AtomicU64,
    listener_restarts: AtomicU64,
}

/// While listening, polling is only a safety net: this many refresh intervals apart.
const POLL_WHILE_LISTENING: u32 = 10;
/// How often a dropped listener is connected again.
const LISTEN_RETRY: Duration = Duration::from_secs(2);

/// Start listening for changes (PostgreSQL); `None` on SQLite or when it fails (logged).
async fn listen(store: &SqlStore, node: &str) -> Option<ChangeListener> {
    match store.listen(&format!("holdfast-listen-{node}")).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot LISTEN for store changes; polling instead");
            None
        }
    }
}

/// Keep the cache current: reload when a change is announced (PostgreSQL `LISTEN`), and poll
/// the generation every `every` when no listener runs (SQLite, or PostgreSQL while the
/// listener is down and being reconnected), every `POLL_WHILE_LISTENING` × `every` otherwise.
async fn refresh_loop(
    m: Weak<Management>,
    store: SqlStore,
    mut listener: Option<ChangeListener>,
    every: Duration,
) {
    let mut retry_listen_at = tokio::time::Instant::now() + LISTEN_RETRY;
    loop {
        let notified = match listener.as_mut() {
            Some(l) => {
                tokio::select! {
                    got = l.changed() => got.is_some(),
                    _ = tokio::time::sleep(every * POLL_WHILE_LISTENING) => false,
                }
            }
            None => {
                tokio::time::sleep(every).await;
                false
            }
        };
        let Some(m) = m.upgrade() else { return };
        if listener.as_ref().is_some_and(|l| l.is_closed()) {
            listener = None;
            m.cache.listening.store(false, Ordering::Relaxed);
            retry_listen_at = tokio::time::Instant::now() + LISTEN_RETRY;
            tracing::warn!(
                every_ms = every.as_millis() as u64,
                "store change listener ended; polling until it is back"
            );
        }
        if listener.is_none()
            && store.is_postgres()
            && tokio::time::Instant::now() >= retry_listen_at
        {
            listener = listen(&store, &m.node).await;
            retry_listen_at = tokio::time::Instant::now() + LISTEN_RETRY;
            if listener.is_some() {
                m.cache.listening.store(true, Ordering::Relaxed);
                m.cache.listener_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::info!("store change listener connected again");
            }
        }
        match m.refresh().await {
            Ok(true) if notified => {
                m.cache.notified_reloads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(true) => {
                m.cache.polled_reloads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "management cache refresh failed; keeping the last view")
            }
        }
    }
}

struct Guard(Arc<Management>);

impl RequestGuard for Guard {
    fn check<'a>(
        &'a self,
        req: &'a http::request::Parts,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<GuardHeaders, http::Response<Body>>> {
        // Key auth with node-local limits decides without awaiting: no future to build.
        match self.0.check_request_now(req, ctx) {
            Some(decided) => Box::pin(std::future::ready(decided)),
            None => Box::pin(self.0.check_request(req, ctx)),
        }
    }
}

struct Observer(Arc<Management>);

impl CallObserver for Observer {
    fn on_call(&self, record: &CallRecord) {
        if record.extra.tenant.is_none() {
            return; // not a managed call
        }
        self.0.calllog.push(record);
        let Some(ai) = &record.extra.ai else { return };
        let tokens = ai.input_tokens + ai.output_tokens;
        if tokens == 0 {
            return;
        }
        // Only calls some token budget applies to need counting (a task, as Redis may answer).
        let scopes = self.0.token_scopes(&record.extra);
        if scopes.is_empty() {
            return;
        }
        let m = self.0.clone();
        tokio::spawn(async move {
            m.count_tokens(&scopes, tokens, holdfast_store::now_ms())
                .await;
        });
    }
}

/// Plugs [`Management`] into the data plane: one guard and one observer.
pub struct ManagementFactory(pub Arc<Management>);

impl PluginFactory for ManagementFactory {
    fn build(&self, config: &Config) -> Result<Plugins, String> {
        if config.management.is_none() {
            return Ok(Plugins::default());
        }
        let mut plugins = Plugins::default();
        plugins.guards.push(Arc::new(Guard(self.0.clone())));
        plugins.observers.push(Arc::new(Observer(self.0.clone())));
        Ok(plugins)
    }
}
