//! Reset and OOM lines in logs, counted and grouped by hour.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;

use super::{AuditOptions, Finding, Severity};

const CHECK: &str = "logs";

/// The patterns counted, with why they matter and what to do.
const PATTERNS: [(&str, &str, &str); 4] = [
    (
        "Connection reset by peer",
        "a peer reset connections this service used",
        "find which peer with `holdfast pcap` on a capture, or `holdfast doctor URL` on the upstream",
    ),
    (
        "upstream prematurely closed",
        "the upstream closed while nginx was reading its answer (often an idle keep-alive race or a crash)",
        "set the proxy's upstream keepalive_timeout below the backend's idle timeout; check the backend for crashes",
    ),
    (
        "recv() failed (104",
        "nginx got ECONNRESET from an upstream",
        "compare keep-alive timeouts of nginx and the upstream; check the upstream's logs at these times",
    ),
    (
        "oom",
        "the kernel killed a process for memory; its connections were reset",
        "give the service more memory or cap its usage; look at the OOM report for the victim",
    ),
];

/// Usual log locations, read when none are given.
const USUAL_LOGS: [&str; 7] = [
    "/var/log/nginx/error.log",
    "/var/log/haproxy.log",
    "/var/log/apache2/error.log",
    "/var/log/httpd/error_log",
    "/var/log/syslog",
    "/var/log/messages",
    "/var/log/kern.log",
];

/// Per-pattern counts, each grouped by hour ("unknown time" when a line has no timestamp).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogCounts {
    /// Pattern label -> hour -> count.
    pub by_pattern: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

/// Turns a timestamp match into its hour ("2026-11-24 10:00").
type HourOf = fn(&regex::Captures<'_>) -> String;

/// The matchers: plain patterns, and the OOM-kill line.
struct Matchers {
    oom: Regex,
    hour: Vec<(Regex, HourOf)>,
}

fn month_number(name: &str) -> &'static str {
    match name {
        "Jan" => "01",
        "Feb" => "02",
        "Mar" => "03",
        "Apr" => "04",
        "May" => "05",
        "Jun" => "06",
        "Jul" => "07",
        "Aug" => "08",
        "Sep" => "09",
        "Oct" => "10",
        "Nov" => "11",
        "Dec" => "12",
        _ => "??",
    }
}

impl Matchers {
    fn new() -> Self {
        let re = |s: &str| Regex::new(s).expect("static regex");
        Self {
            // One line per kill: "Out of memory: Killed process N" (older: "Kill process N").
            oom: re(r"(?i)out of memory: kill(ed)? process|memory cgroup out of memory: kill"),
            hour: vec![
                // ISO 8601 / journal short-iso / Holdfast: 2024-05-01T12:34:56 or 2024-05-01 12:34
                (re(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):\d{2}"), |c| {
                    format!("{}-{}-{} {}:00", &c[1], &c[2], &c[3], &c[4])
                }),
                // nginx error log: 2024/05/01 12:34:56
                (re(r"(\d{4})/(\d{2})/(\d{2}) (\d{2}):\d{2}"), |c| {
                    format!("{}-{}-{} {}:00", &c[1], &c[2], &c[3], &c[4])
                }),
                // access logs: [01/May/2024:12:34:56 +0000]
                (re(r"(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):\d{2}"), |c| {
                    format!("{}-{}-{} {}:00", &c[3], month_number(&c[2]), &c[1], &c[4])
                }),
                // syslog: May  1 12:34:56 (no year)
                (
                    re(r"^([A-Z][a-z]{2})\s+(\d{1,2}) (\d{2}):\d{2}:\d{2}"),
                    |c| format!("{}-{:0>2} {}:00", month_number(&c[1]), &c[2], &c[3]),
                ),
            ],
        }
    }

    fn hour_of(&self, line: &str) -> String {
        self.hour
            .iter()
            .find_map(|(re, fmt)| re.captures(line).map(|c| fmt(&c)))
            .unwrap_or_else(|| "unknown time".to_string())
    }

    fn label_of(&self, line: &str) -> Option<&'static str> {
        if self.oom.is_match(line) {
            return Some("oom");
        }
        // Most specific first: an nginx recv() line also says "Connection reset by peer".
        [
            "recv() failed (104",
            "upstream prematurely closed",
            "Connection reset by peer",
        ]
        .into_iter()
        .find(|p| line.contains(p))
    }
}

