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

    /// Counts one line.
    fn count(&self, line: &str, counts: &mut LogCounts) {
        if let Some(label) = self.label_of(line) {
            *counts
                .by_pattern
                .entry(label)
                .or_default()
                .entry(self.hour_of(line))
                .or_default() += 1;
        }
    }
}

/// Counts the patterns in lines.
pub fn count_lines<I: IntoIterator<Item = String>>(lines: I, counts: &mut LogCounts) {
    let matchers = Matchers::new();
    for line in lines {
        matchers.count(&line, counts);
    }
}

/// The longest line kept; the rest of a longer line is skipped (and counted).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Of a big plain log, only the last this many bytes are read (like `tail`).
pub const MAX_TAIL_BYTES: u64 = 64 * 1024 * 1024;
/// Of a gzip-compressed log, at most this many decompressed bytes are read.
pub const MAX_GZIP_BYTES: u64 = 256 * 1024 * 1024;
/// Bytes looked at to tell text from binary.
const SNIFF_BYTES: usize = 8192;

/// What reading one log did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanStats {
    /// Lines read.
    pub lines: u64,
    /// Lines longer than [`MAX_LINE_BYTES`], of which only the start was looked at.
    pub overlong: u64,
    /// Bytes read (decompressed).
    pub bytes: u64,
    /// Whether the reading stopped at a size limit (for gzip: more followed).
    pub limited: bool,
}

/// Calls `on_line` for each line of `reader`, each cut at [`MAX_LINE_BYTES`] (the rest of an
/// overlong line is skipped), reading at most `limit` bytes. Memory stays within one line.
/// With `skip_partial_first`, the bytes up to the first newline are skipped (a tail that
/// starts mid-line).
pub fn scan_lines<R: BufRead>(
    mut reader: R,
    limit: u64,
    skip_partial_first: bool,
    mut on_line: impl FnMut(&str),
) -> std::io::Result<ScanStats> {
    let mut stats = ScanStats::default();
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    let mut skipping = skip_partial_first;
    let mut finish = |line: &mut Vec<u8>, overlong: &mut bool, stats: &mut ScanStats| {
        stats.lines += 1;
        stats.overlong += u64::from(*overlong);
        on_line(&String::from_utf8_lossy(line));
        line.clear();
        *overlong = false;
    };
    loop {
        if stats.bytes >= limit {
            stats.limited = !reader.fill_buf()?.is_empty();
            break;
        }
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let room = usize::try_from(limit - stats.bytes).unwrap_or(usize::MAX);
        let buf = &buf[..buf.len().min(room)];
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        if !skipping {
            let keep = (MAX_LINE_BYTES - line.len()).min(chunk.len());
            line.extend_from_slice(&chunk[..keep]);
            overlong |= keep < chunk.len();
        }
        let used = chunk.len() + usize::from(newline.is_some());
        reader.consume(used);
        stats.bytes += used as u64;
        if newline.is_some() {
            if skipping {
                skipping = false;
            } else {
                finish(&mut line, &mut overlong, &mut stats);
            }
        }
    }
    if !skipping && (!line.is_empty() || overlong) {
        finish(&mut line, &mut overlong, &mut stats);
    }
    Ok(stats)
}

/// Why the start of a log does not look like text, if it does not.
fn binary_reason(start: &[u8]) -> Option<String> {
    let sample = &start[..start.len().min(SNIFF_BYTES)];
    if sample.is_empty() {
        return None;
    }
    if sample.contains(&0) {
        return Some("binary content (NUL bytes), not a text log".to_string());
    }
    let control = sample
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c | 0x1b))
        .count();
    (control * 10 > sample.len()).then(|| {
        format!(
            "binary content ({control} control bytes in the first {}), not a text log",
            sample.len()
        )
    })
}

fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// What kind of file a path is, when it is not one the audit reads.
fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory, not a log file (give the log files in it)")
    } else if kind.is_fifo() {
        Some("a FIFO, not a regular file (it could block or never end)")
    } else if kind.is_char_device() {
        Some("a character device, not a regular file (it could never end)")
    } else if kind.is_block_device() {
        Some("a block device, not a log file")
    } else if kind.is_socket() {
        Some("a socket, not a log file")
    } else {
        Some("not a regular file")
    }
}

