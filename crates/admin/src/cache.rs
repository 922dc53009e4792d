//! The in-memory view of the store the request path reads: keys by hash, services, consumers
//! and subscriptions. Rebuilt from a [`Snapshot`] whenever the store's generation changes, so
//! no request ever waits on the database.

use std::collections::HashMap;

use holdfast_store::{ApiKey, Limits, Service, Snapshot, SubscriptionState};

/// Lookup tables built from one snapshot.
#[derive(Debug, Default)]
pub struct Index {
    pub generation: i64,
    pub keys_by_hash: HashMap<String, ApiKey>,
    pub services: HashMap<String, Service>,
    pub consumer_limits: HashMap<(String, String), Limits>,
    /// `(tenant, consumer, service)` -> state.
    pub subscriptions: HashMap<(String, String, String), SubscriptionState>,
}

impl Index {
    pub fn build(snapshot: Snapshot) -> Index {
        Index {
            generation: snapshot.generation,
            keys_by_hash: snapshot
                .keys
                .into_iter()
                .map(|k| (k.hash.clone(), k))
                .collect(),
            services: snapshot
                .services
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect(),
            consumer_limits: snapshot
                .consumers
                .into_iter()
                .map(|c| ((c.tenant, c.name), c.limits))
                .collect(),
            subscriptions: snapshot
                .subscriptions
                .into_iter()
                .map(|s| ((s.tenant, s.consumer, s.service), s.state))
                .collect(),
        }
    }
}
