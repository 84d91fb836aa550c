//! Limits on callers that every API surface applies the same way: the per-workspace request
//! rate (one token bucket per workspace, shared by replicas through Redis) and the budget of
//! failed authentications per client address. gRPC runs them in its stack
//! (`services/gateway/src/stack.rs`), the Seam-compatible HTTP API in its handlers
//! (`services/seam-api`); both hold the same kind of limiter built from the same settings.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate_cache::SharedRate;
use keygate_domain::ids::WorkspaceId;
use keygate_domain::rate::{Buckets, TokenBucket};

/// The client address of an HTTP request, as the HTTP port resolved it (the peer, or what a
/// trusted proxy says in `X-Forwarded-For`); attached to the request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Most client addresses whose failed authentications are remembered at once.
const AUTH_FAILURE_CLIENTS: usize = 100_000;

/// Failed authentications per client address: `per_minute` may fail in a minute (a token
/// bucket of that burst, refilling at that rate); a client with none left is refused until one
/// is back. Successful authentications take nothing.
pub struct AuthFailureLimiter {
    buckets: Option<Buckets<IpAddr>>,
}

impl AuthFailureLimiter {
    /// `per_minute` 0 turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            buckets: (per_minute > 0).then(|| {
                Buckets::new(
                    f64::from(per_minute) / 60.0,
                    per_minute,
                    AUTH_FAILURE_CLIENTS,
                )
            }),
        }
    }

    /// `Ok` when `client` may try to authenticate; otherwise how long until it may.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        match &self.buckets {
            Some(b) => b.peek(&client_key(client), Instant::now()),
            None => Ok(()),
        }
    }

    /// Counts one failed authentication of `client`.
    pub fn failed(&self, client: IpAddr) {
        if let Some(b) = &self.buckets {
            // An empty bucket stays empty; the refusal comes with the next call's check.
            let _ = b.take(client_key(client), Instant::now());
        }
    }
}

/// The key a client's failures are counted under: its IPv4 address, or the /64 of its IPv6
/// address (one host commonly holds a whole /64, so single addresses would be free to rotate).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// Per-workspace request rate limits: one bucket per workspace, shared by every replica through
/// Redis when it is configured (so the limit does not multiply with the replica count), and this
/// process's own buckets otherwise, or while Redis cannot be reached (failing open to the local
/// limit, never to no limit).
pub struct RateLimiter {
    per_second: f64,
    burst: u32,
    buckets: Mutex<HashMap<WorkspaceId, TokenBucket>>,
    shared: Option<Arc<dyn SharedRate>>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst,
            buckets: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// Limits shared through `shared` (Redis), with this process's buckets as the fallback.
    pub fn shared(mut self, shared: Arc<dyn SharedRate>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Takes one token, or says how long until one is available.
    pub async fn check(&self, ws: WorkspaceId) -> Result<(), Duration> {
        if let Some(shared) = &self.shared {
            let key = format!("keygate:v1:rate:ws:{ws}");
            match shared.take(&key, self.per_second, self.burst).await {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => return Err(wait),
                Err(e) => {
                    keygate_telemetry::metrics::rate_limit_fallback();
                    tracing::debug!(error = %e, "shared rate limit unreachable; this replica's own limit applies");
                }
            }
        }
        self.check_local(ws)
    }

    fn check_local(&self, ws: WorkspaceId) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(()); // A poisoned lock must not take the API down; limits resume on restart.
        };
        buckets
            .entry(ws)
            .or_insert_with(|| TokenBucket::new(self.per_second, self.burst, now))
            .take(now)
    }
}

/// The limiters of one process, built once and shared by every API surface, so a workspace has
/// one request budget and a client one failed-authentication budget whichever surface it calls.
#[derive(Clone)]
pub struct Limiters {
    pub rate: Arc<RateLimiter>,
    pub auth_failures: Arc<AuthFailureLimiter>,
}

impl Limiters {
    /// `per_second` and `burst` per workspace (shared through `shared`, Redis, when given);
    /// `auth_failures_per_minute` per client address (0 turns that limit off).
    pub fn new(
        per_second: f64,
        burst: u32,
        auth_failures_per_minute: u32,
        shared: Option<Arc<dyn SharedRate>>,
    ) -> Self {
        let rate = RateLimiter::new(per_second, burst);
        Self {
            rate: Arc::new(match shared {
                Some(s) => rate.shared(s),
                None => rate,
            }),
            auth_failures: Arc::new(AuthFailureLimiter::new(auth_failures_per_minute)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_client_and_ipv6_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b), "one /64");
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            client_key(mapped),
            "192.0.2.7".parse::<IpAddr>().expect("ip")
        );

        let limiter = AuthFailureLimiter::new(3);
        let v4: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..3 {
            assert!(limiter.check(v4).is_ok());
            limiter.failed(v4);
        }
        let wait = limiter
            .check(v4)
            .expect_err("three failures spent the budget");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20));
        assert!(limiter.check(a).is_ok(), "another client is not affected");
        let off = AuthFailureLimiter::new(0);
        for _ in 0..100 {
            off.failed(v4);
        }
        assert!(off.check(v4).is_ok(), "0 turns the limit off");
    }

    #[tokio::test]
    async fn token_bucket() {
        let rl = RateLimiter::new(1.0, 2);
        let ws = WorkspaceId::new();
        assert!(rl.check(ws).await.is_ok());
        assert!(rl.check(ws).await.is_ok());
        let wait = rl.check(ws).await.expect_err("bucket empty");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(
            rl.check(WorkspaceId::new()).await.is_ok(),
            "other workspaces have their own bucket"
        );
    }
}
