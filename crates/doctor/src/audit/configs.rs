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
    /// The addresses this idle time is about: for a reuse time, the upstream servers the
    /// proxy connects to; for a close time, the addresses the server listens on. Empty when
    /// the config does not say (then the pairing across files is assumed).
    pub addrs: Vec<Endpoint>,
}

impl IdleTime {
    /// An idle time with no known address.
    pub fn new(file: &str, label: String, seconds: f64) -> Self {
        Self {
            file: file.to_string(),
            label,
            seconds,
            addrs: Vec::new(),
        }
    }

    /// The same, for these addresses.
    pub fn at(mut self, addrs: Vec<Endpoint>) -> Self {
        self.addrs = addrs;
        self
    }
}

/// One TCP address in a config: a host (None for a wildcard: `0.0.0.0`, `[::]`, `*`, or no
/// address at all) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Lowercase host or IP literal (without brackets); None for any address.
    pub host: Option<String>,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `HOST:PORT`, `[V6]:PORT`, `:PORT`, `*:PORT`, a bare `PORT` (host `None`), or a
    /// bare host with `default_port`. A `scheme://` prefix, a path, and haproxy's `ipv4@`
    /// style prefixes are dropped. None for a unix socket or what does not parse.
    pub fn parse(text: &str, default_port: Option<u16>) -> Option<Self> {
        let mut text = text.trim().trim_matches('"');
        let mut default_port = default_port;
        if let Some((scheme, rest)) = text.split_once("://") {
            default_port = match scheme.to_ascii_lowercase().as_str() {
                "https" => Some(443),
                "http" => Some(80),
                _ => default_port,
            };
            text = rest.split('/').next().unwrap_or("");
        }
        if let Some((prefix, rest)) = text.split_once('@') {
            if matches!(prefix, "ipv4" | "ipv6" | "tcp" | "tcp4" | "tcp6") {
                text = rest;
            } else {
                return None;
            }
        }
        if text.is_empty() || text.starts_with("unix:") || text.starts_with('/') {
            return None;
        }
        if let Ok(port) = text.parse::<u16>() {
            return Some(Self { host: None, port });
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default_port?,
                None => return None,
            };
            (host, port)
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, port.parse().ok()?),
                Some(_) => (text, default_port?),
                None => (text, default_port?),
            }
        };
        let host = host.to_ascii_lowercase();
        let wildcard = host.is_empty()
            || host == "*"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified());
        Some(Self {
            host: (!wildcard).then_some(host),
            port,
        })
    }

    /// Whether a connection to `self` reaches a listener on `listen`: the same port, and the
    /// same IP when both are specific (`localhost` counts as 127.0.0.1 and ::1). Two
    /// different names, or a name against an IP, cannot be told apart here: they match.
    pub fn reaches(&self, listen: &Endpoint) -> bool {
        if self.port != listen.port {
            return false;
        }
        let (Some(a), Some(b)) = (&self.host, &listen.host) else {
            return true;
        };
        let ip = |h: &str| -> Option<Vec<std::net::IpAddr>> {
            if h == "localhost" {
                return Some(vec![
                    [127, 0, 0, 1].into(),
                    std::net::Ipv6Addr::LOCALHOST.into(),
                ]);
            }
            h.parse().ok().map(|ip| vec![ip])
        };
        match (ip(a), ip(b)) {
            (Some(x), Some(y)) => x.iter().any(|ip| y.contains(ip)),
            _ => true,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
            None => write!(f, "*:{}", self.port),
        }
    }
}

/// How a proxy's upstream idle time pairs with a backend's close time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pairing {
    /// Both addresses are known and one of the proxy's servers is the backend's listener.
    Matched,
    /// Both are known and none matches: not compared.
    Unrelated,
    /// One side's addresses are not known: compared on the assumption they are related.
    Assumed,
}

fn pairing(proxy: &IdleTime, backend: &IdleTime) -> Pairing {
    if proxy.addrs.is_empty() || backend.addrs.is_empty() {
        Pairing::Assumed
    } else if proxy
        .addrs
        .iter()
        .any(|to| backend.addrs.iter().any(|listen| to.reaches(listen)))
    {
        Pairing::Matched
    } else {
        Pairing::Unrelated
    }
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

/// How deep includes may nest (nginx and Apache configs nest two or three levels).
const MAX_INCLUDE_DEPTH: usize = 8;
/// At most this many files are read through includes of one config.
const MAX_INCLUDED_FILES: usize = 512;

/// What following one config's includes met.
#[derive(Debug, Default)]
struct Expansion {
    /// Files read so far (canonical paths): a file included twice on one path is a loop.
    stack: Vec<PathBuf>,
    files: usize,
    problems: Vec<String>,
}

/// Replaces each nginx `include PATTERN;` or Apache `Include`/`IncludeOptional PATTERN` line
/// with the files it names (a glob in the last path component, relative paths from the
/// config's directory, the nginx prefix or Apache ServerRoot on the usual layouts), so that
/// Debian layouts (`conf.d/*.conf`, `sites-enabled/*`) are audited with their main file.
fn expand_includes(
    kind: &str,
    text: &str,
    base: &Path,
    depth: usize,
    state: &mut Expansion,
) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let Some((pattern, optional)) = include_of(kind, line) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if depth >= MAX_INCLUDE_DEPTH {
            state.problems.push(format!(
                "include {pattern}: not followed, includes nest deeper than {MAX_INCLUDE_DEPTH}"
            ));
            continue;
        }
        let files = resolve_include(base, &pattern);
        if files.is_empty() && !optional && !pattern.contains(['*', '?', '[']) {
            state
                .problems
                .push(format!("include {pattern}: no such file"));
        }
        for file in files {
            let canonical = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if state.stack.contains(&canonical) {
                state.problems.push(format!(
                    "include {}: not followed, it includes itself (a loop)",
                    file.display()
                ));
                continue;
            }
            if state.files >= MAX_INCLUDED_FILES {
                state.problems.push(format!(
                    "include {}: not followed, more than {MAX_INCLUDED_FILES} included files",
                    file.display()
                ));
                break;
            }
            match std::fs::read_to_string(&file) {
                Ok(included) => {
                    state.files += 1;
                    state.stack.push(canonical);
                    out.push_str(&expand_includes(kind, &included, base, depth + 1, state));
                    state.stack.pop();
                    out.push('\n');
                }
                Err(e) => state
                    .problems
                    .push(format!("include {}: cannot read: {e}", file.display())),
            }
        }
    }
    out
}

