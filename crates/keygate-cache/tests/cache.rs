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

/// A TCP proxy on loopback in front of `upstream` that forwards, and while `hang` is set forwards
/// nothing (Redis stopped answering mid-run, its connections still open), then resumes.
async fn proxy(upstream: String, hang: std::sync::Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let hang = hang.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let mut a = [0u8; 16 * 1024];
                let mut b = [0u8; 16 * 1024];
                loop {
                    if hang.load(Ordering::SeqCst) {
                        // Paused: nothing is read, so nothing is lost; it flows again after.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    tokio::select! {
                        n = client.read(&mut a) => match n {
                            Ok(0) | Err(_) => return,
                            Ok(n) => if server.write_all(&a[..n]).await.is_err() { return },
                        },
                        n = server.read(&mut b) => match n {
                            Ok(0) | Err(_) => return,
                            Ok(n) => if client.write_all(&b[..n]).await.is_err() { return },
                        },
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
            });
        }
    });
    format!("redis://{addr}")
}

/// Redis that stops answering costs one timeout per pause, not one per call; when it answers
/// again, the cache uses it again.
#[tokio::test]
async fn an_unanswering_redis_is_skipped_for_a_pause_then_tried_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let url = redis_url();
    let upstream = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    let hang = std::sync::Arc::new(AtomicBool::new(false));
    let cache = RedisCache::new(&proxy(upstream, hang.clone()).await).expect("url");
    let k = unique("outage");
    cache
        .set(&k, b"v", Duration::from_secs(30))
        .await
        .expect("set through the proxy");

    hang.store(true, Ordering::SeqCst);
    let first = Instant::now();
    assert!(cache.get(&k).await.is_err(), "no answer: an error");
    let first = first.elapsed();
    assert!(
        first >= Duration::from_millis(200),
        "the first call waits its timeout: {first:?}"
    );
    // The next 200 calls within the pause fail at once.
    let started = Instant::now();
    for _ in 0..200 {
        assert!(cache.get(&k).await.is_err());
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "200 calls while Redis is marked down took {:?}",
        started.elapsed()
    );

    hang.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(v)) = cache.get(&k).await {
            assert_eq!(v, b"v");
            break;
        }
        assert!(Instant::now() < deadline, "the cache came back within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
