//! `[[routes]]`: match on host, path prefix and method; send to an upstream pool or a handler.
//!
//! ```toml
//! [[routes]]
//! name = "api"
//! host = "api.example.com"          # optional; exact match, port ignored
//! path_prefix = "/v1/"              # default "/"
//! methods = ["GET", "POST"]         # optional; any method when absent
//! upstream = "api"                  # or: handler = "ai"
//! service = "acme/orders"           # optional: the managed service (TENANT/NAME[@VERSION])
//! retry_non_idempotent = false      # retry POST/PATCH after the upstream may have processed it
//! max_attempts = 3
//! timeout_ms = 30000                # upstream response head timeout -> 504
//! max_concurrent = 1000             # 0: unlimited
//! queue_size = 100                  # requests waiting for a slot; beyond: 503 + Retry-After
//! queue_timeout_ms = 1000
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::server::positive_ms;
use super::upstream::Upstream;
use super::ConfigError;

/// `[[routes]]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub methods: Option<Vec<String>>,
    pub upstream: Option<String>,
    pub handler: Option<String>,
    pub service: Option<String>,
    pub retry_non_idempotent: Option<bool>,
    pub max_attempts: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub max_concurrent: Option<usize>,
    pub queue_size: Option<usize>,
    pub queue_timeout_ms: Option<u64>,
}

/// Where a route sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// An upstream pool by name.
    Upstream(String),
    /// A registered [handler](https://docs.rs) by name (e.g. `ai`).
    Handler(String),
}

/// A validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    /// Lower-case host without port.
    pub host: Option<String>,
    pub path_prefix: String,
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
    pub target: RouteTarget,
    pub service: Option<String>,
    pub retry_non_idempotent: bool,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// 0 means unlimited.
    pub max_concurrent: usize,
    pub queue_size: usize,
    pub queue_timeout: Duration,
}

impl Route {
    /// A catch-all route to `upstream` with the defaults (quick mode).
    pub fn catch_all(upstream: &str) -> Route {
        Route {
            name: "default".into(),
            host: None,
            path_prefix: "/".into(),
            methods: Vec::new(),
            target: RouteTarget::Upstream(upstream.into()),
            service: None,
            retry_non_idempotent: false,
            max_attempts: 3,
            timeout: Duration::from_secs(30),
            max_concurrent: 0,
            queue_size: 100,
            queue_timeout: Duration::from_secs(1),
        }
    }
}

/// Validate every route against the known pools.
pub fn validate_all(
    raw: &[RawRoute],
    upstreams: &BTreeMap<String, Upstream>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Route> {
    let mut names = std::collections::HashSet::new();
    let mut routes = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        let name = r.name.clone().unwrap_or_else(|| format!("route-{i}"));
        if name.trim().is_empty() {
            // The name labels metrics, access-log lines and call records.
            errors.push(ConfigError::new(
                format!("{key}.name"),
                "a route name may not be empty",
                format!("give the route a name, e.g. name = \"route-{i}\", or leave `name` out"),
            ));
        } else if !names.insert(name.clone()) {
            errors.push(ConfigError::new(
                format!("{key}.name"),
                format!("route name `{name}` is used twice"),
                "give each route its own name",
            ));
        }
        let target = match (&r.upstream, &r.handler) {
            (Some(u), None) => {
                if !upstreams.contains_key(u) {
                    let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                    errors.push(ConfigError::new(
                        format!("{key}.upstream"),
                        format!("no upstream pool named `{u}`"),
                        if known.is_empty() {
                            format!("define [upstreams.{u}] with its targets")
                        } else {
                            format!("define [upstreams.{u}] or use one of: {}", known.join(", "))
                        },
                    ));
                }
                RouteTarget::Upstream(u.clone())
            }
            (None, Some(h)) => RouteTarget::Handler(h.clone()),
            (Some(_), Some(_)) => {
                errors.push(ConfigError::new(
                    format!("{key}.handler"),
                    "a route has either `upstream` or `handler`, not both",
                    "remove one of them",
                ));
                RouteTarget::Handler(String::new())
            }
            (None, None) => {
                errors.push(ConfigError::new(
                    format!("{key}.upstream"),
                    "the route says neither where to send requests",
                    "add upstream = \"POOL\" or handler = \"NAME\"",
                ));
                RouteTarget::Handler(String::new())
            }
        };
        let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/') {
            errors.push(ConfigError::new(
                format!("{key}.path_prefix"),
                "must start with `/`",
                "e.g. path_prefix = \"/api/\"",
            ));
        }
        let mut methods = Vec::new();
        for (j, m) in r.methods.iter().flatten().enumerate() {
            let upper = m.to_ascii_uppercase();
            if http_method_ok(&upper) {
                methods.push(upper);
            } else {
                errors.push(ConfigError::new(
                    format!("{key}.methods[{j}]"),
                    format!("`{m}` is not an HTTP method"),
                    "use names like \"GET\" or \"POST\"",
                ));
            }
        }
        let max_attempts = r.max_attempts.unwrap_or(3);
        if !(1..=10).contains(&max_attempts) {
            errors.push(ConfigError::new(
                format!("{key}.max_attempts"),
                "must be from 1 to 10",
                "e.g. max_attempts = 3",
            ));
        }
        if let Some(service) = &r.service {
            if let Err(why) = service_spec_problem(service) {
                errors.push(ConfigError::new(
                    format!("{key}.service"),
                    why,
                    "write the service's name, optionally with its tenant and a pinned version: service = \"payments\", \"acme/payments\" or \"acme/payments@v2\" (names: 1-64 letters, digits, `-`, `_`, `.`)",
                ));
            }
        }
        if let Some(host) = &r.host {
            if let Err(why) = route_host_problem(host) {
                errors.push(ConfigError::new(
                    format!("{key}.host"),
                    why,
                    "give the host name alone, e.g. host = \"api.example.com\" (routes match the Host header without its port)",
                ));
            }
        }
        let d = Route::catch_all("");
        routes.push(Route {
            name,
            host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path_prefix,
            methods,
            target,
            service: r.service.clone(),
            retry_non_idempotent: r.retry_non_idempotent.unwrap_or(false),
            max_attempts: max_attempts.clamp(1, 10),
            timeout: positive_ms(
                &format!("{key}.timeout_ms"),
                r.timeout_ms,
                d.timeout,
                errors,
            ),
            max_concurrent: r.max_concurrent.unwrap_or(0),
            queue_size: r.queue_size.unwrap_or(d.queue_size),
            queue_timeout: positive_ms(
                &format!("{key}.queue_timeout_ms"),
                r.queue_timeout_ms,
                d.queue_timeout,
                errors,
            ),
        });
    }
    routes
}

