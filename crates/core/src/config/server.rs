//! `[server]` (listeners, admin listener, client-side limits and timeouts) and
//! `[retry_budget]`.
//!
//! ```toml
//! [server]
//! listen = ["127.0.0.1:8080"]
//! admin = "127.0.0.1:9901"          # /metrics (and the admin API when enabled)
//! max_connections = 10000           # excess connections get 503 and a FIN
//! client_idle_timeout_ms = 60000
//! header_timeout_ms = 10000         # slow request heads get 408
//! body_timeout_ms = 60000           # a request body that stalls this long gets 408
//! max_header_bytes = 16384          # 431 above
//! max_body_bytes = 10485760         # 413 above
//! retry_buffer_bytes = 1048576      # bodies up to this are kept for retries; larger ones stream
//! drain_timeout_ms = 30000          # SIGTERM: time to finish in-flight requests
//! access_log = "stdout"             # "stdout", "off", or a file path
//! demo_upstream = "127.0.0.1:9000"  # start the built-in demo upstream here
//! front_idle_timeout_ms = 60000     # idle timeout of a load balancer in front (for `check`)
//! workers = 0                       # threads serving requests; 0 = one per CPU, 1 = one thread
//! ignore_client_abort = false       # true: a client that closes its side still gets its answer
//! tls_listen = ["127.0.0.1:8443"]   # HTTPS listeners (HTTP/1.1 and h2 by ALPN)...
//! tls_cert_file = "/etc/holdfast/cert.pem"  # ...with this PEM certificate chain...
//! tls_key_file = "/etc/holdfast/key.pem"    # ...and its PEM private key (PKCS#8, PKCS#1, SEC1)
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[server]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default)]
    pub listen: Vec<String>,
    pub admin: Option<String>,
    pub max_connections: Option<usize>,
    pub client_idle_timeout_ms: Option<u64>,
    pub header_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub retry_buffer_bytes: Option<u64>,
    pub drain_timeout_ms: Option<u64>,
    pub access_log: Option<String>,
    pub demo_upstream: Option<String>,
    pub front_idle_timeout_ms: Option<u64>,
    pub workers: Option<usize>,
    pub ignore_client_abort: Option<bool>,
    #[serde(default)]
    pub tls_listen: Vec<String>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
}

/// The certificate of the TLS listeners: PEM files, read by the proxy at start, on every
/// reload (so a rotated certificate is picked up) and by `holdfast check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// `server.tls_cert_file`: the certificate chain, the server's own certificate first.
    pub cert_file: String,
    /// `server.tls_key_file`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

/// Where the JSON access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(String),
}

/// Validated `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub max_connections: usize,
    pub client_idle_timeout: Duration,
    pub header_timeout: Duration,
    /// The longest wait for the next bytes of a request body: a body that stalls longer is
    /// answered `408` (when no answer has started) and the connection closes.
    pub body_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    /// Request bodies up to this size are buffered so the request can be sent again; larger
    /// ones stream to the upstream (retried only before their first byte went out).
    pub retry_buffer_bytes: u64,
    pub drain_timeout: Duration,
    pub access_log: AccessLog,
    pub demo_upstream: Option<SocketAddr>,
    pub front_idle_timeout: Option<Duration>,
    /// Threads serving requests: 0 = one per CPU; 1 = a single-threaded runtime (the fastest
    /// per core; like one nginx worker).
    pub workers: usize,
    /// `false` (the default): an HTTP/1 client that closes its side of the connection while its
    /// request is in flight has left; the upstream exchange is cancelled and logged
    /// `client_aborted` (nginx's and Envoy's behaviour). `true`: a half-close is not an abort;
    /// the client still gets its answer (nginx's `proxy_ignore_client_abort on`).
    pub ignore_client_abort: bool,
    /// Client listeners that speak TLS (HTTPS: HTTP/1.1 and HTTP/2 by ALPN).
    pub tls_listen: Vec<SocketAddr>,
    /// Their certificate and key; `Some` exactly when `tls_listen` is not empty.
    pub tls: Option<ListenerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            admin: None,
            max_connections: 10_000,
            client_idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            retry_buffer_bytes: 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
            access_log: AccessLog::Stdout,
            demo_upstream: None,
            front_idle_timeout: None,
            workers: 0,
            ignore_client_abort: false,
            tls_listen: Vec::new(),
            tls: None,
        }
    }
}

