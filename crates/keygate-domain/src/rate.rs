//! A token bucket: `rate` tokens a second, at most `burst` saved up. Used for each workspace's
//! request limit (gateway) and each access system's published vendor limit (orchestrator); and
//! [`Buckets`], one bucket per key in a bounded map, for limits keyed by caller input (the HTTP
//! port's per-link and per-client limits).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: rate_per_second.max(0.001),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.tokens = (self.tokens
            + now.saturating_duration_since(self.last).as_secs_f64() * self.rate)
            .min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// Whether a token is there at `now`, without taking it; how long until one is, if not.
    pub fn peek(&self, now: Instant) -> Result<(), Duration> {
        let tokens = (self.tokens
            + now.saturating_duration_since(self.last).as_secs_f64() * self.rate)
            .min(self.burst);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }

    /// Puts back `n` tokens taken but not used (never above the burst).
    pub fn refund(&mut self, n: u32) {
        self.tokens = (self.tokens + f64::from(n)).min(self.burst);
    }

    /// Whether the bucket is full at `now`: it then says nothing a new bucket would not.
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.rate
            >= self.burst
    }
}

/// One [`TokenBucket`] per key, all with the same rate and burst, in a map of at most
/// `max_keys` entries. The keys are caller input, so the map is bounded: when it is full, the
/// buckets that have refilled (and so carry no information) are dropped; if every bucket is
/// still draining, the whole map is dropped (limits restart rather than memory grow).
#[derive(Debug)]
pub struct Buckets<K> {
    rate: f64,
    burst: u32,
    max_keys: usize,
    map: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Eq + Hash> Buckets<K> {
    pub fn new(rate_per_second: f64, burst: u32, max_keys: usize) -> Self {
        Self {
            rate: rate_per_second,
            burst,
            max_keys: max_keys.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let Ok(mut map) = self.map.lock() else {
            return Ok(()); // A poisoned lock must not take a surface down; limits resume on restart.
        };
        if map.len() >= self.max_keys && !map.contains_key(&key) {
            map.retain(|_, b| !b.is_full(now));
            if map.len() >= self.max_keys {
                map.clear();
            }
        }
        map.entry(key)
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .take(now)
    }

    /// Whether `key`'s bucket has a token at `now`, without taking it (a key without a bucket
    /// has a full one); how long until it has, if not. For limits that count only some
    /// outcomes: peek before the work, take after the outcomes that count.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Ok(map) = self.map.lock() else {
            return Ok(());
        };
        map.get(key).map_or(Ok(()), |b| b.peek(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 2, t0);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).expect_err("empty");
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO);
        assert!(
            b.take(t0 + Duration::from_millis(500)).is_ok(),
            "one token after 0.5 s at 2/s"
        );
        let mut later = b.clone();
        assert!(later.take(t0 + Duration::from_secs(60)).is_ok());
        assert!(later.take(t0 + Duration::from_secs(60)).is_ok());
        assert!(
            later.take(t0 + Duration::from_secs(60)).is_err(),
            "never more than the burst"
        );
    }

    #[test]
    fn buckets_are_per_key_and_bounded() {
        let t0 = Instant::now();
        let b = Buckets::new(1.0, 1, 2);
        assert!(b.take("a", t0).is_ok());
        assert!(b.take("a", t0).is_err(), "a's bucket is empty");
        assert!(b.take("b", t0).is_ok(), "b has its own bucket");
        // The map is full: a third key drops the buckets that refilled, and only those.
        let t1 = t0 + Duration::from_millis(1500);
        assert!(b.take("a", t1).is_ok(), "a refilled");
        assert!(b.take("c", t1).is_ok());
        assert!(b.take("a", t1).is_err(), "a's empty bucket was kept");
        assert!(b.map.lock().expect("lock").len() <= 2);
    }

    #[test]
    fn peeking_takes_nothing() {
        let t0 = Instant::now();
        let b = Buckets::new(1.0, 2, 8);
        assert!(b.peek(&"a", t0).is_ok(), "no bucket yet: full");
        assert!(b.peek(&"a", t0).is_ok());
        assert!(b.take("a", t0).is_ok());
        assert!(b.peek(&"a", t0).is_ok(), "one token left");
        assert!(b.take("a", t0).is_ok());
        let wait = b.peek(&"a", t0).expect_err("empty");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(
            b.peek(&"a", t0 + Duration::from_secs(1)).is_ok(),
            "refilled"
        );
    }
}
