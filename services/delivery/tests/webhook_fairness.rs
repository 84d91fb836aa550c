//! One workspace's webhook backlog, sent to a slow receiver, does not delay another
//! workspace's deliveries: the dispatcher deals its slots to the workspaces in turns and caps
//! each workspace's deliveries in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keygate_app::tracker::Tracker;
use keygate_delivery::webhooks::{
    Dispatcher, DispatcherConfig, EventRenderer, NetworkPolicy, RetryPolicy,
};
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::events::Event;
use keygate_domain::ids::{WebhookId, WorkspaceId};
use keygate_domain::model::now;
use keygate_domain::webhook::NewWebhook;
use keygate_store::Store;
use keygate_store::conformance::{new_grant, quick_start_entrances, seeded_workspace};
use keygate_store::testdb::TestDb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Plain;

impl EventRenderer for Plain {
    fn render(&self, event: &Event, _: Option<WebhookId>) -> Result<String, String> {
        Ok(format!("{{\"id\":\"{}\"}}", event.id))
    }
}

/// An HTTP receiver that answers 200 after `delay`; counts the requests it answered.
async fn receiver(delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then as much body as Content-Length says.
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())
                                    .flatten()
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                tokio::time::sleep(delay).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (url, served)
}

async fn webhook(store: &dyn Store, ws: WorkspaceId, url: &str) -> WebhookId {
    let (w, _) = store
        .create_webhook(
            ws,
            &NewWebhook {
                id: WebhookId::new(),
                url: url.into(),
                event_types: Vec::new(),
                secret: "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=".into(),
                created_at: now(),
                workspace_cap: 0,
            },
            None,
        )
        .await
        .expect("webhook");
    w.id
}

/// Creates a grant in `ws`; returns how many events it appended.
async fn grant(store: &dyn Store, ws: WorkspaceId) -> usize {
    let doors = quick_start_entrances(store, ws).await;
    let g = new_grant(store, ws, &doors, &[AccessMethodMode::Card]).await;
    let (_, events) = store
        .create_access_grant(ws, &g, None)
        .await
        .expect("grant");
    events.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_backlog_does_not_delay_another_workspace() {
    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    let deep_ws = seeded_workspace(&*store, "Deep").await;
    let other_ws = seeded_workspace(&*store, "Other").await;
    let (slow_url, slow_served) = receiver(Duration::from_millis(300)).await;
    let (fast_url, fast_served) = receiver(Duration::ZERO).await;
    let deep_hook = webhook(&*store, deep_ws, &slow_url).await;
    webhook(&*store, other_ws, &fast_url).await;
    // The deep backlog is recorded first: a first-in-first-out dispatcher would send all of it
    // (at 4 in flight, 300 ms each: several seconds) before the other workspace's events.
    let mut deep = 0;
    for _ in 0..30 {
        deep += grant(&*store, deep_ws).await;
    }
    let theirs = grant(&*store, other_ws).await;
    assert!(deep >= 60 && theirs >= 1, "{deep} {theirs}");

    let tracker = Tracker::in_process(
        store.clone(),
        Arc::new(keygate_cache::InProcessCache::new(100)),
    );
    let dispatcher = Dispatcher::new(
        store.clone(),
        tracker,
        Arc::new(Plain),
        DispatcherConfig {
            retry: RetryPolicy::default(),
            network: NetworkPolicy {
                allow_loopback: true,
                ..NetworkPolicy::default()
            },
            concurrency: 4,
            per_workspace: 2,
            poll: Duration::from_millis(50),
            // Small batches: the deep log takes several fan-out passes, the other one does not
            // wait for them.
            fan_out_batch: 10,
            ..DispatcherConfig::default()
        },
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let run = tokio::spawn(dispatcher.run(stop_rx));
    while fast_served.load(Ordering::SeqCst) < theirs {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the other workspace's deliveries never went out"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waited = started.elapsed();
    let deep_done = slow_served.load(Ordering::SeqCst);
    println!(
        "other workspace's {theirs} deliveries done after {waited:?}; deep backlog: {deep_done} of {deep} sent"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "the other workspace waited {waited:?} behind the backlog"
    );
    assert!(
        deep_done < deep / 2,
        "the backlog was mostly sent first ({deep_done} of {deep})"
    );
    // The deep log is fanned out all the same, batch after batch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.webhooks_behind(100).await.expect("behind").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the deep log was never fanned out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = store
        .list_webhook_deliveries(deep_ws, deep_hook, 1000)
        .await
        .expect("deliveries");
    assert_eq!(
        rows.len(),
        deep,
        "one delivery row per event of the deep log"
    );
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
}
