//! Configuration: TOML with `${ENV_VAR}` interpolation, parsed with `deny_unknown_fields`
//! into `Raw*` types, then validated into the `Config` types the rest of Holdfast uses.
//!
//! Ownership of the sections (so parallel work stays apart):
//! - `mod.rs`, `error.rs` and the data-plane sections (`server.rs`, `route.rs`, `upstream.rs`,
//!   `interpolate.rs`, `locate.rs`, `schema.rs`): the proxy. `schema.rs` reads the accepted
//!   keys and types from the `Raw*` types themselves, so a new key needs no other change.
//! - `ai.rs`: the AI gateway section `[ai]`.
//! - `management.rs`: the API-management section `[management]` (store, admin API, auth).
//!
//! Every validation error is a [`ConfigError`] naming the key path (e.g. `routes[2].upstream`)
//! and the fix; the loader maps the key path to the file and line.

pub mod ai;
pub mod error;
pub mod interpolate;
pub mod locate;
pub mod management;
pub mod route;
pub mod schema;
pub mod server;
pub mod upstream;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

pub use error::{ConfigError, ConfigErrors};
pub use route::{Route, RouteTarget};
pub use server::{AccessLog, RetryBudget, ServerConfig};
pub use upstream::{Balance, HashOn, Target, Upstream, UpstreamProtocol};

/// The whole file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: server::RawServer,
    #[serde(default)]
    pub retry_budget: server::RawRetryBudget,
    #[serde(default)]
    pub upstreams: BTreeMap<String, upstream::RawUpstream>,
    #[serde(default)]
    pub routes: Vec<route::RawRoute>,
    pub ai: Option<ai::RawAiConfig>,
    pub management: Option<management::RawManagementConfig>,
}

/// A validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub retry_budget: RetryBudget,
    pub upstreams: BTreeMap<String, Upstream>,
    /// In match order: the first route that matches a request wins.
    pub routes: Vec<Route>,
    /// `[ai]`, when present.
    pub ai: Option<ai::AiConfig>,
    /// `[management]`, when present.
    pub management: Option<management::ManagementConfig>,
}

/// A config that loads but is likely to misbehave: timeouts ordered so that resets follow, a
/// route that can never match (shown by `check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file (empty until a loader fills it in).
    pub file: String,
    /// 1-based line of `key`, when known.
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl ConfigWarning {
    fn new(key: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigWarning {
            file: String::new(),
            line: None,
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.file.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "{}:{}: ", self.file, line)?,
            (false, None) => write!(f, "{}: ", self.file)?,
            _ => {}
        }
        write!(
            f,
            "warning: `{}`: {} (fix: {})",
            self.key, self.message, self.fix
        )
    }
}

/// Read, interpolate, parse and validate the file at `path`.
pub fn load_file(path: &std::path::Path) -> Result<Config, ConfigErrors> {
    load_file_with_warnings(path).map(|(config, _)| config)
}

/// [`load_file`], plus the [`warnings`] with the file and line of each.
pub fn load_file_with_warnings(
    path: &std::path::Path,
) -> Result<(Config, Vec<ConfigWarning>), ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut err = ConfigError::new(
            "",
            format!("cannot read the file: {e}"),
            "check the path and its permissions",
        );
        err.file = file.clone();
        ConfigErrors(vec![err])
    })?;
    parse_with_warnings(&text, &file, |name| std::env::var(name).ok())
}

/// Interpolate, parse and validate `text` (named `file` in errors).
pub fn parse(
    text: &str,
    file: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    parse_with_warnings(text, file, env).map(|(config, _)| config)
}

/// The shape of the file (which keys each table accepts), from the `Raw*` types.
pub fn shape() -> &'static schema::Shape {
    static SHAPE: OnceLock<schema::Shape> = OnceLock::new();
    SHAPE.get_or_init(|| {
        let mut shape = schema::Shape::of::<RawConfig>();
        // `targets` elements are untagged: a URL string or `{ url, weight }`.
        if let Some(target) = shape.at_mut("upstreams.*.targets.[]") {
            *target = schema::Shape::OneOf(vec![
                schema::Shape::Str,
                schema::Shape::of::<upstream::RawWeightedTarget>(),
            ]);
        }
        // Keys with a narrower valid range than their type's: type errors name that range,
        // not the integer type's (the range itself is checked with the other values).
        let listed = management::RANGES
            .iter()
            .map(|&(key, min, max)| (format!("management.{key}"), (min, max)));
        let narrower = [
            ("routes.[].max_attempts".to_string(), (1, 10)),
            ("server.workers".to_string(), (0, 1024)),
        ];
        for (path, range) in narrower.into_iter().chain(listed) {
            if let Some(schema::Shape::Int { shown, .. }) = shape.at_mut(&path) {
                *shown = Some(range);
            }
        }
        shape
    })
}

