//! The access-log writer: request tasks append finished JSON lines to one shared buffer; a
//! thread writes the buffer out in batches.
//!
//! A request never waits on the disk and never wakes the writer per line: only the first line
//! into an empty buffer wakes it, and the writer then gathers for [`GATHER`] before it swaps the
//! whole buffer out. A buffer past [`MAX_PENDING`] drops lines and counts them
//! (`holdfast_access_log_dropped_total`). [`AccessLogWriter::close`] writes everything queued
//! and waits for the thread.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use metrics::counter;

/// How long the writer gathers lines after the first one of a batch.
const GATHER: Duration = Duration::from_millis(20);
/// Bytes queued at most; lines beyond are dropped and counted.
const MAX_PENDING: usize = 16 << 20;

struct Pending {
    lines: Vec<u8>,
    /// The writer is asleep waiting for a first line.
    idle: bool,
    closed: bool,
    /// Sinks to switch to, in order (a reload reopened the log), each with the lines queued
    /// before the switch, which still go to the sink before it.
    switches: Vec<(Vec<u8>, Box<dyn Write + Send>)>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// Queues access-log lines for the writer thread.
pub struct AccessLogWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl AccessLogWriter {
    /// Start the writer thread on `sink`.
    pub fn start(sink: Box<dyn Write + Send>) -> std::io::Result<AccessLogWriter> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                lines: Vec::with_capacity(64 << 10),
                idle: false,
                closed: false,
                switches: Vec::new(),
            }),
            wake: Condvar::new(),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_batches(&for_thread, sink))?;
        Ok(AccessLogWriter {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queue one line (`line` has no newline; one is added). Never blocks on I/O.
    pub fn push(&self, line: &[u8]) {
        let mut p = lock(&self.shared.pending);
        if p.closed || p.lines.len() + line.len() + 1 > MAX_PENDING {
            drop(p);
            counter!("holdfast_access_log_dropped_total").increment(1);
            return;
        }
        let first = p.lines.is_empty();
        p.lines.extend_from_slice(line);
        p.lines.push(b'\n');
        let wake = first && p.idle;
        drop(p);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// Write what is queued now to the current sink, and every later line to `sink` (the old
    /// one is flushed and closed).
    pub fn replace_sink(&self, sink: Box<dyn Write + Send>) {
        let mut p = lock(&self.shared.pending);
        let before = std::mem::take(&mut p.lines);
        p.switches.push((before, sink));
        drop(p);
        self.shared.wake.notify_one();
    }

    /// Write everything queued, stop the thread and wait for it. Later lines are dropped.
    pub fn close(&self) {
        lock(&self.shared.pending).closed = true;
        self.shared.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for AccessLogWriter {
    fn drop(&mut self) {
        self.close();
    }
}

fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_batches(shared: &Shared, sink: Box<dyn Write + Send>) {
    let mut out = sink;
    let mut batch = Vec::with_capacity(64 << 10);
    loop {
        let mut p = lock(&shared.pending);
        while p.lines.is_empty() && !p.closed && p.switches.is_empty() {
            p.idle = true;
            p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            p.idle = false;
        }
        if !p.closed {
            // Let the batch grow a little: one write for many lines.
            drop(p);
            std::thread::sleep(GATHER);
            p = lock(&shared.pending);
        }
        std::mem::swap(&mut p.lines, &mut batch);
        let closed = p.closed;
        let switches = std::mem::take(&mut p.switches);
        drop(p);
        for (before, sink) in switches {
            if !before.is_empty() {
                let _ = out.write_all(&before).and_then(|()| out.flush());
            }
            out = sink;
        }
        if !batch.is_empty() {
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            // Give back memory after a burst.
            if batch.capacity() > 4 << 20 {
                batch = Vec::with_capacity(64 << 10);
            }
        }
        if closed && {
            let p = lock(&shared.pending);
            p.lines.is_empty() && p.switches.is_empty()
        } {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_and_close_flushes() {
        let sink = Sink::default();
        let log = AccessLogWriter::start(Box::new(sink.clone())).expect("thread");
        for i in 0..10_000 {
            log.push(format!("{{\"n\":{i}}}").as_bytes());
            if i % 2500 == 0 {
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        log.close();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_000);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(*line, format!("{{\"n\":{i}}}"));
        }
        // After close, lines are dropped rather than queued forever.
        log.push(b"late");
        assert!(!String::from_utf8_lossy(&sink.0.lock().unwrap()).contains("late"));
    }

    #[test]
    fn lines_after_a_new_sink_go_to_it_and_none_are_lost() {
        let (first, second) = (Sink::default(), Sink::default());
        let log = AccessLogWriter::start(Box::new(first.clone())).expect("thread");
        log.push(b"before");
        log.replace_sink(Box::new(second.clone()));
        log.push(b"after");
        log.close();
        assert_eq!(first.0.lock().unwrap().as_slice(), b"before\n");
        assert_eq!(second.0.lock().unwrap().as_slice(), b"after\n");
    }

    #[test]
    fn a_line_appears_without_close() {
        let sink = Sink::default();
        let log = AccessLogWriter::start(Box::new(sink.clone())).expect("thread");
        log.push(b"one");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().as_slice() != b"one\n" {
            assert!(std::time::Instant::now() < deadline, "line never written");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
