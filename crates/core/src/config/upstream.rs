//! `[upstreams.NAME]`: pools of weighted targets, load balancing, health checks, outlier
//! ejection and upstream keep-alive.
//!
//! ```toml
//! [upstreams.api]
//! targets = [{ url = "http://127.0.0.1:9000", weight = 2 }, "http://127.0.0.1:9001"]
//! balance = "round_robin"          # round_robin | least_request | consistent_hash
//! hash_on = "header:x-user"        # consistent_hash: header:NAME | cookie:NAME | client_ip
//! connect_timeout_ms = 2000
//! idle_timeout_ms = 30000          # retire pooled connections idle this long
//! server_keepalive_timeout_ms = 5000   # the upstream's own idle timeout, if known (for `check`)
//! panic_threshold_percent = 50     # below this share of healthy targets, use them all
//! health_check = { kind = "http", path = "/healthz", interval_ms = 5000 }
//! outlier = { consecutive_failures = 5, base_ejection_ms = 1000, max_ejection_ms = 30000 }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::server::positive_ms;
use super::ConfigError;

/// One target as written: a URL string or `{ url, weight }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawTarget {
    Url(String),
    Weighted(RawWeightedTarget),
}

/// `{ url = "...", weight = N }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedTarget {
    pub url: String,
    pub weight: Option<u32>,
}

/// `[upstreams.NAME]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    pub balance: Option<String>,
    pub hash_on: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub server_keepalive_timeout_ms: Option<u64>,
    pub max_idle_per_target: Option<usize>,
    pub panic_threshold_percent: Option<u32>,
    pub health_check: Option<RawHealthCheck>,
    pub outlier: Option<RawOutlier>,
    pub tls_ca_file: Option<String>,
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
    pub protocol: Option<String>,
}

/// `health_check` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

/// `outlier` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<u32>,
    pub base_ejection_ms: Option<u64>,
    pub max_ejection_ms: Option<u64>,
}

/// How a pool picks a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    ConsistentHash(HashOn),
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(String),
    Cookie(String),
    ClientIp,
}

/// A target: scheme-less `host:port` authority plus weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    pub weight: u32,
    /// `https://`: TLS to the target, with `host` as the server name (SNI, certificate check).
    pub tls: bool,
    /// The host part of the URL (without brackets for IPv6).
    pub host: String,
}

impl Target {
    /// A plain-HTTP target `host:port` with weight 1.
    pub fn plain(authority: &str) -> Target {
        let host = authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Target {
            authority: authority.to_string(),
            weight: 1,
            tls: false,
            host,
        }
    }
}

/// A parsed target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// `host:port` (port 80 or 443 when absent).
    pub authority: String,
    pub tls: bool,
    pub host: String,
}

/// Active health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// `Some(path)` for HTTP checks (2xx/3xx is healthy), `None` for TCP connect checks.
    pub http_path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Passive outlier ejection.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
        }
    }
}

/// A validated pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub server_keepalive_timeout: Option<Duration>,
    pub max_idle_per_target: usize,
    pub panic_threshold_percent: u32,
    pub health_check: Option<HealthCheck>,
    pub outlier: Outlier,
    /// PEM file of CA certificates trusted for `https://` targets (instead of the bundled
    /// Mozilla roots).
    pub tls_ca_file: Option<String>,
    /// PEM certificate chain and private key this pool presents to `https://` targets that
    /// ask for a client certificate (mutual TLS): `(cert_file, key_file)`.
    pub tls_client_auth: Option<(String, String)>,
    /// The protocol spoken to the targets: HTTP/1.1 (default) or HTTP/2 (`h2` by ALPN over
    /// TLS, prior knowledge `h2c` over plain TCP; one multiplexed connection per target).
    pub protocol: UpstreamProtocol,
}

/// `protocol` of an upstream pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
}

impl Upstream {
    /// A pool with the defaults (quick mode).
    pub fn with_defaults(name: &str, targets: Vec<Target>) -> Upstream {
        Upstream {
            name: name.to_string(),
            targets,
            balance: Balance::RoundRobin,
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            server_keepalive_timeout: None,
            max_idle_per_target: 256,
            panic_threshold_percent: 50,
            health_check: None,
            outlier: Outlier::default(),
            tls_ca_file: None,
            tls_client_auth: None,
            protocol: UpstreamProtocol::Http1,
        }
    }
}

