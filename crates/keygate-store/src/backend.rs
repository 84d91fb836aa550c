//! Picks the backend from the database URL.

use std::sync::Arc;

use keygate_domain::Error;

use crate::{PostgresStore, SqliteStore, Store};

/// Which store of record a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// A store's connection pool, by dialect: what [`Store::pool`] hands to the other crates that
/// keep tables in the same database.
#[derive(Clone, Debug)]
pub enum StorePool {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// Connects to the store named by `url`: `postgres://...` for PostgreSQL, otherwise a SQLite URL
/// (`sqlite://path/to/file.db`), created if missing. Connects on first use; does not migrate.
pub fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    Ok(match Backend::of_url(url) {
        Backend::Postgres => Arc::new(PostgresStore::connect_lazy(url)?),
        Backend::Sqlite => Arc::new(SqliteStore::connect_lazy(url)?),
    })
}
