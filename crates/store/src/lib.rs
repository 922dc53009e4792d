//! Holdfast's management store: tenants, services, consumers, API keys, subscriptions and the
//! call log, on an embedded SQLite file by default or on PostgreSQL across machines; Redis for
//! rate-limit counters shared by several gateway nodes.
//!
//! One trait per concern: [`EntityStore`] (tenants, services, consumers, subscriptions),
//! [`KeyStore`] (API keys), [`CallLogStore`] (call log, pruning, analytics input) and
//! [`ChangeFeed`] (the generation counter each node polls to refresh its caches). All of them are
//! implemented by [`SqlStore`] over either SQL dialect; [`RedisCounters`] keeps the shared
//! rate-limit and token counters. Versioned migrations run at [`SqlStore::open`].

mod analytics;
mod calllog;
mod db;
mod entities;
mod error;
mod keys;
mod migrations;
mod model;
mod pg_tls;
mod redis_counters;

pub use analytics::{
    analyse, analyse_until, Analytics, Bucket, CallRow, StatsQuery, TopEntry, UsageEntry,
    MAX_BUCKETS,
};
pub use calllog::{CallBatch, CallLogStore};
pub use db::{ChangeListener, SqlStore, CHANGES_CHANNEL};
pub use entities::{ChangeFeed, EntityStore};
pub use error::StoreError;
pub use keys::{decode_key_hash, hash_key, key_prefix, KeyHasher, KeyStore};
pub use migrations::version as schema_version;
pub use model::*;
pub use pg_tls::check_postgres_url;
pub use redis_counters::{GcraDecision, RedisCounters};
