//! Rate limits (GCRA) and token budgets, local or shared. Locally, each bucket is a `governor`
//! direct limiter; with Redis configured, every check runs the atomic GCRA script in Redis so
//! N requests per window hold across all nodes. If Redis fails, the local limiter answers
//! (logged), so an outage degrades to per-node limits rather than refusing traffic.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use holdfast_store::RedisCounters;

/// A refusal: which limit, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// E.g. `key hf_1234abcd: 10 requests per minute`.
    pub what: String,
    pub limit: u64,
    pub window_s: u64,
    pub retry_after_s: u64,
}

/// Token windows: per minute, per day, per month (30 days).
pub const TOKEN_WINDOWS: [(&str, i64); 3] = [
    ("minute", 60_000),
    ("day", 86_400_000),
    ("month", 30 * 86_400_000),
];

/// One local bucket: (limit, window ms, limiter).
type Bucket = (u32, u64, Arc<DefaultDirectRateLimiter>);

/// Checks request rates and counts tokens.
pub struct Limiter {
    redis: Option<RedisCounters>,
    /// Scope -> its buckets as (limit, window ms, limiter); looked up by `&str`, no allocation.
    local: RwLock<HashMap<String, Vec<Bucket>>>,
    tokens: Mutex<HashMap<(String, i64), u64>>,
}

impl Limiter {
    pub fn new(redis: Option<RedisCounters>) -> Limiter {
        Limiter {
            redis,
            local: RwLock::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn local_check(&self, scope: &str, limit: u32, window_ms: u64) -> Result<(), u64> {
        let Some(n) = NonZeroU32::new(limit) else {
            return Err(window_ms);
        };
        let found = self.local.read().ok().and_then(|map| {
            map.get(scope).and_then(|buckets| {
                buckets
                    .iter()
                    .find(|(l, w, _)| *l == limit && *w == window_ms)
                    .map(|(_, _, lim)| lim.clone())
            })
        });
        let limiter = match found {
            Some(l) => l,
            None => {
                let Ok(mut map) = self.local.write() else {
                    return Ok(());
                };
                let buckets = map.entry(scope.to_string()).or_default();
                match buckets
                    .iter()
                    .find(|(l, w, _)| *l == limit && *w == window_ms)
                {
                    Some((_, _, lim)) => lim.clone(),
                    None => {
                        let period = Duration::from_millis(window_ms) / limit;
                        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                            .unwrap_or_else(|| Quota::per_second(n))
                            .allow_burst(n);
                        let lim = Arc::new(RateLimiter::direct(quota));
                        buckets.push((limit, window_ms, lim.clone()));
                        lim
                    }
                }
            }
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_millis() as u64
        })
    }

    /// Take one request from `scope`'s bucket of `limit` per `window_ms`.
    pub async fn check(
        &self,
        scope: &str,
        label: &str,
        limit: u32,
        window_ms: u64,
    ) -> Result<(), Refusal> {
        let retry_ms = match &self.redis {
            Some(redis) => match redis
                .gcra(&format!("{scope}:{window_ms}"), limit, window_ms)
                .await
            {
                Ok(d) if d.allowed => return Ok(()),
                Ok(d) => d.retry_after_ms,
                Err(e) => {
                    tracing::warn!(error = %e, "redis rate limit failed; using the local limiter");
                    match self.local_check(scope, limit, window_ms) {
                        Ok(()) => return Ok(()),
                        Err(ms) => ms,
                    }
                }
            },
            None => match self.local_check(scope, limit, window_ms) {
                Ok(()) => return Ok(()),
                Err(ms) => ms,
            },
        };
        let unit = if window_ms == 1000 {
            "second"
        } else {
            "minute"
        };
        Err(Refusal {
            what: format!("{label}: {limit} requests per {unit}"),
            limit: u64::from(limit),
            window_s: window_ms / 1000,
            retry_after_s: retry_ms.div_ceil(1000).max(1),
        })
    }

    /// Tokens used by `scope` in the current window of `window_ms`.
    pub async fn tokens_used(&self, scope: &str, window_ms: i64, now_ms: i64) -> u64 {
        let start = now_ms - now_ms.rem_euclid(window_ms);
        if let Some(redis) = &self.redis {
            match redis.tokens(&format!("{scope}:{window_ms}"), start).await {
                Ok(n) => return n,
                Err(e) => tracing::warn!(error = %e, "redis token counter failed; using local"),
            }
        }
        self.tokens
            .lock()
            .ok()
            .and_then(|m| m.get(&(format!("{scope}:{window_ms}"), start)).copied())
            .unwrap_or(0)
    }

    /// Count `tokens` for `scope` in every token window.
    pub async fn add_tokens(&self, scope: &str, tokens: u64, now_ms: i64) {
        for (_, window_ms) in TOKEN_WINDOWS {
            let start = now_ms - now_ms.rem_euclid(window_ms);
            let key = format!("{scope}:{window_ms}");
            if let Some(redis) = &self.redis {
                match redis.add_tokens(&key, start, window_ms, tokens).await {
                    Ok(_) => continue,
                    Err(e) => tracing::warn!(error = %e, "redis token counter failed; using local"),
                }
            }
            if let Ok(mut m) = self.tokens.lock() {
                m.retain(|(_, s), _| now_ms - *s < 2 * 30 * 86_400_000);
                *m.entry((key, start)).or_insert(0) += tokens;
            }
        }
    }
}
