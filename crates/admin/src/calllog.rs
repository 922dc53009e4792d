//! The call-log writer: `on_call` queues into a bounded buffer and returns at once; one task
//! writes batches every flush interval. A full buffer counts the overflow (reported in the
//! admin API and logged), never blocks. [`CallLogWriter::shutdown`] flushes everything.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_core::CallRecord;
use holdfast_store::{CallBatch, CallLogStore, SqlStore};
use serde::Serialize;
use tokio::sync::oneshot;

/// Counters of the call-log writer.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct CallLogStats {
    pub queued: u64,
    pub written: u64,
    /// Records dropped: the buffer was full, or they could not be written before a graceful
    /// stop (logged as an error with the count).
    pub overflow: u64,
    pub write_failures: u64,
    pub pruned: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    written: AtomicU64,
    overflow: AtomicU64,
    write_failures: AtomicU64,
    pruned: AtomicU64,
}

/// The queue between the request path and the writer task: a packed batch behind a mutex (a
/// push is a lock and a copy of the record's columns into buffers that are reused batch after
/// batch; the writer swaps the whole batch out once per flush).
struct Queue {
    records: CallBatch,
    /// Set by shutdown: later records are counted as overflow.
    closed: bool,
}

/// The writer's settings a config reload may change.
struct Settings {
    capacity: AtomicUsize,
    flush_every_ms: AtomicU64,
    retention_ms: AtomicU64,
}

/// Queues call records and writes them in batches.
pub struct CallLogWriter {
    queue: Arc<Mutex<Queue>>,
    settings: Arc<Settings>,
    counters: Arc<Counters>,
    stop: Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
}

impl CallLogWriter {
    /// Start the writer task.
    pub fn start(
        store: SqlStore,
        node: String,
        buffer: usize,
        flush_every: Duration,
        retention: Duration,
    ) -> CallLogWriter {
        let settings = Arc::new(Settings {
            capacity: AtomicUsize::new(buffer.max(1)),
            flush_every_ms: AtomicU64::new(flush_every.as_millis() as u64),
            retention_ms: AtomicU64::new(retention.as_millis() as u64),
        });
        let queue = Arc::new(Mutex::new(Queue {
            records: CallBatch::new(),
            closed: false,
        }));
        let (stop_tx, stop_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(
            store,
            node,
            queue.clone(),
            stop_rx,
            counters.clone(),
            settings.clone(),
        ));
        CallLogWriter {
            queue,
            settings,
            counters,
            stop: Mutex::new(Some(stop_tx)),
        }
    }

    /// Queue one record; never blocks on I/O. A full buffer counts an overflow.
    pub fn push(&self, record: &CallRecord) {
        let queued = match self.queue.lock() {
            Ok(mut q)
                if !q.closed
                    && q.records.len() < self.settings.capacity.load(Ordering::Relaxed) =>
            {
                q.records.push(record)
            }
            _ => false,
        };
        if queued {
            self.counters.queued.fetch_add(1, Ordering::Relaxed);
        } else {
            let n = self.counters.overflow.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(overflow = n, "call log buffer full: records dropped");
            }
        }
    }

    /// Count rows deleted by a manual prune (`POST /admin/calllog/prune`).
    pub fn count_pruned(&self, n: u64) {
        self.counters.pruned.fetch_add(n, Ordering::Relaxed);
    }

    /// Apply reloaded settings: buffer size, flush interval (from the next flush on) and
    /// retention (from the next pruning on).
    pub fn reconfigure(&self, buffer: usize, flush_every: Duration, retention: Duration) {
        let s = &self.settings;
        s.capacity.store(buffer.max(1), Ordering::Relaxed);
        s.flush_every_ms
            .store(flush_every.as_millis() as u64, Ordering::Relaxed);
        s.retention_ms
            .store(retention.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn stats(&self) -> CallLogStats {
        let c = &self.counters;
        CallLogStats {
            queued: c.queued.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            overflow: c.overflow.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
            pruned: c.pruned.load(Ordering::Relaxed),
        }
    }

    /// Write everything queued so far and stop the writer. Later records are counted as
    /// overflow. Safe to call twice.
    pub async fn shutdown(&self) {
        let stop = self.stop.lock().ok().and_then(|mut s| s.take());
        if let Some(stop) = stop {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
    }
}

/// Move what is queued into `batch` (swapping buffers, so the request path gets the emptied
/// buffers of the last batch).
fn take_queued(queue: &Mutex<Queue>, batch: &mut CallBatch, close: bool) {
    if let Ok(mut q) = queue.lock() {
        q.closed |= close;
        batch.append(&mut q.records);
    }
}

/// Write `batch`; `true` when it was written (or was empty). A failed batch is kept as is
/// (see [`CallBatch`]: it is written again, as is, at the next flush).
async fn write(store: &SqlStore, node: &str, batch: &mut CallBatch, counters: &Counters) -> bool {
    if batch.is_empty() {
        return true;
    }
    let n = batch.len();
    let (back, result) = store.insert_call_batch(node, std::mem::take(batch)).await;
    *batch = back;
    match result {
        Ok(()) => {
            counters.written.fetch_add(n as u64, Ordering::Relaxed);
            true
        }
        Err(e) => {
            counters.write_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, pending = batch.len(), "call log write failed; will retry");
            // A batch that did not come back (the write task died) is lost: count it.
            let lost = n - batch.len().min(n);
            if lost > 0 {
                tracing::error!(lost, "call log: records lost with a failed write task");
                counters.overflow.fetch_add(lost as u64, Ordering::Relaxed);
            }
            false
        }
    }
}

/// How long a graceful stop keeps trying to write what is queued.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);

async fn run(
    store: SqlStore,
    node: String,
    queue: Arc<Mutex<Queue>>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
    counters: Arc<Counters>,
    settings: Arc<Settings>,
) {
    let flush_every = || Duration::from_millis(settings.flush_every_ms.load(Ordering::Relaxed));
    let mut next_flush = tokio::time::Instant::now() + flush_every();
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    // A batch whose write failed is written again as is before anything newer (new records
    // wait in the bounded queue meanwhile; its overflow is counted).
    let mut batch = CallBatch::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_flush) => {
                if batch.is_empty() {
                    take_queued(&queue, &mut batch, false);
                }
                write(&store, &node, &mut batch, &counters).await;
                next_flush = (next_flush + flush_every()).max(tokio::time::Instant::now());
            }
            _ = prune.tick() => {
                let retention = settings.retention_ms.load(Ordering::Relaxed);
                let before = holdfast_store::now_ms() - retention as i64;
                match store.prune_calls(before).await {
                    Ok(n) => { counters.pruned.fetch_add(n, Ordering::Relaxed); }
                    Err(e) => tracing::warn!(error = %e, "call log pruning failed"),
                }
            }
            done = &mut stop => {
                let mut rest = CallBatch::new();
                take_queued(&queue, &mut rest, true);
                let deadline = tokio::time::Instant::now() + SHUTDOWN_RETRY;
                loop {
                    if batch.is_empty() {
                        std::mem::swap(&mut batch, &mut rest);
                    }
                    if batch.is_empty() {
                        break;
                    }
                    if write(&store, &node, &mut batch, &counters).await {
                        continue;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                let lost = batch.len() + rest.len();
                if lost > 0 {
                    tracing::error!(
                        lost,
                        "call log: {lost} records could not be written before the stop; they are lost (counted in overflow)"
                    );
                    counters.overflow.fetch_add(lost as u64, Ordering::Relaxed);
                }
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
}