/// Counts the patterns in lines.
pub fn count_lines<I: IntoIterator<Item = String>>(lines: I, counts: &mut LogCounts) {
    let matchers = Matchers::new();
    for line in lines {
        if let Some(label) = matchers.label_of(&line) {
            *counts
                .by_pattern
                .entry(label)
                .or_default()
                .entry(matchers.hour_of(&line))
                .or_default() += 1;
        }
    }
}

fn read_lines(path: &Path) -> std::io::Result<impl Iterator<Item = String>> {
    let file = std::fs::File::open(path)?;
    // Non-UTF-8 lines are skipped rather than ending the scan.
    Ok(BufReader::new(file)
        .split(b'\n')
        .map_while(Result::ok)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// Adds the kernel log (dmesg, else the journal) to the counts, or a skip.
fn kernel_log(counts: &mut LogCounts, findings: &mut Vec<Finding>) {
    let tries: [(&str, &[&str]); 2] = [
        ("dmesg", &["--time-format", "iso"]),
        ("journalctl", &["-k", "-b", "--no-pager", "-o", "short-iso"]),
    ];
    let mut reasons = Vec::new();
    for (tool, args) in tries {
        match Command::new(tool).args(args).output() {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                count_lines(text.lines().map(str::to_string), counts);
                findings.push(Finding::ok(CHECK, format!("kernel log ({tool})"), "read"));
                return;
            }
            Ok(out) => reasons.push(format!(
                "{tool}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => reasons.push(format!("{tool}: {e}")),
        }
    }
    findings.push(Finding::skip(
        CHECK,
        "kernel log (OOM kills)",
        reasons.join("; "),
    ));
}

/// Scans the logs and adds one finding per pattern seen.
pub fn check(options: &AuditOptions, findings: &mut Vec<Finding>) {
    let mut counts = LogCounts::default();
    let paths: Vec<PathBuf> = if options.logs.is_empty() {
        if !options.system_tools {
            findings.push(Finding::skip(
                CHECK,
                "logs",
                "no log given (--log) and system logs are off for a staged proc root",
            ));
            return;
        }
        kernel_log(&mut counts, findings);
        USUAL_LOGS
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect()
    } else {
        options.logs.clone()
    };
    let mut scanned = 0;
    for path in &paths {
        match read_lines(path) {
            Ok(lines) => {
                scanned += 1;
                count_lines(lines, &mut counts);
            }
            Err(e) => findings.push(Finding::skip(
                CHECK,
                path.display().to_string(),
                format!("cannot read: {e}"),
            )),
        }
    }
    if counts.by_pattern.is_empty() {
        findings.push(Finding::ok(
            CHECK,
            "reset and OOM lines",
            format!("none in {scanned} log file(s)"),
        ));
        return;
    }
    for (pattern, why, fix) in PATTERNS {
        let Some(hours) = counts.by_pattern.get(pattern) else {
            continue;
        };
        let total: u64 = hours.values().sum();
        let grouped: Vec<String> = hours.iter().map(|(h, n)| format!("{h}: {n}")).collect();
        let severity = if pattern == "oom" {
            Severity::Critical
        } else {
            Severity::Warn
        };
        let subject = if pattern == "oom" {
            "OOM kills".to_string()
        } else {
            format!("\"{pattern}\"")
        };
        findings.push(Finding::new(
            CHECK,
            subject,
            severity,
            format!("{total} lines ({})", grouped.join(", ")),
            why,
            fix,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_by_pattern_and_hour() {
        let lines = [
            "2024/05/01 12:10:00 [error] 7#7: *1 recv() failed (104: Connection reset by peer) while reading",
            "2024/05/01 12:50:00 [error] 7#7: *2 upstream prematurely closed connection while reading",
            "2024/05/01 13:01:00 [error] 7#7: *3 upstream prematurely closed connection",
            "May  3 04:00:01 host kernel: Out of memory: Killed process 123 (app)",
            "nothing to see",
        ];
        let mut counts = LogCounts::default();
        count_lines(lines.iter().map(|s| s.to_string()), &mut counts);
        let upstream = &counts.by_pattern["upstream prematurely closed"];
        assert_eq!(upstream["2024-05-01 12:00"], 1);
        assert_eq!(upstream["2024-05-01 13:00"], 1);
        // The recv() line also says "Connection reset by peer": counted once, as recv() failed.
        assert_eq!(
            counts.by_pattern["recv() failed (104"]["2024-05-01 12:00"],
            1
        );
        assert!(!counts.by_pattern.contains_key("Connection reset by peer"));
        assert_eq!(counts.by_pattern["oom"]["05-03 04:00"], 1);
    }
}
