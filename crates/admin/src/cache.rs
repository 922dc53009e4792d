//! The in-memory view of the store the request path reads: keys by hash, services, consumers
//! and subscriptions. Rebuilt from a [`Snapshot`] whenever the store's generation changes, so
//! no request ever waits on the database.
//!
//! Everything a request needs is resolved at build time: a key entry points at its consumer,
//! a consumer holds its subscriptions, and every scope (service, consumer, key, global)
//! carries its bucket names, labels and rate-limit buckets. A request then does one key lookup,
//! one service lookup and one subscription lookup, and formats no strings.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use holdfast_core::config::management::ManagementConfig;
use holdfast_store::{decode_key_hash, ApiKey, Limits, Service, Snapshot, SubscriptionState};

use crate::limiter::{Bucket, Limiter};

/// The limits of one scope (global, a service, a consumer or a key), ready for the request path.
#[derive(Debug)]
pub struct Scope {
    /// `svc:NAME`, `con:TENANT/NAME`, `key:PREFIX` or `global`: the counters' name.
    pub name: Box<str>,
    /// `service NAME`...: how refusals name it.
    pub label: Box<str>,
    pub limits: Limits,
    /// Request-rate buckets (rps, rpm) that apply.
    pub buckets: Vec<Bucket>,
}

impl Scope {
    fn new(limiter: &Limiter, name: String, label: String, limits: Limits) -> Scope {
        let buckets = [(limits.rps, 1000), (limits.rpm, 60_000)]
            .into_iter()
            .filter_map(|(limit, window)| limiter.bucket(&name, limit?, window))
            .collect();
        Scope {
            name: name.into(),
            label: label.into(),
            limits,
            buckets,
        }
    }

    /// Whether a token budget applies (then the call's tokens are counted for this scope).
    pub fn has_budget(&self) -> bool {
        let l = &self.limits;
        l.tokens_per_min.is_some() || l.tokens_per_day.is_some() || l.tokens_per_month.is_some()
    }

    /// The global limits of a config (`None` when it has none).
    pub fn global(limiter: &Limiter, config: &ManagementConfig) -> Option<Scope> {
        let global = Scope::new(
            limiter,
            "global".into(),
            "global limit".into(),
            Limits {
                rps: config.global_rps,
                rpm: config.global_rpm,
                ..Limits::default()
            },
        );
        (!global.is_unlimited()).then_some(global)
    }

    /// Whether checking this scope can be skipped entirely.
    pub fn is_unlimited(&self) -> bool {
        self.buckets.is_empty() && !self.has_budget()
    }
}

/// A key as the request path sees it.
#[derive(Debug)]
pub struct KeyEntry {
    pub key: ApiKey,
    /// Its consumer in [`Index::consumers`] (`None` if the consumer is gone).
    pub consumer: Option<usize>,
    pub scope: Scope,
}

/// A consumer with its subscriptions.
#[derive(Debug)]
pub struct ConsumerEntry {
    pub tenant: String,
    pub name: String,
    pub scope: Scope,
    /// Service name -> subscription state.
    pub subscriptions: HashMap<String, SubscriptionState>,
}

/// A service with its scope.
#[derive(Debug)]
pub struct ServiceEntry {
    pub service: Service,
    pub scope: Scope,
}

/// Hashes a [`KeyHash`] by its first 8 bytes: an HMAC output is already uniform, and neither
/// the stored hashes nor the hash of a presented key can be chosen without the server secret.
#[derive(Default)]
pub struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(7) ^ u64::from_le_bytes(word);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The binary HMAC of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl std::hash::Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0[..8]);
    }
}

/// Lookup tables built from one snapshot.
#[derive(Debug, Default)]
pub struct Index {
    pub generation: i64,
    pub keys: HashMap<KeyHash, KeyEntry, BuildHasherDefault<KeyHashHasher>>,
    /// Key prefix -> whether that key has a token budget.
    pub key_budgets: HashMap<String, bool>,
    pub services: HashMap<String, ServiceEntry>,
    pub consumers: Vec<ConsumerEntry>,
    /// Tenant -> consumer name -> position in `consumers`.
    pub consumers_by_name: HashMap<String, HashMap<String, usize>>,
}

impl Index {
    pub fn build(snapshot: Snapshot, limiter: &Limiter) -> Index {
        let mut consumers = Vec::with_capacity(snapshot.consumers.len());
        let mut consumers_by_name: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for c in snapshot.consumers {
            let scope = Scope::new(
                limiter,
                format!("con:{}/{}", c.tenant, c.name),
                format!("consumer {}", c.name),
                c.limits,
            );
            consumers_by_name
                .entry(c.tenant.clone())
                .or_default()
                .insert(c.name.clone(), consumers.len());
            consumers.push(ConsumerEntry {
                tenant: c.tenant,
                name: c.name,
                scope,
                subscriptions: HashMap::new(),
            });
        }
        let find = |by: &HashMap<String, HashMap<String, usize>>, t: &str, c: &str| {
            by.get(t).and_then(|m| m.get(c)).copied()
        };
        for s in snapshot.subscriptions {
            if let Some(i) = find(&consumers_by_name, &s.tenant, &s.consumer) {
                consumers[i].subscriptions.insert(s.service, s.state);
            }
        }
        let mut keys = HashMap::default();
        let mut key_budgets = HashMap::new();
        for k in snapshot.keys {
            let Some(hash) = decode_key_hash(&k.hash) else {
                tracing::warn!(prefix = %k.prefix, "stored key hash is not 64 hex digits; key ignored");
                continue;
            };
            let scope = Scope::new(
                limiter,
                format!("key:{}", k.prefix),
                format!("key {}", k.prefix),
                k.limits.clone(),
            );
            key_budgets.insert(k.prefix.clone(), scope.has_budget());
            keys.insert(
                KeyHash(hash),
                KeyEntry {
                    consumer: find(&consumers_by_name, &k.tenant, &k.consumer),
                    key: k,
                    scope,
                },
            );
        }
        let services = snapshot
            .services
            .into_iter()
            .map(|s| {
                let scope = Scope::new(
                    limiter,
                    format!("svc:{}", s.name),
                    format!("service {}", s.name),
                    s.limits.clone(),
                );
                (s.name.clone(), ServiceEntry { service: s, scope })
            })
            .collect();
        Index {
            generation: snapshot.generation,
            keys,
            key_budgets,
            services,
            consumers,
            consumers_by_name,
        }
    }

    /// The consumer `name` of `tenant`.
    pub fn consumer(&self, tenant: &str, name: &str) -> Option<&ConsumerEntry> {
        let i = *self.consumers_by_name.get(tenant)?.get(name)?;
        self.consumers.get(i)
    }
}
