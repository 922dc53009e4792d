//! What the data plane reports about every call: the JSON access log (one line per call) and
//! Prometheus metrics (request counts, latency histograms per route and target, reset classes).

use std::io::Write;
use std::sync::mpsc;
use std::sync::Mutex;

use holdfast_core::config::AccessLog;
use holdfast_core::{CallRecord, ResetClass};
use metrics::{counter, histogram};

/// The built-in observers (they outlive reloads).
pub struct Observers {
    log: Option<Mutex<mpsc::SyncSender<String>>>,
}

/// The access log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {path}: {source}")]
pub struct AccessLogError {
    path: String,
    source: std::io::Error,
}

impl Observers {
    /// Start the access-log writer thread (if the log is on).
    pub fn new(log: &AccessLog) -> Result<Observers, AccessLogError> {
        let sink: Box<dyn Write + Send> = match log {
            AccessLog::Off => return Ok(Observers { log: None }),
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AccessLogError {
                        path: path.clone(),
                        source,
                    })?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel::<String>(65_536);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(sink);
                while let Ok(line) = rx.recv() {
                    let _ = writeln!(out, "{line}");
                    // Flush when the queue is drained, so lines appear promptly.
                    let mut more = rx.try_recv();
                    while let Ok(line) = more {
                        let _ = writeln!(out, "{line}");
                        more = rx.try_recv();
                    }
                    let _ = out.flush();
                }
            })
            .map_err(|source| AccessLogError {
                path: "(thread)".into(),
                source,
            })?;
        Ok(Observers {
            log: Some(Mutex::new(tx)),
        })
    }

    /// Log and count one finished call; `retried` are the classes of failed attempts that a
    /// retry recovered from.
    pub fn record(&self, record: &CallRecord, retried: &[ResetClass]) {
        if let Some(log) = &self.log {
            if let (Ok(line), Ok(tx)) = (serde_json::to_string(record), log.lock()) {
                // Never block the data plane: drop the line if the writer is far behind.
                let _ = tx.try_send(line);
            }
        }
        let route = record.route.clone();
        let status = record.status.to_string();
        counter!("holdfast_requests_total", "route" => route.clone(), "status" => status)
            .increment(1);
        histogram!("holdfast_request_duration_seconds", "route" => route.clone())
            .record(record.total_ms / 1000.0);
        if let (Some(target), Some(upstream_ms)) = (&record.target, record.upstream_ms) {
            histogram!("holdfast_upstream_duration_seconds", "route" => route.clone(), "target" => target.clone()).record(upstream_ms / 1000.0);
            counter!("holdfast_upstream_requests_total", "route" => route.clone(), "target" => target.clone()).increment(1);
        }
        if let Some(class) = record.reset_class {
            counter!("holdfast_failed_exchanges_total", "route" => route.clone(), "class" => class.as_str()).increment(1);
        }
        for class in retried {
            counter!("holdfast_retried_exchanges_total", "route" => route.clone(), "class" => class.as_str()).increment(1);
        }
    }
}
