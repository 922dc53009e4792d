//! Rate-limit and token counters shared by every gateway node through Redis: GCRA in one
//! atomic Lua script (Redis's own clock, so nodes' clocks need not agree), and fixed-window
//! token counters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};

use crate::error::StoreError;

/// GCRA: KEYS[1] holds the theoretical arrival time (µs). ARGV[1] = emission interval (µs),
/// ARGV[2] = burst (requests). Returns {allowed, retry_after_us, remaining, reset_us}: `remaining`
/// is the burst left after this request, `reset_us` the time until the bucket is full again.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, allow_at - now, 0, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0, math.floor((now - allow_at) / interval), new_tat - now}
";

/// The answer of one GCRA check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraDecision {
    pub allowed: bool,
    /// When refused: how long until the next request would pass, in ms (rounded up).
    pub retry_after_ms: u64,
    /// Requests left in the burst after this one.
    pub remaining: u64,
    /// How long until the bucket is full again, in ms (rounded up).
    pub reset_ms: u64,
}

/// Wait after the first failure (a failed reconnect, or a command with no answer within
/// [`RESPONSE_TIMEOUT`]); doubled per failure up to [`BACKOFF_MAX`]. Meanwhile checks fail at
/// once (callers fall back to local limits).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// The connection and its reconnect state.
struct Link {
    client: redis::Client,
    config: AsyncConnectionConfig,
    state: Mutex<LinkState>,
    /// Held by the one task reconnecting; the others fail at once instead of queueing.
    connecting: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct LinkState {
    conn: Option<MultiplexedConnection>,
    /// Bumped per new connection, so a stale failure does not drop a newer connection.
    epoch: u64,
    /// Failures since Redis last answered (0: up, or a connection just lost to a restart).
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
    last_error: String,
}

impl LinkState {
    /// Count a failure and start its backoff window; returns the window.
    fn failed(&mut self, e: &redis::RedisError) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = BACKOFF_MIN
            .saturating_mul(1u32 << (self.failures - 1).min(16))
            .min(BACKOFF_MAX);
        self.retry_at = Some(tokio::time::Instant::now() + delay);
        self.last_error = e.to_string();
        delay
    }
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        // A panic while holding this lock cannot leave the state inconsistent: take it back.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One connection attempt (bounded by [`CONNECT_TIMEOUT`]); the caller holds `connecting`.
    async fn reconnect(&self) -> Result<(MultiplexedConnection, u64), StoreError> {
        let result = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await;
        let mut st = self.lock();
        match result {
            Ok(conn) => {
                if st.failures > 0 || !st.last_error.is_empty() {
                    tracing::info!("redis: reconnected");
                }
                st.conn = Some(conn.clone());
                st.epoch += 1;
                st.failures = 0;
                st.retry_at = None;
                st.last_error.clear();
                Ok((conn, st.epoch))
            }
            Err(e) => {
                let delay = st.failed(&e);
                tracing::warn!(error = %e, failures = st.failures, retry_in_ms = delay.as_millis() as u64, "redis: reconnect failed");
                Err(e.into())
            }
        }
    }
}

/// Counters in Redis. Cheap to clone. The connection is replaced on the next use after it was
/// lost (a Redis restart, a dropped socket), with backoff while Redis does not answer.
#[derive(Clone)]
pub struct RedisCounters {
    link: Arc<Link>,
    gcra: Arc<Script>,
    namespace: String,
}

/// What a failed command says about the connection.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// No answer within [`RESPONSE_TIMEOUT`]: Redis counts as down (hung, frozen, cut off
    /// without a reset), the connection is dropped and checks back off.
    NoAnswer,
    /// The connection is gone (a restart, a reset): a new one is needed.
    Lost,
    /// An error answered by Redis; the connection is fine.
    Other,
}

/// Whether a failed connection attempt means Redis is not reachable (down, cut off), rather
/// than reachable and refusing us (authentication, protocol).
fn unreachable(e: &redis::RedisError) -> bool {
    e.is_connection_refusal() || e.is_timeout() || e.is_io_error() || e.is_connection_dropped()
}

fn failure(e: &redis::RedisError) -> Failure {
    if e.is_timeout() {
        Failure::NoAnswer
    } else if e.is_connection_dropped() || e.is_connection_refusal() || e.is_unrecoverable_error() {
        Failure::Lost
    } else {
        Failure::Other
    }
}

