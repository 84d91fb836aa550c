//! SQLite store of record: the embedded default, one file under `KEYGATE_DATA_DIR`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// The SQLite implementation of every storage trait.
pub type SqliteStore = crate::dialect::SqlStore<sqlx::Sqlite>;

impl SqliteStore {
    /// Opens (creating if missing) the database file named by a `sqlite://` URL.
    pub fn connect_lazy(url: &str) -> Result<Self, keygate_domain::Error> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(crate::error::StoreError::from)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(opts);
        Ok(Self { pool })
    }
}
