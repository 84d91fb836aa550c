//! Request rate limits shared by every replica: one GCRA bucket per key, kept in Redis and
//! updated by one Lua script, so N replicas together allow what one would. The clock is Redis's
//! (`TIME`), so replicas whose clocks disagree still share one bucket.

use std::time::Duration;

use async_trait::async_trait;

use crate::{CacheError, RedisCache};

/// A rate limit shared by replicas.
#[async_trait]
pub trait SharedRate: Send + Sync {
    /// Takes one request from `key`'s bucket (`per_second` sustained, `burst` at once):
    /// `Ok(None)` when allowed, `Ok(Some(wait))` when refused (retry after `wait`), `Err` when
    /// the shared state cannot be reached (the caller falls back to its own buckets).
    async fn take(
        &self,
        key: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Option<Duration>, CacheError>;
}

/// GCRA: the bucket is one "theoretical arrival time" (TAT) in microseconds. A request is
/// allowed when TAT − burst × interval ≤ now, and moves TAT one interval on. Answers 0 when
/// allowed, else the microseconds to wait. The key expires once the bucket is full again.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return allow_at - now
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
"#;

#[async_trait]
impl SharedRate for RedisCache {
    async fn take(
        &self,
        key: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Option<Duration>, CacheError> {
        if !per_second.is_finite() || per_second <= 0.0 {
            return Ok(None);
        }
        // Microseconds between requests at the sustained rate, at least one.
        let interval = ((1_000_000.0 / per_second).round() as i64).max(1);
        let wait_us: i64 = self
            .run(async |mut c| {
                redis::cmd("EVAL")
                    .arg(GCRA)
                    .arg(1)
                    .arg(key)
                    .arg(interval)
                    .arg(burst.max(1))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok((wait_us > 0).then(|| Duration::from_micros(wait_us.unsigned_abs())))
    }
}
