//! Admin tokens and what each role may do. A super admin sees every tenant; a tenant admin
//! reads and writes one tenant; a viewer only reads one tenant.

use axum::http::HeaderMap;
use holdfast_core::config::management::{AdminRole, AdminToken};

use crate::error::ApiError;

/// Who is calling the admin API.
#[derive(Debug, Clone)]
pub struct Principal {
    pub role: AdminRole,
    pub tenant: Option<String>,
}

/// Find the caller's token (`Authorization: Bearer TOKEN`) among the configured ones.
pub fn authenticate(tokens: &[AdminToken], headers: &HeaderMap) -> Result<Principal, ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or(ApiError::Unauthorized)?;
    tokens
        .iter()
        .find(|t| constant_time_eq(t.token.as_bytes(), presented.as_bytes()))
        .map(|t| Principal {
            role: t.role,
            tenant: t.tenant.clone(),
        })
        .ok_or(ApiError::Unauthorized)
}

/// The credentials of `Bearer CREDENTIALS`; the scheme is case-insensitive (RFC 7235).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|c| !c.is_empty())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Principal {
    /// May this caller read `tenant`'s data?
    pub fn can_read(&self, tenant: &str) -> Result<(), ApiError> {
        match (self.role, &self.tenant) {
            (AdminRole::SuperAdmin, _) => Ok(()),
            (_, Some(t)) if t == tenant => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "this admin token may not access tenant `{tenant}`"
            ))),
        }
    }

    /// May this caller change `tenant`'s data?
    pub fn can_write(&self, tenant: &str) -> Result<(), ApiError> {
        self.can_read(tenant)?;
        if self.role == AdminRole::Viewer {
            return Err(ApiError::Forbidden(
                "a viewer token is read-only; use a tenant admin token".into(),
            ));
        }
        Ok(())
    }

    /// Super admins only (creating tenants, cross-tenant stats, pruning).
    pub fn super_admin(&self) -> Result<(), ApiError> {
        if self.role == AdminRole::SuperAdmin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only a super admin token may do this".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer k1", "bearer k1", "BEARER k1", "bEaReR  k1 "] {
            assert_eq!(bearer(v), Some("k1"), "{v}");
        }
        for v in ["Basic k1", "Bearerk1", "Bearer ", "k1"] {
            assert_eq!(bearer(v), None, "{v}");
        }
    }
}
