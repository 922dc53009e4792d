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

use crate::cache::{Index, Scope};
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

static AUTHORIZATION: http::HeaderName = http::header::AUTHORIZATION;

/// The part of `[management]` a config reload (SIGHUP) changes: everything but the store,
/// Redis and the secret, which need a restart. The data plane's guard holds the `Live` it was
/// built with, so a reload swaps it together with the routes.
pub(crate) struct Live {
    pub config: ManagementConfig,
    /// The header that carries the API key (`authorization` by default).
    pub key_header: http::HeaderName,
    pub jwt: Arc<Verifiers>,
    /// The global limits (`global_rps`, `global_rpm`).
    pub global: Option<Scope>,
    /// `WWW-Authenticate` of a 401 for a missing or refused API key.
    pub key_challenge: http::HeaderValue,
}

impl Live {
    /// The header carrying the consumer's credential on a route of `service` (`NAME` or
    /// `NAME@VERSION`) that the gateway must remove before forwarding: the key header, or
    /// `Authorization` for a JWT service. `None` with `forward_key = true`.
    pub fn credential_header(&self, service: &str) -> Option<&http::HeaderName> {
        if self.config.forward_key {
            return None;
        }
        let name = holdfast_core::config::route::ServiceSpec::parse(service).name;
        Some(if self.jwt.get(name).is_some() {
            &AUTHORIZATION
        } else {
            &self.key_header
        })
    }

    /// Build the live settings of `config`; `jwt` reuses the running verifiers when their
    /// config did not change.
    fn build(
        config: &ManagementConfig,
        limiter: &Limiter,
        jwt: Option<Arc<Verifiers>>,
    ) -> Result<Live, StartError> {
        let key_header = http::HeaderName::from_bytes(config.key_header.as_bytes())
            .map_err(|_| StartError::KeyHeader(config.key_header.clone()))?;
        let jwt = match jwt {
            Some(j) => j,
            None => Arc::new(Verifiers::start(&config.jwt).map_err(StartError::Jwt)?),
        };
        Ok(Live {
            config: config.clone(),
            jwt,
            global: Scope::global(limiter, config),
            key_challenge: crate::guard::key_challenge(&key_header),
            key_header,
        })
    }
}