/// [`parse`], plus the [`warnings`] with the file and line of each.
pub fn parse_with_warnings(
    text: &str,
    file: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Config, Vec<ConfigWarning>), ConfigErrors> {
    let with_file = |mut errors: Vec<ConfigError>| {
        for e in &mut errors {
            e.file = file.to_string();
        }
        ConfigErrors(errors)
    };
    let text = interpolate::interpolate(text, env).map_err(with_file)?;
    let (doc, syntax) = toml::de::DeTable::parse_recoverable(&text);
    if !syntax.is_empty() {
        return Err(with_file(syntax_errors(&text, &syntax)));
    }
    // Every unknown key and every value of the wrong type, each with its path and line.
    let (mut errors, spans) = schema::check(&text, &doc, shape());
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(with_file(errors));
    }
    let index = locate::LineIndex::from_spans(&text, &spans);
    // What the walk cannot see (a missing required key, ...) still comes from serde.
    let raw: RawConfig = toml::from_str(&text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let (key, at) = schema::path_at(&spans, &span).unwrap_or_default();
        let line = if key.is_empty() { span.start } else { at };
        let message = e.message().trim().to_string();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next());
        let (key, message, fix) = match missing {
            Some(field) => (
                if key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                },
                format!("the required key `{field}` is missing"),
                if key.is_empty() {
                    format!("add `{field} = ...` at the top level")
                } else {
                    format!("add `{field} = ...` to `{key}`")
                },
            ),
            None => (
                key,
                message,
                "see docs/CONFIG.md for what this key accepts".to_string(),
            ),
        };
        let mut err = ConfigError::new(key, message, fix);
        err.line = Some(schema::line_at(&text, line));
        with_file(vec![err])
    })?;
    let config = validate(&raw).map_err(|errors| {
        let mut errors = with_file(errors);
        for e in &mut errors.0 {
            if e.line.is_none() {
                e.line = index.line_of(&e.key);
            }
        }
        errors
    })?;
    let mut found = warnings(&config);
    for w in &mut found {
        w.file = file.to_string();
        w.line = index.line_of(&w.key);
    }
    Ok((config, found))
}

/// The first TOML syntax error (the parser's recovery turns one mistake into many), on the
/// line where the fix goes.
fn syntax_errors(text: &str, errors: &[toml::de::Error]) -> Vec<ConfigError> {
    let Some(e) = errors.first() else {
        return Vec::new();
    };
    let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let message = e.message().trim().to_string();
    let mut line = schema::line_at(text, at);
    // An error at the first token of a line is about something left open before it: a
    // missing `]` on line 2 is only noticed at the key on line 3.
    let before = text.get(..at).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |n| n + 1);
    let first_on_line = before[line_start..].trim().is_empty();
    let previous = previous_content_line(text, line);
    let left_open = message.contains("missing comma") || message.contains("unclosed");
    let moved = left_open && first_on_line && previous.is_some();
    let fix = if moved {
        line = previous.unwrap_or(line);
        if message.contains("array") {
            format!("close the array with `]` at the end of line {line} (or, inside a multi-line array, add the `,` missing after this element)")
        } else if message.contains("table") {
            format!("close the inline table with `}}` at the end of line {line}")
        } else {
            format!("finish the value on line {line} (a closing `]`, `}}` or quote may be missing)")
        }
    } else if message.contains("unclosed table") {
        "close the table header with `]`, e.g. `[server]`".to_string()
    } else if message.contains("unclosed array") {
        "close the array with `]`".to_string()
    } else if message.contains("duplicate key") {
        "each key may appear once per table: remove one of them".to_string()
    } else if message.contains("quoted")
        || message.contains("invalid float")
        || message.contains("invalid integer")
        || message.contains("expected nothing")
    {
        let key = locate::key_on_line(text, line);
        let key = key.rsplit('.').next().unwrap_or("key").to_string();
        format!("a text value goes in quotes (e.g. `{key} = \"...\"`); a number or boolean goes bare (e.g. `{key} = 10`, `{key} = true`)")
    } else {
        "fix the TOML syntax on this line: `key = value`, strings in quotes, `[table]` headers closed (https://toml.io)".to_string()
    };
    let mut err = ConfigError::new(
        locate::key_on_line(text, line),
        format!("TOML syntax error: {message}"),
        fix,
    );
    err.line = Some(line);
    vec![err]
}

/// The nearest line before 1-based `line` with something other than whitespace or a comment.
fn previous_content_line(text: &str, line: usize) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    (1..line).rev().find(|&n| {
        let l = lines.get(n - 1).map_or("", |l| l.trim());
        !l.is_empty() && !l.starts_with('#')
    })
}

