//! Read-through caching of access grants and methods, the hot polling path ("is it issued
//! yet?"). The store is the record: the orchestrator evicts after each commit, entries also
//! expire after a short TTL, and any cache error falls back to the store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keygate_cache::Cache;
use keygate_domain::Error;
use keygate_domain::ids::WorkspaceId;
use prost::Message;

/// How long a cached status may live. It bounds staleness in the one race eviction cannot
/// close: a read that started before a commit and writes its old value after the eviction.
pub const STATUS_TTL: Duration = Duration::from_secs(5);

/// The cache key of an access method's wire form.
pub fn method_key(ws: WorkspaceId, id: &str) -> String {
    keygate_cache::keys::access_method(&ws.to_string(), id)
}

/// The cache key of an access grant's wire form.
pub fn grant_key(ws: WorkspaceId, id: &str) -> String {
    keygate_cache::keys::access_grant(&ws.to_string(), id)
}

/// Returns the cached message under `key`, or loads it, caches it and returns it.
pub async fn read_through<M, F>(cache: &Arc<dyn Cache>, key: &str, load: F) -> Result<M, Error>
where
    M: Message + Default,
    F: Future<Output = Result<M, Error>>,
{
    use keygate_telemetry::metrics::{CacheResult, cache_lookup};
    match cache.get(key).await {
        Ok(Some(bytes)) => match M::decode(bytes.as_slice()) {
            Ok(m) => {
                cache_lookup("status", CacheResult::Hit);
                return Ok(m);
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
    let m = load.await?;
    if let Err(e) = cache.set(key, &m.encode_to_vec(), STATUS_TTL).await {
        tracing::debug!(error = %e, "cache write skipped");
    }
    Ok(m)
}
