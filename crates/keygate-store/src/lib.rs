//! Keygate's store of record: storage traits split by role, with PostgreSQL and SQLite
//! implementations (sqlx, runtime queries, no database needed to build). Every tenant-owned call
//! takes the workspace id first; a row of another workspace is indistinguishable from a missing one.

mod access_systems;
mod acs_users;
mod backend;
mod common;
#[cfg(feature = "testing")]
pub mod conformance;
mod connections;
mod deliveries;
mod dialect;
mod error;
mod events;
mod grant_rows;
mod grants;
mod instant_keys;
mod jobs;
mod migrate;
mod postgres;
mod sql;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testdb;
mod traits;
mod user_identities;
mod util;
mod vendor_events;
mod webhooks;

pub use backend::{Backend, PoolSettings, StorePool, open, open_with};
pub use dialect::{Dialect, SqlStore, SqlValue};
pub use migrate::SCHEMA_VERSION;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use traits::AcsUserStore;
pub use traits::DeliveryStore;
pub use traits::{
    AccessSystemStore, ApiKeyStore, Claim, Claimed, DueSystem, EventLog, GrantFilter, GrantStore,
    Idempotency, IdempotencyStore, InstantKeyStore, Job, JobQueue, MethodFilter, NewGrant,
    QueueAge, ReconcileItem, SettingsStore, Store, UserIdentityStore, WorkspaceStore,
};
pub use traits::{WebhookCursor, WebhookDeliveryRecord, WebhookStore};
pub use vendor_events::{RecordedVendorEvent, VendorEventRecord, VendorEventStore};
