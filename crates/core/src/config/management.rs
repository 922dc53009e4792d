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
//! forward_key = false                      # strip the consumer's key (or JWT) before the upstream
//! flush_interval_ms = 1000
//! retention_days = 30
//! global_rps = 1000                        # optional global limits
//!
//! [[management.admin_tokens]]
//! token = "${HOLDFAST_ADMIN_TOKEN}"
//! role = "super_admin"                     # or "tenant_admin" / "viewer" with `tenant = "..."`
//!
//! [[management.jwt]]                       # optional: this service takes JWTs, not API keys
//! service = "pay"
//! algorithm = "rs256"                      # "hs256" (secret) | "rs256" / "es256" (jwks_url, jwks or public_key_pem)
//! jwks_url = "http://idp.internal/.well-known/jwks.json"
//! issuer = "https://idp.example"           # optional `iss` check
//! audience = "pay-api"                     # optional `aud` check
//! consumer_claim = "sub"                   # claim naming the consumer (default `sub`)
//! jwks_ca_file = "/etc/holdfast/idp-ca.pem" # optional: trust this CA for an https jwks_url
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
    pub forward_key: Option<bool>,
    pub flush_interval_ms: Option<u64>,
    pub call_log_buffer: Option<usize>,
    pub retention_days: Option<u32>,
    pub cache_refresh_ms: Option<u64>,
    pub global_rps: Option<u32>,
    pub global_rpm: Option<u32>,
    #[serde(default)]
    pub admin_tokens: Vec<RawAdminToken>,
    #[serde(default)]
    pub jwt: Vec<RawJwtConfig>,
}

/// One `[[management.jwt]]` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtConfig {
    pub service: Option<String>,
    pub algorithm: Option<String>,
    pub secret: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks: Option<String>,
    pub public_key_pem: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub consumer_claim: Option<String>,
    pub leeway_s: Option<u64>,
    pub jwks_refresh_s: Option<u64>,
    pub jwks_ca_file: Option<String>,
}

/// The signature algorithm a service's JWTs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
}

/// Where the keys that verify a service's JWTs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKeys {
    /// HS256 shared secret.
    Secret(String),
    /// A JWKS document fetched over HTTP, cached and refreshed.
    JwksUrl(String),
    /// An inline JWKS document (JSON), for tests and offline use.
    Jwks(String),
    /// An inline public key in PEM.
    PublicKeyPem(String),
}

/// A validated `[[management.jwt]]` entry: the service requires a JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub service: String,
    pub algorithm: JwtAlgorithm,
    pub keys: JwtKeys,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// The claim whose value is the consumer name (default `sub`).
    pub consumer_claim: String,
    /// Clock leeway for `exp`/`nbf` in seconds (default 30).
    pub leeway_s: u64,
    /// How often a JWKS URL is fetched again, in seconds (default 300).
    pub jwks_refresh_s: u64,
    /// A PEM CA bundle trusted for an https `jwks_url` instead of the public roots.
    pub jwks_ca_file: Option<String>,
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
    /// Send the consumer's credential (the key header, or `Authorization` of a JWT service)
    /// on to the upstream. Off by default: the gateway strips it after the check.
    pub forward_key: bool,
    pub flush_interval_ms: u64,
    pub call_log_buffer: usize,
    pub retention_days: u32,
    /// How often each node polls the store for changes (keys, subscriptions, services).
    pub cache_refresh_ms: u64,
    pub global_rps: Option<u32>,
    pub global_rpm: Option<u32>,
    pub admin_tokens: Vec<AdminToken>,
    /// Services that require a JWT instead of an API key.
    pub jwt: Vec<JwtConfig>,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig {
            store: StoreUrl::Sqlite("holdfast.db".into()),
            redis: None,
            secret: String::new(),
            key_header: "authorization".into(),
            forward_key: false,
            flush_interval_ms: 1000,
            call_log_buffer: 100_000,
            retention_days: 30,
            cache_refresh_ms: 500,
            global_rps: None,
            global_rpm: None,
            admin_tokens: Vec::new(),
            jwt: Vec::new(),
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

/// Headers HTTP itself needs: an API key there would break routing or framing.
const RESERVED_KEY_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "content-type",
    "cookie",
    "proxy-authorization",
    "x-forwarded-for",
    "forwarded",
    "via",
];

