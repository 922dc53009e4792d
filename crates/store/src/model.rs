//! The management model: tenants, services and their versions, consumers, API keys,
//! subscriptions and rate limits.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Longest name accepted for a tenant, service, consumer or version.
pub const MAX_NAME_LEN: usize = 64;

/// Check a name: 1-64 characters of `a-z A-Z 0-9 - _ .`.
pub fn validate_name(field: &str, name: &str) -> Result<(), StoreError> {
    let invalid = |message: String| StoreError::Invalid {
        field: field.to_string(),
        message,
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "must be 1 to {MAX_NAME_LEN} characters (got {})",
            name.len()
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "may only hold letters, digits, `-`, `_` and `.`".into(),
        ));
    }
    if name.bytes().all(|b| b == b'.') {
        return Err(invalid(format!(
            "`{name}` is made only of dots, which cannot be named in a URL path"
        )));
    }
    Ok(())
}

/// The latest sunset accepted: the end of the year 9999 (an HTTP-date has four digits).
pub const MAX_SUNSET_MS: i64 = 253_402_300_799_999;

/// Check a version's `sunset_ms`: a time from the Unix epoch to the end of the year 9999.
pub fn validate_sunset(field: &str, sunset_ms: Option<i64>) -> Result<(), StoreError> {
    match sunset_ms {
        Some(ms) if !(0..=MAX_SUNSET_MS).contains(&ms) => Err(StoreError::Invalid {
            field: field.to_string(),
            message: format!(
                "{ms} is not a time between 1970 and 9999: give milliseconds since the Unix epoch (1782777600000 is 2026-06-30T00:00:00Z)"
            ),
        }),
        _ => Ok(()),
    }
}

/// Order version names naturally: runs of digits compare as numbers, so `v2 < v10` and
/// `v1.2 < v1.10`; other characters compare as bytes. Equal numbers with different leading
/// zeros (`v01`, `v1`) fall back to byte order so the order stays total.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let si = i;
            while i < x.len() && x[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < y.len() && y[j].is_ascii_digit() {
                j += 1;
            }
            let na = trim_zeros(&x[si..i]);
            let nb = trim_zeros(&y[sj..j]);
            let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            let ord = x[i].cmp(&y[j]);
            if ord != Ordering::Equal {
                return ord;
            }
            i += 1;
            j += 1;
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| x.cmp(y))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len());
    &digits[start..]
}

/// Rate limits and token budgets. Every field is optional; absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_min: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_month: Option<u64>,
}

impl Limits {
    /// Check every limit is within 1..=10^9; the error names `field.limit`.
    pub fn validate(&self, field: &str) -> Result<(), StoreError> {
        let checks = [
            ("rps", self.rps.map(u64::from)),
            ("rpm", self.rpm.map(u64::from)),
            ("tokens_per_min", self.tokens_per_min),
            ("tokens_per_day", self.tokens_per_day),
            ("tokens_per_month", self.tokens_per_month),
        ];
        for (name, value) in checks {
            if let Some(v) = value {
                if v == 0 || v > 1_000_000_000 {
                    return Err(StoreError::Invalid {
                        field: format!("{field}.{name}"),
                        message: format!("{v} is out of range: use 1 to 1000000000, or leave it out for no limit"),
                    });
                }
            }
        }
        Ok(())
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    pub(crate) fn from_json(s: &str) -> Result<Limits, StoreError> {
        serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("limits: {e}")))
    }
}

/// A team or workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    pub created_ms: i64,
}

/// Lifecycle state of a service version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Draft,
    Published,
    Deprecated,
    Retired,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Draft => "draft",
            Lifecycle::Published => "published",
            Lifecycle::Deprecated => "deprecated",
            Lifecycle::Retired => "retired",
        }
    }
    pub fn parse(s: &str) -> Option<Lifecycle> {
        [
            Lifecycle::Draft,
            Lifecycle::Published,
            Lifecycle::Deprecated,
            Lifecycle::Retired,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }
    /// True when calls are served (published or deprecated).
    pub fn callable(self) -> bool {
        matches!(self, Lifecycle::Published | Lifecycle::Deprecated)
    }
}

