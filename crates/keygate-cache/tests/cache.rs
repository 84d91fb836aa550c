//! The same behaviour from both caches, against the real Redis on loopback
//! (`KEYGATE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).

use std::time::{Duration, Instant};

use keygate_cache::{Cache, CacheError, InProcessCache, RedisCache, key};

fn redis_url() -> String {
    std::env::var("KEYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique(kind: &str) -> String {
    key(
        kind,
        "test",
        &format!("{:?}-{}", Instant::now(), std::process::id()),
    )
}

async fn behaves_like_a_cache(cache: &dyn Cache) {
    let k = unique("roundtrip");
    assert_eq!(cache.get(&k).await.expect("get"), None);
    cache
        .set(&k, b"value", Duration::from_secs(30))
        .await
        .expect("set");
    assert_eq!(
        cache.get(&k).await.expect("get").as_deref(),
        Some(&b"value"[..])
    );
    cache.delete(&k).await.expect("delete");
    assert_eq!(cache.get(&k).await.expect("get"), None);

    let short = unique("ttl");
    cache
        .set(&short, b"x", Duration::from_millis(100))
        .await
        .expect("set");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(cache.get(&short).await.expect("get"), None, "entry expired");
}

#[tokio::test]
async fn in_process_cache() {
    behaves_like_a_cache(&InProcessCache::new(1000)).await;
}

#[tokio::test]
async fn redis_cache() {
    let cache = RedisCache::new(&redis_url()).expect("url");
    behaves_like_a_cache(&cache).await;
}

#[tokio::test]
async fn redis_down_fails_fast_instead_of_hanging() {
    // Nothing listens on port 1; every call must fail within a bounded time, never hang.
    let cache = RedisCache::new("redis://127.0.0.1:1").expect("url");
    let started = Instant::now();
    for _ in 0..5 {
        let r = cache.get("keygate:v1:x").await;
        assert!(matches!(
            r,
            Err(CacheError::Unavailable(_) | CacheError::Timeout(_))
        ));
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn keys_are_namespaced_and_scoped() {
    assert_eq!(key("api_key", "ws1", "k1"), "keygate:v1:api_key:ws1:k1");
}

#[tokio::test]
async fn rings_cross_processes_through_redis() {
    use keygate_cache::bus::Doorbell;
    let a = Doorbell::with_redis(&redis_url()).expect("a");
    let b = Doorbell::with_redis(&redis_url()).expect("b");
    let mut heard = b.subscribe();
    let ws = format!("ws-{}", std::process::id());
    // The subscriber connects in the background: ring until it hears.
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            a.ring(ws.clone(), 42);
            let wait = tokio::time::timeout(Duration::from_millis(200), async {
                loop {
                    match heard.recv().await {
                        Ok(r) if r.workspace_id == ws => return r,
                        Ok(_) => continue,
                        Err(_) => continue,
                    }
                }
            });
            if let Ok(r) = wait.await {
                return r;
            }
        }
    })
    .await
    .expect("b heard a's ring through Redis");
    assert_eq!(got.seq, 42);
}
