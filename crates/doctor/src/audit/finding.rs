//! One audit finding: what was measured, how bad it is, why it matters and the fix.

use std::fmt;

use serde::Serialize;

/// How much a finding matters. Ordered from harmless to worst; `skip` sorts first because a
/// skipped check measured nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The check could not run (missing file, permission or tool); `value` says why.
    Skip,
    /// Measured and fine.
    Ok,
    /// Worth knowing; not a reset cause by itself.
    Info,
    /// Likely to cause resets under some load or timing.
    Warn,
    /// Causing resets now, or certain to.
    Critical,
}

impl Severity {
    /// The stable lowercase name (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Skip => "skip",
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One finding of the audit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The check group: `counters`, `sysctl`, `sockets`, `limits`, `firewall`, `config`, `logs`.
    pub check: &'static str,
    /// What was looked at (a counter, a sysctl key, a socket, a config file and directive...).
    pub subject: String,
    /// How much it matters.
    pub severity: Severity,
    /// The measured value (or, for a skip, the reason).
    pub value: String,
    /// Why it matters for resets (empty for `ok` and `skip`).
    pub why: String,
    /// The fix: a sysctl, config line or command (empty when nothing is to be done).
    pub fix: String,
}

impl Finding {
    /// A finding with every field given.
    pub fn new(
        check: &'static str,
        subject: impl Into<String>,
        severity: Severity,
        value: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            check,
            subject: subject.into(),
            severity,
            value: value.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }

    /// A measured value that needs nothing done.
    pub fn ok(check: &'static str, subject: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(check, subject, Severity::Ok, value, "", "")
    }

    /// A check that could not run, with the reason.
    pub fn skip(
        check: &'static str,
        subject: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::new(check, subject, Severity::Skip, reason, "", "")
    }
}
