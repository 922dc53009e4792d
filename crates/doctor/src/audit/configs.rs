//! Proxy and server configs (nginx, haproxy, Apache, Holdfast TOML): keep-alive and timeout
//! orderings that cause resets, and connection limits.
//!
//! Each file is read into a [`ConfigFacts`]: its own findings, the idle times for which it
//! reuses upstream connections (`reuse`) and the idle times after which it closes its clients'
//! connections (`closes`). Across files, a proxy that reuses an idle upstream connection at
//! least as long as the backend keeps it open races the backend's close: the idle keep-alive
//! race, the classic source of `upstream prematurely closed` and resets.

mod apache;
mod haproxy;
mod holdfast;
mod nginx;

use std::path::{Path, PathBuf};

use super::{AuditOptions, Finding, Severity};

const CHECK: &str = "config";

/// Usual config locations, read when none are given.
const USUAL_CONFIGS: [&str; 5] = [
    "/etc/nginx/nginx.conf",
    "/etc/haproxy/haproxy.cfg",
    "/etc/apache2/apache2.conf",
    "/etc/httpd/conf/httpd.conf",
    "/etc/holdfast/holdfast.toml",
];

/// An idle time a config sets, with where it is set.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleTime {
    /// The file that sets it (pairs from the same file are not compared).
    pub file: String,
    /// "nginx upstream backend keepalive_timeout" and the like.
    pub label: String,
    /// Seconds.
    pub seconds: f64,
}

/// What one config file says.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConfigFacts {
    /// Findings about the file alone.
    pub findings: Vec<Finding>,
    /// How long it keeps idle upstream connections for reuse.
    pub reuse: Vec<IdleTime>,
    /// How long it keeps an idle client connection before closing it.
    pub closes: Vec<IdleTime>,
}

/// Parses a duration in a config: `30`, `30s`, `500ms`, `2m`, `1h`; bare numbers are in
/// `bare_unit_secs` (1 for nginx and Apache, 0.001 for haproxy).
pub fn parse_duration(text: &str, bare_unit_secs: f64) -> Option<f64> {
    let text = text.trim().trim_end_matches(';');
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let value: f64 = num.parse().ok()?;
    let factor = match unit {
        "" => bare_unit_secs,
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    Some(value * factor)
}

/// The kind of config a file is, from its name and content.
fn kind_of(path: &Path, text: &str) -> Option<&'static str> {
    let name = path.to_string_lossy().to_lowercase();
    if name.ends_with(".toml") {
        Some("holdfast")
    } else if name.contains("haproxy")
        || text.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("backend ") || l.starts_with("defaults") || l.starts_with("frontend ")
        })
    {
        Some("haproxy")
    } else if name.contains("apache")
        || name.contains("httpd")
        || text.contains("KeepAliveTimeout")
        || text.contains("<VirtualHost")
    {
        Some("apache")
    } else if name.contains("nginx")
        || text.contains("worker_connections")
        || text.contains("proxy_pass")
        || text.contains("http {")
    {
        Some("nginx")
    } else {
        None
    }
}

