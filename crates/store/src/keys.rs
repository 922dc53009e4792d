//! API keys: `hf_` + 8 hex characters of recognisable prefix + `_` + 40 hex characters of
//! secret. Only `HMAC-SHA256(server secret, key)` is stored; the key is shown once.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::db::{col, Row, SqlStore, Stmt, Value};
use crate::entities::ChangeFeed;
use crate::error::StoreError;
use crate::model::*;

/// The hex HMAC-SHA256 of `key` under the server `secret`.
pub fn hash_key(secret: &[u8], key: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(key.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Hashes presented keys on the request path: the HMAC state keyed with the server secret is
/// computed once and cloned per key, and the digest stays binary (no hex string).
#[derive(Clone)]
pub struct KeyHasher(Hmac<Sha256>);

impl KeyHasher {
    pub fn new(secret: &[u8]) -> KeyHasher {
        KeyHasher(
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        )
    }

    /// The raw HMAC-SHA256 of `key` (the bytes [`hash_key`] spells in hex).
    pub fn hash(&self, key: &str) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The 32 bytes of a stored hex key hash, or `None` if it is not 64 hex digits.
pub fn decode_key_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out).ok()?;
    Some(out)
}

/// The prefix of a presented key (`hf_XXXXXXXX`), if it has the Holdfast shape.
pub fn key_prefix(key: &str) -> Option<&str> {
    let prefix = key.get(..11)?;
    (prefix.starts_with("hf_") && key.as_bytes().get(11) == Some(&b'_')).then_some(prefix)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// API keys.
#[async_trait]
pub trait KeyStore {
    /// Issue a key for a consumer of `tenant`. The returned key is the only copy.
    async fn issue_key(
        &self,
        tenant: &str,
        consumer: &str,
        limits: &Limits,
        expires_ms: Option<i64>,
    ) -> Result<IssuedKey, StoreError>;
    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, StoreError>;
    /// Revoke a key of `tenant` by its prefix.
    async fn revoke_key(&self, tenant: &str, prefix: &str) -> Result<ApiKey, StoreError>;
    /// Change a key's limits and/or expiry (`None`: unchanged; `Some(None)`: no expiry).
    async fn update_key(
        &self,
        tenant: &str,
        prefix: &str,
        limits: Option<&Limits>,
        expires_ms: Option<Option<i64>>,
    ) -> Result<ApiKey, StoreError>;
}

const KEY_COLS: &str = "prefix, hash, tenant, consumer, limits, created_ms, expires_ms, revoked_ms";

fn api_key(row: &Row) -> Result<ApiKey, StoreError> {
    let text = |i| {
        col(row, i)
            .text()
            .ok_or_else(|| StoreError::Corrupt(format!("api_keys column {i}")))
    };
    Ok(ApiKey {
        prefix: text(0)?,
        hash: text(1)?,
        tenant: text(2)?,
        consumer: text(3)?,
        limits: Limits::from_json(&text(4)?)?,
        created_ms: col(row, 5).int().unwrap_or(0),
        expires_ms: col(row, 6).int(),
        revoked_ms: col(row, 7).int(),
    })
}

pub(crate) async fn load_keys(
    store: &SqlStore,
    tenant: Option<&str>,
) -> Result<Vec<ApiKey>, StoreError> {
    let (filter, params) = match tenant {
        Some(t) => ("WHERE tenant = $1", vec![Value::from(t)]),
        None => ("", vec![]),
    };
    let rows = store
        .query(
            &format!("SELECT {KEY_COLS} FROM api_keys {filter} ORDER BY created_ms, prefix"),
            params,
        )
        .await?;
    rows.iter().map(api_key).collect()
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn issue_key(
        &self,
        tenant: &str,
        consumer: &str,
        limits: &Limits,
        expires_ms: Option<i64>,
    ) -> Result<IssuedKey, StoreError> {
        limits.validate("limits")?;
        let now = now_ms();
        if let Some(e) = expires_ms {
            if e <= now {
                return Err(StoreError::Invalid {
                    field: "expires_ms".into(),
                    message: "the expiry is in the past".into(),
                });
            }
        }
        let prefix = format!("hf_{}", random_hex(4));
        let key = format!("{prefix}_{}", random_hex(20));
        let info = ApiKey {
            prefix,
            hash: hash_key(self.secret(), &key),
            tenant: tenant.to_string(),
            consumer: consumer.to_string(),
            limits: limits.clone(),
            created_ms: now,
            expires_ms,
            revoked_ms: None,
        };
        // One statement that inserts only while the consumer exists: a consumer deleted at
        // the same moment can never be left with a key (which would come back with a new
        // consumer of the same name). PostgreSQL also locks the consumer row against a
        // concurrent delete until this insert commits.
        let inserted = self
            .execute(
                &format!(
                    "INSERT INTO api_keys ({KEY_COLS}) SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS TEXT), CAST($6 AS BIGINT), CAST($7 AS BIGINT), CAST($8 AS BIGINT) WHERE EXISTS (SELECT 1 FROM consumers WHERE tenant = $3 AND name = $4{})",
                    self.lock_for_key_share()
                ),
                vec![
                info.prefix.as_str().into(),
                info.hash.as_str().into(),
                info.tenant.as_str().into(),
                info.consumer.as_str().into(),
                info.limits.to_json().into(),
                now.into(),
                expires_ms.into(),
                Value::Null,
            ],
        )
        .await?;
        if inserted == 0 {
            return Err(StoreError::NotFound(format!(
                "consumer `{consumer}` in tenant `{tenant}`"
            )));
        }
        self.bump().await?;
        Ok(IssuedKey { key, info })
    }

    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, StoreError> {
        load_keys(self, tenant).await
    }

    async fn revoke_key(&self, tenant: &str, prefix: &str) -> Result<ApiKey, StoreError> {
        let rows = self
            .query(
                &format!("UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, $3) WHERE tenant = $1 AND prefix = $2 RETURNING {KEY_COLS}"),
                vec![tenant.into(), prefix.into(), now_ms().into()],
            )
            .await?;
        let key = rows.first().map(api_key).unwrap_or_else(|| {
            Err(StoreError::NotFound(format!(
                "key `{prefix}` in tenant `{tenant}`"
            )))
        })?;
        self.bump().await?;
        Ok(key)
    }

    async fn update_key(
        &self,
        tenant: &str,
        prefix: &str,
        limits: Option<&Limits>,
        expires_ms: Option<Option<i64>>,
    ) -> Result<ApiKey, StoreError> {
        if let Some(l) = limits {
            l.validate("limits")?;
        }
        if let Some(Some(e)) = expires_ms {
            if e <= now_ms() {
                return Err(StoreError::Invalid {
                    field: "expires_ms".into(),
                    message: "the expiry is in the past".into(),
                });
            }
        }
        let current = self.get_key(tenant, prefix).await?;
        let limits = limits.unwrap_or(&current.limits);
        let expires = expires_ms.unwrap_or(current.expires_ms);
        self.atomic(vec![
            Stmt::new(
                "UPDATE api_keys SET limits = $3, expires_ms = $4 WHERE tenant = $1 AND prefix = $2",
                vec![
                    tenant.into(),
                    prefix.into(),
                    limits.to_json().into(),
                    expires.into(),
                ],
            )
            .or_fail(StoreError::NotFound(format!(
                "key `{prefix}` in tenant `{tenant}`"
            ))),
            self.bump_stmt(),
        ])
        .await?;
        self.get_key(tenant, prefix).await
    }
}

impl SqlStore {
    async fn get_key(&self, tenant: &str, prefix: &str) -> Result<ApiKey, StoreError> {
        let rows = self
            .query(
                &format!("SELECT {KEY_COLS} FROM api_keys WHERE tenant = $1 AND prefix = $2"),
                vec![tenant.into(), prefix.into()],
            )
            .await?;
        rows.first().map(api_key).unwrap_or_else(|| {
            Err(StoreError::NotFound(format!(
                "key `{prefix}` in tenant `{tenant}`"
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_secret_and_key() {
        let a = hash_key(b"secret-one-123456", "hf_00000000_x");
        assert_ne!(a, hash_key(b"secret-two-123456", "hf_00000000_x"));
        assert_ne!(a, hash_key(b"secret-one-123456", "hf_00000000_y"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn binary_hash_matches_the_stored_hex() {
        let h = KeyHasher::new(b"secret-one-123456");
        let stored = hash_key(b"secret-one-123456", "hf_00000000_x");
        assert_eq!(decode_key_hash(&stored), Some(h.hash("hf_00000000_x")));
        assert_ne!(h.hash("hf_00000000_x"), h.hash("hf_00000000_y"));
        assert_eq!(decode_key_hash("not hex"), None);
        assert_eq!(decode_key_hash("abcd"), None);
    }

    #[test]
    fn prefix_is_recognised() {
        assert_eq!(key_prefix("hf_0a1b2c3d_ffff"), Some("hf_0a1b2c3d"));
        assert_eq!(key_prefix("sk-nothing"), None);
        assert_eq!(key_prefix("hf_0a1b2c3dXffff"), None);
    }
}
