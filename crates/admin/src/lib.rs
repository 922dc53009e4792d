//! Holdfast API management: the admin REST API (axum, role-based admin tokens, OpenAPI
//! document) and the gateway extension that enforces it on the request path (key auth,
//! optional per-service JWT validation, subscriptions, tenant isolation, rate limits and
//! budgets) and writes the call log.
//!
//! The extension lives here rather than in its own crate because it shares the admin API's
//! runtime state ([`Management`]: the store, the key cache, the limiter and the call-log
//! writer); see `docs/MANAGEMENT.md`.

mod api;
mod auth;
mod cache;
mod calllog;
mod error;
mod guard;
mod jwt;
mod limiter;
mod openapi;
mod runtime;

pub use calllog::CallLogStats;
pub use error::ApiError;
pub use runtime::{CacheStatus, Management, ManagementFactory, StartError};

/// Check a `[[management.jwt]]` entry without fetching anything: inline keys parse and the
/// files it names (`jwks_ca_file`) can be read. For `holdfast check`.
pub fn check_jwt_config(
    config: &holdfast_core::config::management::JwtConfig,
) -> Result<(), String> {
    jwt::Verifier::new(config).map(|_| ())
}