impl RedisCounters {
    /// Connect; `namespace` prefixes every key (so tests and deployments can share a server).
    ///
    /// A Redis that cannot be reached at all (refused, timed out, no route: an outage) is not
    /// an error: the counters start down, exactly as after losing the connection later (checks
    /// fail at once, so callers use their local limiter, and reconnects back off in the
    /// background), so a node restarted during a Redis outage serves like the nodes that kept
    /// running. A bad URL or a Redis that answers with an error (a wrong password) is an error.
    pub async fn connect(url: &str, namespace: &str) -> Result<RedisCounters, StoreError> {
        let client = redis::Client::open(url)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut state = LinkState::default();
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                state.conn = Some(conn);
                state.epoch = 1;
            }
            Err(e) if unreachable(&e) => {
                let delay = state.failed(&e);
                tracing::warn!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "redis: unreachable at start; rate limits use the local limiter until it answers"
                );
            }
            Err(e) => return Err(e.into()),
        }
        Ok(RedisCounters {
            link: Arc::new(Link {
                client,
                config,
                state: Mutex::new(state),
                connecting: Arc::new(tokio::sync::Mutex::new(())),
            }),
            gcra: Arc::new(Script::new(GCRA)),
            namespace: namespace.to_string(),
        })
    }

    /// The current connection, or a new one (one attempt at a time, none while the last
    /// failure is too recent). The first attempt after a lost connection (a restart) is made
    /// by this check, which then runs on it; while Redis keeps failing, attempts run in the
    /// background and the check fails at once (its caller uses the local limiter).
    async fn conn(&self) -> Result<(MultiplexedConnection, u64), StoreError> {
        let unavailable = |st: &LinkState, why: &str| {
            StoreError::Unavailable(format!("redis is unreachable ({}); {why}", st.last_error))
        };
        {
            let st = self.link.lock();
            if let Some(c) = &st.conn {
                return Ok((c.clone(), st.epoch));
            }
            if let Some(at) = st.retry_at {
                let now = tokio::time::Instant::now();
                if now < at {
                    let ms = (at - now).as_millis().max(1);
                    return Err(unavailable(
                        &st,
                        &format!("next reconnect attempt in {ms} ms"),
                    ));
                }
            }
        }
        let Ok(connecting) = self.link.connecting.clone().try_lock_owned() else {
            return Err(unavailable(&self.link.lock(), "reconnecting"));
        };
        {
            // Another task may have reconnected meanwhile.
            let st = self.link.lock();
            if let Some(c) = &st.conn {
                return Ok((c.clone(), st.epoch));
            }
            if st.failures > 0 {
                let link = self.link.clone();
                tokio::spawn(async move {
                    let _connecting = connecting;
                    let _ = link.reconnect().await;
                });
                return Err(unavailable(&st, "reconnecting"));
            }
        }
        let result = self.link.reconnect().await;
        drop(connecting);
        result
    }

    /// Forget the connection of `epoch` after it was lost: the next use reconnects at once.
    fn forget(&self, epoch: u64, e: &redis::RedisError) {
        let mut st = self.link.lock();
        if st.epoch == epoch && st.conn.is_some() {
            tracing::warn!(error = %e, "redis: connection lost; reconnecting");
            st.conn = None;
            st.last_error = e.to_string();
        }
    }

    /// The connection of `epoch` did not answer in time: drop it and back off, so checks
    /// fail at once (to the local limiter) until a reconnect succeeds.
    fn no_answer(&self, epoch: u64, e: &redis::RedisError) {
        let mut st = self.link.lock();
        if st.epoch == epoch && st.conn.is_some() {
            st.conn = None;
            let delay = st.failed(e);
            tracing::warn!(
                error = %e,
                retry_in_ms = delay.as_millis() as u64,
                "redis: no answer within {} ms; checks use the local limiter until it answers again",
                RESPONSE_TIMEOUT.as_millis()
            );
        }
    }

    /// Note how a command on the connection of `epoch` failed; returns its [`Failure`].
    fn failed(&self, epoch: u64, e: &redis::RedisError) -> Failure {
        let f = failure(e);
        match f {
            Failure::NoAnswer => self.no_answer(epoch, e),
            Failure::Lost => self.forget(epoch, e),
            Failure::Other => {}
        }
        f
    }

    /// Run `op` on the connection. On a lost connection it is run once more on a new one if
    /// `retry` (checks whose second run cannot let more through: at worst a GCRA retry after
    /// a lost answer takes one more token from the bucket). A command without an answer is
    /// not run again: Redis counts as down (see [`Failure::NoAnswer`]).
    async fn run<T, F, Fut>(&self, retry: bool, op: F) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (conn, epoch) = self.conn().await?;
        match op(conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if self.failed(epoch, &e) != Failure::Lost || !retry {
                    return Err(e.into());
                }
                let (conn, epoch) = self.conn().await?;
                op(conn).await.map_err(|e| {
                    self.failed(epoch, &e);
                    e.into()
                })
            }
        }
    }

    /// Take one request from the bucket `key`: `limit` requests per `window_ms`, burst `limit`.
    pub async fn gcra(
        &self,
        key: &str,
        limit: u32,
        window_ms: u64,
    ) -> Result<GcraDecision, StoreError> {
        let interval_us = (window_ms * 1000 / u64::from(limit.max(1))).max(1);
        let full = format!("{}:rl:{key}", self.namespace);
        let (allowed, retry_us, remaining, reset_us): (i64, i64, i64, i64) = self
            .run(true, |mut conn| {
                let gcra = self.gcra.clone();
                let full = full.clone();
                async move {
                    gcra.key(full)
                        .arg(interval_us)
                        .arg(limit)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(GcraDecision {
            allowed: allowed == 1,
            retry_after_ms: (retry_us.max(0) as u64).div_ceil(1000),
            remaining: remaining.max(0) as u64,
            reset_ms: (reset_us.max(0) as u64).div_ceil(1000),
        })
    }

    /// Add `tokens` to the window counter `key` (expires after two windows); returns the total.
    /// Not run twice after a lost connection (the tokens would count twice).
    pub async fn add_tokens(
        &self,
        key: &str,
        window_start_ms: i64,
        window_ms: i64,
        tokens: u64,
    ) -> Result<u64, StoreError> {
        let full = format!("{}:tok:{key}:{window_start_ms}", self.namespace);
        let (total, _): (i64, i64) = self
            .run(false, |mut conn| {
                let pipe = redis::pipe()
                    .atomic()
                    .incr(&full, tokens)
                    .pexpire(&full, window_ms * 2)
                    .clone();
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        Ok(total.max(0) as u64)
    }

    /// Tokens counted in the window `key` so far.
    pub async fn tokens(&self, key: &str, window_start_ms: i64) -> Result<u64, StoreError> {
        let full = format!("{}:tok:{key}:{window_start_ms}", self.namespace);
        let v: Option<i64> = self
            .run(true, |mut conn| {
                let cmd = redis::cmd("GET").arg(&full).clone();
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }
}
