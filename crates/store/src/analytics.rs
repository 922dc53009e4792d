//! Analytics over the call log: calls, error rate and latency percentiles per time bucket; top
//! consumers, services and routes; resets by class; tokens and cost by consumer and model.
//! Computed in Rust from the rows of the window, so both SQL dialects give the same answer.
//!
//! Consumer names are unique only within a tenant: stats of one tenant name consumers bare
//! (`c1`), stats of every tenant (`tenant: None`) group and name them `tenant/consumer`
//! (`acme/c1`, `beta/c1`), in `top_consumers` and in `usage`.
//!
//! The time buckets cover the whole window, empty ones included: from the bucket holding
//! `since_ms` (rounded down to a multiple of the width) to the one holding the end of the
//! window (now), at most [`MAX_BUCKETS`] of them ([`StatsQuery::check`]). An empty bucket has
//! zero calls and errors and `null` percentiles.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// The most time buckets one answer holds (e.g. 7d at 1m is 10 081; 1h at 1s is 3 601).
pub const MAX_BUCKETS: i64 = 20_000;

/// Which calls to analyse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsQuery {
    /// Calls at or after this time (ms since the epoch).
    pub since_ms: i64,
    /// Only this tenant's calls (`None`: all tenants; super admins only).
    pub tenant: Option<String>,
    /// Width of a time bucket in ms.
    pub bucket_ms: i64,
    /// How many entries the top lists hold.
    pub top: usize,
}

/// The start of the bucket of width `bucket_ms` holding `ts_ms`.
fn bucket_start(ts_ms: i64, bucket_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(bucket_ms)
}

/// `ms` as the shortest whole `d` / `h` / `m` / `s` duration (else in ms).
fn duration_text(ms: i64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl StatsQuery {
    /// How many time buckets the window from `since_ms` to `until_ms` takes.
    pub fn bucket_count(&self, until_ms: i64) -> i64 {
        let width = self.bucket_ms.max(1);
        let first = bucket_start(self.since_ms, width);
        let last = bucket_start(until_ms.max(self.since_ms), width);
        (last - first) / width + 1
    }

    /// Refuse a window that would make more than [`MAX_BUCKETS`] buckets up to `until_ms`
    /// (the field is `bucket`; the message names the narrowest width that fits).
    pub fn check(&self, until_ms: i64) -> Result<(), StoreError> {
        let n = self.bucket_count(until_ms);
        if n <= MAX_BUCKETS {
            return Ok(());
        }
        // The window to the second (`since` is relative to a moment a little earlier).
        let span = (until_ms.saturating_sub(self.since_ms).max(0) + 500) / 1000 * 1000;
        // The narrowest whole-second width that fits (alignment can add a bucket: verify).
        let mut secs = (span / (MAX_BUCKETS - 1) / 1000).max(1);
        while (StatsQuery {
            bucket_ms: secs * 1000,
            ..self.clone()
        })
        .bucket_count(until_ms)
            > MAX_BUCKETS
        {
            secs += 1;
        }
        Err(StoreError::Invalid {
            field: "bucket".into(),
            message: format!(
                "since {} with bucket {} makes {n} time buckets, more than the {MAX_BUCKETS} one answer holds: use a bucket of at least {} or a shorter since",
                duration_text(span),
                duration_text(self.bucket_ms),
                duration_text(secs * 1000),
            ),
        })
    }
}

/// The columns analytics reads from one stored call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    pub ts_ms: i64,
    pub node: String,
    pub tenant: Option<String>,
    pub consumer: Option<String>,
    pub service: Option<String>,
    pub route: String,
    pub status: u16,
    pub reset_class: Option<String>,
    pub total_ms: f64,
    pub model: Option<String>,
    pub tokens: u64,
    pub cost_usd: f64,
}

impl CallRow {
    /// An error is a 5xx, no status at all, or a classified reset.
    pub fn is_error(&self) -> bool {
        self.status >= 500 || self.status == 0 || self.reset_class.is_some()
    }
}