/// A duration as the daemons write it: whole seconds as `5s`, anything else in whole
/// milliseconds (`2400ms`), never a float (`2.4000000000000004s`); nginx and haproxy reject
/// fractional seconds.
pub fn secs(s: f64) -> String {
    let ms = (s * 1000.0).round().max(0.0) as u64;
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The config line that sets the idle time labelled `label` (its last word is the directive
/// or TOML key path) to `seconds`, in that daemon's syntax.
pub fn suggest(label: &str, seconds: f64) -> String {
    let directive = label.rsplit(' ').next().unwrap_or("keepalive_timeout");
    let ms = ((seconds * 1000.0).round() as u64).max(1);
    if directive.ends_with("_ms") {
        // Holdfast TOML: an integer of milliseconds under its table.
        return match directive.rsplit_once('.') {
            Some((table, key)) => format!("{key} = {ms} (in [{table}])"),
            None => format!("{directive} = {ms}"),
        };
    }
    let value = secs(ms as f64 / 1000.0);
    if label.contains(" nginx ") {
        format!("{directive} {value};")
    } else {
        format!("{directive} {value}")
    }
}

/// Adds the findings of every config, then the cross-file keep-alive comparisons.
pub fn check(options: &AuditOptions, findings: &mut Vec<Finding>) {
    let paths: Vec<PathBuf> = if options.configs.is_empty() {
        if !options.system_tools {
            findings.push(Finding::skip(
                CHECK,
                "proxy configs",
                "no config given (--config) and usual paths are off for a staged proc root",
            ));
            return;
        }
        let found: Vec<PathBuf> = USUAL_CONFIGS
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect();
        if found.is_empty() {
            findings.push(Finding::skip(
                CHECK,
                "proxy configs",
                format!("none at the usual paths ({})", USUAL_CONFIGS.join(", ")),
            ));
            return;
        }
        found
    } else {
        options.configs.clone()
    };
    let mut all = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                findings.push(Finding::skip(CHECK, shown, format!("cannot read: {e}")));
                continue;
            }
        };
        let facts = match kind_of(&path, &text) {
            Some("nginx") => nginx::facts(&shown, &text),
            Some("haproxy") => haproxy::facts(&shown, &text),
            Some("apache") => apache::facts(&shown, &text),
            Some(_) => holdfast::facts(&shown, &text),
            None => {
                findings.push(Finding::skip(
                    CHECK,
                    shown,
                    "not recognised as nginx, haproxy, Apache or Holdfast TOML",
                ));
                continue;
            }
        };
        all.push(facts);
    }
    let reuse: Vec<IdleTime> = all.iter().flat_map(|f| f.reuse.clone()).collect();
    let closes: Vec<IdleTime> = all.iter().flat_map(|f| f.closes.clone()).collect();
    for facts in all {
        findings.extend(facts.findings);
    }
    for proxy in &reuse {
        for backend in closes.iter().filter(|b| b.file != proxy.file) {
            let severity = if proxy.seconds >= backend.seconds {
                Severity::Critical
            } else {
                Severity::Ok
            };
            let subject = format!("{} vs {}", proxy.label, backend.label);
            let value = format!(
                "proxy reuses idle upstream connections up to {}, backend closes them after {}",
                secs(proxy.seconds),
                secs(backend.seconds)
            );
            findings.push(if severity == Severity::Ok {
                Finding::ok(CHECK, subject, value)
            } else {
                Finding::new(
                    CHECK,
                    subject,
                    severity,
                    value,
                    "the proxy sends a request on a connection the backend is closing at the \
                     same moment: the idle keep-alive race, answered with a reset",
                    format!(
                        "set the proxy's upstream idle time below the backend's, e.g. {}",
                        suggest(&proxy.label, (backend.seconds * 0.8).max(0.001))
                    ),
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("75", 1.0), Some(75.0));
        assert_eq!(parse_duration("5000", 0.001), Some(5.0));
        assert_eq!(parse_duration("500ms", 1.0), Some(0.5));
        assert_eq!(parse_duration("2m", 1.0), Some(120.0));
        assert_eq!(parse_duration("soon", 1.0), None);
    }

    #[test]
    fn suggested_durations_have_no_float_noise_and_fit_each_daemon() {
        assert_eq!(secs(3.0 * 0.8), "2400ms");
        assert_eq!(secs(2.0 * 0.8), "1600ms");
        assert_eq!(secs(2400.0 * 0.001), "2400ms");
        assert_eq!(secs(5.0 * 0.8), "4s");
        assert_eq!(secs(0.5), "500ms");
        assert_eq!(
            suggest("a.conf nginx upstream app keepalive_timeout", 3.0 * 0.8),
            "keepalive_timeout 2400ms;"
        );
        assert_eq!(
            suggest("h.cfg haproxy backend app pool-purge-delay", 3.0 * 0.8),
            "pool-purge-delay 2400ms"
        );
        assert_eq!(
            suggest("h.cfg haproxy backend app pool-purge-delay", 10.0 * 0.8),
            "pool-purge-delay 8s"
        );
        assert_eq!(
            suggest("x.toml holdfast upstreams.api.idle_timeout_ms", 2.0 * 0.8),
            "idle_timeout_ms = 1600 (in [upstreams.api])"
        );
    }
}
