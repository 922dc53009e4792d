//! Configuration: TOML with `${ENV_VAR}` interpolation, parsed with `deny_unknown_fields`
//! into `Raw*` types, then validated into the `Config` types the rest of Holdfast uses.
//!
//! Ownership of the sections (so parallel work stays apart):
//! - `mod.rs`, `error.rs` and the data-plane sections (`server.rs`, `route.rs`, `upstream.rs`,
//!   `interpolate.rs`, `locate.rs`): the proxy.
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
pub mod server;
pub mod upstream;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

pub use error::{ConfigError, ConfigErrors};
pub use route::{Route, RouteTarget};
pub use server::{AccessLog, RetryBudget, ServerConfig};
pub use upstream::{Balance, HashOn, Target, Upstream};

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

/// A config that loads but has timeouts ordered so that resets follow (shown by `check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "warning: `{}`: {} (fix: {})",
            self.key, self.message, self.fix
        )
    }
}

/// Read, interpolate, parse and validate the file at `path`.
pub fn load_file(path: &std::path::Path) -> Result<Config, ConfigErrors> {
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
    parse(&text, &file, |name| std::env::var(name).ok())
}

/// Interpolate, parse and validate `text` (named `file` in errors).
pub fn parse(
    text: &str,
    file: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let with_file = |mut errors: Vec<ConfigError>| {
        for e in &mut errors {
            e.file = file.to_string();
        }
        ConfigErrors(errors)
    };
    let text = interpolate::interpolate(text, env).map_err(with_file)?;
    let raw: RawConfig = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let mut err = ConfigError::new(
            "",
            e.message().trim().to_string(),
            "see docs/CONFIG.md for the keys each section accepts",
        );
        err.line = line;
        with_file(vec![err])
    })?;
    let index = locate::LineIndex::new(&text);
    validate(&raw).map_err(|errors| {
        let mut errors = with_file(errors);
        for e in &mut errors.0 {
            if e.line.is_none() {
                e.line = index.line_of(&e.key);
            }
        }
        errors
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

/// Timeouts ordered so that resets follow.
pub fn warnings(config: &Config) -> Vec<ConfigWarning> {
    let mut out = Vec::new();
    for (name, up) in &config.upstreams {
        if let Some(server_timeout) = up.server_keepalive_timeout {
            if up.idle_timeout + Duration::from_millis(500) > server_timeout {
                out.push(ConfigWarning {
                    key: format!("upstreams.{name}.idle_timeout_ms"),
                    message: format!(
                        "pooled connections stay idle up to {} ms, but the upstream closes them after {} ms: requests will race the close",
                        up.idle_timeout.as_millis(),
                        server_timeout.as_millis()
                    ),
                    fix: format!("set idle_timeout_ms below {} (at least 500 ms less)", server_timeout.as_millis().saturating_sub(500)),
                });
            }
        }
    }
    if let Some(front) = config.server.front_idle_timeout {
        if config.server.client_idle_timeout <= front {
            out.push(ConfigWarning {
                key: "server.client_idle_timeout_ms".into(),
                message: format!(
                    "Holdfast closes idle client connections after {} ms, but the load balancer in front keeps them {} ms and may reuse one Holdfast closed",
                    config.server.client_idle_timeout.as_millis(),
                    front.as_millis()
                ),
                fix: format!("set client_idle_timeout_ms above {}", front.as_millis()),
            });
        }
    }
    if config.server.header_timeout > config.server.client_idle_timeout {
        out.push(ConfigWarning {
            key: "server.header_timeout_ms".into(),
            message: "the request-head timeout is longer than the client idle timeout".into(),
            fix: "make header_timeout_ms at most client_idle_timeout_ms".into(),
        });
    }
    for route in &config.routes {
        if route.timeout > config.server.drain_timeout {
            out.push(ConfigWarning {
                key: format!("routes.{}.timeout_ms", route.name),
                message: "a request may outlive the drain timeout, so SIGTERM could cut it".into(),
                fix: "raise server.drain_timeout_ms above the longest route timeout".into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
