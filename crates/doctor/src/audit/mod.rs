//! Host audit (`holdfast audit`): kernel counters, sysctls, listening sockets, descriptor
//! limits, firewall rules, proxy configs and logs, each turned into [`Finding`]s with a
//! severity, the measured value, why it matters and the fix.
//!
//! Every source can be redirected ([`AuditOptions`]) so tests run against staged files. A
//! source that cannot be read (missing file, permission, tool) becomes a `skip` finding with
//! the reason; the audit never fails as a whole.
//!
//! - [`finding`]: the [`Finding`] and [`Severity`] types.
//! - [`counters`]: `/proc/net/snmp` and `/proc/net/netstat` totals and deltas.
//! - [`sysctl`]: the kernel settings that decide resets.
//! - [`sockets`]: listening sockets with full accept queues, and descriptor limits.
//! - [`firewall`]: rules that answer with `tcp-reset`.
//! - [`configs`]: nginx, haproxy, Apache and Holdfast configs.
//! - [`logs`]: reset and OOM lines in logs, grouped by hour.

pub mod configs;
pub mod counters;
pub mod finding;
pub mod firewall;
pub mod logs;
pub mod sockets;
pub mod sysctl;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use counters::CounterReading;
pub use finding::{Finding, Severity};

/// Where the audit reads from. The defaults audit this host.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The proc filesystem root (`/proc`).
    pub proc_root: PathBuf,
    /// Proxy configs to check; empty means the usual paths.
    pub configs: Vec<PathBuf>,
    /// Logs to scan; empty means the usual paths plus the kernel log.
    pub logs: Vec<PathBuf>,
    /// Saved firewall rulesets (`iptables-save -c` or `nft list ruleset` output); empty means
    /// run the tools.
    pub rulesets: Vec<PathBuf>,
    /// Read the counters twice, this far apart, and report the deltas.
    pub watch: Option<Duration>,
    /// Whether to run system tools (`iptables-save`, `nft`, `ss`, `dmesg`) and read system
    /// logs. Off when auditing a staged proc root.
    pub system_tools: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            configs: Vec::new(),
            logs: Vec::new(),
            rulesets: Vec::new(),
            watch: None,
            system_tools: true,
        }
    }
}

/// The outcome of an audit.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Every finding, in check order.
    pub findings: Vec<Finding>,
    /// The reset-related kernel counters.
    pub counters: Vec<CounterReading>,
    /// The watch interval in seconds, when deltas were taken.
    pub watch_seconds: Option<f64>,
}

impl AuditReport {
    /// The worst severity among the findings (skips and passes count as `ok`).
    pub fn worst(&self) -> Severity {
        self.findings
            .iter()
            .map(|f| f.severity)
            .filter(|s| *s != Severity::Skip)
            .max()
            .unwrap_or(Severity::Ok)
    }
}

/// Runs every check.
pub fn run(options: &AuditOptions) -> AuditReport {
    let mut findings = Vec::new();
    let counters = counters::check(options, &mut findings);
    sysctl::check(options, &mut findings);
    sockets::check(options, &mut findings);
    firewall::check(options, &mut findings);
    configs::check(options, &mut findings);
    logs::check(options, &mut findings);
    AuditReport {
        findings,
        counters,
        watch_seconds: options.watch.map(|w| w.as_secs_f64()),
    }
}