/// A service or version name as API management accepts it: 1-64 of `a-z A-Z 0-9 - _ .`, not
/// only dots.
fn name_problem(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "the {what} name must be 1 to 64 characters (got {})",
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "the {what} name `{name}` may only hold letters, digits, `-`, `_` and `.`"
        ));
    }
    if name.bytes().all(|b| b == b'.') {
        return Err(format!("the {what} name `{name}` is made only of dots"));
    }
    Ok(())
}

/// A route's `service`, as written: `[TENANT/]NAME[@VERSION]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSpec<'a> {
    /// The tenant that must own the service (`acme/pay`); `None`: whichever tenant owns the
    /// name.
    pub tenant: Option<&'a str>,
    pub name: &'a str,
    /// A pinned version (`pay@v2`); `None`: the newest published one.
    pub version: Option<&'a str>,
}

impl<'a> ServiceSpec<'a> {
    /// Split `spec` (validated by [`service_spec_problem`]) into its parts.
    pub fn parse(spec: &'a str) -> ServiceSpec<'a> {
        let (tenant, rest) = match spec.split_once('/') {
            Some((t, rest)) => (Some(t), rest),
            None => (None, spec),
        };
        let (name, version) = match rest.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (rest, None),
        };
        ServiceSpec {
            tenant,
            name,
            version,
        }
    }
}

/// `service = "NAME"`, `"NAME@VERSION"`, `"TENANT/NAME"` or `"TENANT/NAME@VERSION"`.
pub fn service_spec_problem(spec: &str) -> Result<(), String> {
    if spec.matches('/').count() > 1 {
        return Err(format!("`{spec}` has more than one `/`"));
    }
    if spec.matches('@').count() > 1 {
        return Err(format!("`{spec}` has more than one `@`"));
    }
    if spec.split_once('@').is_some_and(|(_, v)| v.contains('/')) {
        return Err(format!(
            "`{spec}` has the tenant after the version: write TENANT/NAME@VERSION"
        ));
    }
    let parts = ServiceSpec::parse(spec);
    if let Some(tenant) = parts.tenant {
        name_problem("tenant", tenant)?;
    }
    name_problem("service", parts.name)?;
    match parts.version {
        Some(version) => name_problem("version", version),
        None => Ok(()),
    }
}

/// A route's `host`: a host name or IP, without a port (the port of a Host header is not
/// matched, so `example.com:8080` would never match).
fn route_host_problem(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("is empty".into());
    }
    let bracketed_v6 = host.starts_with('[') && host.ends_with(']');
    if !bracketed_v6 && host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!(
            "`{host}` has a port; routes match the host without its port, so this route would never match"
        ));
    }
    if host
        .bytes()
        .any(|b| b.is_ascii_whitespace() || matches!(b, b'/' | b'?' | b'#' | b'@'))
    {
        return Err(format!("`{host}` is not a host name"));
    }
    Ok(())
}

fn http_method_ok(m: &str) -> bool {
    !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase())
}

/// Pairs `(i, j)`: route `j` can never match because the earlier route `i` matches every
/// request it would. The gateway tries routes in order and takes the first match (host equal
/// or absent, path starting with `path_prefix`, method listed or none listed), so `i` covers
/// `j` when its host is absent or the same, its prefix is a prefix of `j`'s, and its methods
/// are absent or include all of `j`'s.
pub fn shadowed(routes: &[Route]) -> Vec<(usize, usize)> {
    let covers = |a: &Route, b: &Route| {
        (a.host.is_none() || a.host == b.host)
            && b.path_prefix.starts_with(&a.path_prefix)
            && (a.methods.is_empty()
                || (!b.methods.is_empty() && b.methods.iter().all(|m| a.methods.contains(m))))
    };
    (0..routes.len())
        .filter_map(|j| {
            (0..j)
                .find(|&i| covers(&routes[i], &routes[j]))
                .map(|i| (i, j))
        })
        .collect()
}

/// "any host, path_prefix "/", any method" (for messages).
pub fn describe_match(r: &Route) -> String {
    let host = r
        .host
        .as_deref()
        .map_or("any host".to_string(), |h| format!("host `{h}`"));
    let methods = if r.methods.is_empty() {
        "any method".to_string()
    } else {
        r.methods.join("/")
    };
    format!("{host}, path_prefix `{}`, {methods}", r.path_prefix)
}
