//! The call-log writer: `on_call` queues into a bounded buffer and returns at once; one task
//! writes batches every flush interval. A full buffer counts the overflow (reported in the
//! admin API and logged), never blocks. A writer that falls behind (a batch slower than the
//! flush interval, or a backlog of more than two intervals of calls) is logged and counted.
//! [`CallLogWriter::shutdown`] flushes everything it can within 5 s.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_core::CallRecord;
use holdfast_store::{CallBatch, CallLogStore, SqlStore, StoreError};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
    /// Records queued and not written yet (the queue and the batch being written).
    pub backlog: u64,
    /// Since when (ms ago) the oldest of them waits: about what a `kill -9` would lose now.
    pub backlog_ms: u64,
    /// How long the last batch write took, in ms.
    pub last_write_ms: u64,
    /// Flush intervals at which the writer was behind: a batch write was still under way
    /// (or took longer than the interval), or the backlog was older than two intervals
    /// (logged, at most every 10 s).
    pub behind: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    written: AtomicU64,
    overflow: AtomicU64,
    write_failures: AtomicU64,
    pruned: AtomicU64,
    /// Records of the batch being written (or waiting to be written again).
    pending: AtomicU64,
    /// When the oldest of them was queued (ms since the Unix epoch; 0: none).
    pending_since_ms: AtomicU64,
    last_write_ms: AtomicU64,
    behind: AtomicU64,
}

/// The queue between the request path and the writer task: a packed batch behind a mutex (a
/// push is a lock and a copy of the record's columns into buffers that are reused batch after
/// batch; the writer swaps the whole batch out once per flush).
struct Queue {
    records: CallBatch,
    /// When the first of `records` was queued (ms since the Unix epoch).
    since_ms: u64,
    /// Set by shutdown: later records are counted as overflow.
    closed: bool,
}

fn now_ms() -> u64 {
    holdfast_store::now_ms().max(0) as u64
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
            since_ms: 0,
            closed: false,
        }));
        let (stop_tx, stop_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            store,
            node: node.into(),
            queue: queue.clone(),
            counters: counters.clone(),
            settings: settings.clone(),
            batch: CallBatch::new(),
            batch_since_ms: 0,
            behind_logged_at: None,
            behind_unlogged: 0,
        };
        tokio::spawn(run(writer, stop_rx));
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
                if q.records.is_empty() {
                    q.since_ms = now_ms();
                }
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
        let (queued, queued_since) = match self.queue.lock() {
            Ok(q) if !q.records.is_empty() => (q.records.len() as u64, q.since_ms),
            _ => (0, 0),
        };
        let pending = c.pending.load(Ordering::Relaxed);
        let pending_since = c.pending_since_ms.load(Ordering::Relaxed);
        let oldest = [pending_since, queued_since]
            .into_iter()
            .filter(|&t| t > 0)
            .min();
        CallLogStats {
            queued: c.queued.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            overflow: c.overflow.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
            pruned: c.pruned.load(Ordering::Relaxed),
            backlog: queued + pending,
            backlog_ms: oldest.map_or(0, |t| now_ms().saturating_sub(t)),
            last_write_ms: c.last_write_ms.load(Ordering::Relaxed),
            behind: c.behind.load(Ordering::Relaxed),
        }
    }

    /// Write everything queued so far and stop the writer, within 5 s even when a write
    /// hangs: what is not written by then is logged and counted as overflow.
    /// Later records are counted as overflow. Safe to call twice.
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

/// How long a graceful stop keeps trying to write what is queued.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);
/// At most one "falling behind" warning per this (the count of the others goes with it).
const BEHIND_LOG_EVERY: Duration = Duration::from_secs(10);

/// The writer task's state.
struct Writer {
    store: SqlStore,
    node: Arc<str>,
    queue: Arc<Mutex<Queue>>,
    counters: Arc<Counters>,
    settings: Arc<Settings>,
    /// The batch to write next. A batch whose write failed is written again as is before
    /// anything newer (new records wait in the bounded queue meanwhile; its overflow is
    /// counted).
    batch: CallBatch,
    /// When the first record of `batch` was queued (ms since the Unix epoch).
    batch_since_ms: u64,
    behind_logged_at: Option<Instant>,
    behind_unlogged: u64,
}

