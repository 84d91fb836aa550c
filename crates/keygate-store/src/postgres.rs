//! PostgreSQL store of record.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use crate::sql::impl_store;

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
            .map_err(crate::util::db_err)?;
        Ok(Self { pool })
    }
}

impl_store!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    begin = "BEGIN",
    name = "postgres",
    migrator = crate::migrate::postgres
);

crate::sql_grants::impl_grant_store!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    begin = "BEGIN",
    read = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    lock = " FOR UPDATE",
    // A job waits while another job of the same credential (subject, system) holds a live lease,
    // so an update never races the call it replaces.
    claim = "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 WHERE job_id IN (SELECT job_id FROM jobs j WHERE ((j.state = 'queued' AND j.run_at <= $3) OR (j.state = 'running' AND j.lease_until < $3)) AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.subject_id = j.subject_id AND r.acs_system_id = j.acs_system_id AND r.state = 'running' AND r.lease_until >= $3 AND r.job_id <> j.job_id) ORDER BY j.run_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING job_id, workspace_id, payload, attempts, trace_context"
);