/// One time bucket; the percentiles are `None` (JSON `null`) when it holds no calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub start_ms: i64,
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One entry of a top list (a consumer is `tenant/consumer` in stats of every tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopEntry {
    pub name: String,
    pub calls: u64,
}

/// Tokens and cost of one consumer on one model (`consumer` is `tenant/consumer` in stats of
/// every tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEntry {
    pub consumer: String,
    pub model: String,
    pub calls: u64,
    pub tokens: u64,
    pub cost_usd: f64,
}

/// The answer to a [`StatsQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analytics {
    pub since_ms: i64,
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub buckets: Vec<Bucket>,
    pub top_consumers: Vec<TopEntry>,
    pub top_services: Vec<TopEntry>,
    pub top_routes: Vec<TopEntry>,
    pub resets_by_class: BTreeMap<String, u64>,
    pub usage: Vec<UsageEntry>,
    /// Calls per gateway node (shows that several nodes feed one log).
    pub calls_by_node: BTreeMap<String, u64>,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn top(counts: HashMap<String, u64>, n: usize) -> Vec<TopEntry> {
    let mut v: Vec<TopEntry> = counts
        .into_iter()
        .map(|(name, calls)| TopEntry { name, calls })
        .collect();
    v.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.name.cmp(&b.name)));
    v.truncate(n);
    v
}

fn rate(errors: u64, calls: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        errors as f64 / calls as f64
    }
}

/// A consumer as the stats name it: bare within one tenant, `tenant/consumer` across tenants
/// (`-` for calls without a consumer).
fn consumer_name(all_tenants: bool, tenant: Option<&str>, consumer: Option<&str>) -> String {
    match (consumer, all_tenants) {
        (None, _) => "-".into(),
        (Some(c), false) => c.to_string(),
        (Some(c), true) => format!("{}/{c}", tenant.unwrap_or("-")),
    }
}

/// Compute analytics over `rows`, the window ending now.
pub fn analyse(q: &StatsQuery, rows: &[CallRow]) -> Analytics {
    analyse_until(q, rows, crate::now_ms())
}

