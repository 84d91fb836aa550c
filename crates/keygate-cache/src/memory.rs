//! In-process cache for the embedded default (one process, so no cross-replica invalidation).

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{Cache, CacheError, jittered};

/// A bounded in-process cache (moka, TinyLFU eviction).
#[derive(Clone)]
pub struct InProcessCache {
    inner: moka::future::Cache<String, (Vec<u8>, Instant)>,
}

impl InProcessCache {
    /// A cache holding at most `max_entries` entries.
    pub fn new(max_entries: u64) -> Self {
        Self {
            inner: moka::future::Cache::builder()
                .max_capacity(max_entries)
                // An upper bound; each entry also carries its own deadline.
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }
}

#[async_trait]
impl Cache for InProcessCache {
    fn name(&self) -> &'static str {
        "in_process"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match self.inner.get(key).await {
            Some((value, deadline)) if Instant::now() < deadline => Ok(Some(value)),
            Some(_) => {
                self.inner.invalidate(key).await;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let deadline = Instant::now() + jittered(ttl);
        self.inner
            .insert(key.to_owned(), (value.to_vec(), deadline))
            .await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.inner.invalidate(key).await;
        Ok(())
    }
}
