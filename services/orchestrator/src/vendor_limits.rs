//! Each access system's published request limit (its capability descriptor's `rate_limit`),
//! enforced before every provider call: a worker waits for a token rather than earn a 429.
//!
//! A claim takes its tokens up front ([`VendorLimits::reserve`]): a worker claims only as many
//! jobs of a system as it may call right now, so claimed jobs never sit waiting for tokens
//! while their leases run. The first call of a claimed job spends the token its claim took
//! (the job's task runs inside [`prepaid`]); a further call of the same job (a read-back)
//! waits for a fresh one. A job that ends without calling wastes its token: the limit is then
//! undershot, never exceeded.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use keygate_domain::ids::AccessSystemId;
use keygate_domain::model::AccessSystem;
use keygate_domain::rate::TokenBucket;

tokio::task_local! {
    /// Whether the running job still holds the token its claim took.
    static PREPAID: Cell<bool>;
}

/// Runs a claimed job's task holding the token its claim took.
pub fn prepaid<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    PREPAID.scope(Cell::new(true), fut)
}

#[derive(Default)]
pub struct VendorLimits {
    buckets: Mutex<HashMap<AccessSystemId, TokenBucket>>,
}

impl VendorLimits {
    fn with<R>(&self, system: &AccessSystem, f: impl FnOnce(&mut TokenBucket) -> R) -> Option<R> {
        let mut buckets = self.buckets.lock().ok()?;
        let limit = &system.capabilities.rate_limit;
        let bucket = buckets.entry(system.id).or_insert_with(|| {
            TokenBucket::new(limit.requests_per_second, limit.burst, Instant::now())
        });
        Some(f(bucket))
    }

    /// Takes up to `max` tokens of `system` now, for jobs about to be claimed; returns how many.
    pub fn reserve(&self, system: &AccessSystem, max: u32) -> u32 {
        self.with(system, |b| {
            let now = Instant::now();
            let mut got = 0;
            while got < max && b.take(now).is_ok() {
                got += 1;
            }
            got
        })
        // A poisoned lock: nothing is limited any more; claim one at a time.
        .unwrap_or(max.min(1))
    }

    /// Puts back tokens a claim reserved and did not use (fewer jobs were claimable).
    pub fn refund(&self, system: &AccessSystem, n: u32) {
        if n > 0 {
            self.with(system, |b| b.refund(n));
        }
    }

    /// Waits until `system` may be called once more; the first call of a claimed job spends the
    /// token its claim took.
    pub async fn acquire(&self, system: &AccessSystem) {
        if PREPAID.try_with(|p| p.replace(false)).unwrap_or(false) {
            return;
        }
        loop {
            match self.with(system, |b| b.take(Instant::now())) {
                Some(Ok(())) | None => return,
                Some(Err(wait)) => tokio::time::sleep(wait).await,
            }
        }
    }
}
