//! What the data plane reports about every call: the JSON access log (one line per call) and
//! Prometheus metrics (request counts, latency histograms per route and target, reset classes).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use holdfast_core::config::AccessLog;
use holdfast_core::{CallRecord, ResetClass};
use metrics::{counter, histogram, Counter, Histogram};

use crate::access_log::AccessLogWriter;

/// The built-in observers (they outlive reloads).
pub struct Observers {
    /// The access-log writer, started when the log is first turned on.
    writer: OnceLock<AccessLogWriter>,
    /// The access log is on: finished calls are logged.
    on: AtomicBool,
}

/// The access log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("server.access_log: cannot open `{path}` for appending: {source} (fix: give a writable file path, or \"stdout\" or \"off\")")]
pub struct AccessLogError {
    path: String,
    source: std::io::Error,
}

/// Open `log`'s destination for appending (`None`: the log is off).
fn open_sink(log: &AccessLog) -> Result<Option<Box<dyn std::io::Write + Send>>, AccessLogError> {
    Ok(match log {
        AccessLog::Off => None,
        AccessLog::Stdout => Some(Box::new(std::io::stdout())),
        AccessLog::File(path) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| AccessLogError {
                    path: path.clone(),
                    source,
                })?,
        )),
    })
}

impl Observers {
    /// Start the access-log writer thread (if the log is on).
    pub fn new(log: &AccessLog) -> Result<Observers, AccessLogError> {
        let observers = Observers {
            writer: OnceLock::new(),
            on: AtomicBool::new(false),
        };
        observers.reopen(log)?;
        Ok(observers)
    }

    /// A reload: open `log`'s destination again (a new path, or the same one after the file
    /// was moved away by log rotation) and write every later line there; or turn the log on
    /// or off. Lines queued before go to the old destination. On a failure the log goes on
    /// where it was.
    pub fn reopen(&self, log: &AccessLog) -> Result<(), AccessLogError> {
        match open_sink(log)? {
            Some(sink) => {
                match self.writer.get() {
                    Some(writer) => writer.replace_sink(sink),
                    None => {
                        let writer =
                            AccessLogWriter::start(sink).map_err(|source| AccessLogError {
                                path: "(the writer thread)".into(),
                                source,
                            })?;
                        // Reloads are serial: nothing else sets it.
                        let _ = self.writer.set(writer);
                    }
                }
                self.on.store(true, Ordering::Release);
            }
            None => {
                self.on.store(false, Ordering::Release);
                if let Some(writer) = self.writer.get() {
                    // What is queued still goes out; the thread then idles.
                    writer.replace_sink(Box::new(std::io::sink()));
                }
            }
        }
        Ok(())
    }