/// Validate a parsed file (every problem is reported, not just the first).
pub fn validate(raw: &RawConfig) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let server = server::validate(&raw.server, &mut errors);
    let retry_budget = server::validate_budget(&raw.retry_budget, &mut errors);
    let upstreams = upstream::validate_all(&raw.upstreams, &mut errors);
    let routes = route::validate_all(&raw.routes, &upstreams, &mut errors);
    let ai = match &raw.ai {
        Some(a) => ai::validate(a).map_err(|e| errors.extend(e)).ok(),
        None => None,
    };
    let management = match &raw.management {
        Some(m) => management::validate(m).map_err(|e| errors.extend(e)).ok(),
        None => None,
    };
    check_route_targets(&routes, raw, &mut errors);
    if routes.is_empty() && raw.server.demo_upstream.is_none() {
        errors.push(ConfigError::new(
            "routes",
            "there are no routes, so every request would get 404",
            "add a [[routes]] table with path_prefix = \"/\" and upstream = \"POOL\"",
        ));
    }
    if errors.is_empty() {
        Ok(Config {
            server,
            retry_budget,
            upstreams,
            routes,
            ai,
            management,
        })
    } else {
        Err(errors)
    }
}

/// What routes name that other sections must provide: the `ai` handler needs `[ai]` (it is the
/// only handler), and a `service` route needs `[management]` (else it would be served with no
/// key check, so `serve` refuses it).
fn check_route_targets(routes: &[Route], raw: &RawConfig, errors: &mut Vec<ConfigError>) {
    for (i, r) in routes.iter().enumerate() {
        if let RouteTarget::Handler(name) = &r.target {
            if name.is_empty() {
                // Already reported (neither or both of upstream and handler).
            } else if name != "ai" {
                errors.push(ConfigError::new(
                    format!("routes[{i}].handler"),
                    format!("there is no handler named `{name}`"),
                    "use handler = \"ai\" (the AI gateway, with an [ai] section) or send the route to a pool with upstream = \"POOL\"",
                ));
            } else if raw.ai.is_none() {
                errors.push(ConfigError::new(
                    format!("routes[{i}].handler"),
                    "handler = \"ai\" needs an [ai] section, which the config does not have",
                    "add [ai] with its providers and models (see docs/AI.md)",
                ));
            }
        }
        if let (Some(service), None) = (&r.service, &raw.management) {
            errors.push(ConfigError::new(
                format!("routes[{i}].service"),
                format!("the route names service `{service}` but the config has no [management] section, so nothing would check keys"),
                "add a [management] section (see docs/MANAGEMENT.md) or remove `service`",
            ));
        }
    }
}

/// Quick mode: every path to one pool of `urls`, with the defaults.
pub fn quick(listen: &str, urls: &[String]) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let listen = server::parse_addr("--listen", listen, &mut errors);
    let targets: Vec<Target> = urls
        .iter()
        .filter_map(|u| upstream::parse_target_url("--upstream", u, &mut errors))
        .map(|u| Target {
            authority: u.authority,
            weight: 1,
            tls: u.tls,
            host: u.host,
        })
        .collect();
    if urls.is_empty() {
        errors.push(ConfigError::new(
            "--upstream",
            "no upstream given",
            "add --upstream http://HOST:PORT",
        ));
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut config = Config::default();
    config.server.listen = listen.into_iter().collect();
    config.upstreams.insert(
        "default".into(),
        Upstream::with_defaults("default", targets),
    );
    config.routes.push(Route::catch_all("default"));
    Ok(config)
}

