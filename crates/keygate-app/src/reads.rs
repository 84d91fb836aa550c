//! Read-through caching of access grants and methods, the hot polling path ("is it issued
//! yet?"), as a decorator over the store that owns its cache keys. The store is the record:
//! [`crate::tracker::Tracker`] evicts after each commit (through [`StatusReads::evict`], the
//! only other user of these keys), entries also expire after a short TTL, and any cache error
//! falls back to the store.

use std::sync::Arc;
use std::time::Duration;

use keygate_cache::Cache;
use keygate_domain::Error;
use keygate_domain::grant::{AccessGrant, AccessMethod};
use keygate_domain::ids::{AccessGrantId, AccessMethodId, WorkspaceId};
use keygate_store::GrantStore;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long a cached status may live. It bounds staleness in the one race eviction cannot
/// close: a read that started before a commit and writes its old value after the eviction.
pub const STATUS_TTL: Duration = Duration::from_secs(5);

/// Grants and methods by id, through the cache.
#[derive(Clone)]
pub struct StatusReads {
    store: Arc<dyn GrantStore>,
    cache: Arc<dyn Cache>,
}

fn method_key(ws: WorkspaceId, id: AccessMethodId) -> String {
    keygate_cache::key("access_method", &ws.to_string(), &id.to_string())
}

fn grant_key(ws: WorkspaceId, id: AccessGrantId) -> String {
    keygate_cache::key("access_grant", &ws.to_string(), &id.to_string())
}

impl StatusReads {
    pub fn new(store: Arc<dyn GrantStore>, cache: Arc<dyn Cache>) -> Self {
        Self { store, cache }
    }

    /// The cache behind the reads (API key look-ups share it).
    pub fn cache(&self) -> &Arc<dyn Cache> {
        &self.cache
    }

    pub async fn access_grant(
        &self,
        ws: WorkspaceId,
        id: AccessGrantId,
    ) -> Result<AccessGrant, Error> {
        read_through(
            &self.cache,
            &grant_key(ws, id),
            self.store.get_access_grant(ws, id),
        )
        .await
    }

    pub async fn access_method(
        &self,
        ws: WorkspaceId,
        id: AccessMethodId,
    ) -> Result<AccessMethod, Error> {
        read_through(
            &self.cache,
            &method_key(ws, id),
            self.store.get_access_method(ws, id),
        )
        .await
    }

    /// Drops the cached copies of these grants and methods (best effort: an entry that cannot
    /// be deleted expires on its own TTL).
    pub(crate) async fn evict(
        &self,
        ws: WorkspaceId,
        grants: &[AccessGrantId],
        methods: &[AccessMethodId],
    ) {
        let keys: Vec<String> = grants
            .iter()
            .map(|g| grant_key(ws, *g))
            .chain(methods.iter().map(|m| method_key(ws, *m)))
            .collect();
        keygate_cache::evict(&*self.cache, &keys).await;
    }
}

/// Returns the cached value under `key`, or loads it, caches it and returns it.
async fn read_through<T, F>(cache: &Arc<dyn Cache>, key: &str, load: F) -> Result<T, Error>
where
    T: Serialize + DeserializeOwned,
    F: Future<Output = Result<T, Error>>,
{
    use keygate_telemetry::metrics::{CacheResult, cache_lookup};
    match cache.get(key).await {
        Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(v) => {
                cache_lookup("status", CacheResult::Hit);
                return Ok(v);
            }
            Err(e) => {
                cache_lookup("status", CacheResult::Miss);
                tracing::warn!(error = %e, "undecodable cache entry; reloading")
            }
        },
        Ok(None) => cache_lookup("status", CacheResult::Miss),
        Err(e) => {
            cache_lookup("status", CacheResult::Error);
            tracing::debug!(error = %e, "cache unavailable; reading the store")
        }
    }
    let v = load.await?;
    match serde_json::to_vec(&v) {
        Ok(bytes) => {
            if let Err(e) = cache.set(key, &bytes, STATUS_TTL).await {
                tracing::debug!(error = %e, "cache write skipped");
            }
        }
        Err(e) => tracing::warn!(error = %e, "status not cacheable"),
    }
    Ok(v)
}