/// Parse `value` as `host:port`, naming `key` on failure.
pub fn parse_addr(key: &str, value: &str, errors: &mut Vec<ConfigError>) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(ConfigError::new(
                key,
                format!("`{value}` is not an IP address and port"),
                "write it as `127.0.0.1:8080` (or `0.0.0.0:8080` for every interface)",
            ));
            None
        }
    }
}

/// Whether binding `a` and then `b` would fail with "address in use": the same port (not 0,
/// which picks a free one) on the same IP, or on an unspecified IP (`0.0.0.0`, `[::]`) that
/// covers the other.
pub fn same_socket(a: &SocketAddr, b: &SocketAddr) -> bool {
    let covers = |wild: &SocketAddr, other: &SocketAddr| {
        // `[::]` is dual-stack on Linux by default, so it covers IPv4 addresses too.
        wild.ip().is_unspecified() && (wild.is_ipv6() || other.is_ipv4())
    };
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

fn next_port(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1))
}

/// A positive millisecond value, or the default.
pub fn positive_ms(
    key: &str,
    value: Option<u64>,
    default: Duration,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match value {
        Some(0) => {
            errors.push(ConfigError::new(
                key,
                "must be greater than 0",
                "give a duration in milliseconds, e.g. 1000",
            ));
            default
        }
        Some(ms) => Duration::from_millis(ms),
        None => default,
    }
}

/// Validate `[server]`.
pub fn validate(raw: &RawServer, errors: &mut Vec<ConfigError>) -> ServerConfig {
    let d = ServerConfig::default();
    let listen = if raw.listen.is_empty() {
        d.listen.clone()
    } else {
        raw.listen
            .iter()
            .enumerate()
            .filter_map(|(i, v)| parse_addr(&format!("server.listen[{i}]"), v, errors))
            .collect()
    };
    let admin = raw
        .admin
        .as_deref()
        .and_then(|v| parse_addr("server.admin", v, errors));
    let demo_upstream = raw
        .demo_upstream
        .as_deref()
        .and_then(|v| parse_addr("server.demo_upstream", v, errors));
    // Two listeners on one address cannot both bind (`serve` would fail to start).
    for (j, b) in listen.iter().enumerate() {
        if let Some(i) = listen[..j].iter().position(|a| same_socket(a, b)) {
            errors.push(ConfigError::new(
                format!("server.listen[{j}]"),
                format!(
                    "`{b}` is also server.listen[{i}] (`{}`): the second bind would fail",
                    listen[i]
                ),
                "remove one of them, or give each listener its own port",
            ));
        }
    }
    let taken = |addr: &SocketAddr| listen.iter().find(|l| same_socket(l, addr));
    if let Some((addr, l)) = admin.and_then(|a| taken(&a).map(|l| (a, l))) {
        errors.push(ConfigError::new(
            "server.admin",
            format!("`{addr}` is also a client listener (server.listen has `{l}`): the admin listener could not bind"),
            format!("give the admin listener its own port, e.g. `{}`", next_port(addr)),
        ));
    }
    if let Some(demo) = demo_upstream {
        let clash = taken(&demo)
            .map(|l| format!("server.listen (`{l}`)"))
            .or_else(|| {
                admin
                    .filter(|a| same_socket(a, &demo))
                    .map(|a| format!("server.admin (`{a}`)"))
            });
        if let Some(clash) = clash {
            errors.push(ConfigError::new(
                "server.demo_upstream",
                format!("`{demo}` is also {clash}: the demo upstream could not bind"),
                format!(
                    "give the demo upstream its own port, e.g. `{}`",
                    next_port(demo)
                ),
            ));
        }
    }
    let max_connections = match raw.max_connections {
        Some(0) => {
            errors.push(ConfigError::new(
                "server.max_connections",
                "must be at least 1",
                "e.g. 10000",
            ));
            d.max_connections
        }
        Some(n) => n,
        None => d.max_connections,
    };
    let max_header_bytes = match raw.max_header_bytes {
        Some(n) if n < 1024 => {
            errors.push(ConfigError::new(
                "server.max_header_bytes",
                "is below 1024",
                "use at least 1024 (default 16384)",
            ));
            d.max_header_bytes
        }
        Some(n) => n,
        None => d.max_header_bytes,
    };
    let access_log = match raw.access_log.as_deref() {
        None | Some("stdout") => AccessLog::Stdout,
        Some("off") => AccessLog::Off,
        Some("") => {
            errors.push(ConfigError::new(
                "server.access_log",
                "is empty",
                "use \"stdout\", \"off\" or a file path",
            ));
            AccessLog::Stdout
        }
        Some(path) => AccessLog::File(path.to_string()),
    };
    let workers = match raw.workers {
        Some(n) if n > 1024 => {
            errors.push(ConfigError::new(
                "server.workers",
                format!("{n} threads is more than 1024"),
                "use 0 (one per CPU), 1, or the number of cores to use",
            ));
            d.workers
        }
        Some(n) => n,
        None => d.workers,
    };
    let (tls_listen, tls) = validate_tls(raw, (&listen, admin, demo_upstream), errors);
    ServerConfig {
        tls_listen,
        tls,
        workers,
        listen,
        admin,
        max_connections,
        client_idle_timeout: positive_ms(
            "server.client_idle_timeout_ms",
            raw.client_idle_timeout_ms,
            d.client_idle_timeout,
            errors,
        ),
        header_timeout: positive_ms(
            "server.header_timeout_ms",
            raw.header_timeout_ms,
            d.header_timeout,
            errors,
        ),
        body_timeout: positive_ms(
            "server.body_timeout_ms",
            raw.body_timeout_ms,
            d.body_timeout,
            errors,
        ),
        max_header_bytes,
        max_body_bytes: raw.max_body_bytes.unwrap_or(d.max_body_bytes),
        retry_buffer_bytes: raw.retry_buffer_bytes.unwrap_or(d.retry_buffer_bytes),
        drain_timeout: positive_ms(
            "server.drain_timeout_ms",
            raw.drain_timeout_ms,
            d.drain_timeout,
            errors,
        ),
        access_log,
        demo_upstream,
        front_idle_timeout: raw.front_idle_timeout_ms.map(Duration::from_millis),
        ignore_client_abort: raw.ignore_client_abort.unwrap_or(d.ignore_client_abort),
    }
}

