//! Analytics over the call log: calls, error rate and latency percentiles per time bucket; top
//! consumers, services and routes; resets by class; tokens and cost by consumer and model.
//! Computed in Rust from the rows of the window, so both SQL dialects give the same answer.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

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

/// The columns analytics reads from one stored call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    pub ts_ms: i64,
    pub node: String,
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

/// One time bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub start_ms: i64,
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// One entry of a top list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopEntry {
    pub name: String,
    pub calls: u64,
}

/// Tokens and cost of one consumer on one model.
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

/// Compute analytics over `rows`.
pub fn analyse(q: &StatsQuery, rows: &[CallRow]) -> Analytics {
    let bucket_ms = q.bucket_ms.max(1);
    let mut buckets: BTreeMap<i64, (u64, Vec<f64>)> = BTreeMap::new();
    let mut all = Vec::with_capacity(rows.len());
    let (mut consumers, mut services, mut routes) =
        (HashMap::new(), HashMap::new(), HashMap::new());
    let mut resets = BTreeMap::new();
    let mut usage: BTreeMap<(String, String), (u64, u64, f64)> = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    let mut errors = 0;
    for r in rows {
        let start = r.ts_ms - r.ts_ms.rem_euclid(bucket_ms);
        let b = buckets.entry(start).or_default();
        b.1.push(r.total_ms);
        if r.is_error() {
            b.0 += 1;
            errors += 1;
        }
        all.push(r.total_ms);
        let consumer = r.consumer.clone().unwrap_or_else(|| "-".into());
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
    Analytics {
        since_ms: q.since_ms,
        calls: rows.len() as u64,
        errors,
        error_rate: rate(errors, rows.len() as u64),
        p50_ms: percentile(&all, 50.0),
        p95_ms: percentile(&all, 95.0),
        p99_ms: percentile(&all, 99.0),
        buckets: buckets
            .into_iter()
            .map(|(start_ms, (errs, lat))| {
                let lat = sorted(lat);
                Bucket {
                    start_ms,
                    calls: lat.len() as u64,
                    errors: errs,
                    error_rate: rate(errs, lat.len() as u64),
                    p50_ms: percentile(&lat, 50.0),
                    p95_ms: percentile(&lat, 95.0),
                    p99_ms: percentile(&lat, 99.0),
                }
            })
            .collect(),
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
        let a = analyse(&q, &rows);
        assert_eq!(a.calls, 100);
        assert_eq!(a.errors, 10);
        assert_eq!(a.p50_ms, 50.0);
        assert_eq!(a.p99_ms, 99.0);
        assert_eq!(a.buckets.len(), 2);
        assert_eq!(a.buckets[1].p50_ms, 75.0);
    }
}
