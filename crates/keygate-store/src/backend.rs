//! Picks the backend from the database URL.

use std::sync::Arc;
use std::time::Duration;

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

/// A store's connection pool: its size and timeouts (`KEYGATE_DATABASE_POOL_SIZE`,
/// `KEYGATE_DATABASE_ACQUIRE_TIMEOUT_MS`, `KEYGATE_DATABASE_STATEMENT_TIMEOUT_MS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// How long a call waits for a free connection (or a new one to connect) before failing.
    pub acquire_timeout: Duration,
    /// The longest a statement may run: PostgreSQL's `statement_timeout` on every connection,
    /// SQLite's busy timeout. `None`: no limit (for `keygate migrate`, whose DDL may be long).
    pub statement_timeout: Option<Duration>,
    /// Most connections the pool opens; `None`: the backend's default
    /// ([`PoolSettings::DEFAULT_POSTGRES_CONNECTIONS`], [`PoolSettings::DEFAULT_SQLITE_CONNECTIONS`]).
    pub max_connections: Option<u32>,
}

impl PoolSettings {
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);
    pub const DEFAULT_POSTGRES_CONNECTIONS: u32 = 16;
    pub const DEFAULT_SQLITE_CONNECTIONS: u32 = 8;
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: Some(Self::DEFAULT_STATEMENT_TIMEOUT),
            max_connections: None,
        }
    }
}

/// Connects to the store named by `url`: `postgres://...` for PostgreSQL, otherwise a SQLite URL
/// (`sqlite://path/to/file.db`), created if missing. Connects on first use; does not migrate.
/// The pool has the default timeouts ([`PoolSettings::default`]).
pub fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    open_with(url, &PoolSettings::default())
}

/// Like [`open`], with the pool's timeouts.
pub fn open_with(url: &str, settings: &PoolSettings) -> Result<Arc<dyn Store>, Error> {
    Ok(match Backend::of_url(url) {
        Backend::Postgres => Arc::new(PostgresStore::connect_lazy_with(url, settings)?),
        Backend::Sqlite => Arc::new(SqliteStore::connect_lazy_with(url, settings)?),
    })
}
