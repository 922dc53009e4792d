//! The `[management]` section: the store (SQLite by default, PostgreSQL + Redis across
//! machines), the admin API tokens, key authentication and the call log.
//! Owned by the API-management work; see `crates/store`, `crates/admin` and
//! `docs/MANAGEMENT.md`.
//!
//! ```toml
//! [management]
//! store = "sqlite://holdfast.db"          # or "postgres://user@host/db"
//! redis = "redis://127.0.0.1:6379"        # optional: shared rate limits across nodes
//! secret = "${HOLDFAST_SECRET}"           # HMAC key for API-key hashes, >= 16 bytes
//! key_header = "authorization"            # `Authorization: Bearer KEY`, or e.g. "x-api-key"
//! flush_interval_ms = 1000
//! retention_days = 30
//! global_rps = 1000                        # optional global limits
//!
//! [[management.admin_tokens]]
//! token = "${HOLDFAST_ADMIN_TOKEN}"
//! role = "super_admin"                     # or "tenant_admin" / "viewer" with `tenant = "..."`
//! ```

use serde::Deserialize;

use super::ConfigError;

/// `[management]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManagementConfig {
    pub store: Option<String>,
    pub redis: Option<String>,
    pub secret: Option<String>,
    pub key_header: Option<String>,
    pub flush_interval_ms: Option<u64>,
    pub call_log_buffer: Option<usize>,
    pub retention_days: Option<u32>,
    pub cache_refresh_ms: Option<u64>,
    pub global_rps: Option<u32>,
    pub global_rpm: Option<u32>,
    #[serde(default)]
    pub admin_tokens: Vec<RawAdminToken>,
}

/// One `[[management.admin_tokens]]` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminToken {
    pub token: Option<String>,
    pub role: Option<String>,
    pub tenant: Option<String>,
}

/// Where the management data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite file path.
    Sqlite(String),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRole {
    /// Everything, across tenants.
    SuperAdmin,
    /// Read and write within one tenant.
    TenantAdmin,
    /// Read only, within one tenant.
    Viewer,
}

impl AdminRole {
    /// Parse `super_admin`, `tenant_admin` or `viewer`.
    pub fn parse(s: &str) -> Option<AdminRole> {
        match s {
            "super_admin" => Some(AdminRole::SuperAdmin),
            "tenant_admin" => Some(AdminRole::TenantAdmin),
            "viewer" => Some(AdminRole::Viewer),
            _ => None,
        }
    }
}

/// A validated admin token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub token: String,
    pub role: AdminRole,
    /// The tenant a tenant admin or viewer is bound to (`None` for a super admin).
    pub tenant: Option<String>,
}

/// `[management]` after validation.
#[derive(Debug, Clone)]
pub struct ManagementConfig {
    pub store: StoreUrl,
    pub redis: Option<String>,
    pub secret: String,
    /// Lower-case header name; `authorization` means `Authorization: Bearer KEY`.
    pub key_header: String,
    pub flush_interval_ms: u64,
    pub call_log_buffer: usize,
    pub retention_days: u32,
    /// How often each node polls the store for changes (keys, subscriptions, services).
    pub cache_refresh_ms: u64,
    pub global_rps: Option<u32>,
    pub global_rpm: Option<u32>,
    pub admin_tokens: Vec<AdminToken>,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig {
            store: StoreUrl::Sqlite("holdfast.db".into()),
            redis: None,
            secret: String::new(),
            key_header: "authorization".into(),
            flush_interval_ms: 1000,
            call_log_buffer: 100_000,
            retention_days: 30,
            cache_refresh_ms: 500,
            global_rps: None,
            global_rpm: None,
            admin_tokens: Vec::new(),
        }
    }
}

fn parse_store(url: &str) -> Option<StoreUrl> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return (!path.is_empty()).then(|| StoreUrl::Sqlite(path.to_string()));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Some(StoreUrl::Postgres(url.to_string()));
    }
    None
}

fn check_range<T: PartialOrd + Copy + std::fmt::Display>(
    errors: &mut Vec<ConfigError>,
    key: &str,
    value: T,
    min: T,
    max: T,
) {
    if value < min || value > max {
        errors.push(ConfigError::new(
            format!("management.{key}"),
            format!("{value} is out of range"),
            format!("use a value from {min} to {max}"),
        ));
    }
}

