//! Persistence behind one trait per concern: SQLite (default), PostgreSQL and Redis.