/// `[management]` keys with a narrower valid range than their type's (`(key, min, max)`),
/// for messages about values of the wrong type.
pub const RANGES: &[(&str, i128, i128)] = &[
    ("flush_interval_ms", 10, 60_000),
    ("call_log_buffer", 16, 10_000_000),
    ("retention_days", 1, 3650),
    ("cache_refresh_ms", 50, 1500),
];

fn range_of(key: &str) -> (i128, i128) {
    RANGES
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
        .unwrap_or((0, i128::MAX))
}

/// `management.KEY` must be within its range in [`RANGES`].
fn check_listed_range(errors: &mut Vec<ConfigError>, key: &str, value: i128) {
    let (min, max) = range_of(key);
    check_range(errors, key, value, min, max);
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
    } else if RESERVED_KEY_HEADERS.contains(&key_header.as_str()) {
        errors.push(ConfigError::new(
            "management.key_header",
            format!("`{key_header}` carries HTTP itself (routing, framing or the connection), so it cannot carry API keys; it would also be stripped before the upstream"),
            "use `authorization` (Bearer) or a name of your own such as `x-api-key`",
        ));
    }
    let flush_interval_ms = raw.flush_interval_ms.unwrap_or(defaults.flush_interval_ms);
    check_listed_range(&mut errors, "flush_interval_ms", flush_interval_ms as i128);
    let call_log_buffer = raw.call_log_buffer.unwrap_or(defaults.call_log_buffer);
    check_listed_range(&mut errors, "call_log_buffer", call_log_buffer as i128);
    let retention_days = raw.retention_days.unwrap_or(defaults.retention_days);
    check_listed_range(&mut errors, "retention_days", retention_days as i128);
    let cache_refresh_ms = raw.cache_refresh_ms.unwrap_or(defaults.cache_refresh_ms);
    check_listed_range(&mut errors, "cache_refresh_ms", cache_refresh_ms as i128);
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
    check_duplicate_tokens(&mut errors, raw);
    let mut jwt = Vec::new();
    for (i, j) in raw.jwt.iter().enumerate() {
        if let Some(j) = validate_jwt(&mut errors, i, j) {
            if jwt.iter().any(|o: &JwtConfig| o.service == j.service) {
                errors.push(ConfigError::new(
                    format!("management.jwt[{i}].service"),
                    format!("service `{}` has two JWT entries", j.service),
                    "keep one `[[management.jwt]]` entry per service",
                ));
            }
            jwt.push(j);
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
        forward_key: raw.forward_key.unwrap_or(defaults.forward_key),
        flush_interval_ms,
        call_log_buffer,
        retention_days,
        cache_refresh_ms,
        global_rps: raw.global_rps,
        global_rpm: raw.global_rpm,
        admin_tokens,
        jwt,
    })
}

