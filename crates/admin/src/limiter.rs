//! Rate limits (GCRA) and token budgets, local or shared. Locally, each bucket is a `governor`
//! direct limiter; with Redis configured, every check runs the atomic GCRA script in Redis so
//! N requests per window hold across all nodes. If Redis fails, the local limiter answers
//! (logged), so an outage degrades to per-node limits rather than refusing traffic.
//!
//! Buckets are resolved when the index is built ([`Limiter::bucket`]), not per request: a
//! request holds its scopes' [`Bucket`]s directly and checks them without any map lookup or
//! allocation. The registry keeps a bucket's state across index rebuilds as long as its scope,
//! limit and window stay the same.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use holdfast_store::RedisCounters;
use http::HeaderValue;

/// A refusal: which limit, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// E.g. `key hf_1234abcd: 10 requests per minute`.
    pub what: String,
    pub limit: u64,
    pub window_s: u64,
    /// Seconds until one more request would pass (`Retry-After`).
    pub retry_after_s: u64,
    /// Seconds until the bucket is full again (`RateLimit-Reset`: the same meaning as on the
    /// requests that pass).
    pub reset_s: u64,
}

/// The state of one bucket after a request passed it (for the `RateLimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub limit: u64,
    /// Requests left in the bucket after this one.
    pub remaining: u64,
    /// Seconds until the bucket is full again (rounded up).
    pub reset_s: u64,
}

impl Allowance {
    /// Whether `self` is closer to refusing than `other`: fewer requests left, then the
    /// smaller share of the limit, then the longer wait.
    pub fn tighter_than(&self, other: &Allowance) -> bool {
        // remaining / limit, compared without division.
        let mine = u128::from(self.remaining) * u128::from(other.limit.max(1));
        let theirs = u128::from(other.remaining) * u128::from(self.limit.max(1));
        (self.remaining, mine, std::cmp::Reverse(self.reset_s))
            < (other.remaining, theirs, std::cmp::Reverse(other.reset_s))
    }
}

/// Token windows: per minute, per day, per month (30 days).
pub const TOKEN_WINDOWS: [(&str, i64); 3] = [
    ("minute", 60_000),
    ("day", 86_400_000),
    ("month", 30 * 86_400_000),
];

type LocalLimiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One GCRA bucket of a scope: `limit` requests per `window_ms`, burst `limit`.
pub struct Bucket {
    pub limit: u32,
    pub window_ms: u64,
    /// `scope:window_ms`: the bucket's name in Redis.
    key: Box<str>,
    /// `limit;w=window_s`, the `RateLimit-Policy` value.
    pub policy: HeaderValue,
    /// `limit`, the `RateLimit-Limit` value.
    pub limit_value: HeaderValue,
    local: Arc<LocalLimiter>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("key", &self.key)
            .field("limit", &self.limit)
            .finish()
    }
}

/// The period of one request in a bucket of `limit` per `window_ms`.
fn period(limit: NonZeroU32, window_ms: u64) -> Duration {
    (Duration::from_millis(window_ms) / limit.get()).max(Duration::from_nanos(1))
}

impl Bucket {
    fn check_local(&self) -> Result<Allowance, u64> {
        match self.local.check() {
            Ok(state) => {
                let remaining = u64::from(state.remaining_burst_capacity());
                // Full again once every used request's period has passed.
                let used = u64::from(self.limit).saturating_sub(remaining);
                let per = NonZeroU32::new(self.limit)
                    .map(|n| period(n, self.window_ms))
                    .unwrap_or_default();
                let reset_ms = (per.as_micros() as u64 * used).div_ceil(1000);
                Ok(Allowance {
                    limit: u64::from(self.limit),
                    remaining,
                    reset_s: reset_ms.div_ceil(1000),
                })
            }
            // The limiter's own clock: building a `DefaultClock` calibrates a new one (CPUID),
            // which cost more than the rest of the request path together.
            Err(not_until) => Err(not_until
                .wait_time_from(self.local.clock().now())
                .as_millis() as u64),
        }
    }
}

