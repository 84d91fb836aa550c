//! The webhook store on SQLite and on the real PostgreSQL: tenancy, idempotent creates, fan-out
//! that neither loses nor doubles a delivery row, leased attempts, and disabling.

use std::sync::Arc;
use std::time::Duration;

use keygate_domain::capability::AccessMethodMode;
use keygate_domain::events::{EventFilter, WEBHOOK_DISABLED};
use keygate_domain::ids::WebhookId;
use keygate_domain::model::now;
use keygate_domain::page::PageRequest;
use keygate_domain::webhook::{AttemptOutcome, NewWebhook};
use keygate_domain::{Error, ErrorReason, Resource};
use keygate_store::conformance::{new_grant, quick_start_entrances, seeded_workspace};
use keygate_store::{Idempotency, Store, WebhookCursor};

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = keygate_store::testdb::TestDb::sqlite().await;
                    super::$name(db.store.clone()).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let db = keygate_store::testdb::TestDb::postgres().await;
                    super::$name(db.store.clone()).await;
                }
            }
        )*
    };
}

on_both!(
    webhooks_are_tenant_scoped_and_idempotent,
    fan_out_neither_loses_nor_doubles,
    attempts_are_leased_recorded_and_disable,
    due_deliveries_are_told_and_claimed_per_workspace,
    the_webhook_cap_counts_the_workspace_s_webhooks,
    updated_event_types_choose_what_is_fanned_out,
);