/// `server.tls_listen` with its certificate and key. The plain listeners, the admin listener
/// and the demo upstream are given too: a TLS listener may not share an address with them.
fn validate_tls(
    raw: &RawServer,
    (listen, admin, demo): (&[SocketAddr], Option<SocketAddr>, Option<SocketAddr>),
    errors: &mut Vec<ConfigError>,
) -> (Vec<SocketAddr>, Option<ListenerTls>) {
    let tls_listen: Vec<SocketAddr> = raw
        .tls_listen
        .iter()
        .enumerate()
        .filter_map(|(i, v)| parse_addr(&format!("server.tls_listen[{i}]"), v, errors))
        .collect();
    for (j, b) in tls_listen.iter().enumerate() {
        let key = format!("server.tls_listen[{j}]");
        let clash = tls_listen[..j]
            .iter()
            .position(|a| same_socket(a, b))
            .map(|i| format!("server.tls_listen[{i}] (`{}`)", tls_listen[i]))
            .or_else(|| {
                let l = listen.iter().find(|l| same_socket(l, b))?;
                Some(format!("a plain listener (server.listen has `{l}`)"))
            })
            .or_else(|| {
                let a = admin.filter(|a| same_socket(a, b))?;
                Some(format!("server.admin (`{a}`)"))
            })
            .or_else(|| {
                let d = demo.filter(|d| same_socket(d, b))?;
                Some(format!("server.demo_upstream (`{d}`)"))
            });
        if let Some(clash) = clash {
            errors.push(ConfigError::new(
                key,
                format!("`{b}` is also {clash}: the TLS listener could not bind"),
                format!(
                    "give the TLS listener its own port, e.g. `{}`",
                    next_port(*b)
                ),
            ));
        }
    }
    let cert = pem_path("tls_cert_file", raw.tls_cert_file.as_deref(), errors);
    let key = pem_path("tls_key_file", raw.tls_key_file.as_deref(), errors);
    if raw.tls_listen.is_empty() {
        for (name, value) in [("tls_cert_file", &cert), ("tls_key_file", &key)] {
            if value.is_some() {
                errors.push(ConfigError::new(
                    format!("server.{name}"),
                    "is set but server.tls_listen is empty, so no listener would use it",
                    "add the HTTPS addresses, e.g. `tls_listen = [\"0.0.0.0:8443\"]`, or remove tls_cert_file and tls_key_file",
                ));
            }
        }
        return (Vec::new(), None);
    }
    if let (Some(cert_file), Some(key_file)) = (cert, key) {
        return (
            tls_listen,
            Some(ListenerTls {
                cert_file,
                key_file,
            }),
        );
    }
    // A key given but empty was reported above.
    match (&raw.tls_cert_file, &raw.tls_key_file) {
        (None, None) => errors.push(ConfigError::new(
            "server.tls_listen",
            "TLS listeners need a certificate and its private key, and neither is set",
            "add `tls_cert_file = \"/etc/holdfast/cert.pem\"` (the PEM certificate chain) and `tls_key_file = \"/etc/holdfast/key.pem\"` (its PEM private key) to [server], or remove tls_listen",
        )),
        (Some(_), None) => errors.push(ConfigError::new(
            "server.tls_key_file",
            "is missing: server.tls_cert_file is set, and the TLS listeners need its private key too",
            "add `tls_key_file = \"/etc/holdfast/key.pem\"` (the PEM private key of the certificate) to [server]",
        )),
        (None, Some(_)) => errors.push(ConfigError::new(
            "server.tls_cert_file",
            "is missing: server.tls_key_file is set, and the TLS listeners need the certificate too",
            "add `tls_cert_file = \"/etc/holdfast/cert.pem\"` (the PEM certificate chain, the server's own certificate first) to [server]",
        )),
        (Some(_), Some(_)) => {}
    }
    (tls_listen, None)
}