/// Timeouts ordered so that resets follow, and routes that can never match.
pub fn warnings(config: &Config) -> Vec<ConfigWarning> {
    let mut out = Vec::new();
    for (name, up) in &config.upstreams {
        if let Some(server_timeout) = up.server_keepalive_timeout {
            // At least 500 ms below the upstream's timeout; half of it for very short ones.
            let margin = Duration::from_millis(500).min(server_timeout / 2);
            if up.idle_timeout + margin > server_timeout {
                let advice = server_timeout
                    .saturating_sub(margin)
                    .max(Duration::from_millis(1));
                out.push(ConfigWarning::new(
                    format!("upstreams.{name}.idle_timeout_ms"),
                    format!(
                        "pooled connections stay idle up to {} ms, but the upstream closes them after {} ms: requests will race the close",
                        up.idle_timeout.as_millis(),
                        server_timeout.as_millis()
                    ),
                    format!(
                        "set idle_timeout_ms to {} or less ({} ms below server_keepalive_timeout_ms)",
                        advice.as_millis(),
                        margin.as_millis()
                    ),
                ));
            }
        }
    }
    for (name, up) in &config.upstreams {
        if let Some(check) = up.health_check.as_ref().filter(|c| c.timeout > c.interval) {
            out.push(ConfigWarning::new(
                format!("upstreams.{name}.health_check.timeout_ms"),
                format!(
                    "a health check may wait {} ms for an answer, longer than the {} ms between checks: one hung target stretches every round, so the others are checked late too",
                    check.timeout.as_millis(),
                    check.interval.as_millis()
                ),
                format!(
                    "set timeout_ms to {} or less, or raise interval_ms",
                    check.interval.as_millis()
                ),
            ));
        }
    }
    if let Some(front) = config.server.front_idle_timeout {
        if config.server.client_idle_timeout <= front {
            out.push(ConfigWarning::new(
                "server.client_idle_timeout_ms",
                format!(
                    "Holdfast closes idle client connections after {} ms, but the load balancer in front keeps them {} ms and may reuse one Holdfast closed",
                    config.server.client_idle_timeout.as_millis(),
                    front.as_millis()
                ),
                format!("set client_idle_timeout_ms above {}", front.as_millis()),
            ));
        }
    }
    if config.server.header_timeout > config.server.client_idle_timeout {
        out.push(ConfigWarning::new(
            "server.header_timeout_ms",
            format!(
                "the request-head timeout ({} ms) is longer than the client idle timeout ({} ms)",
                config.server.header_timeout.as_millis(),
                config.server.client_idle_timeout.as_millis()
            ),
            format!(
                "set header_timeout_ms to {} or less",
                config.server.client_idle_timeout.as_millis()
            ),
        ));
    }
    for (i, route) in config.routes.iter().enumerate() {
        if route.timeout > config.server.drain_timeout {
            out.push(ConfigWarning::new(
                format!("routes[{i}].timeout_ms"),
                format!(
                    "route `{}` waits up to {} ms for an upstream, longer than server.drain_timeout_ms ({} ms), so SIGTERM could cut a request",
                    route.name,
                    route.timeout.as_millis(),
                    config.server.drain_timeout.as_millis()
                ),
                format!(
                    "raise server.drain_timeout_ms to at least {} or lower this timeout_ms",
                    route.timeout.as_millis()
                ),
            ));
        }
    }
    if let Some(m) = &config.management {
        out.extend(management_warnings(config, m));
    }
    out.extend(route::shadowed(&config.routes).into_iter().map(|(i, j)| {
        let (earlier, later) = (&config.routes[i], &config.routes[j]);
        ConfigWarning::new(
            format!("routes[{j}]"),
            format!(
                "route `{}` can never match: routes are tried in order and the first match wins, and the earlier route `{}` (routes[{i}]: {}) matches every request it would",
                later.name,
                earlier.name,
                route::describe_match(earlier)
            ),
            format!(
                "move route `{}` above route `{}`, or narrow `{}` (host, path_prefix, methods)",
                later.name, earlier.name, earlier.name
            ),
        )
    }));
    out
}

/// `[management]` that runs but cannot be administered, and routes any tenant could claim.
fn management_warnings(config: &Config, m: &management::ManagementConfig) -> Vec<ConfigWarning> {
    let mut out = Vec::new();
    if config.server.admin.is_none() {
        out.push(ConfigWarning::new(
            "management",
            "API management is on but there is no admin listener, so its admin API (tenants, keys, approvals, analytics) cannot be reached",
            "set `admin = \"127.0.0.1:9901\"` in [server]",
        ));
    }
    if m.admin_tokens.is_empty() {
        out.push(ConfigWarning::new(
            "management.admin_tokens",
            "API management has no admin tokens, so the admin API refuses every call",
            "add [[management.admin_tokens]] with `token = \"${HOLDFAST_ADMIN_TOKEN}\"` and `role = \"super_admin\"`",
        ));
    }
    for (i, route) in config.routes.iter().enumerate() {
        let Some(spec) = route.service.as_deref() else {
            continue;
        };
        let parts = route::ServiceSpec::parse(spec);
        if parts.tenant.is_none() {
            let pinned = match parts.version {
                Some(v) => format!("TENANT/{}@{v}", parts.name),
                None => format!("TENANT/{}", parts.name),
            };
            out.push(ConfigWarning::new(
                format!("routes[{i}].service"),
                format!(
                    "route `{}` serves service `{}` of whichever tenant owns that name: if it is deleted, any tenant admin who creates a service of the same name gets this route and its upstream",
                    route.name, parts.name
                ),
                format!("pin the owning tenant: service = \"{pinned}\""),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