fn refusal(bucket: &Bucket, label: &str, retry_ms: u64) -> Refusal {
    let unit = if bucket.window_ms == 1000 {
        "second"
    } else {
        "minute"
    };
    // Empty now: full again once the next request's wait and every other period have passed.
    let per = NonZeroU32::new(bucket.limit)
        .map(|n| period(n, bucket.window_ms))
        .unwrap_or_default();
    let rest_ms = (per.as_micros() as u64 * u64::from(bucket.limit.saturating_sub(1))) / 1000;
    let retry_after_s = retry_ms.div_ceil(1000).max(1);
    Refusal {
        what: format!(
            "{label}: {} request{} per {unit}",
            bucket.limit,
            if bucket.limit == 1 { "" } else { "s" }
        ),
        limit: u64::from(bucket.limit),
        window_s: bucket.window_ms / 1000,
        retry_after_s,
        reset_s: (retry_ms + rest_ms).div_ceil(1000).max(retry_after_s),
    }
}

type Registry = HashMap<(Box<str>, u32, u64), Arc<LocalLimiter>>;

/// Checks request rates and counts tokens.
pub struct Limiter {
    redis: Option<RedisCounters>,
    /// (scope, limit, window ms) -> the local limiter; used when the index is built.
    registry: Mutex<Registry>,
    tokens: Mutex<HashMap<(String, i64), u64>>,
}

impl Limiter {
    pub fn new(redis: Option<RedisCounters>) -> Limiter {
        Limiter {
            redis,
            registry: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket of `limit` requests per `window_ms` of `scope`, sharing its state with the
    /// bucket of the same scope, limit and window in earlier indexes. `None` for a zero limit
    /// (refused by validation; never built).
    pub fn bucket(&self, scope: &str, limit: u32, window_ms: u64) -> Option<Bucket> {
        let n = NonZeroU32::new(limit)?;
        let make = || {
            let quota = Quota::with_period(period(n, window_ms))
                .unwrap_or_else(|| Quota::per_second(n))
                .allow_burst(n);
            Arc::new(RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>())
        };
        let local = match self.registry.lock() {
            Ok(mut reg) => reg
                .entry((scope.into(), limit, window_ms))
                .or_insert_with(make)
                .clone(),
            Err(_) => make(),
        };
        let policy = HeaderValue::from_str(&format!("{limit};w={}", window_ms / 1000))
            .unwrap_or(HeaderValue::from_static("0"));
        Some(Bucket {
            limit,
            window_ms,
            limit_value: HeaderValue::from(limit),
            key: format!("{scope}:{window_ms}").into(),
            policy,
            local,
        })
    }

    /// Forget the local buckets no index uses any more (call after an index swap).
    pub fn prune(&self) {
        if let Ok(mut reg) = self.registry.lock() {
            reg.retain(|_, lim| Arc::strong_count(lim) > 1);
        }
    }

    /// Whether limits are shared through Redis (checks then wait on it).
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Take one request from `bucket`; `label` names its scope in a refusal.
    pub async fn check(&self, bucket: &Bucket, label: &str) -> Result<Allowance, Refusal> {
        let Some(redis) = &self.redis else {
            return self.check_local(bucket, label);
        };
        match redis
            .gcra(&bucket.key, bucket.limit, bucket.window_ms)
            .await
        {
            Ok(d) if d.allowed => Ok(Allowance {
                limit: u64::from(bucket.limit),
                remaining: d.remaining,
                reset_s: d.reset_ms.div_ceil(1000),
            }),
            Ok(d) => Err(refusal(bucket, label, d.retry_after_ms)),
            Err(e) => {
                warn_redis(&e, "redis rate limit failed; using the local limiter");
                self.check_local(bucket, label)
            }
        }
    }

    /// Take one request from `bucket`'s node-local limiter.
    pub fn check_local(&self, bucket: &Bucket, label: &str) -> Result<Allowance, Refusal> {
        bucket
            .check_local()
            .map_err(|retry_ms| refusal(bucket, label, retry_ms))
    }

    /// Tokens used by `scope` in the current window of `window_ms`.
    pub async fn tokens_used(&self, scope: &str, window_ms: i64, now_ms: i64) -> u64 {
        let start = now_ms - now_ms.rem_euclid(window_ms);
        if let Some(redis) = &self.redis {
            match redis.tokens(&format!("{scope}:{window_ms}"), start).await {
                Ok(n) => return n,
                Err(e) => warn_redis(&e, "redis token counter failed; using local"),
            }
        }
        self.tokens_used_local(scope, window_ms, now_ms)
    }

    /// [`Limiter::tokens_used`] from this node's counters only.
    pub fn tokens_used_local(&self, scope: &str, window_ms: i64, now_ms: i64) -> u64 {
        let start = now_ms - now_ms.rem_euclid(window_ms);
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
                    Err(e) => warn_redis(&e, "redis token counter failed; using local"),
                }
            }
            if let Ok(mut m) = self.tokens.lock() {
                m.retain(|(_, s), _| now_ms - *s < 2 * 30 * 86_400_000);
                *m.entry((key, start)).or_insert(0) += tokens;
            }
        }
    }
}

