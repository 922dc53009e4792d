//! One probe's result line, and the progress sink that shows them as they happen.

use std::time::Instant;

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It worked.
    Pass,
    /// It failed; the verdict explains.
    Fail,
    /// It worked, with something worth knowing.
    Warn,
    /// It did not run; `detail` says why.
    Skip,
}

/// One check of the doctor (`{"name", "status", "detail", "ms"}` in JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The layer: `environment`, `dns`, `tcp`, `tls`, `http`, `locate`, `keepalive`,
    /// `stability`, `capture`.
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was measured.
    pub detail: String,
    /// Time taken, in milliseconds.
    pub ms: u64,
}

/// Receives progress as the doctor runs.
pub trait Progress {
    /// A layer starts.
    fn start(&mut self, name: &'static str, what: &str);
    /// A layer finished.
    fn finish(&mut self, check: &Check);
}

/// Progress that shows nothing (for `--json` and tests).
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _: &'static str, _: &str) {}
    fn finish(&mut self, _: &Check) {}
}

/// Collects checks and reports them to the progress sink.
pub struct Recorder<'a> {
    /// The checks so far.
    pub checks: Vec<Check>,
    progress: &'a mut dyn Progress,
    started: Option<(&'static str, Instant)>,
}

impl<'a> Recorder<'a> {
    /// A recorder reporting to `progress`.
    pub fn new(progress: &'a mut dyn Progress) -> Self {
        Self {
            checks: Vec::new(),
            progress,
            started: None,
        }
    }

    /// Starts timing a check.
    pub fn start(&mut self, name: &'static str, what: &str) {
        self.progress.start(name, what);
        self.started = Some((name, Instant::now()));
    }

    /// Ends the check started last.
    pub fn finish(&mut self, status: Status, detail: impl Into<String>) {
        let (name, at) = self.started.take().unwrap_or(("check", Instant::now()));
        let check = Check {
            name,
            status,
            detail: detail.into(),
            ms: at.elapsed().as_millis() as u64,
        };
        self.progress.finish(&check);
        self.checks.push(check);
    }

    /// Records a check that did not run.
    pub fn skip(&mut self, name: &'static str, why: impl Into<String>) {
        self.start(name, "");
        self.finish(Status::Skip, why);
    }
}