/// The running API management of one gateway node.
pub struct Management {
    live: ArcSwap<Live>,
    pub(crate) store: SqlStore,
    /// Hashes presented keys (HMAC keyed once with the server secret).
    pub(crate) key_hasher: KeyHasher,
    /// The store, Redis and secret this node runs with (a reload cannot change them).
    started: ManagementConfig,
    /// How often the cache polls the store (`cache_refresh_ms`; reloadable).
    refresh_every_ms: AtomicU64,
    index: ArcSwap<Index>,
    refreshing: tokio::sync::Mutex<()>,
    cache: CacheCounters,
    pub(crate) limiter: Limiter,
    pub(crate) calllog: CallLogWriter,
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
        let limiter = Limiter::new(redis);
        let live = Live::build(config, &limiter, None)?;
        let snapshot = store.snapshot().await.map_err(StartError::Store)?;
        let calllog = CallLogWriter::start(
            store.clone(),
            node.clone(),
            config.call_log_buffer,
            Duration::from_millis(config.flush_interval_ms),
            Duration::from_secs(u64::from(config.retention_days) * 86_400),
        );
        let m = Arc::new(Management {
            live: ArcSwap::from_pointee(live),
            key_hasher: KeyHasher::new(config.secret.as_bytes()),
            started: config.clone(),
            refresh_every_ms: AtomicU64::new(config.cache_refresh_ms),
            store,
            index: ArcSwap::from_pointee(Index::build(snapshot, &limiter)),
            refreshing: tokio::sync::Mutex::new(()),
            cache: CacheCounters::default(),
            limiter,
            calllog,
            node,
        });
        let listener = listen(&m.store, &m.node).await;
        m.cache
            .listening
            .store(listener.is_some(), Ordering::Relaxed);
        tokio::spawn(refresh_loop(Arc::downgrade(&m), m.store.clone(), listener));
        Ok(m)
    }

    /// The `[management]` config in force (the last reload's).
    pub fn config(&self) -> ManagementConfig {
        self.live.load().config.clone()
    }

    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Take a reloaded `[management]` config: everything but `store`, `redis` and `secret`
    /// (those are logged and keep their running values until a restart). The returned live
    /// settings are also what the admin API uses from now on.
    pub(crate) fn reconfigure(&self, config: &ManagementConfig) -> Result<Arc<Live>, String> {
        let old = self.live.load_full();
        let same_jwt = old.config.jwt == config.jwt;
        let live = Live::build(config, &self.limiter, same_jwt.then(|| old.jwt.clone()))
            .map_err(|e| e.to_string())?;
        for field in restart_only(&self.started, config) {
            tracing::warn!(
                "management.{field} changed: it takes effect on restart only; the running value stays"
            );
        }
        self.calllog.reconfigure(
            config.call_log_buffer,
            Duration::from_millis(config.flush_interval_ms),
            Duration::from_secs(u64::from(config.retention_days) * 86_400),
        );
        self.refresh_every_ms
            .store(config.cache_refresh_ms, Ordering::Relaxed);
        let live = Arc::new(live);
        self.live.store(live.clone());
        Ok(live)
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
        let index = Index::build(snapshot, &self.limiter);
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

/// The `[management]` keys that differ between the running node and `new` but need a
/// restart to change.
pub(crate) fn restart_only(
    running: &ManagementConfig,
    new: &ManagementConfig,
) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if running.store != new.store {
        fields.push("store");
    }
    if running.redis != new.redis {
        fields.push("redis");
    }
    if running.secret != new.secret {
        fields.push("secret");
    }
    fields
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
async fn refresh_loop(m: Weak<Management>, store: SqlStore, mut listener: Option<ChangeListener>) {
    let mut retry_listen_at = tokio::time::Instant::now() + LISTEN_RETRY;
    loop {
        let Some(every) = m
            .upgrade()
            .map(|m| Duration::from_millis(m.refresh_every_ms.load(Ordering::Relaxed)))
        else {
            return;
        };
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

struct Guard(Arc<Management>, Arc<Live>);

impl RequestGuard for Guard {
    /// The credential header of a managed route (see [`Live::credential_header`]); unmanaged
    /// routes keep every header.
    fn strip_request_header(&self, ctx: &RequestContext) -> Option<&http::HeaderName> {
        self.1.credential_header(ctx.service.as_deref()?)
    }

    fn check<'a>(
        &'a self,
        req: &'a http::request::Parts,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<GuardHeaders, http::Response<Body>>> {
        Box::pin(self.0.check_request(&self.1, req, ctx))
    }

    /// Key auth with node-local limits decides without awaiting: no future to build.
    fn check_now(
        &self,
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> Option<Result<GuardHeaders, http::Response<Body>>> {
        self.0.check_request_now(&self.1, req, ctx)
    }
}

struct Observer(Arc<Management>);

impl CallObserver for Observer {
    fn on_call(&self, record: &CallRecord) {
        if record.extra.tenant.is_none() && record.extra.service.is_none() {
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
        let Some(mcfg) = &config.management else {
            // Dropping the guard would leave every `service` route open to anyone.
            return Err(
                "[management] was removed: turning API management off needs a restart".into(),
            );
        };
        let live = self.0.reconfigure(mcfg)?;
        let mut plugins = Plugins::default();
        plugins.guards.push(Arc::new(Guard(self.0.clone(), live)));
        plugins.observers.push(Arc::new(Observer(self.0.clone())));
        Ok(plugins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_header_is_stripped_unless_forward_key() {
        let limiter = Limiter::new(None);
        let mut cfg = ManagementConfig::default();
        let live = Live::build(&cfg, &limiter, None).expect("live");
        assert_eq!(live.credential_header("pay"), Some(&AUTHORIZATION));
        cfg.key_header = "x-api-key".into();
        let live = Live::build(&cfg, &limiter, None).expect("live");
        assert_eq!(
            live.credential_header("pay@v2").map(|h| h.as_str()),
            Some("x-api-key")
        );
        cfg.forward_key = true;
        let live = Live::build(&cfg, &limiter, None).expect("live");
        assert_eq!(live.credential_header("pay"), None);
    }
}
