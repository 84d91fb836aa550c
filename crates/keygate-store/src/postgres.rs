//! PostgreSQL store of record.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

/// The PostgreSQL implementation of every storage trait.
pub type PostgresStore = crate::dialect::SqlStore<sqlx::Postgres>;

impl PostgresStore {
    /// Parses the URL and makes a pool that connects on first use, so Keygate can start (and
    /// report NOT_SERVING) while the database is still coming up.
    pub fn connect_lazy(url: &str) -> Result<Self, keygate_domain::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(url)
            .map_err(crate::error::StoreError::from)?;
        Ok(Self { pool })
    }
}
