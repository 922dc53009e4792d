//! Latency histograms with fixed buckets, for `/metrics`.
//!
//! The Prometheus exporter keeps every histogram sample (with a timestamp) until a scrape or an
//! upkeep pass aggregates it: per sample an epoch-protected push and a clock read, and a
//! thread that drains hundreds of thousands of samples a second at full load. The buckets are
//! fixed by the config anyway, so [`BucketRecorder`] wraps the exporter's recorder, takes the
//! histograms itself and counts each sample straight into its bucket: a search over the
//! bounds and two relaxed atomic operations. Counters and gauges go to the exporter as before;
//! [`Histograms::render`] writes the histograms in the same text format, to be appended to
//! the exporter's page.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};

/// One labelled histogram: a count per bucket (not cumulative; the last is `+Inf`) and the
/// sum of the samples.
struct Buckets {
    bounds: Arc<[f64]>,
    counts: Box<[AtomicU64]>,
    /// The sum, as `f64` bits.
    sum: AtomicU64,
}

impl Buckets {
    fn new(bounds: Arc<[f64]>) -> Buckets {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Buckets {
            bounds,
            counts,
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        // The first bucket whose bound is >= value (Prometheus buckets are `le`); NaN lands
        // in `+Inf`.
        let i = if value.is_nan() {
            self.bounds.len()
        } else {
            self.bounds.partition_point(|b| *b < value)
        };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
}

/// Every histogram registered so far, by name and then by label set.
pub struct Histograms {
    bounds: Arc<[f64]>,
    families: Mutex<BTreeMap<String, Family>>,
}

#[derive(Default)]
struct Family {
    help: Option<String>,
    /// Rendered label pairs (`a="x",b="y"`) -> buckets.
    series: BTreeMap<String, Arc<Buckets>>,
}

/// `value` escaped for a label value or a HELP line of the text format.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn label_set(key: &Key) -> String {
    let mut out = String::new();
    for label in key.labels() {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{}=\"{}\"", label.key(), escape(label.value()));
    }
    out
}

impl Histograms {
    /// Histograms with these bucket bounds (ascending; `+Inf` is implied).
    pub fn new(bounds: &[f64]) -> Histograms {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        Histograms {
            bounds: bounds.into(),
            families: Mutex::new(BTreeMap::new()),
        }
    }

    fn register(&self, key: &Key) -> Histogram {
        let Ok(mut families) = self.families.lock() else {
            return Histogram::noop();
        };
        let family = families.entry(key.name().to_string()).or_default();
        let buckets = family
            .series
            .entry(label_set(key))
            .or_insert_with(|| Arc::new(Buckets::new(self.bounds.clone())))
            .clone();
        Histogram::from_arc(buckets)
    }

    fn describe(&self, name: &str, help: &str) {
        if let Ok(mut families) = self.families.lock() {
            families.entry(name.to_string()).or_default().help = Some(help.to_string());
        }
    }

    /// Every histogram in the Prometheus text format: `_bucket` lines (cumulative, `le`),
    /// `_sum` and `_count`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(families) = self.families.lock() else {
            return out;
        };
        for (name, family) in families.iter() {
            if family.series.is_empty() {
                continue;
            }
            if let Some(help) = &family.help {
                let _ = writeln!(out, "# HELP {name} {}", escape(help));
            }
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (labels, buckets) in &family.series {
                let sep = if labels.is_empty() { "" } else { "," };
                let mut total = 0u64;
                for (i, count) in buckets.counts.iter().enumerate() {
                    total += count.load(Ordering::Relaxed);
                    let le = match buckets.bounds.get(i) {
                        Some(b) => b.to_string(),
                        None => "+Inf".to_string(),
                    };
                    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {total}");
                }
                let sum = f64::from_bits(buckets.sum.load(Ordering::Relaxed));
                let braces = |l: &str| {
                    if l.is_empty() {
                        String::new()
                    } else {
                        format!("{{{l}}}")
                    }
                };
                let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
                let _ = writeln!(out, "{name}_count{} {total}", braces(labels));
            }
        }
        out
    }
}

/// A recorder that keeps histograms in [`Histograms`] and passes everything else to `inner`.
pub struct BucketRecorder<R> {
    inner: R,
    histograms: Arc<Histograms>,
}

impl<R> BucketRecorder<R> {
    pub fn new(inner: R, histograms: Arc<Histograms>) -> BucketRecorder<R> {
        BucketRecorder { inner, histograms }
    }
}

impl<R: metrics::Recorder> metrics::Recorder for BucketRecorder<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.histograms.describe(key.as_str(), &description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        self.histograms.register(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Recorder as _;

    fn sample_lines(page: &str, prefix: &str) -> Vec<String> {
        page.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn samples_land_in_cumulative_le_buckets_with_sum_and_count() {
        let h = Arc::new(Histograms::new(&[0.5, 0.1, 1.0]));
        let rec = BucketRecorder::new(metrics::NoopRecorder, h.clone());
        let key = Key::from_parts("lat_seconds", vec![metrics::Label::new("route", "a\"b")]);
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        let hist = rec.register_histogram(&key, &meta);
        for v in [0.05, 0.1, 0.3, 0.7, 2.0, f64::NAN] {
            hist.record(v);
        }
        // The same key again is the same series.
        rec.register_histogram(&key, &meta).record(0.1);
        let page = h.render();
        assert_eq!(
            sample_lines(&page, "lat_seconds_bucket"),
            [
                "lat_seconds_bucket{route=\"a\\\"b\",le=\"0.1\"} 3",
                "lat_seconds_bucket{route=\"a\\\"b\",le=\"0.5\"} 4",
                "lat_seconds_bucket{route=\"a\\\"b\",le=\"1\"} 5",
                "lat_seconds_bucket{route=\"a\\\"b\",le=\"+Inf\"} 7",
            ],
            "{page}"
        );
        assert!(
            page.contains("lat_seconds_count{route=\"a\\\"b\"} 7"),
            "{page}"
        );
        assert!(page.contains("# TYPE lat_seconds histogram"), "{page}");
        // NaN poisons the sum, as it does in Prometheus client libraries.
        assert!(
            page.contains("lat_seconds_sum{route=\"a\\\"b\"} NaN"),
            "{page}"
        );
    }

    #[test]
    fn series_without_labels_and_the_sum_of_finite_samples() {
        let h = Arc::new(Histograms::new(&[1.0]));
        let rec = BucketRecorder::new(metrics::NoopRecorder, h.clone());
        rec.describe_histogram("plain".into(), None, "a \"help\" text".into());
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        let hist = rec.register_histogram(&Key::from_name("plain"), &meta);
        hist.record(0.25);
        hist.record(1.5);
        let page = h.render();
        assert!(page.contains("# HELP plain a \\\"help\\\" text"), "{page}");
        assert!(page.contains("plain_bucket{le=\"1\"} 1\n"), "{page}");
        assert!(page.contains("plain_bucket{le=\"+Inf\"} 2\n"), "{page}");
        assert!(page.contains("plain_sum 1.75\n"), "{page}");
        assert!(page.contains("plain_count 2\n"), "{page}");
    }
}