/// Reads one log file into `counts`, bounded in memory and size. Returns a note for the
/// per-file finding, or the reason the file was skipped.
pub fn scan_file(path: &Path, counts: &mut LogCounts) -> Result<String, String> {
    use std::io::{Read, Seek, SeekFrom};
    // Metadata first: opening a FIFO would block.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if let Some(reason) = not_regular(&meta) {
        return Err(reason.to_string());
    }
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut magic = [0u8; 2];
    let got = file
        .read(&mut magic)
        .map_err(|e| format!("cannot read: {e}"))?;
    let gzip = got == 2 && magic == [0x1f, 0x8b];
    let size = meta.len();
    let matchers = Matchers::new();
    let mut found = LogCounts::default();
    let (stats, tail_from) = if gzip {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| format!("cannot read: {e}"))?;
        let mut reader = BufReader::with_capacity(
            64 * 1024,
            flate2::read::MultiGzDecoder::new(BufReader::new(file)),
        );
        let start = reader
            .fill_buf()
            .map_err(|e| format!("cannot decompress (gzip): {e}"))?;
        if let Some(reason) = binary_reason(start) {
            return Err(format!("decompressed: {reason}"));
        }
        let stats = scan_lines(reader, MAX_GZIP_BYTES, false, |line| {
            matchers.count(line, &mut found)
        })
        .map_err(|e| format!("cannot decompress (gzip): {e}"))?;
        (stats, 0)
    } else {
        let from = size.saturating_sub(MAX_TAIL_BYTES);
        file.seek(SeekFrom::Start(from))
            .map_err(|e| format!("cannot read: {e}"))?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let start = reader.fill_buf().map_err(|e| format!("cannot read: {e}"))?;
        if let Some(reason) = binary_reason(start) {
            return Err(reason);
        }
        let stats = scan_lines(reader, MAX_TAIL_BYTES, from > 0, |line| {
            matchers.count(line, &mut found)
        })
        .map_err(|e| format!("cannot read: {e}"))?;
        (stats, from)
    };
    for (label, hours) in found.by_pattern {
        let mine = counts.by_pattern.entry(label).or_default();
        for (hour, n) in hours {
            *mine.entry(hour).or_default() += n;
        }
    }
    let mut note = format!(
        "{} lines read{}",
        stats.lines,
        if gzip { " (gzip, decompressed)" } else { "" }
    );
    if tail_from > 0 {
        note.push_str(&format!(
            "; only the last {} of {} (older lines not counted)",
            human_bytes(MAX_TAIL_BYTES),
            human_bytes(size)
        ));
    }
    if stats.limited {
        note.push_str(&format!(
            "; stopped after {} (the rest not counted)",
            human_bytes(stats.bytes)
        ));
    }
    if stats.overlong > 0 {
        note.push_str(&format!(
            "; {} line(s) over {} KiB: only their first {} KiB looked at",
            stats.overlong,
            MAX_LINE_BYTES / 1024,
            MAX_LINE_BYTES / 1024
        ));
    }
    Ok(note)
}

/// Adds the kernel log (dmesg, else the journal) to the counts, or a skip.
fn kernel_log(counts: &mut LogCounts, findings: &mut Vec<Finding>) -> bool {
    use std::process::Stdio;
    let tries: [(&str, &[&str]); 2] = [
        ("dmesg", &["--time-format", "iso"]),
        ("journalctl", &["-k", "-b", "--no-pager", "-o", "short-iso"]),
    ];
    let matchers = Matchers::new();
    let mut reasons = Vec::new();
    for (tool, args) in tries {
        let child = Command::new(tool)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                reasons.push(format!("{tool}: {e}"));
                continue;
            }
        };
        let mut found = LogCounts::default();
        let stdout = child.stdout.take().expect("piped stdout");
        // Streamed with the same bounds as a log file; stderr is short.
        let scanned = scan_lines(BufReader::new(stdout), MAX_TAIL_BYTES, false, |line| {
            matchers.count(line, &mut found)
        });
        let limited = scanned.as_ref().is_ok_and(|s| s.limited);
        if limited {
            let _ = child.kill();
        }
        let out = child.wait_with_output();
        match (scanned, out) {
            (Ok(_), Ok(out)) if out.status.success() || limited => {
                for (label, hours) in found.by_pattern {
                    let mine = counts.by_pattern.entry(label).or_default();
                    for (hour, n) in hours {
                        *mine.entry(hour).or_default() += n;
                    }
                }
                findings.push(Finding::ok(CHECK, format!("kernel log ({tool})"), "read"));
                return true;
            }
            (Err(e), _) => reasons.push(format!("{tool}: {e}")),
            (_, Err(e)) => reasons.push(format!("{tool}: {e}")),
            (_, Ok(out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let first = stderr.lines().next().unwrap_or("").trim();
                reasons.push(format!("{tool}: failed ({}): {first}", out.status));
            }
        }
    }
    findings.push(Finding::skip(
        CHECK,
        "kernel log (OOM kills)",
        reasons.join("; "),
    ));
    false
}

/// Scans the logs and adds one finding per pattern seen.
pub fn check(options: &AuditOptions, findings: &mut Vec<Finding>) {
    let mut counts = LogCounts::default();
    let mut scanned = 0;
    // The kernel log is read whenever system logs are on, with or without --log.
    if options.system_tools && kernel_log(&mut counts, findings) {
        scanned += 1;
    }
    let paths: Vec<PathBuf> = if options.logs.is_empty() {
        if !options.system_tools {
            findings.push(Finding::skip(
                CHECK,
                "logs",
                "no log given (--log) and system logs are off for a staged proc root",
            ));
            return;
        }
        USUAL_LOGS
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect()
    } else {
        options.logs.clone()
    };
    for path in &paths {
        let subject = path.display().to_string();
        match scan_file(path, &mut counts) {
            Ok(note) => {
                scanned += 1;
                findings.push(Finding::ok(CHECK, subject, note));
            }
            Err(reason) => findings.push(Finding::skip(CHECK, subject, reason)),
        }
    }
    if scanned == 0 {
        // Every source was skipped (each with its reason): nothing to call `ok`.
        return;
    }
    if counts.by_pattern.is_empty() {
        findings.push(Finding::ok(
            CHECK,
            "reset and OOM lines",
            format!("none in {scanned} log(s) read"),
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
