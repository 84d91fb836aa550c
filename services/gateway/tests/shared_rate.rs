//! Per-workspace rate limits shared by replicas through a real Redis on loopback: two limiters
//! (two replicas) together allow what one would; with Redis unreachable each falls back to its
//! own buckets, limited, never unlimited.

use std::sync::Arc;
use std::time::Duration;

use keygate_cache::RedisCache;
use keygate_domain::ids::WorkspaceId;
use keygate_gateway::stack::RateLimiter;

fn redis_url() -> String {
    std::env::var("KEYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn two_replicas_share_one_bucket_per_workspace() {
    let redis = Arc::new(RedisCache::new(&redis_url()).expect("redis url"));
    // 1 request/s sustained, bursts of 4: over the next ~second both replicas together may
    // admit the burst and at most one more.
    let a = RateLimiter::new(1.0, 4).shared(redis.clone());
    let b = RateLimiter::new(1.0, 4).shared(redis.clone());
    let ws = WorkspaceId::new();
    let mut allowed = 0;
    let mut refused = Vec::new();
    for i in 0..20 {
        let replica = if i % 2 == 0 { &a } else { &b };
        match replica.check(ws).await {
            Ok(()) => allowed += 1,
            Err(wait) => refused.push(wait),
        }
    }
    assert!(
        (4..=5).contains(&allowed),
        "{allowed} allowed across two replicas"
    );
    assert!(
        refused
            .iter()
            .all(|w| *w > Duration::ZERO && *w <= Duration::from_secs(1)),
        "{refused:?}"
    );
    // Alone, one replica would have admitted 4 of its own 10: the limit did not multiply.
    let other = WorkspaceId::new();
    assert!(
        a.check(other).await.is_ok(),
        "another workspace has its own bucket"
    );
    // The bucket refills at the sustained rate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(b.check(ws).await.is_ok(), "refilled after a second");
}

#[tokio::test]
async fn an_unreachable_redis_falls_back_to_each_replicas_own_limit() {
    let down = Arc::new(RedisCache::new("redis://127.0.0.1:1").expect("redis url"));
    let a = RateLimiter::new(1.0, 3).shared(down);
    let ws = WorkspaceId::new();
    let mut allowed = 0;
    for _ in 0..10 {
        if a.check(ws).await.is_ok() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3, "the local bucket limits while Redis is down");
}
