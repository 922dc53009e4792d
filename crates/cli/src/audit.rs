//! `holdfast audit`: what on this host makes it reset connections.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use holdfast_doctor::audit::{self, AuditOptions, AuditReport, Severity};

/// Arguments of `holdfast audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Print one JSON object (schema in docs/DOCTOR.md) instead of the human report.
    #[arg(long)]
    pub json: bool,
    /// Read the kernel counters twice, this many seconds apart, and report the deltas.
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<f64>,
    /// Read /proc from this directory instead (a staged copy). System tools and system logs
    /// are then not used unless given with --config, --log and --ruleset.
    #[arg(long, value_name = "DIR")]
    pub proc_root: Option<PathBuf>,
    /// A proxy config to check (nginx, haproxy, Apache, Holdfast TOML); repeatable.
    #[arg(long, value_name = "FILE")]
    pub config: Vec<PathBuf>,
    /// A log to scan for reset and OOM lines; repeatable.
    #[arg(long, value_name = "FILE")]
    pub log: Vec<PathBuf>,
    /// A saved firewall ruleset (`iptables-save -c` or `nft list ruleset` output); repeatable.
    #[arg(long, value_name = "FILE")]
    pub ruleset: Vec<PathBuf>,
}

/// Exit status for bad usage.
const BAD_USAGE: u8 = 2;

/// Runs the audit and returns the exit status: 0 when it ran, 2 for bad usage.
pub fn run(args: AuditArgs) -> anyhow::Result<u8> {
    let watch = match args.watch {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            eprintln!(
                "holdfast audit: --watch {s}: give seconds between 0 and 3600, e.g. --watch 10"
            );
            return Ok(BAD_USAGE);
        }
    };
    if let Some(root) = &args.proc_root {
        if let Some(problem) = proc_root_problem(root) {
            eprintln!(
                "holdfast audit: --proc-root {}: {problem}; give a directory laid out like /proc \
                 (net/snmp, net/netstat, sys/...), or leave --proc-root out to audit this host",
                root.display()
            );
            return Ok(BAD_USAGE);
        }
    }
    let defaults = AuditOptions::default();
    let options = AuditOptions {
        system_tools: args.proc_root.is_none(),
        proc_root: args.proc_root.unwrap_or(defaults.proc_root),
        configs: args.config,
        logs: args.log,
        rulesets: args.ruleset,
        watch,
    };
    if !args.json {
        if let Some(w) = watch {
            eprintln!(
                "watching the kernel counters for {:.1}s...",
                w.as_secs_f64()
            );
        }
    }
    let report = audit::run(&options);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["worst"] = serde_json::Value::from(report.worst().as_str());
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
    } else {
        print_human(&mut out, &report)?;
    }
    out.flush()?;
    Ok(0)
}

/// Why `root` cannot be a staged proc root, if it cannot.
fn proc_root_problem(root: &std::path::Path) -> Option<String> {
    match std::fs::metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some("no such directory".to_string()),
        Err(e) => Some(format!("cannot read it: {e}")),
        Ok(meta) if !meta.is_dir() => Some("not a directory".to_string()),
        Ok(_) => match std::fs::read_dir(root).map(|mut entries| entries.next().is_none()) {
            Err(e) => Some(format!("cannot list it: {e}")),
            Ok(true) => Some("the directory is empty".to_string()),
            Ok(false) => None,
        },
    }
}

fn print_human(out: &mut impl Write, report: &AuditReport) -> io::Result<()> {
    let mut group = "";
    for finding in &report.findings {
        if finding.check != group {
            group = finding.check;
            writeln!(out, "\n== {group}")?;
        }
        writeln!(
            out,
            "[{:>8}] {}: {}",
            finding.severity, finding.subject, finding.value
        )?;
        if !finding.why.is_empty() {
            writeln!(out, "           why: {}", finding.why)?;
        }
        if !finding.fix.is_empty() {
            writeln!(out, "           fix: {}", finding.fix)?;
        }
    }
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    writeln!(
        out,
        "\n{} critical, {} warn, {} info, {} ok, {} skipped",
        count(Severity::Critical),
        count(Severity::Warn),
        count(Severity::Info),
        count(Severity::Ok),
        count(Severity::Skip)
    )
}
