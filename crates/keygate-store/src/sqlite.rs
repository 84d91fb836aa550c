//! SQLite store of record: the embedded default, one file under `KEYGATE_DATA_DIR`.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::backend::PoolSettings;

/// The SQLite implementation of every storage trait.
pub type SqliteStore = crate::dialect::SqlStore<sqlx::Sqlite>;

impl SqliteStore {
    /// Opens (creating if missing) the database file named by a `sqlite://` URL.
    pub fn connect_lazy(url: &str) -> Result<Self, keygate_domain::Error> {
        Self::connect_lazy_with(url, &PoolSettings::default())
    }

    /// Like [`connect_lazy`](Self::connect_lazy), with the pool's timeouts: waiting for a
    /// connection, and SQLite's busy timeout (how long a statement waits for the file's lock)
    /// from the statement timeout.
    pub fn connect_lazy_with(
        url: &str,
        settings: &PoolSettings,
    ) -> Result<Self, keygate_domain::Error> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(crate::error::StoreError::from)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(settings.statement_timeout.unwrap_or(BUSY_WITHOUT_LIMIT));
        let pool = SqlitePoolOptions::new()
            .max_connections(
                settings
                    .max_connections
                    .unwrap_or(crate::PoolSettings::DEFAULT_SQLITE_CONNECTIONS)
                    .max(1),
            )
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(opts);
        Ok(Self { pool })
    }
}

/// The busy timeout when no statement timeout is set (migrations): long, not endless.
const BUSY_WITHOUT_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);