/// A batch write under way, in a task of its own: a graceful stop can stop waiting for it.
struct InFlight {
    task: JoinHandle<(CallBatch, Result<(), StoreError>)>,
    records: usize,
    started: Instant,
}

type WriteAnswer = Result<(CallBatch, Result<(), StoreError>), tokio::task::JoinError>;

impl Writer {
    fn flush_every(&self) -> Duration {
        Duration::from_millis(self.settings.flush_every_ms.load(Ordering::Relaxed))
    }

    /// Show the batch in the counters (`backlog`, `backlog_ms`).
    fn publish(&self) {
        let c = &self.counters;
        c.pending.store(self.batch.len() as u64, Ordering::Relaxed);
        let since = if self.batch.is_empty() {
            0
        } else {
            self.batch_since_ms
        };
        c.pending_since_ms.store(since, Ordering::Relaxed);
    }

    /// Move what is queued into the batch when the batch is empty (swapping buffers, so the
    /// request path gets the emptied buffers of the last batch). `close`: later records are
    /// refused (counted as overflow).
    fn take(&mut self, close: bool) {
        if let Ok(mut q) = self.queue.lock() {
            q.closed |= close;
            if self.batch.is_empty() && !q.records.is_empty() {
                self.batch_since_ms = q.since_ms;
                self.batch.append(&mut q.records);
            }
        }
        self.publish();
    }

    /// Start writing the batch (moved to the write task; it comes back with the answer).
    fn start_write(&mut self) -> Option<InFlight> {
        if self.batch.is_empty() {
            return None;
        }
        let batch = std::mem::take(&mut self.batch);
        let records = batch.len();
        let (store, node) = (self.store.clone(), self.node.clone());
        Some(InFlight {
            task: tokio::spawn(async move { store.insert_call_batch(&node, batch).await }),
            records,
            started: Instant::now(),
        })
    }