fn hook(url: &str, types: &[&str]) -> NewWebhook {
    NewWebhook {
        id: WebhookId::new(),
        url: url.into(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        secret: "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=".into(),
        created_at: now(),
        workspace_cap: 0,
    }
}

fn idem(id: &str, body: u8) -> Idempotency {
    Idempotency {
        request_id: id.into(),
        operation: "CreateWebhook",
        request_sha256: vec![body; 32],
    }
}

fn page() -> PageRequest {
    PageRequest {
        after: None,
        limit: 50,
    }
}

async fn grant(store: &dyn Store, ws: keygate_domain::ids::WorkspaceId) -> usize {
    let doors = quick_start_entrances(store, ws).await;
    let g = new_grant(store, ws, &doors, &[AccessMethodMode::Card]).await;
    let (_, events) = store
        .create_access_grant(ws, &g, None)
        .await
        .expect("grant");
    events.len()
}

/// Runs one fan-out pass for every webhook behind, as the dispatcher does.
async fn fan_out(store: &dyn Store) -> usize {
    let mut rows = 0;
    for c in store.webhooks_behind(100).await.expect("behind") {
        let events = store
            .list_events(c.workspace_id, &EventFilter::default(), c.cursor_seq, 500)
            .await
            .expect("events");
        let Some(last) = events.last() else { continue };
        let mine: Vec<_> = events
            .iter()
            .filter(|e| keygate_domain::webhook::wants(&c.event_types, &e.event_type))
            .map(|e| (e.seq, e.id))
            .collect();
        if store
            .fan_out_webhook(&c, last.seq, &mine, now())
            .await
            .expect("fan out")
        {
            rows += mine.len();
        }
    }
    rows
}

pub async fn webhooks_are_tenant_scoped_and_idempotent(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "A").await;
    let b = seeded_workspace(&*store, "B").await;
    let (w, secret) = store
        .create_webhook(a, &hook("https://example.com/a", &[]), Some(&idem("r1", 1)))
        .await
        .expect("create");
    assert!(w.is_enabled && w.disabled_reason.is_none() && w.consecutive_failures == 0);
    // The same request again: the first webhook and its secret, not a second one.
    let (again, secret_again) = store
        .create_webhook(a, &hook("https://example.com/a", &[]), Some(&idem("r1", 1)))
        .await
        .expect("replay");
    assert_eq!((again.id, secret_again), (w.id, secret.clone()));
    match store
        .create_webhook(
            a,
            &hook("https://example.com/other", &[]),
            Some(&idem("r1", 2)),
        )
        .await
    {
        Err(e) => assert_eq!(e.reason(), ErrorReason::IdempotencyKeyReused),
        Ok(v) => panic!("reused key accepted: {v:?}"),
    }
    // The same request id in another workspace is another request.
    let (in_b, _) = store
        .create_webhook(
            b,
            &hook("https://example.com/b", &["access_grant.created"]),
            Some(&idem("r1", 1)),
        )
        .await
        .expect("create in b");
    assert_ne!(in_b.id, w.id);

    assert_eq!(store.get_webhook(a, w.id).await.expect("get"), w);
    assert_eq!(store.webhook_secret(a, w.id).await.expect("secret"), secret);
    for r in [
        store.get_webhook(b, w.id).await.map(|_| ()),
        store.webhook_secret(b, w.id).await.map(|_| ()),
        store.delete_webhook(b, w.id).await,
    ] {
        assert!(
            matches!(
                r,
                Err(Error::NotFound {
                    resource: Resource::Webhook,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let listed = store.list_webhooks(a, &page()).await.expect("list").items;
    assert_eq!(listed.iter().map(|w| w.id).collect::<Vec<_>>(), vec![w.id]);

    store.delete_webhook(a, w.id).await.expect("delete");
    assert!(matches!(
        store.get_webhook(a, w.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        store
            .list_webhooks(a, &page())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert_eq!(
        store
            .list_webhooks(b, &page())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
}

pub async fn fan_out_neither_loses_nor_doubles(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "Fan").await;
    // Events before the webhook existed are not sent to it.
    grant(&*store, ws).await;
    let (all, _) = store
        .create_webhook(ws, &hook("https://example.com/all", &[]), None)
        .await
        .expect("create");
    let (some, _) = store
        .create_webhook(
            ws,
            &hook("https://example.com/some", &["access_grant.created"]),
            None,
        )
        .await
        .expect("create");
    assert_eq!(fan_out(&*store).await, 0);
    let n = grant(&*store, ws).await;
    assert!(n >= 2, "{n}");

    // Two dispatchers read the same cursor; only one of them writes.
    let behind = store.webhooks_behind(100).await.expect("behind");
    let c: WebhookCursor = behind
        .iter()
        .find(|c| c.webhook_id == all.id)
        .cloned()
        .expect("behind");
    let events = store
        .list_events(ws, &EventFilter::default(), c.cursor_seq, 500)
        .await
        .expect("events");
    let rows: Vec<_> = events.iter().map(|e| (e.seq, e.id)).collect();
    let to = events.last().expect("events").seq;
    let (s1, s2) = (store.clone(), store.clone());
    let (c1, c2, r1, r2) = (c.clone(), c.clone(), rows.clone(), rows.clone());
    let t = now();
    let (x, y) = tokio::join!(
        async move { s1.fan_out_webhook(&c1, to, &r1, t).await },
        async move { s2.fan_out_webhook(&c2, to, &r2, t).await },
    );
    assert_eq!(
        [x.expect("first"), y.expect("second")]
            .iter()
            .filter(|w| **w)
            .count(),
        1,
        "exactly one fan-out wins"
    );
    // A stale cursor (a dispatcher that crashed after reading) writes nothing.
    assert!(
        !store
            .fan_out_webhook(&c, to, &rows, now())
            .await
            .expect("stale")
    );
    assert_eq!(
        fan_out(&*store).await,
        1,
        "the filtered webhook gets its one event"
    );
    assert_eq!(fan_out(&*store).await, 0, "nothing left behind");

    let all_rows = store
        .list_webhook_deliveries(ws, all.id, 100)
        .await
        .expect("rows");
    assert_eq!(all_rows.len(), n);
    assert!(
        all_rows
            .iter()
            .all(|r| r.status == "pending" && r.attempts == 0)
    );
    let mut ids: Vec<_> = all_rows.iter().map(|r| r.event_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), n, "one row per event");
    let some_rows = store
        .list_webhook_deliveries(ws, some.id, 100)
        .await
        .expect("rows");
    assert_eq!(some_rows.len(), 1);
}

fn failed(retry_in: Option<Duration>, disable_after: time::Duration) -> AttemptOutcome {
    AttemptOutcome {
        succeeded: false,
        status_code: Some(503),
        error: Some("HTTP 503".into()),
        retry_at: retry_in.map(|d| now() + d),
        disable_after,
        disabled_reason: "no successful delivery for 5 days; last error: HTTP 503".into(),
    }
}

pub async fn attempts_are_leased_recorded_and_disable(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "Attempts").await;
    let (w, secret) = store
        .create_webhook(ws, &hook("https://example.com/hook", &[]), None)
        .await
        .expect("create");
    let n = grant(&*store, ws).await;
    fan_out(&*store).await;
    assert!(store.next_delivery_due().await.expect("due").is_some());

    let lease = Duration::from_secs(60);
    let claimed = store
        .claim_deliveries(100, lease, now())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), n);
    assert!(
        claimed
            .iter()
            .all(|d| d.attempts == 1 && d.secret == secret && d.url == w.url)
    );
    assert!(claimed.iter().all(|d| d.event.id == d.event_id));
    assert!(
        store
            .claim_deliveries(100, lease, now())
            .await
            .expect("claim")
            .is_empty(),
        "leased rows are not claimed twice"
    );
    let long = time::Duration::days(5);

    // A success resets the webhook's failure count.
    let ok = AttemptOutcome {
        succeeded: true,
        status_code: Some(200),
        error: None,
        retry_at: None,
        disable_after: long,
        disabled_reason: String::new(),
    };
    assert_eq!(
        store
            .record_delivery_attempt(&claimed[0], &ok, now())
            .await
            .expect("record"),
        Some(vec![])
    );
    // A stale lease writes nothing.
    let mut stale = claimed[1].clone();
    stale.lease_token = "not-the-lease".into();
    assert_eq!(
        store
            .record_delivery_attempt(&stale, &ok, now())
            .await
            .expect("stale"),
        None
    );
    // A failure with a retry: pending again, due at retry_at, claimed again with attempts 2.
    store
        .record_delivery_attempt(&claimed[1], &failed(Some(Duration::ZERO), long), now())
        .await
        .expect("record failure");
    let hook_now = store.get_webhook(ws, w.id).await.expect("get");
    assert_eq!(hook_now.consecutive_failures, 1);
    assert!(hook_now.is_enabled && hook_now.last_delivery_at.is_some());
    let rows = store
        .list_webhook_deliveries(ws, w.id, 100)
        .await
        .expect("rows");
    let first = rows
        .iter()
        .find(|r| r.event_id == claimed[0].event_id)
        .expect("row");
    assert_eq!(
        (first.status.as_str(), first.last_status_code),
        ("succeeded", Some(200))
    );
    let second = rows
        .iter()
        .find(|r| r.event_id == claimed[1].event_id)
        .expect("row");
    assert_eq!(second.status, "pending");
    assert_eq!(second.last_error.as_deref(), Some("HTTP 503"));
    let again = store
        .claim_deliveries(100, lease, now() + Duration::from_millis(5))
        .await
        .expect("claim again");
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].event_id, again[0].attempts),
        (claimed[1].event_id, 2)
    );

    // The schedule exhausted: failed for good, still enabled (not failing long enough).
    store
        .record_delivery_attempt(&again[0], &failed(None, long), now())
        .await
        .expect("record");
    let rows = store
        .list_webhook_deliveries(ws, w.id, 100)
        .await
        .expect("rows");
    assert_eq!(
        rows.iter()
            .find(|r| r.event_id == again[0].event_id)
            .map(|r| r.status.as_str()),
        Some("failed")
    );
    assert!(store.get_webhook(ws, w.id).await.expect("get").is_enabled);

    // Failing for longer than the disable period: disabled with an event, the rest dropped.
    let disabled = store
        .record_delivery_attempt(
            &claimed[2],
            &failed(Some(Duration::ZERO), time::Duration::ZERO),
            now(),
        )
        .await
        .expect("record")
        .expect("lease held");
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].event_type, WEBHOOK_DISABLED.name);
    let w2 = store.get_webhook(ws, w.id).await.expect("get");
    assert!(!w2.is_enabled);
    assert_eq!(
        w2.disabled_reason.as_deref(),
        Some("no successful delivery for 5 days; last error: HTTP 503")
    );
    assert_eq!(w2.consecutive_failures, 3);
    let rows = store
        .list_webhook_deliveries(ws, w.id, 100)
        .await
        .expect("rows");
    assert!(rows.iter().all(|r| r.status != "pending"), "{rows:?}");
    assert!(
        store
            .claim_deliveries(100, lease, now() + Duration::from_secs(120))
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        store
            .webhooks_behind(100)
            .await
            .expect("behind")
            .iter()
            .all(|c| c.webhook_id != w.id)
    );
    let log = store
        .list_events(
            ws,
            &EventFilter {
                event_types: vec![WEBHOOK_DISABLED.name.into()],
                ..EventFilter::default()
            },
            0,
            10,
        )
        .await
        .expect("events");
    assert_eq!(
        log.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![disabled[0].id]
    );

    // Delete drops what was not sent.
    store.delete_webhook(ws, w.id).await.expect("delete");
    assert!(
        store
            .list_webhook_deliveries(ws, w.id, 100)
            .await
            .expect("rows")
            .is_empty()
    );
}

