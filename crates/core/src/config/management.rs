//! The `[management]` section: the store (SQLite by default, PostgreSQL + Redis across
//! machines), the admin API listener and its tokens, key authentication and the call log.
//! Owned by the API-management work; see `crates/store` and `crates/admin`.

use serde::Deserialize;

/// `[management]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManagementConfig {}

/// `[management]` after validation.
#[derive(Debug, Clone, Default)]
pub struct ManagementConfig {}

/// Validate `[management]`. Key paths in errors start with `management.`.
pub fn validate(raw: &RawManagementConfig) -> Result<ManagementConfig, Vec<super::ConfigError>> {
    let RawManagementConfig {} = raw;
    Ok(ManagementConfig {})
}
