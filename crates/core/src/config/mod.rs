//! Configuration: TOML with `${ENV_VAR}` interpolation, parsed with `deny_unknown_fields`
//! into `Raw*` types, then validated into the `Config` types the rest of Holdfast uses.
//!
//! Ownership of the sections (so parallel work stays apart):
//! - `mod.rs`, `error.rs` and the data-plane sections (listeners, routes, upstreams): the proxy.
//! - `ai.rs`: the AI gateway section `[ai]`.
//! - `management.rs`: the API-management section `[management]` (store, admin API, auth).
//!
//! Every validation error is a [`ConfigError`] naming the key path (e.g. `routes[2].upstream`)
//! and the fix; the loader maps the key path to the file and line.

pub mod ai;
pub mod error;
pub mod management;

pub use error::{ConfigError, ConfigErrors};

/// A validated configuration. The data-plane fields are added by the proxy work; `ai` and
/// `management` are validated by their own modules.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[ai]`, when present.
    pub ai: Option<ai::AiConfig>,
    /// `[management]`, when present.
    pub management: Option<management::ManagementConfig>,
}