/// Validate `[management]`. Key paths in errors start with `management.`.
pub fn validate(raw: &RawManagementConfig) -> Result<ManagementConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let defaults = ManagementConfig::default();
    let store = match raw.store.as_deref() {
        None => defaults.store.clone(),
        Some(url) => parse_store(url).unwrap_or_else(|| {
            errors.push(ConfigError::new(
                "management.store",
                format!("`{url}` is not a store URL"),
                "use `sqlite://PATH` or `postgres://USER@HOST/DB`",
            ));
            defaults.store.clone()
        }),
    };
    if let Some(url) = &raw.redis {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            errors.push(ConfigError::new(
                "management.redis",
                format!("`{url}` is not a Redis URL"),
                "use `redis://HOST:PORT`",
            ));
        }
    }
    let secret = raw.secret.clone().unwrap_or_default();
    if secret.len() < 16 {
        errors.push(ConfigError::new(
            "management.secret",
            "the key-hashing secret is missing or shorter than 16 bytes",
            "set `secret = \"${HOLDFAST_SECRET}\"` to a random string of 32+ characters",
        ));
    }
    let key_header = raw
        .key_header
        .clone()
        .unwrap_or(defaults.key_header.clone())
        .to_ascii_lowercase();
    if http_header_name_invalid(&key_header) {
        errors.push(ConfigError::new(
            "management.key_header",
            format!("`{key_header}` is not a header name"),
            "use `authorization` (Bearer) or a name such as `x-api-key`",
        ));
    }
    let flush_interval_ms = raw.flush_interval_ms.unwrap_or(defaults.flush_interval_ms);
    check_range(
        &mut errors,
        "flush_interval_ms",
        flush_interval_ms,
        10,
        60_000,
    );
    let call_log_buffer = raw.call_log_buffer.unwrap_or(defaults.call_log_buffer);
    check_range(
        &mut errors,
        "call_log_buffer",
        call_log_buffer,
        16,
        10_000_000,
    );
    let retention_days = raw.retention_days.unwrap_or(defaults.retention_days);
    check_range(&mut errors, "retention_days", retention_days, 1, 3650);
    let cache_refresh_ms = raw.cache_refresh_ms.unwrap_or(defaults.cache_refresh_ms);
    check_range(&mut errors, "cache_refresh_ms", cache_refresh_ms, 50, 1500);
    for (key, value) in [
        ("global_rps", raw.global_rps),
        ("global_rpm", raw.global_rpm),
    ] {
        if let Some(v) = value {
            check_range(&mut errors, key, v, 1, 10_000_000);
        }
    }
    let mut admin_tokens = Vec::new();
    for (i, t) in raw.admin_tokens.iter().enumerate() {
        if let Some(token) = validate_token(&mut errors, i, t) {
            admin_tokens.push(token);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ManagementConfig {
        store,
        redis: raw.redis.clone(),
        secret,
        key_header,
        flush_interval_ms,
        call_log_buffer,
        retention_days,
        cache_refresh_ms,
        global_rps: raw.global_rps,
        global_rpm: raw.global_rpm,
        admin_tokens,
    })
}

fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn validate_token(
    errors: &mut Vec<ConfigError>,
    i: usize,
    raw: &RawAdminToken,
) -> Option<AdminToken> {
    let key = |field: &str| format!("management.admin_tokens[{i}].{field}");
    let token = raw.token.clone().unwrap_or_default();
    if token.len() < 16 {
        errors.push(ConfigError::new(
            key("token"),
            "the admin token is missing or shorter than 16 bytes",
            "set a random token of 32+ characters, e.g. from `${HOLDFAST_ADMIN_TOKEN}`",
        ));
    }
    let role = match raw.role.as_deref().map(AdminRole::parse) {
        Some(Some(role)) => role,
        _ => {
            errors.push(ConfigError::new(
                key("role"),
                format!("role {:?} is not known", raw.role.as_deref().unwrap_or("")),
                "use `super_admin`, `tenant_admin` or `viewer`",
            ));
            return None;
        }
    };
    match (role, &raw.tenant) {
        (AdminRole::SuperAdmin, Some(_)) => errors.push(ConfigError::new(
            key("tenant"),
            "a super admin is not bound to a tenant",
            "remove `tenant`, or use role `tenant_admin`",
        )),
        (AdminRole::TenantAdmin | AdminRole::Viewer, None) => errors.push(ConfigError::new(
            key("tenant"),
            "a tenant admin or viewer needs the tenant it may see",
            "add `tenant = \"NAME\"`",
        )),
        _ => {}
    }
    Some(AdminToken {
        token,
        role,
        tenant: raw.tenant.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawManagementConfig {
        toml::from_str(toml_text).expect("parses")
    }

    #[test]
    fn defaults_to_sqlite_and_one_second_flush() {
        let cfg = validate(&raw("secret = \"0123456789abcdef0123\"")).expect("valid");
        assert_eq!(cfg.store, StoreUrl::Sqlite("holdfast.db".into()));
        assert_eq!(cfg.flush_interval_ms, 1000);
        assert_eq!(cfg.key_header, "authorization");
    }

    #[test]
    fn errors_name_the_key() {
        let errs = validate(&raw(
            "store = \"mysql://x\"\nflush_interval_ms = 0\n[[admin_tokens]]\ntoken = \"short\"\nrole = \"boss\"",
        ))
        .expect_err("invalid");
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"management.store"), "{keys:?}");
        assert!(keys.contains(&"management.secret"), "{keys:?}");
        assert!(keys.contains(&"management.flush_interval_ms"), "{keys:?}");
        assert!(
            keys.contains(&"management.admin_tokens[0].token"),
            "{keys:?}"
        );
        assert!(
            keys.contains(&"management.admin_tokens[0].role"),
            "{keys:?}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<RawManagementConfig>("stor = \"x\"").is_err());
    }
}
