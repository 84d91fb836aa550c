//! The cache in front of the store of record: Redis when `KEYGATE_REDIS_URL` is set (shared by
//! every replica), an in-process cache otherwise. The cache is never the record: every caller
//! treats an error as a miss and goes to the store, so a Redis outage costs latency, not data.
//! [`SealedCache`] wraps a cache so that what it holds is encrypted and authenticated with a key
//! the cache server never sees (the binary wraps Redis with it).

pub mod bus;
mod memory;
pub mod rate;
mod redis_cache;
mod sealed;

use std::time::Duration;

use async_trait::async_trait;

pub use memory::InProcessCache;
pub use rate::SharedRate;
pub use redis_cache::RedisCache;
pub use sealed::{MIN_KEY_LEN, SealKeyError, SealKeys, SealedCache, Unsealable};

/// Why a cache call failed. Callers log it and fall back to the store.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache timed out after {0:?}")]
    Timeout(Duration),
    #[error("cache unavailable: {0}")]
    Unavailable(String),
}

/// A byte cache with per-entry time to live.
#[async_trait]
pub trait Cache: Send + Sync {
    /// `redis` or `in_process`.
    fn name(&self) -> &'static str;

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;

    /// Stores `value` for about `ttl` (jittered by up to 10% so entries written together do
    /// not all expire together).
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError>;

    async fn delete(&self, key: &str) -> Result<(), CacheError>;
}

/// Drops cached copies after a write to the store (best effort: an entry that cannot be deleted
/// expires on its own TTL).
pub async fn evict(cache: &dyn Cache, keys: &[String]) {
    for k in keys {
        if let Err(e) = cache.delete(k).await {
            tracing::debug!(error = %e, "cache eviction skipped; the entry expires on its own");
        }
    }
}

/// Every key Keygate writes starts with this, so a shared Redis can be inspected and flushed
/// by prefix.
pub const KEY_PREFIX: &str = "keygate:v1:";

/// A cache key for a resource: `keygate:v1:<kind>:<scope>:<id>`. `scope` is the workspace id
/// for tenant data, so no key of one workspace can ever name another's data.
pub fn key(kind: &str, scope: &str, id: &str) -> String {
    format!("{KEY_PREFIX}{kind}:{scope}:{id}")
}

pub(crate) fn jittered(ttl: Duration) -> Duration {
    use rand::RngExt as _;
    let jitter = rand::rng().random_range(0.9..=1.0);
    ttl.mul_f64(jitter).max(Duration::from_millis(1))
}