/// The path in `server.KEY`, unless it is empty (an error).
fn pem_path(key: &str, value: Option<&str>, errors: &mut Vec<ConfigError>) -> Option<String> {
    match value {
        Some("") => {
            errors.push(ConfigError::new(
                format!("server.{key}"),
                "is empty",
                "give the path of a PEM file, or remove the key",
            ));
            None
        }
        other => other.map(str::to_string),
    }
}

/// `[retry_budget]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryBudget {
    /// Retries allowed as a percentage of requests (default 20).
    pub percent: Option<u32>,
    /// Retries always allowed per second (default 3).
    pub min_per_second: Option<u32>,
    /// First backoff before a retry, ms (default 5); doubled each retry, with full jitter.
    pub backoff_base_ms: Option<u64>,
    /// Longest backoff, ms (default 250).
    pub backoff_max_ms: Option<u64>,
}

/// Validated retry budget and backoff.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudget {
    pub percent: u32,
    pub min_per_second: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            percent: 20,
            min_per_second: 3,
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(250),
        }
    }
}

/// Validate `[retry_budget]`.
pub fn validate_budget(raw: &RawRetryBudget, errors: &mut Vec<ConfigError>) -> RetryBudget {
    let d = RetryBudget::default();
    let percent = raw.percent.unwrap_or(d.percent);
    if percent > 100 {
        errors.push(ConfigError::new(
            "retry_budget.percent",
            "is above 100",
            "use a percentage from 0 to 100",
        ));
    }
    let backoff_base = raw
        .backoff_base_ms
        .map(Duration::from_millis)
        .unwrap_or(d.backoff_base);
    let backoff_max = raw
        .backoff_max_ms
        .map(Duration::from_millis)
        .unwrap_or(d.backoff_max);
    if backoff_max < backoff_base {
        errors.push(ConfigError::new(
            "retry_budget.backoff_max_ms",
            "is below backoff_base_ms",
            "make it at least backoff_base_ms",
        ));
    }
    RetryBudget {
        percent: percent.min(100),
        min_per_second: raw.min_per_second.unwrap_or(d.min_per_second),
        backoff_base,
        backoff_max,
    }
}