fn validate_jwt(errors: &mut Vec<ConfigError>, i: usize, raw: &RawJwtConfig) -> Option<JwtConfig> {
    let key = |field: &str| format!("management.jwt[{i}].{field}");
    let Some(service) = raw.service.clone().filter(|s| !s.is_empty()) else {
        errors.push(ConfigError::new(
            key("service"),
            "the service name is missing",
            "set `service = \"NAME\"` (a service of API management)",
        ));
        return None;
    };
    let algorithm = match raw
        .algorithm
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("hs256") => JwtAlgorithm::Hs256,
        Some("rs256") => JwtAlgorithm::Rs256,
        Some("es256") => JwtAlgorithm::Es256,
        other => {
            errors.push(ConfigError::new(
                key("algorithm"),
                format!("algorithm {:?} is not supported", other.unwrap_or("")),
                "use `hs256`, `rs256` or `es256`",
            ));
            return None;
        }
    };
    let given = [
        raw.secret.clone().map(JwtKeys::Secret),
        raw.jwks_url.clone().map(JwtKeys::JwksUrl),
        raw.jwks.clone().map(JwtKeys::Jwks),
        raw.public_key_pem.clone().map(JwtKeys::PublicKeyPem),
    ];
    let mut given: Vec<JwtKeys> = given.into_iter().flatten().collect();
    let keys = match (algorithm, given.len()) {
        (_, 1) => given.remove(0),
        _ => {
            errors.push(ConfigError::new(
                key("secret"),
                "exactly one key source is needed",
                "for hs256 set `secret`; for rs256/es256 set one of `jwks_url`, `jwks` or `public_key_pem`",
            ));
            return None;
        }
    };
    match (&algorithm, &keys) {
        (JwtAlgorithm::Hs256, JwtKeys::Secret(s)) if s.len() < 16 => {
            errors.push(ConfigError::new(
                key("secret"),
                "the HS256 secret is shorter than 16 bytes",
                "use a random secret of 32+ characters",
            ));
        }
        (JwtAlgorithm::Hs256, JwtKeys::Secret(_)) => {}
        (JwtAlgorithm::Hs256, _) => errors.push(ConfigError::new(
            key("secret"),
            "hs256 verifies with a shared secret",
            "set `secret`, or use `rs256`/`es256` for public keys",
        )),
        (_, JwtKeys::Secret(_)) => errors.push(ConfigError::new(
            key("secret"),
            "rs256/es256 verify with public keys, not a secret",
            "set `jwks_url`, `jwks` or `public_key_pem`",
        )),
        (_, JwtKeys::JwksUrl(u)) if !u.starts_with("http://") && !u.starts_with("https://") => {
            errors.push(ConfigError::new(
                key("jwks_url"),
                format!("`{u}` is not an http:// or https:// URL"),
                "use `https://HOST/PATH`, or paste the set as `jwks` / `public_key_pem`",
            ))
        }
        _ => {}
    }
    if raw.jwks_ca_file.is_some()
        && !matches!(&keys, JwtKeys::JwksUrl(u) if u.starts_with("https://"))
    {
        errors.push(ConfigError::new(
            key("jwks_ca_file"),
            "`jwks_ca_file` only applies to an https:// `jwks_url`",
            "remove `jwks_ca_file`, or fetch the keys from an https:// `jwks_url`",
        ));
    }
    let leeway_s = raw.leeway_s.unwrap_or(30);
    check_range(errors, &format!("jwt[{i}].leeway_s"), leeway_s, 0, 600);
    let jwks_refresh_s = raw.jwks_refresh_s.unwrap_or(300);
    check_range(
        errors,
        &format!("jwt[{i}].jwks_refresh_s"),
        jwks_refresh_s,
        1,
        86_400,
    );
    Some(JwtConfig {
        service,
        algorithm,
        keys,
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        consumer_claim: raw.consumer_claim.clone().unwrap_or_else(|| "sub".into()),
        leeway_s,
        jwks_refresh_s,
        jwks_ca_file: raw.jwks_ca_file.clone(),
    })
}

fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The same admin token twice (whatever the roles) is an error: a token must name one role,
/// one tenant. The message names the entries, never the token.
fn check_duplicate_tokens(errors: &mut Vec<ConfigError>, raw: &RawManagementConfig) {
    for (i, t) in raw.admin_tokens.iter().enumerate() {
        let Some(token) = t.token.as_deref().filter(|t| t.len() >= 16) else {
            continue; // reported as missing or short
        };
        let first = raw.admin_tokens[..i]
            .iter()
            .position(|o| o.token.as_deref() == Some(token));
        if let Some(j) = first {
            errors.push(ConfigError::new(
                format!("management.admin_tokens[{i}].token"),
                format!(
                    "this token is the same as that of management.admin_tokens[{j}]; one token would hold two roles"
                ),
                "give every [[management.admin_tokens]] entry a token of its own (e.g. another `${ENV}` variable), or remove the duplicate entry",
            ));
        }
    }
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
        assert!(
            !cfg.forward_key,
            "keys are stripped before the upstream by default"
        );
    }

    #[test]
    fn forward_key_is_a_boolean_option() {
        let cfg = validate(&raw(
            "secret = \"0123456789abcdef0123\"\nforward_key = true",
        ))
        .expect("valid");
        assert!(cfg.forward_key);
        assert!(toml::from_str::<RawManagementConfig>("forward_key = \"yes\"").is_err());
        assert!(toml::from_str::<RawManagementConfig>("forward_keys = true").is_err());
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
    fn jwt_entries_validate_and_errors_name_the_key() {
        let cfg = validate(&raw(
            "secret = \"0123456789abcdef0123\"\n[[jwt]]\nservice = \"pay\"\nalgorithm = \"RS256\"\njwks_url = \"http://127.0.0.1:1/jwks.json\"\naudience = \"pay-api\"",
        ))
        .expect("valid");
        assert_eq!(cfg.jwt.len(), 1);
        assert_eq!(cfg.jwt[0].algorithm, JwtAlgorithm::Rs256);
        assert_eq!(cfg.jwt[0].consumer_claim, "sub");
        assert_eq!(cfg.jwt[0].leeway_s, 30);
        let errs = validate(&raw(
            "secret = \"0123456789abcdef0123\"\n[[jwt]]\nservice = \"pay\"\nalgorithm = \"hs256\"\njwks_url = \"http://x/\"\n[[jwt]]\nservice = \"maps\"\nalgorithm = \"none\"\n[[jwt]]\nservice = \"geo\"\nalgorithm = \"es256\"\njwks_url = \"ftp://idp/jwks\"",
        ))
        .expect_err("invalid");
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"management.jwt[0].secret"), "{keys:?}");
        assert!(keys.contains(&"management.jwt[1].algorithm"), "{keys:?}");
        assert!(keys.contains(&"management.jwt[2].jwks_url"), "{keys:?}");
        // A CA file goes with an https JWKS URL only.
        let ok = validate(&raw(
            "secret = \"0123456789abcdef0123\"\n[[jwt]]\nservice = \"pay\"\nalgorithm = \"rs256\"\njwks_url = \"https://idp/jwks\"\njwks_ca_file = \"/etc/idp-ca.pem\"",
        ))
        .expect("valid");
        assert_eq!(ok.jwt[0].jwks_ca_file.as_deref(), Some("/etc/idp-ca.pem"));
        let errs = validate(&raw(
            "secret = \"0123456789abcdef0123\"\n[[jwt]]\nservice = \"pay\"\nalgorithm = \"rs256\"\njwks_url = \"http://idp/jwks\"\njwks_ca_file = \"/etc/idp-ca.pem\"",
        ))
        .expect_err("http with a CA file");
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["management.jwt[0].jwks_ca_file"]);
    }

    #[test]
    fn duplicate_admin_tokens_are_refused() {
        let token = "0123456789abcdef-admin";
        let errs = validate(&raw(&format!(
            "secret = \"0123456789abcdef0123\"\n[[admin_tokens]]\ntoken = \"{token}\"\nrole = \"super_admin\"\n[[admin_tokens]]\ntoken = \"other-token-0123456789\"\nrole = \"viewer\"\ntenant = \"a\"\n[[admin_tokens]]\ntoken = \"{token}\"\nrole = \"viewer\"\ntenant = \"b\""
        )))
        .expect_err("the same token twice");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "management.admin_tokens[2].token");
        let text = format!("{} {}", errs[0].message, errs[0].fix);
        assert!(text.contains("admin_tokens[0]"), "{text}");
        assert!(!text.contains(token), "the token is not shown: {text}");
        // Same token, same role: still refused.
        let errs = validate(&raw(&format!(
            "secret = \"0123456789abcdef0123\"\n[[admin_tokens]]\ntoken = \"{token}\"\nrole = \"super_admin\"\n[[admin_tokens]]\ntoken = \"{token}\"\nrole = \"super_admin\""
        )))
        .expect_err("the same entry twice");
        assert_eq!(errs[0].key, "management.admin_tokens[1].token");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<RawManagementConfig>("stor = \"x\"").is_err());
    }
}