/// Log a Redis failure at most once per 10 s (a Redis outage fails every request's check;
/// one line per request would flood the log), with the number of failures not logged since.
fn warn_redis(error: &dyn std::fmt::Display, what: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    static QUIET: AtomicU64 = AtomicU64::new(0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let last = LAST_MS.load(Ordering::Relaxed);
    if now_ms.saturating_sub(last) < 10_000
        || LAST_MS
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        QUIET.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = QUIET.swap(0, Ordering::Relaxed);
    tracing::warn!(error = %error, suppressed_since_last = suppressed, "{what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_bucket_counts_down_and_refuses() {
        let limiter = Limiter::new(None);
        let b = limiter.bucket("key:k", 3, 60_000).expect("bucket");
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let a = limiter.check(&b, "key k").await.expect("allowed");
            assert_eq!(a.limit, 3);
            assert!(a.reset_s >= 20 && a.reset_s <= 60, "reset {}", a.reset_s);
            remaining.push(a.remaining);
        }
        assert_eq!(remaining, vec![2, 1, 0]);
        let r = limiter.check(&b, "key k").await.expect_err("refused");
        assert_eq!(r.what, "key k: 3 requests per minute");
        assert!(r.retry_after_s >= 19 && r.retry_after_s <= 20, "{r:?}");
        // RateLimit-Reset means "full again" on a refusal too: the last pass said about 60 s,
        // so the refusal right after says about 60 s, not the 20 s until the next request.
        assert!(r.reset_s >= 59 && r.reset_s <= 60, "{r:?}");
        assert_eq!(b.policy, "3;w=60");
    }

    #[tokio::test]
    async fn buckets_keep_their_state_across_rebuilds() {
        let limiter = Limiter::new(None);
        let first = limiter.bucket("svc:s", 2, 1000).expect("bucket");
        limiter.check(&first, "s").await.expect("allowed");
        let again = limiter.bucket("svc:s", 2, 1000).expect("bucket");
        drop(first);
        limiter.prune();
        let a = limiter.check(&again, "s").await.expect("allowed");
        assert_eq!(a.remaining, 0, "the rebuilt bucket continues the old one");
        // A changed limit is a new bucket.
        let changed = limiter.bucket("svc:s", 5, 1000).expect("bucket");
        assert_eq!(limiter.check(&changed, "s").await.expect("ok").remaining, 4);
        drop(again);
        drop(changed);
        limiter.prune();
        assert_eq!(limiter.registry.lock().expect("lock").len(), 0);
    }

    #[test]
    fn tightest_allowance() {
        let a = |limit, remaining, reset_s| Allowance {
            limit,
            remaining,
            reset_s,
        };
        assert!(a(100, 3, 1).tighter_than(&a(10, 5, 1)));
        assert!(
            a(100, 5, 1).tighter_than(&a(10, 5, 1)),
            "smaller share left"
        );
        assert!(a(10, 5, 9).tighter_than(&a(10, 5, 1)), "longer wait");
        assert!(!a(10, 5, 1).tighter_than(&a(10, 5, 1)));
    }
}
