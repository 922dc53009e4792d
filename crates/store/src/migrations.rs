//! Versioned schema migrations, run at start. Each migration is written once; `{ID}` becomes
//! the dialect's auto-increment key. On PostgreSQL an advisory lock keeps two nodes starting
//! at once from migrating twice.

use crate::db::{col, SqlStore, Value};
use crate::error::StoreError;

/// `(version, SQL)` in order. Never edit a released migration: add a new one.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE services (
        name TEXT PRIMARY KEY,
        tenant TEXT NOT NULL REFERENCES tenants(name),
        require_approval BIGINT NOT NULL,
        limits TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE service_versions (
        service TEXT NOT NULL REFERENCES services(name),
        version TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (service, version)
    );
    CREATE TABLE consumers (
        tenant TEXT NOT NULL REFERENCES tenants(name),
        name TEXT NOT NULL,
        limits TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        PRIMARY KEY (tenant, name)
    );
    CREATE TABLE api_keys (
        prefix TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        consumer TEXT NOT NULL,
        limits TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT,
        revoked_ms BIGINT
    );
    CREATE TABLE subscriptions (
        id {ID},
        tenant TEXT NOT NULL,
        consumer TEXT NOT NULL,
        service TEXT NOT NULL REFERENCES services(name),
        state TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        decided_ms BIGINT,
        UNIQUE (tenant, consumer, service)
    );
    CREATE TABLE calls (
        id {ID},
        ts_ms BIGINT NOT NULL,
        node TEXT NOT NULL,
        tenant TEXT,
        service TEXT,
        version TEXT,
        consumer TEXT,
        key_prefix TEXT,
        route TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status BIGINT NOT NULL,
        reset_class TEXT,
        total_ms DOUBLE PRECISION NOT NULL,
        upstream_ms DOUBLE PRECISION,
        overhead_ms DOUBLE PRECISION NOT NULL,
        bytes_in BIGINT NOT NULL,
        bytes_out BIGINT NOT NULL,
        model TEXT,
        input_tokens BIGINT,
        output_tokens BIGINT,
        cost_usd DOUBLE PRECISION
    );
    CREATE INDEX calls_ts ON calls (ts_ms);
    CREATE INDEX calls_tenant_ts ON calls (tenant, ts_ms);
    CREATE TABLE meta (
        k TEXT PRIMARY KEY,
        v BIGINT NOT NULL
    );
    INSERT INTO meta (k, v) VALUES ('generation', 1);",
    ),
    // Tenant-scoped analytics read the time range through `calls_ts` and filter by tenant;
    // the second index cost a quarter of every call-log insert.
    (2, "DROP INDEX IF EXISTS calls_tenant_ts;"),
    // The token of each call-log batch written on PostgreSQL, in the batch's transaction: a
    // batch written again after its connection was lost mid-commit is skipped if the first
    // attempt did commit (neither lost nor duplicated). Pruned with the calls.
    (
        3,
        "CREATE TABLE call_batches (
        token TEXT PRIMARY KEY,
        ts_ms BIGINT NOT NULL
    );
    CREATE INDEX call_batches_ts ON call_batches (ts_ms);",
    ),
    // When each version entered its current state (the `Deprecation` header of a deprecated
    // version's calls); versions from before are dated by their service's creation.
    (
        4,
        "ALTER TABLE service_versions ADD COLUMN state_since_ms BIGINT;
    UPDATE service_versions SET state_since_ms = (SELECT created_ms FROM services WHERE services.name = service_versions.service);",
    ),
    // When a version is planned to go away (the `Sunset` header of its calls); none before.
    (5, "ALTER TABLE service_versions ADD COLUMN sunset_ms BIGINT;"),
];

/// Apply every migration newer than the schema's version.
pub async fn run(store: &SqlStore) -> Result<(), StoreError> {
    let id = if store.is_postgres() {
        "BIGSERIAL PRIMARY KEY"
    } else {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    };
    if store.is_postgres() {
        store
            .query("SELECT pg_advisory_lock(72656)::TEXT", vec![])
            .await?;
    }
    let result = apply(store, id).await;
    if store.is_postgres() {
        store
            .query("SELECT pg_advisory_unlock(72656)::TEXT", vec![])
            .await?;
    }
    result
}

async fn apply(store: &SqlStore, id: &str) -> Result<(), StoreError> {
    store
        .batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .await?;
    let rows = store
        .query("SELECT MAX(version) FROM schema_migrations", vec![])
        .await?;
    let current = rows.first().and_then(|r| col(r, 0).int()).unwrap_or(0);
    for (version, sql) in MIGRATIONS {
        if *version <= current {
            continue;
        }
        let sql = format!(
            "BEGIN;\n{}\nINSERT INTO schema_migrations (version, applied_ms) VALUES ({version}, {});\nCOMMIT;",
            sql.replace("{ID}", id),
            crate::model::now_ms()
        );
        store.batch(&sql).await?;
    }
    Ok(())
}

/// The schema version after [`run`].
pub async fn version(store: &SqlStore) -> Result<i64, StoreError> {
    let rows = store
        .query(
            "SELECT MAX(version) FROM schema_migrations",
            Vec::<Value>::new(),
        )
        .await?;
    Ok(rows.first().and_then(|r| col(r, 0).int()).unwrap_or(0))
}