    /// True when finished calls must be turned into a [`CallRecord`] for the access log.
    pub fn logs(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Write one finished call to the access log (if it is on). Never blocks on I/O.
    pub fn log(&self, record: &CallRecord) {
        thread_local! {
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        if !self.logs() {
            return;
        }
        if let Some(log) = self.writer.get() {
            LINE.with_borrow_mut(|line| {
                line.clear();
                if serde_json::to_writer(&mut *line, record).is_ok() {
                    log.push(line);
                }
            });
        }
    }

    /// Write out every queued access-log line and stop the writer (at the end of a drain).
    pub fn close(&self) {
        if let Some(log) = self.writer.get() {
            log.close();
        }
    }
}

/// The metric handles of one route, resolved once per config (a per-request lookup of
/// labelled metrics costs more than the rest of the bookkeeping together).
pub struct RouteMetrics {
    route: Arc<str>,
    /// Request counters by status, `status - 100` for 100..=599, created on first use.
    by_status: Box<[OnceLock<Counter>]>,
    duration: Histogram,
    /// Per target of the route's upstream pool, by target index.
    targets: Vec<(Histogram, Counter)>,
}

impl RouteMetrics {
    /// Handles for `route`, whose upstream pool (if any) has `targets` (authorities).
    pub fn new(route: &str, targets: &[&str]) -> RouteMetrics {
        let name: Arc<str> = Arc::from(route);
        let label = name.to_string();
        RouteMetrics {
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
            duration: histogram!("holdfast_request_duration_seconds", "route" => label.clone()),
            targets: targets
                .iter()
                .map(|t| {
                    (
                        histogram!("holdfast_upstream_duration_seconds", "route" => label.clone(), "target" => t.to_string()),
                        counter!("holdfast_upstream_requests_total", "route" => label.clone(), "target" => t.to_string()),
                    )
                })
                .collect(),
            route: name,
        }
    }

    /// Count one finished call.
    pub fn count(&self, call: &CallCounts<'_>) {
        match call
            .status
            .checked_sub(100)
            .and_then(|i| self.by_status.get(usize::from(i)))
        {
            Some(slot) => slot
                .get_or_init(|| {
                    counter!("holdfast_requests_total", "route" => self.route.to_string(), "status" => call.status.to_string())
                })
                .increment(1),
            None => counter!("holdfast_requests_total", "route" => self.route.to_string(), "status" => call.status.to_string()).increment(1),
        }
        self.duration.record(call.total_ms / 1000.0);
        if let (Some(i), Some(upstream_ms)) = (call.target, call.upstream_ms) {
            if let Some((duration, requests)) = self.targets.get(i) {
                duration.record(upstream_ms / 1000.0);
                requests.increment(1);
            }
        }
        count_failures(&self.route, call.class, call.retried);
    }
}

/// What the metrics of one finished call need.
pub struct CallCounts<'a> {
    pub status: u16,
    pub total_ms: f64,
    /// Target index in the route's upstream pool.
    pub target: Option<usize>,
    pub upstream_ms: Option<f64>,
    pub class: Option<ResetClass>,
    /// Classes of failed attempts that a retry recovered from.
    pub retried: &'a [ResetClass],
}

/// Count a call that matched no route (404, or refused before routing).
pub fn count_unrouted(status: u16, total_ms: f64, class: Option<ResetClass>) {
    counter!("holdfast_requests_total", "route" => "", "status" => status.to_string()).increment(1);
    histogram!("holdfast_request_duration_seconds", "route" => "").record(total_ms / 1000.0);
    count_failures("", class, &[]);
}

fn count_failures(route: &str, class: Option<ResetClass>, retried: &[ResetClass]) {
    if let Some(class) = class {
        counter!("holdfast_failed_exchanges_total", "route" => route.to_string(), "class" => class.as_str()).increment(1);
    }
    for class in retried {
        counter!("holdfast_retried_exchanges_total", "route" => route.to_string(), "class" => class.as_str()).increment(1);
    }
}

/// A per-target gauge: name, help text, and its value for a target.
type TargetGauge = (
    &'static str,
    &'static str,
    fn(&crate::balance::TargetState) -> u64,
);

/// The health of every upstream target, as Prometheus gauges read when `/metrics` is scraped
/// (ejections end by time, so there is no event to count them on):
/// `holdfast_upstream_target_healthy` (takes traffic: passes active checks and is not
/// ejected), `holdfast_upstream_target_check_passing` (the active health check's verdict; 1
/// without checks), `holdfast_upstream_target_ejected` (ejected by outlier detection now)
/// and `holdfast_upstream_target_ejections` (consecutive ejections so far).
pub fn target_health_page<'a>(
    upstreams: impl IntoIterator<Item = (&'a str, &'a crate::balance::Balancer)>,
) -> String {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering;
    let mut pools: Vec<_> = upstreams.into_iter().collect();
    pools.sort_by(|a, b| a.0.cmp(b.0));
    let gauges: [TargetGauge; 4] = [
        (
            "holdfast_upstream_target_healthy",
            "1 when the target takes traffic: it passes its active health check and is not ejected",
            |t| u64::from(t.healthy()),
        ),
        (
            "holdfast_upstream_target_check_passing",
            "1 when the active health check passes (always 1 without active checks)",
            |t| u64::from(t.active_healthy.load(Ordering::Relaxed)),
        ),
        (
            "holdfast_upstream_target_ejected",
            "1 while passive outlier detection keeps the target out",
            |t| u64::from(t.is_ejected()),
        ),
        (
            "holdfast_upstream_target_ejections",
            "consecutive ejections of the target (each lasts twice as long as the one before)",
            |t| u64::from(t.ejection_count()),
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (pool, balancer) in &pools {
            for t in &balancer.targets {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",target=\"{}\"}} {}",
                    crate::histograms::escape(pool),
                    crate::histograms::escape(&t.authority),
                    value(t)
                );
            }
        }
    }
    out
}