/// One version of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceVersion {
    pub version: String,
    pub state: Lifecycle,
    /// When the version entered its current state (ms since the Unix epoch), set by the
    /// store; a `deprecated` version's calls carry it as the `Deprecation` header.
    #[serde(default, skip_deserializing)]
    pub since_ms: Option<i64>,
    /// When the version is planned to go away (ms since the Unix epoch), set by its owner; a
    /// callable version's answers carry it as the `Sunset` header (RFC 8594). A hint to
    /// callers only: the version is not retired by itself when the time comes. Absent from
    /// the JSON when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset_ms: Option<i64>,
}

/// A published API of a tenant. Routes bind to it with `service = "NAME"` (or `NAME@VERSION`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub tenant: String,
    pub require_approval: bool,
    pub limits: Limits,
    pub versions: Vec<ServiceVersion>,
    pub created_ms: i64,
}

/// An app or user of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consumer {
    pub tenant: String,
    pub name: String,
    pub limits: Limits,
    pub created_ms: i64,
}

/// An API key as stored (never the key itself: only its HMAC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The recognisable, non-secret start of the key (`hf_XXXXXXXX`).
    pub prefix: String,
    #[serde(skip)]
    pub hash: String,
    pub tenant: String,
    pub consumer: String,
    pub limits: Limits,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

impl ApiKey {
    /// True when the key may be used at `now`.
    pub fn usable_at(&self, now: i64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| now < e)
    }
}

/// A freshly issued key: the only time the secret is visible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedKey {
    /// The full key. Shown once; only its hash is stored.
    pub key: String,
    #[serde(flatten)]
    pub info: ApiKey,
}

/// State of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    Pending,
    Active,
    Rejected,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Pending => "pending",
            SubscriptionState::Active => "active",
            SubscriptionState::Rejected => "rejected",
        }
    }
    pub fn parse(s: &str) -> Option<SubscriptionState> {
        [
            SubscriptionState::Pending,
            SubscriptionState::Active,
            SubscriptionState::Rejected,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }
}

/// A consumer's subscription to a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: i64,
    pub tenant: String,
    pub consumer: String,
    pub service: String,
    pub state: SubscriptionState,
    pub created_ms: i64,
    pub decided_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn versions_order_naturally() {
        assert_eq!(compare_versions("v2", "v10"), Less);
        assert_eq!(compare_versions("v9", "v10"), Less);
        assert_eq!(compare_versions("v10", "v9"), Greater);
        assert_eq!(compare_versions("v1.2", "v1.10"), Less);
        assert_eq!(compare_versions("v1", "v1.0"), Less);
        assert_eq!(compare_versions("v1", "v1"), Equal);
        assert_eq!(compare_versions("v01", "v1"), Less);
        assert_eq!(compare_versions("beta", "v1"), Less);
        let mut v = vec!["v10", "v2", "v1", "v1.10", "v1.2", "v100", "v9"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, ["v1", "v1.2", "v1.10", "v2", "v9", "v10", "v100"]);
        let max = ["v9", "v10", "v2"]
            .into_iter()
            .max_by(|a, b| compare_versions(a, b));
        assert_eq!(max, Some("v10"));
    }

    #[test]
    fn dot_only_names_are_refused() {
        for bad in [".", "..", "..."] {
            let e = validate_name("name", bad).unwrap_err();
            assert!(
                matches!(e, StoreError::Invalid { ref field, .. } if field == "name"),
                "{e}"
            );
        }
        for good in ["a.b", ".a", "-", "v1.0"] {
            validate_name("name", good).unwrap();
        }
    }
}

/// Everything the request path needs, loaded at once and swapped in when the store's
/// generation changes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub generation: i64,
    pub services: Vec<Service>,
    pub consumers: Vec<Consumer>,
    pub keys: Vec<ApiKey>,
    pub subscriptions: Vec<Subscription>,
}
