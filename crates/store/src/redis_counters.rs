//! Rate-limit and token counters shared by every gateway node through Redis: GCRA in one
//! atomic Lua script (Redis's own clock, so nodes' clocks need not agree), and fixed-window
//! token counters.

use redis::aio::MultiplexedConnection;
use redis::Script;

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

/// Counters in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisCounters {
    conn: MultiplexedConnection,
    gcra: std::sync::Arc<Script>,
    namespace: String,
}

impl RedisCounters {
    /// Connect; `namespace` prefixes every key (so tests and deployments can share a server).
    pub async fn connect(url: &str, namespace: &str) -> Result<RedisCounters, StoreError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(RedisCounters {
            conn,
            gcra: std::sync::Arc::new(Script::new(GCRA)),
            namespace: namespace.to_string(),
        })
    }

    /// Take one request from the bucket `key`: `limit` requests per `window_ms`, burst `limit`.
    pub async fn gcra(
        &self,
        key: &str,
        limit: u32,
        window_ms: u64,
    ) -> Result<GcraDecision, StoreError> {
        let interval_us = (window_ms * 1000 / u64::from(limit.max(1))).max(1);
        let mut conn = self.conn.clone();
        let (allowed, retry_us, remaining, reset_us): (i64, i64, i64, i64) = self
            .gcra
            .key(format!("{}:rl:{key}", self.namespace))
            .arg(interval_us)
            .arg(limit)
            .invoke_async(&mut conn)
            .await?;
        Ok(GcraDecision {
            allowed: allowed == 1,
            retry_after_ms: (retry_us.max(0) as u64).div_ceil(1000),
            remaining: remaining.max(0) as u64,
            reset_ms: (reset_us.max(0) as u64).div_ceil(1000),
        })
    }

    /// Add `tokens` to the window counter `key` (expires after two windows); returns the total.
    pub async fn add_tokens(
        &self,
        key: &str,
        window_start_ms: i64,
        window_ms: i64,
        tokens: u64,
    ) -> Result<u64, StoreError> {
        let full = format!("{}:tok:{key}:{window_start_ms}", self.namespace);
        let mut conn = self.conn.clone();
        let (total, _): (i64, i64) = redis::pipe()
            .atomic()
            .incr(&full, tokens)
            .pexpire(&full, window_ms * 2)
            .query_async(&mut conn)
            .await?;
        Ok(total.max(0) as u64)
    }

    /// Tokens counted in the window `key` so far.
    pub async fn tokens(&self, key: &str, window_start_ms: i64) -> Result<u64, StoreError> {
        let full = format!("{}:tok:{key}:{window_start_ms}", self.namespace);
        let mut conn = self.conn.clone();
        let v: Option<i64> = redis::cmd("GET").arg(&full).query_async(&mut conn).await?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }
}
