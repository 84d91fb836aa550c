//! Keygate's store of record: storage traits split by role, with PostgreSQL and SQLite
//! implementations (sqlx, runtime queries, no database needed to build). Every tenant-owned call
//! takes the workspace id first; a row of another workspace is indistinguishable from a missing one.

mod backend;
#[cfg(feature = "testing")]
pub mod conformance;
mod migrate;
mod postgres;
mod sql;
mod sql_grants;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testdb;
mod traits;
mod util;

pub use backend::{Backend, open};
pub use migrate::SCHEMA_VERSION;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use traits::{
    AccessSystemStore, ApiKeyStore, EventLog, GrantFilter, GrantStore, Idempotency,
    IdempotencyStore, Job, JobQueue, MethodFilter, NewGrant, ReconcileItem, SettingsStore, Store,
    UserIdentityStore, WorkspaceStore,
};
