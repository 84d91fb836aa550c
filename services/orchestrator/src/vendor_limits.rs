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

/// The rate-limit scenario of the provider conformance suite (`keygate_providers::conformance`):
/// a provider's declared limit is obeyed here, by the orchestrator, so it is tested here.
#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use keygate_domain::ids::{AccessMethodId, WorkspaceId};
    use keygate_providers::conformance::{Metered, Site, assert_within_rate};
    use keygate_providers::sandbox::SANDBOX_SYSTEM_TYPES;
    use keygate_providers::virtual_system::VirtualSystems;
    use keygate_providers::{AccessSystemProvider, Connection};

    use super::*;

    /// Callers that claim like the worker does (reserve tokens, run each claimed job prepaid,
    /// read back once more through `acquire`) against every virtual type at once, as fast as
    /// the limiter lets them: what reaches each system stays within its declared rate + burst,
    /// and the limiter does not starve it either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_through_the_limiter_stay_within_each_declared_limit() {
        let provider = Arc::new(Metered::new(VirtualSystems::new(Duration::ZERO)));
        let limits = Arc::new(VendorLimits::default());
        let run_for = Duration::from_millis(1200);
        let deadline = Instant::now() + run_for;
        let mut sites = Vec::new();
        let mut callers = tokio::task::JoinSet::new();
        for t in SANDBOX_SYSTEM_TYPES {
            let discovered = provider
                .discover(t, &Connection::default())
                .await
                .expect("discover");
            let site = Site::from_discovery(discovered, WorkspaceId::new());
            for _ in 0..3 {
                let (provider, limits, system) =
                    (provider.clone(), limits.clone(), site.system.clone());
                callers.spawn(async move {
                    while Instant::now() < deadline {
                        let claimed = limits.reserve(&system, 2);
                        if claimed == 0 {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                        for _ in 0..claimed {
                            let (provider, limits, system) =
                                (provider.clone(), limits.clone(), system.clone());
                            prepaid(async move {
                                // The job's call, on its claim's token, then a read-back on a
                                // fresh one.
                                limits.acquire(&system).await;
                                let _ = provider.read_back(&system, AccessMethodId::new()).await;
                                if Instant::now() < deadline {
                                    limits.acquire(&system).await;
                                    let _ =
                                        provider.read_back(&system, AccessMethodId::new()).await;
                                }
                            })
                            .await;
                        }
                    }
                });
            }
            sites.push(site);
        }
        while let Some(r) = callers.join_next().await {
            r.expect("caller");
        }
        for site in &sites {
            let limit = &site.system.capabilities.rate_limit;
            let calls = provider.calls_to(site.system.id);
            assert_within_rate(&calls, limit);
            let allowed =
                f64::from(limit.burst) + limit.requests_per_second * run_for.as_secs_f64();
            assert!(
                calls.len() as f64 >= allowed / 2.0,
                "{}: only {} calls where {allowed:.0} were allowed",
                site.system.system_type,
                calls.len()
            );
        }
    }
}