/// Parse `http://host:port[/]` or `https://host:port[/]` (port 80 or 443 when absent).
pub fn parse_target_url(key: &str, url: &str, errors: &mut Vec<ConfigError>) -> Option<TargetUrl> {
    let fix = "write it as `http://HOST:PORT` or `https://HOST:PORT`";
    let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => {
            errors.push(ConfigError::new(
                key,
                format!("`{url}` is not an http:// or https:// URL"),
                fix,
            ));
            return None;
        }
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        errors.push(ConfigError::new(
            key,
            format!("`{url}` must be scheme, host and port only"),
            fix,
        ));
        return None;
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'));
    let (host, authority) = if has_port {
        let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
        if port.parse::<u16>().is_err() {
            errors.push(ConfigError::new(
                key,
                format!("`{url}` has a bad port"),
                fix,
            ));
            return None;
        }
        (host, authority.to_string())
    } else {
        let port = if tls { 443 } else { 80 };
        (authority, format!("{authority}:{port}"))
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        errors.push(ConfigError::new(key, format!("`{url}` has no host"), fix));
        return None;
    }
    Some(TargetUrl {
        authority,
        tls,
        host,
    })
}

/// Validate one `[upstreams.NAME]`.
pub fn validate(name: &str, raw: &RawUpstream, errors: &mut Vec<ConfigError>) -> Upstream {
    let base = format!("upstreams.{name}");
    let mut up = Upstream::with_defaults(name, Vec::new());
    if raw.targets.is_empty() {
        errors.push(ConfigError::new(
            format!("{base}.targets"),
            "the pool has no targets",
            "add at least one: targets = [\"http://127.0.0.1:9000\"]",
        ));
    }
    // Each target's authority, with its index in `targets`.
    let mut listed: Vec<(String, usize)> = Vec::new();
    for (i, t) in raw.targets.iter().enumerate() {
        let key = format!("{base}.targets[{i}]");
        let (url, weight) = match t {
            RawTarget::Url(u) => (u.as_str(), 1),
            RawTarget::Weighted(w) => (w.url.as_str(), w.weight.unwrap_or(1)),
        };
        if weight == 0 || weight > 1000 {
            errors.push(ConfigError::new(
                format!("{key}.weight"),
                "must be from 1 to 1000",
                "e.g. weight = 1",
            ));
        }
        if let Some(parsed) = parse_target_url(&key, url, errors) {
            // Listed twice, the target would be two targets of one name: their health, their
            // metrics series and their log lines could not be told apart.
            if let Some((_, j)) = listed.iter().find(|(a, _)| *a == parsed.authority) {
                errors.push(ConfigError::new(
                    key.clone(),
                    format!(
                        "`{}` is listed twice (also as {base}.targets[{j}])",
                        parsed.authority
                    ),
                    "list each target once; to send it more traffic, give it a weight: { url = \"...\", weight = 2 }",
                ));
                continue;
            }
            listed.push((parsed.authority.clone(), i));
            up.targets.push(Target {
                authority: parsed.authority,
                weight: weight.clamp(1, 1000),
                tls: parsed.tls,
                host: parsed.host,
            });
        }
    }
    up.balance = match (raw.balance.as_deref(), raw.hash_on.as_deref()) {
        (None | Some("round_robin"), None) => Balance::RoundRobin,
        (Some("least_request"), None) => Balance::LeastRequest,
        (Some("consistent_hash"), Some(on)) => match parse_hash_on(on) {
            Some(h) => Balance::ConsistentHash(h),
            None => {
                errors.push(ConfigError::new(
                    format!("{base}.hash_on"),
                    format!("`{on}` is not a hash key"),
                    "use \"header:NAME\", \"cookie:NAME\" or \"client_ip\"",
                ));
                Balance::RoundRobin
            }
        },
        (Some("consistent_hash"), None) => {
            errors.push(ConfigError::new(
                format!("{base}.hash_on"),
                "consistent_hash needs hash_on",
                "add hash_on = \"client_ip\" (or header:NAME / cookie:NAME)",
            ));
            Balance::RoundRobin
        }
        (Some("round_robin" | "least_request"), Some(_)) | (None, Some(_)) => {
            errors.push(ConfigError::new(
                format!("{base}.hash_on"),
                "hash_on only applies to consistent_hash",
                "set balance = \"consistent_hash\" or remove hash_on",
            ));
            Balance::RoundRobin
        }
        (Some(other), _) => {
            errors.push(ConfigError::new(
                format!("{base}.balance"),
                format!("`{other}` is not a balancing policy"),
                "use \"round_robin\", \"least_request\" or \"consistent_hash\"",
            ));
            Balance::RoundRobin
        }
    };
    up.connect_timeout = positive_ms(
        &format!("{base}.connect_timeout_ms"),
        raw.connect_timeout_ms,
        up.connect_timeout,
        errors,
    );
    up.idle_timeout = positive_ms(
        &format!("{base}.idle_timeout_ms"),
        raw.idle_timeout_ms,
        up.idle_timeout,
        errors,
    );
    up.server_keepalive_timeout = raw.server_keepalive_timeout_ms.map(Duration::from_millis);
    up.max_idle_per_target = raw.max_idle_per_target.unwrap_or(up.max_idle_per_target);
    if let Some(p) = raw.panic_threshold_percent {
        if p > 100 {
            errors.push(ConfigError::new(
                format!("{base}.panic_threshold_percent"),
                "is above 100",
                "use 0 to 100 (default 50)",
            ));
        }
        up.panic_threshold_percent = p.min(100);
    }
    if let Some(h) = &raw.health_check {
        up.health_check = Some(validate_health(&base, h, errors));
    }
    match raw.tls_ca_file.as_deref() {
        Some("") => errors.push(ConfigError::new(
            format!("{base}.tls_ca_file"),
            "is empty",
            "give the path of a PEM file with the CA certificates to trust, or remove the key",
        )),
        Some(path) => {
            if !up.targets.iter().any(|t| t.tls) {
                errors.push(ConfigError::new(
                    format!("{base}.tls_ca_file"),
                    "is set but no target is https://",
                    "use https:// targets or remove tls_ca_file",
                ));
            }
            up.tls_ca_file = Some(path.to_string());
        }
        None => {}
    }
    match (
        raw.tls_client_cert.as_deref(),
        raw.tls_client_key.as_deref(),
    ) {
        (None, None) => {}
        (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => {
            if !up.targets.iter().any(|t| t.tls) {
                errors.push(ConfigError::new(
                    format!("{base}.tls_client_cert"),
                    "is set but no target is https://",
                    "use https:// targets or remove tls_client_cert and tls_client_key",
                ));
            }
            up.tls_client_auth = Some((cert.to_string(), key.to_string()));
        }
        (cert, _) => {
            let missing = if cert.is_none_or(str::is_empty) {
                "tls_client_cert"
            } else {
                "tls_client_key"
            };
            errors.push(ConfigError::new(
                format!("{base}.{missing}"),
                "mutual TLS needs both a certificate and its key",
                "set tls_client_cert (PEM chain) and tls_client_key (PEM private key) together",
            ));
        }
    }
    match raw.protocol.as_deref() {
        None | Some("http1") => {}
        Some("http2") => up.protocol = UpstreamProtocol::Http2,
        Some(other) => errors.push(ConfigError::new(
            format!("{base}.protocol"),
            format!("`{other}` is not a protocol"),
            "use \"http1\" (HTTP/1.1, the default) or \"http2\" (h2 over TLS, h2c over plain TCP)",
        )),
    }
    if let Some(o) = &raw.outlier {
        let d = Outlier::default();
        let key = format!("{base}.outlier");
        if o.consecutive_failures == Some(0) {
            // 0 used to be read as 1 (eject at the first failure), the opposite of what a
            // user writing 0 to turn ejection off would expect.
            errors.push(ConfigError::new(
                format!("{key}.consecutive_failures"),
                "must be at least 1 (0 would eject a target at its first failure; ejection cannot be turned off)",
                "give the failures in a row that eject a target, e.g. consecutive_failures = 5 (a large number makes ejection rare)",
            ));
        }
        up.outlier = Outlier {
            consecutive_failures: o
                .consecutive_failures
                .unwrap_or(d.consecutive_failures)
                .max(1),
            base_ejection: positive_ms(
                &format!("{key}.base_ejection_ms"),
                o.base_ejection_ms,
                d.base_ejection,
                errors,
            ),
            max_ejection: positive_ms(
                &format!("{key}.max_ejection_ms"),
                o.max_ejection_ms,
                d.max_ejection,
                errors,
            ),
        };
        if up.outlier.base_ejection > up.outlier.max_ejection {
            errors.push(ConfigError::new(
                format!("{key}.base_ejection_ms"),
                format!(
                    "the first ejection ({} ms) is longer than the longest one (max_ejection_ms = {} ms)",
                    up.outlier.base_ejection.as_millis(),
                    up.outlier.max_ejection.as_millis()
                ),
                format!(
                    "lower base_ejection_ms to {} or less, or raise max_ejection_ms to at least {}",
                    up.outlier.max_ejection.as_millis(),
                    up.outlier.base_ejection.as_millis()
                ),
            ));
        }
    }
    up
}

fn parse_hash_on(on: &str) -> Option<HashOn> {
    if on == "client_ip" {
        return Some(HashOn::ClientIp);
    }
    match on.split_once(':') {
        Some(("header", n)) if !n.is_empty() => Some(HashOn::Header(n.to_ascii_lowercase())),
        Some(("cookie", n)) if !n.is_empty() => Some(HashOn::Cookie(n.to_string())),
        _ => None,
    }
}

fn validate_health(base: &str, h: &RawHealthCheck, errors: &mut Vec<ConfigError>) -> HealthCheck {
    let key = format!("{base}.health_check");
    let http_path = match h.kind.as_deref() {
        None | Some("http") => {
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                errors.push(ConfigError::new(
                    format!("{key}.path"),
                    "must start with `/`",
                    "e.g. path = \"/healthz\"",
                ));
            }
            Some(path)
        }
        Some("tcp") => None,
        Some(other) => {
            errors.push(ConfigError::new(
                format!("{key}.kind"),
                format!("`{other}` is not a check kind"),
                "use \"http\" or \"tcp\"",
            ));
            None
        }
    };
    for (name, value) in [
        ("healthy_threshold", h.healthy_threshold),
        ("unhealthy_threshold", h.unhealthy_threshold),
    ] {
        if value == Some(0) {
            errors.push(ConfigError::new(
                format!("{key}.{name}"),
                "must be at least 1",
                format!("give the number of checks in a row, e.g. {name} = 2"),
            ));
        }
    }
    HealthCheck {
        http_path,
        interval: positive_ms(
            &format!("{key}.interval_ms"),
            h.interval_ms,
            Duration::from_secs(5),
            errors,
        ),
        timeout: positive_ms(
            &format!("{key}.timeout_ms"),
            h.timeout_ms,
            Duration::from_secs(1),
            errors,
        ),
        healthy_threshold: h.healthy_threshold.unwrap_or(2).max(1),
        unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3).max(1),
    }
}

/// Validate every pool.
pub fn validate_all(
    raw: &BTreeMap<String, RawUpstream>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Upstream> {
    raw.iter()
        .map(|(name, r)| (name.clone(), validate(name, r, errors)))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    #[test]
    fn a_target_listed_twice_is_refused_with_the_weight_as_fix() {
        let text = "[upstreams.a]\ntargets = [\"http://127.0.0.1:9000\", \"http://127.0.0.1:9001\", { url = \"http://127.0.0.1:9000/\", weight = 2 }]\n[[routes]]\nupstream = \"a\"\n";
        let errs = parse(text, "x.toml", |_| None).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "upstreams.a.targets[2]");
        assert!(
            errs[0]
                .to_string()
                .contains("also as upstreams.a.targets[0]")
                && errs[0].to_string().contains("weight"),
            "{}",
            errs[0]
        );
        // The same port on another host is another target.
        let text = "[upstreams.a]\ntargets = [\"http://127.0.0.1:9000\", \"http://localhost:9000\"]\n[[routes]]\nupstream = \"a\"\n";
        assert!(parse(text, "x.toml", |_| None).is_ok());
    }
}
