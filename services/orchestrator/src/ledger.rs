//! The sandbox virtual systems' ledger, kept in the store of record's database so their
//! "vendor-side" credentials survive restarts and are shared by every orchestrator replica. The
//! ledger's SQL belongs to keygate-providers; the store only hands over its pool.

use keygate_providers::SqlLedger;
use keygate_store::{Store, StorePool};

/// The virtual systems' ledger on the pool of `store`.
pub fn store_ledger(store: &dyn Store) -> SqlLedger {
    match store.pool() {
        StorePool::Postgres(pool) => SqlLedger::postgres(pool),
        StorePool::Sqlite(pool) => SqlLedger::sqlite(pool),
    }
}