    /// Take the answer of `flight`; `true` when its batch was written. A failed batch is
    /// kept as is (see [`CallBatch`]: it is written again, as is, at the next flush).
    fn finish(&mut self, flight: &InFlight, answer: WriteAnswer) -> bool {
        let c = &self.counters;
        let n = flight.records;
        c.last_write_ms.store(
            flight.started.elapsed().as_millis() as u64,
            Ordering::Relaxed,
        );
        let written = match answer {
            Ok((back, Ok(()))) => {
                c.written.fetch_add(n as u64, Ordering::Relaxed);
                self.batch = back;
                true
            }
            Ok((back, Err(e))) => {
                c.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, pending = back.len(), "call log write failed; will retry");
                // A batch that did not come back whole (the write task died) is lost: count it.
                let lost = n - back.len().min(n);
                if lost > 0 {
                    tracing::error!(lost, "call log: records lost with a failed write task");
                    c.overflow.fetch_add(lost as u64, Ordering::Relaxed);
                }
                self.batch = back;
                false
            }
            Err(e) => {
                c.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(lost = n, error = %e, "call log: records lost with a failed write task");
                c.overflow.fetch_add(n as u64, Ordering::Relaxed);
                false
            }
        };
        self.publish();
        written
    }

    /// During or after a write that has taken `took`: count (and log, at most every 10 s) a
    /// writer that falls behind, so it is never silent: the write took longer than the flush
    /// interval, or the oldest unwritten record waits for more than two intervals (a
    /// `kill -9` would lose that much).
    /// `slow_counted`: the intervals this write outlasted were counted already (while it ran).
    fn check_behind(&mut self, took: Duration, slow_counted: bool) {
        let interval = self.flush_every().max(Duration::from_millis(1));
        let queued = match self.queue.lock() {
            Ok(q) if !q.records.is_empty() => Some((q.records.len() as u64, q.since_ms)),
            _ => None,
        };
        // The batch being written (or to be written again), as published by `take`/`finish`.
        let c = &self.counters;
        let pending = Some((
            c.pending.load(Ordering::Relaxed),
            c.pending_since_ms.load(Ordering::Relaxed),
        ))
        .filter(|p| p.0 > 0);
        let backlog: u64 = [queued, pending].iter().flatten().map(|q| q.0).sum();
        let oldest = [queued, pending].iter().flatten().map(|q| q.1).min();
        let backlog_ms = oldest.map_or(0, |t| now_ms().saturating_sub(t));
        let slow = took > interval && !slow_counted;
        if !slow && u128::from(backlog_ms) <= 2 * interval.as_millis() {
            return;
        }
        let times = self.counters.behind.fetch_add(1, Ordering::Relaxed) + 1;
        if self
            .behind_logged_at
            .is_some_and(|at| at.elapsed() < BEHIND_LOG_EVERY)
        {
            self.behind_unlogged += 1;
            return;
        }
        self.behind_logged_at = Some(Instant::now());
        let unlogged = std::mem::take(&mut self.behind_unlogged);
        tracing::warn!(
            write_ms = took.as_millis() as u64,
            flush_interval_ms = interval.as_millis() as u64,
            backlog,
            backlog_ms,
            times_behind = times,
            not_logged_since_last = unlogged,
            "call log writer is falling behind: the oldest unwritten record waits {backlog_ms} ms (a kill -9 now would lose about that much)"
        );
    }

    async fn prune(&self) {
        let retention = self.settings.retention_ms.load(Ordering::Relaxed);
        let before = holdfast_store::now_ms() - retention as i64;
        match self.store.prune_calls(before).await {
            Ok(n) => {
                self.counters.pruned.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "call log pruning failed"),
        }
    }

    /// Graceful stop: write the batch under way (`flight`), then everything queued, retrying
    /// until [`SHUTDOWN_RETRY`] has passed, even when a write hangs (it is then given up). What
    /// could not be written is logged and counted as overflow.
    async fn shutdown(mut self, flight: Option<InFlight>) {
        let deadline = Instant::now() + SHUTDOWN_RETRY;
        let mut lost = 0;
        if let Ok(mut q) = self.queue.lock() {
            q.closed = true;
        }
        let mut flight = flight;
        loop {
            let Some(mut f) = flight.take().or_else(|| {
                self.take(false);
                self.start_write()
            }) else {
                break;
            };
            match tokio::time::timeout_at(deadline, &mut f.task).await {
                Ok(answer) => {
                    if self.finish(&f, answer) {
                        continue;
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                    let retry_at = (Instant::now() + Duration::from_millis(250)).min(deadline);
                    tokio::time::sleep_until(retry_at).await;
                }
                Err(_) => {
                    // The write hangs: give it up (a write on PostgreSQL is rolled back).
                    f.task.abort();
                    lost += f.records;
                    break;
                }
            }
        }
        lost += self.batch.len();
        self.batch.clear();
        if let Ok(mut q) = self.queue.lock() {
            lost += q.records.len();
            q.records.clear();
        }
        self.publish();
        if lost > 0 {
            tracing::error!(
                lost,
                "call log: {lost} records could not be written before the stop; they are lost (counted in overflow)"
            );
            self.counters
                .overflow
                .fetch_add(lost as u64, Ordering::Relaxed);
        }
    }
}

async fn run(mut w: Writer, mut stop: oneshot::Receiver<oneshot::Sender<()>>) {
    let mut next_flush = Instant::now() + w.flush_every();
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    let (flight, done) = 'writing: loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_flush) => {
                w.take(false);
                if let Some(mut flight) = w.start_write() {
                    // A write still under way at a flush time is behind already: say so
                    // while it lasts, not only once it ends.
                    let mut check_at = flight.started + w.flush_every();
                    let mut ticked = false;
                    loop {
                        tokio::select! {
                            answer = &mut flight.task => {
                                w.finish(&flight, answer);
                                w.check_behind(flight.started.elapsed(), ticked);
                                break;
                            }
                            _ = tokio::time::sleep_until(check_at) => {
                                w.check_behind(flight.started.elapsed(), false);
                                ticked = true;
                                check_at += w.flush_every().max(Duration::from_millis(10));
                            }
                            done = &mut stop => break 'writing (Some(flight), done),
                        }
                    }
                }
                next_flush = (next_flush + w.flush_every()).max(Instant::now());
            }
            _ = prune.tick() => {
                tokio::select! {
                    () = w.prune() => {}
                    // Pruning is given up (it is done again at the next hour).
                    done = &mut stop => break 'writing (None, done),
                }
            }
            done = &mut stop => break 'writing (None, done),
        }
    };
    w.shutdown(flight).await;
    if let Ok(done) = done {
        let _ = done.send(());
    }
}
