//! PostgreSQL store of record.

use std::str::FromStr as _;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::backend::PoolSettings;

/// The PostgreSQL implementation of every storage trait.
pub type PostgresStore = crate::dialect::SqlStore<sqlx::Postgres>;

impl PostgresStore {
    /// Parses the URL and makes a pool that connects on first use, so Keygate can start (and
    /// report NOT_SERVING) while the database is still coming up.
    pub fn connect_lazy(url: &str) -> Result<Self, keygate_domain::Error> {
        Self::connect_lazy_with(url, &PoolSettings::default())
    }

    /// Like [`connect_lazy`](Self::connect_lazy), with the pool's timeouts: waiting for a
    /// connection, and PostgreSQL's `statement_timeout` set on every connection at startup (so
    /// a statement stuck on a lock or a slow plan is cancelled by the server).
    pub fn connect_lazy_with(
        url: &str,
        settings: &PoolSettings,
    ) -> Result<Self, keygate_domain::Error> {
        let mut opts = PgConnectOptions::from_str(url).map_err(crate::error::StoreError::from)?;
        if let Some(t) = settings.statement_timeout {
            // Milliseconds; 0 would mean "no limit" to PostgreSQL, so at least 1.
            let ms = t.as_millis().max(1);
            opts = opts.options([("statement_timeout", ms.to_string())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(
                settings
                    .max_connections
                    .unwrap_or(crate::PoolSettings::DEFAULT_POSTGRES_CONNECTIONS)
                    .max(1),
            )
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(opts);
        Ok(Self { pool })
    }
}
