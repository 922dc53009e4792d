//! Store errors.

/// What went wrong in the store. `NotFound`, `Conflict` and `Invalid` carry a message fit for an
/// API client; the others are backend failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {}", with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL TLS: {0}")]
    PgTls(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    #[error("store task failed: {0}")]
    Task(String),
    /// The database cannot be reached right now (reconnecting with backoff).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// True when the error is a unique-constraint violation (a duplicate name).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::ConstraintViolation
            }
            StoreError::Postgres(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }

    /// A row refused for a foreign key (PostgreSQL; SQLite does not enforce them here): it
    /// names a row that is gone, or a deletion would leave rows naming it.
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, StoreError::Postgres(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION))
    }
}

/// An error and its causes on one line (the driver's own message often stops at "error
/// performing TLS handshake" and leaves the reason to its source).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