/// [`analyse`] with the window ending at `until_ms` (or at the newest row, if later). Every
/// bucket from `since_ms` to there is in the answer, empty ones too; should the window hold
/// more than [`MAX_BUCKETS`] (the API refuses such a query first), the newest are kept.
pub fn analyse_until(q: &StatsQuery, rows: &[CallRow], until_ms: i64) -> Analytics {
    let bucket_ms = q.bucket_ms.max(1);
    let all_tenants = q.tenant.is_none();
    let mut buckets: BTreeMap<i64, (u64, Vec<f64>)> = BTreeMap::new();
    let mut all = Vec::with_capacity(rows.len());
    // Consumers by (tenant, consumer) across tenants, by consumer within one: the name
    // `tenant/consumer` is that pair (tenant names cannot hold `/`).
    let (mut consumers, mut services, mut routes) =
        (HashMap::new(), HashMap::new(), HashMap::new());
    let mut resets = BTreeMap::new();
    let mut usage: BTreeMap<(String, String), (u64, u64, f64)> = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    let mut errors = 0;
    for r in rows {
        let b = buckets.entry(bucket_start(r.ts_ms, bucket_ms)).or_default();
        b.1.push(r.total_ms);
        if r.is_error() {
            b.0 += 1;
            errors += 1;
        }
        all.push(r.total_ms);
        let consumer = consumer_name(all_tenants, r.tenant.as_deref(), r.consumer.as_deref());
        *consumers.entry(consumer.clone()).or_insert(0) += 1;
        *services
            .entry(r.service.clone().unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
        *routes.entry(r.route.clone()).or_insert(0) += 1;
        *nodes.entry(r.node.clone()).or_insert(0) += 1;
        if let Some(class) = &r.reset_class {
            *resets.entry(class.clone()).or_insert(0) += 1;
        }
        if let Some(model) = &r.model {
            let u = usage.entry((consumer, model.clone())).or_default();
            u.0 += 1;
            u.1 += r.tokens;
            u.2 += r.cost_usd;
        }
    }
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let all = sorted(all);
    // Every bucket of the window, empty ones included (bounded by MAX_BUCKETS).
    let newest = rows.iter().map(|r| r.ts_ms).max().unwrap_or(i64::MIN);
    let last = bucket_start(until_ms.max(newest).max(q.since_ms), bucket_ms);
    let first = bucket_start(q.since_ms, bucket_ms)
        .max(last.saturating_sub((MAX_BUCKETS - 1).saturating_mul(bucket_ms)));
    let mut filled = Vec::with_capacity(((last - first) / bucket_ms + 1) as usize);
    let mut start = first;
    while start <= last {
        let (errs, lat) = buckets.remove(&start).unwrap_or_default();
        let lat = sorted(lat);
        let p = |pct| (!lat.is_empty()).then(|| percentile(&lat, pct));
        filled.push(Bucket {
            start_ms: start,
            calls: lat.len() as u64,
            errors: errs,
            error_rate: rate(errs, lat.len() as u64),
            p50_ms: p(50.0),
            p95_ms: p(95.0),
            p99_ms: p(99.0),
        });
        start += bucket_ms;
    }
    Analytics {
        since_ms: q.since_ms,
        calls: rows.len() as u64,
        errors,
        error_rate: rate(errors, rows.len() as u64),
        p50_ms: percentile(&all, 50.0),
        p95_ms: percentile(&all, 95.0),
        p99_ms: percentile(&all, 99.0),
        buckets: filled,
        top_consumers: top(consumers, q.top),
        top_services: top(services, q.top),
        top_routes: top(routes, q.top),
        resets_by_class: resets,
        usage: usage
            .into_iter()
            .map(
                |((consumer, model), (calls, tokens, cost_usd))| UsageEntry {
                    consumer,
                    model,
                    calls,
                    tokens,
                    cost_usd,
                },
            )
            .collect(),
        calls_by_node: nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: i64, ms: f64, status: u16) -> CallRow {
        CallRow {
            ts_ms: ts,
            node: "n1".into(),
            tenant: Some("acme".into()),
            consumer: Some("c1".into()),
            service: Some("s".into()),
            route: "r".into(),
            status,
            reset_class: None,
            total_ms: ms,
            model: None,
            tokens: 0,
            cost_usd: 0.0,
        }
    }

    #[test]
    fn percentiles_and_buckets() {
        let rows: Vec<CallRow> = (1..=100)
            .map(|i| {
                row(
                    if i <= 50 { 0 } else { 60_000 },
                    i as f64,
                    if i % 10 == 0 { 502 } else { 200 },
                )
            })
            .collect();
        let q = StatsQuery {
            since_ms: 0,
            tenant: None,
            bucket_ms: 60_000,
            top: 5,
        };
        let a = analyse_until(&q, &rows, 60_000);
        assert_eq!(a.calls, 100);
        assert_eq!(a.errors, 10);
        assert_eq!(a.p50_ms, 50.0);
        assert_eq!(a.p99_ms, 99.0);
        assert_eq!(a.buckets.len(), 2);
        assert_eq!(a.buckets[1].p50_ms, Some(75.0));
    }

    fn query(tenant: Option<&str>, since_ms: i64, bucket_ms: i64) -> StatsQuery {
        StatsQuery {
            since_ms,
            tenant: tenant.map(str::to_string),
            bucket_ms,
            top: 10,
        }
    }

    #[test]
    fn consumers_of_all_tenants_are_tenant_slash_consumer() {
        let call = |tenant: &str, consumer: Option<&str>, model: Option<&str>| CallRow {
            tenant: Some(tenant.into()),
            consumer: consumer.map(str::to_string),
            model: model.map(str::to_string),
            tokens: 10,
            cost_usd: 0.5,
            ..row(1000, 1.0, 200)
        };
        // c1 of acme and c1 of beta are two consumers.
        let rows = vec![
            call("acme", Some("c1"), Some("smart")),
            call("acme", Some("c1"), Some("smart")),
            call("acme", Some("c1"), None),
            call("beta", Some("c1"), Some("smart")),
            call("beta", None, None),
        ];
        let a = analyse_until(&query(None, 0, 60_000), &rows, 1000);
        let top: Vec<(&str, u64)> = a
            .top_consumers
            .iter()
            .map(|e| (e.name.as_str(), e.calls))
            .collect();
        assert_eq!(top, [("acme/c1", 3), ("-", 1), ("beta/c1", 1)]);
        let usage: Vec<(&str, u64, u64, f64)> = a
            .usage
            .iter()
            .map(|u| (u.consumer.as_str(), u.calls, u.tokens, u.cost_usd))
            .collect();
        assert_eq!(usage, [("acme/c1", 2, 20, 1.0), ("beta/c1", 1, 10, 0.5)]);
        assert!(a.usage.iter().all(|u| u.model == "smart"));

        // One tenant's stats keep bare names.
        let a = analyse_until(&query(Some("acme"), 0, 60_000), &rows[..3], 1000);
        assert_eq!(a.top_consumers[0].name, "c1");
        assert_eq!(a.usage[0].consumer, "c1");
    }

    #[test]
    fn every_bucket_of_the_window_is_there_empty_ones_too() {
        // Window 1 200 ms .. 6 100 ms in 1 s buckets: 1000, 2000, ..., 6000.
        let rows = vec![
            row(1500, 4.0, 200),
            row(1600, 2.0, 502),
            row(4200, 8.0, 200),
        ];
        let a = analyse_until(&query(Some("acme"), 1200, 1000), &rows, 6100);
        let starts: Vec<i64> = a.buckets.iter().map(|b| b.start_ms).collect();
        assert_eq!(starts, [1000, 2000, 3000, 4000, 5000, 6000]);
        let calls: Vec<u64> = a.buckets.iter().map(|b| b.calls).collect();
        assert_eq!(calls, [2, 0, 0, 1, 0, 0]);
        assert_eq!(a.buckets[0].errors, 1);
        assert_eq!(a.buckets[0].error_rate, 0.5);
        assert_eq!(a.buckets[0].p99_ms, Some(4.0));
        let empty = &a.buckets[1];
        assert_eq!((empty.calls, empty.errors, empty.error_rate), (0, 0, 0.0));
        assert_eq!(
            (empty.p50_ms, empty.p95_ms, empty.p99_ms),
            (None, None, None)
        );
        let json = serde_json::to_value(empty).expect("json");
        assert!(json["p50_ms"].is_null(), "{json}");

        // No calls at all: still the whole window.
        let a = analyse_until(&query(None, 0, 1000), &[], 2500);
        assert_eq!(a.buckets.len(), 3);
        assert!(a.buckets.iter().all(|b| b.calls == 0 && b.p50_ms.is_none()));
        // A row past the end (another node's clock) extends the window to it.
        let a = analyse_until(&query(None, 0, 1000), &[row(3100, 1.0, 200)], 1500);
        assert_eq!(a.buckets.len(), 4);
        assert_eq!(a.buckets[3].calls, 1);
    }

    #[test]
    fn the_number_of_buckets_is_bounded() {
        let week = 7 * 86_400_000;
        let q = query(None, 0, 1000);
        assert_eq!(q.bucket_count(week), week / 1000 + 1);
        let err = q.check(week).expect_err("604 801 buckets").to_string();
        assert!(err.contains("invalid bucket"), "{err}");
        assert!(
            err.contains("since 7d with bucket 1s makes 604801 time buckets")
                && err.contains("more than the 20000")
                && err.contains("at least 31s"),
            "{err}"
        );
        // The width it names does fit; one second less does not.
        assert!(query(None, 0, 31_000).check(week).is_ok());
        assert!(query(None, 0, 30_000).check(week).is_err());
        assert!(query(None, 0, 60_000).check(week).is_ok());
        assert!(query(None, 0, 1000).check(3_600_000).is_ok());
        // At the limit exactly.
        assert!(query(None, 0, 1).check(MAX_BUCKETS - 1).is_ok());
        assert!(query(None, 0, 1).check(MAX_BUCKETS).is_err());

        // analyse itself never returns more (the newest buckets are kept).
        let a = analyse_until(&q, &[row(week + 10, 1.0, 200)], week);
        assert_eq!(a.buckets.len() as i64, MAX_BUCKETS);
        assert_eq!(a.buckets.last().map(|b| b.calls), Some(1));
        assert_eq!(a.calls, 1);
    }
}