/// The pattern of an include line, and whether a missing file is fine.
fn include_of(kind: &str, line: &str) -> Option<(String, bool)> {
    let code = if kind == "nginx" {
        line.split('#').next().unwrap_or("")
    } else {
        line
    };
    let mut words = code.split_whitespace();
    let first = words.next()?;
    let optional = match (kind, first.to_ascii_lowercase().as_str()) {
        ("nginx", "include") if first == "include" => false,
        ("apache", "include") => false,
        ("apache", "includeoptional") => true,
        _ => return None,
    };
    let pattern = words.next()?.trim_end_matches(';').trim_matches('"');
    // nginx: one directive on the line (`include a.conf; server {` is left alone).
    if kind == "nginx" && code.trim_end().trim_end_matches(';').split(';').count() > 1 {
        return None;
    }
    (!pattern.is_empty()).then(|| (pattern.to_string(), optional))
}

/// The files an include pattern names, sorted (as nginx and Apache read them). A directory
/// (Apache) names every file in it.
fn resolve_include(base: &Path, pattern: &str) -> Vec<PathBuf> {
    let path = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?', '[']) {
        if path.is_dir() {
            return sorted_files(&path, |_| true);
        }
        return if path.is_file() {
            vec![path]
        } else {
            Vec::new()
        };
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    sorted_files(&dir, |file| glob_match(name.as_bytes(), file.as_bytes()))
}

fn sorted_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| keep(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// A shell-style match of `*` and `?` (other characters literally; `[` too).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
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
        let kind = kind_of(&path, &text);
        let text = match kind {
            Some(kind @ ("nginx" | "apache")) => {
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                let mut expansion = Expansion::default();
                let text = expand_includes(kind, &text, &base, 0, &mut expansion);
                for problem in expansion.problems {
                    findings.push(Finding::skip(CHECK, shown.clone(), problem));
                }
                text
            }
            _ => text,
        };
        let facts = match kind {
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
            let pairing = pairing(proxy, backend);
            if pairing == Pairing::Unrelated {
                continue;
            }
            let severity = if proxy.seconds >= backend.seconds {
                Severity::Critical
            } else {
                Severity::Ok
            };
            let subject = format!("{} vs {}", proxy.label, backend.label);
            let how = match pairing {
                Pairing::Matched => {
                    let to = proxy
                        .addrs
                        .iter()
                        .find(|to| backend.addrs.iter().any(|l| to.reaches(l)))
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    format!(" (the proxy's upstream {to} is this backend's listener)")
                }
                _ => format!(
                    " (assumed to be the same connections: {} not known, so the pairing is \
                     not checked)",
                    match (proxy.addrs.is_empty(), backend.addrs.is_empty()) {
                        (true, true) => "neither the upstream address nor the listen address is",
                        (true, false) => "the proxy's upstream address is",
                        _ => "the backend's listen address is",
                    }
                ),
            };
            let value = format!(
                "proxy reuses idle upstream connections up to {}, backend closes them after {}{how}",
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
    fn endpoints_parse_and_match_by_port_and_specific_ip() {
        let e = |t: &str| Endpoint::parse(t, Some(80)).unwrap();
        assert_eq!(e("127.0.0.1:24600").to_string(), "127.0.0.1:24600");
        assert_eq!(e("80").host, None);
        assert_eq!(e(":80").host, None);
        assert_eq!(e("*:80").host, None);
        assert_eq!(e("0.0.0.0:80").host, None);
        assert_eq!(e("[::]:443").host, None);
        assert_eq!(e("[::1]:443").to_string(), "[::1]:443");
        assert_eq!(e("http://127.0.0.1:24601/x").port, 24601);
        assert_eq!(e("https://api.example").port, 443);
        assert_eq!(e("ipv4@127.0.0.1:9").port, 9);
        assert_eq!(e("backend.local").port, 80);
        assert!(Endpoint::parse("unix:/run/app.sock", Some(80)).is_none());
        assert!(!e("127.0.0.1:24600").reaches(&e("127.0.0.1:24602")));
        assert!(!e("127.0.0.1:24601").reaches(&e("127.0.0.2:24601")));
        assert!(e("127.0.0.1:24601").reaches(&e("127.0.0.1:24601")));
        assert!(e("127.0.0.1:24601").reaches(&e("0.0.0.0:24601")));
        assert!(e("10.0.0.9:8080").reaches(&e("*:8080")));
        assert!(e("localhost:8080").reaches(&e("127.0.0.1:8080")));
        assert!(e("app.internal:8080").reaches(&e("10.0.0.9:8080")));
    }

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