pub async fn due_deliveries_are_told_and_claimed_per_workspace(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "Deep").await;
    let b = seeded_workspace(&*store, "Shallow").await;
    store
        .create_webhook(a, &hook("https://example.com/a", &[]), None)
        .await
        .expect("create");
    store
        .create_webhook(b, &hook("https://example.com/b", &[]), None)
        .await
        .expect("create");
    let mut deep = 0;
    for _ in 0..3 {
        deep += grant(&*store, a).await;
    }
    let shallow = grant(&*store, b).await;
    fan_out(&*store).await;
    let mut due = store
        .due_delivery_workspaces(now(), 10)
        .await
        .expect("due workspaces");
    due.sort_by_key(|(ws, _)| *ws != a);
    assert_eq!(
        due,
        vec![(a, deep as u32), (b, shallow as u32)],
        "each workspace with its count"
    );
    let claimed = store
        .claim_workspace_deliveries(b, 100, Duration::from_secs(60), now())
        .await
        .expect("claim b");
    assert_eq!(claimed.len(), shallow);
    assert!(claimed.iter().all(|d| d.workspace_id == b), "only b's");
    let due = store
        .due_delivery_workspaces(now(), 10)
        .await
        .expect("due workspaces");
    assert_eq!(due, vec![(a, deep as u32)], "leased ones are not due");
    let claimed = store
        .claim_workspace_deliveries(a, 2, Duration::from_secs(60), now())
        .await
        .expect("claim a");
    assert_eq!(claimed.len(), 2, "at most the limit");
    assert!(claimed.iter().all(|d| d.workspace_id == a));
}

pub async fn the_webhook_cap_counts_the_workspace_s_webhooks(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "Capped").await;
    let other = seeded_workspace(&*store, "Other").await;
    let capped = |url: &str| NewWebhook {
        workspace_cap: 2,
        ..hook(url, &[])
    };
    store
        .create_webhook(other, &capped("https://example.com/o"), None)
        .await
        .expect("other");
    store
        .create_webhook(ws, &capped("https://example.com/1"), None)
        .await
        .expect("first");
    store
        .create_webhook(ws, &capped("https://example.com/2"), None)
        .await
        .expect("second");
    let err = store
        .create_webhook(ws, &capped("https://example.com/3"), None)
        .await
        .expect_err("over the cap");
    assert_eq!(err.reason(), ErrorReason::WebhookLimitReached);
}

pub async fn updated_event_types_choose_what_is_fanned_out(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "A").await;
    let b = seeded_workspace(&*store, "B").await;
    let (w, _) = store
        .create_webhook(
            a,
            &hook("https://example.com/a", &["instant_key.created"]),
            None,
        )
        .await
        .expect("create");
    // Another workspace cannot touch it; an unknown id is not found.
    match store
        .update_webhook_event_types(b, w.id, &["access_grant.created".into()])
        .await
    {
        Err(Error::NotFound { resource, .. }) => assert_eq!(resource, Resource::Webhook),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        store
            .update_webhook_event_types(a, WebhookId::new(), &[])
            .await,
        Err(Error::NotFound { .. })
    ));
    // A batch chosen before the change is not written after it.
    grant(&*store, a).await;
    let stale = store
        .webhooks_behind(100)
        .await
        .expect("behind")
        .into_iter()
        .find(|c| c.webhook_id == w.id)
        .expect("behind");
    let updated = store
        .update_webhook_event_types(a, w.id, &["access_grant.created".into()])
        .await
        .expect("update");
    assert_eq!(updated.event_types, vec!["access_grant.created".to_owned()]);
    assert_eq!(updated.url, w.url);
    let got = store.get_webhook(a, w.id).await.expect("get");
    assert_eq!(got.event_types, updated.event_types);
    let events = store
        .list_events(a, &EventFilter::default(), stale.cursor_seq, 500)
        .await
        .expect("events");
    let last = events.last().expect("events").seq;
    assert!(
        !store
            .fan_out_webhook(&stale, last, &[], now())
            .await
            .expect("stale fan out"),
        "a batch chosen under the old types is refused"
    );
    // The next pass uses the new types: the grant's access_grant.created is delivered.
    assert_eq!(fan_out(&*store).await, 1);
    let rows = store
        .list_webhook_deliveries(a, w.id, 100)
        .await
        .expect("deliveries");
    assert_eq!(rows.len(), 1);
}
