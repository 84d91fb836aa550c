//! The Instant Key delivery store on SQLite and on the real PostgreSQL: tenancy, idempotent
//! creates, leases that never hand one delivery to two senders, fencing of a lost lease, the
//! channel filter, and the events of the outcomes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use keygate_domain::delivery::{Channel, NewDelivery, Outcome, SentVia, Status};
use keygate_domain::events::EventFilter;
use keygate_domain::ids::{DeliveryId, InstantKeyId, UserIdentityId, WorkspaceId};
use keygate_domain::instant_key::InstantKey;
use keygate_domain::model::now;
use keygate_domain::{Error, ErrorReason, Resource};
use keygate_store::conformance::seeded_workspace;
use keygate_store::{Idempotency, Store};

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
    deliveries_are_tenant_scoped_and_idempotent,
    leases_hand_each_delivery_to_one_sender,
    outcomes_are_recorded_under_the_lease_with_events,
);

async fn key(store: &dyn Store, ws: WorkspaceId) -> InstantKey {
    // A key is made for a person who exists (the store locks their row).
    let person = store
        .create_user_identity(
            ws,
            UserIdentityId::new(),
            &keygate_domain::model::NewUserIdentity {
                user_identity_key: None,
                full_name: "Jane Doe".into(),
                email_address: None,
                phone_number: None,
            },
            None,
            now(),
        )
        .await
        .expect("person");
    let k = InstantKey {
        id: InstantKeyId::new(),
        workspace_id: ws,
        user_identity_id: person.id,
        access_grant_id: None,
        created_at: now(),
        expires_at: Some(now() + time::Duration::hours(1)),
        max_use_count: 1,
        use_count: 0,
        revoked_at: None,
    };
    let token = format!("{:064x}", k.id.as_uuid().as_u128());
    store
        .create_instant_key(ws, &k, &token, None)
        .await
        .expect("key")
        .0
}

fn new(key: InstantKeyId, channel: Channel, to: &str) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::new(),
        instant_key_id: key,
        channel,
        to: to.into(),
        created_at: now(),
    }
}

fn idem(id: &str, body: u8) -> Idempotency {
    Idempotency {
        request_id: id.into(),
        operation: "DeliverInstantKey",
        request_sha256: vec![body; 32],
    }
}

const LEASE: Duration = Duration::from_secs(60);

async fn deliveries_are_tenant_scoped_and_idempotent(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "A").await;
    let b = seeded_workspace(&*store, "B").await;
    let k = key(&*store, a).await;

    let d = store
        .create_key_delivery(
            a,
            &new(k.id, Channel::Sms, "+15555551000"),
            Some(&idem("r1", 1)),
        )
        .await
        .expect("create");
    assert_eq!(
        (d.status, d.attempts, d.sent_at),
        (Status::Pending, 0, None)
    );
    let again = store
        .create_key_delivery(
            a,
            &new(k.id, Channel::Sms, "+15555551000"),
            Some(&idem("r1", 1)),
        )
        .await
        .expect("replay");
    assert_eq!(again.id, d.id, "a replay returns the first delivery");
    assert!(matches!(
        store
            .create_key_delivery(
                a,
                &new(k.id, Channel::Sms, "+15555551001"),
                Some(&idem("r1", 2))
            )
            .await,
        Err(Error::AlreadyExists {
            reason: ErrorReason::IdempotencyKeyReused,
            ..
        })
    ));
    // Another workspace can neither deliver the key nor see the delivery.
    assert!(matches!(
        store
            .create_key_delivery(b, &new(k.id, Channel::Sms, "+15555551000"), None)
            .await,
        Err(Error::NotFound {
            resource: Resource::InstantKey,
            ..
        })
    ));
    assert!(store.get_key_delivery(b, d.id).await.is_err());
    assert!(
        store
            .key_deliveries(b, &[k.id], 10)
            .await
            .expect("b")
            .is_empty()
    );
    assert_eq!(
        store
            .recent_key_deliveries(Some(b), false, 10)
            .await
            .expect("recent b")
            .len(),
        0
    );

    // Newest first, per key, capped.
    let k2 = key(&*store, a).await;
    let e = store
        .create_key_delivery(a, &new(k.id, Channel::Email, "jane@example.com"), None)
        .await
        .expect("email");
    store
        .create_key_delivery(a, &new(k2.id, Channel::Email, "bob@example.com"), None)
        .await
        .expect("k2");
    let of_k: Vec<DeliveryId> = store
        .key_deliveries(a, &[k.id], 10)
        .await
        .expect("of k")
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(of_k, [e.id, d.id]);
    let both = store
        .key_deliveries(a, &[k.id, k2.id], 1)
        .await
        .expect("both");
    assert_eq!(both.len(), 2, "one of each: {both:?}");
    assert!(both.iter().any(|x| x.id == e.id));
    let recent = store
        .recent_key_deliveries(None, false, 10)
        .await
        .expect("recent");
    assert_eq!(recent.len(), 3);
    assert!(
        store
            .recent_key_deliveries(None, true, 10)
            .await
            .expect("outbox")
            .is_empty()
    );
}

async fn leases_hand_each_delivery_to_one_sender(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "A").await;
    let k = key(&*store, ws).await;
    let mut ids = HashSet::new();
    for i in 0..20 {
        let channel = if i % 2 == 0 {
            Channel::Sms
        } else {
            Channel::Email
        };
        let d = store
            .create_key_delivery(ws, &new(k.id, channel, "+15555551000"), None)
            .await
            .expect("create");
        ids.insert(d.id);
    }
    // Only the channels asked for.
    let sms_only = store
        .claim_key_deliveries(true, false, 100, LEASE, now())
        .await
        .expect("sms");
    assert_eq!(sms_only.len(), 10);
    assert!(
        sms_only
            .iter()
            .all(|c| c.channel == Channel::Sms && c.attempts == 1)
    );
    // Concurrent senders never get the same row; each claimed row is leased once.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_key_deliveries(true, true, 3, LEASE, now())
                .await
                .expect("claim")
        }));
    }
    let mut seen: Vec<DeliveryId> = sms_only.iter().map(|c| c.delivery_id).collect();
    for t in tasks {
        seen.extend(t.await.expect("task").iter().map(|c| c.delivery_id));
    }
    seen.extend(
        store
            .claim_key_deliveries(true, true, 100, LEASE, now())
            .await
            .expect("rest")
            .iter()
            .map(|c| c.delivery_id),
    );
    let unique: HashSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no delivery was leased twice");
    assert_eq!(unique, ids);
    assert!(
        store
            .claim_key_deliveries(true, true, 100, LEASE, now())
            .await
            .expect("none")
            .is_empty(),
        "all are leased"
    );
    // A lease that ran out is taken over, and counts another attempt.
    let later = now() + time::Duration::seconds(61);
    let again = store
        .claim_key_deliveries(true, true, 100, LEASE, later)
        .await
        .expect("after the lease");
    assert_eq!(again.len(), 20);
    assert!(again.iter().all(|c| c.attempts == 2));
    let due = store
        .next_key_delivery_due(true, true)
        .await
        .expect("due")
        .expect("some");
    assert!(due > later, "leased rows are due when their lease ends");
    assert_eq!(
        store
            .next_key_delivery_due(false, false)
            .await
            .expect("none"),
        None
    );
}

async fn outcomes_are_recorded_under_the_lease_with_events(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "A").await;
    let k = key(&*store, ws).await;
    let d = store
        .create_key_delivery(ws, &new(k.id, Channel::Sms, "+15555551000"), None)
        .await
        .expect("create");
    let c = store
        .claim_key_deliveries(true, true, 10, LEASE, now())
        .await
        .expect("claim")
        .pop()
        .expect("one");
    // A retry: pending again, due later, with the error.
    let at = now() + time::Duration::seconds(30);
    let ev = store
        .record_key_delivery(
            &c,
            &Outcome::Retry {
                at,
                error: "HTTP 500".into(),
            },
            now(),
        )
        .await
        .expect("retry")
        .expect("held");
    assert!(ev.is_empty());
    let got = store.get_key_delivery(ws, d.id).await.expect("get");
    assert_eq!(
        (got.status, got.attempts, got.last_error.as_deref()),
        (Status::Pending, 1, Some("HTTP 500"))
    );
    // The old lease is gone: recording under it writes nothing.
    assert_eq!(
        store
            .record_key_delivery(&c, &Outcome::Sent(SentVia::SmsApi), now())
            .await
            .expect("stale"),
        None
    );
    assert!(
        store
            .claim_key_deliveries(true, true, 10, LEASE, now())
            .await
            .expect("not yet")
            .is_empty(),
        "not due before its retry time"
    );
    // Claimed as a sender would once the retry time has come.
    let c2 = store
        .claim_key_deliveries(true, true, 10, LEASE, at + time::Duration::seconds(1))
        .await
        .expect("claim again")
        .pop()
        .expect("due");
    assert_eq!(c2.attempts, 2);
    let events = store
        .record_key_delivery(&c2, &Outcome::Sent(SentVia::Outbox), now())
        .await
        .expect("sent")
        .expect("held");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "instant_key.delivered");
    assert_eq!(events[0].instant_key_id, Some(k.id));
    assert_eq!(events[0].user_identity_id, Some(k.user_identity_id));
    let got = store.get_key_delivery(ws, d.id).await.expect("get");
    assert_eq!(
        (got.status, got.sent_via),
        (Status::Sent, Some(SentVia::Outbox))
    );
    assert!(got.sent_at.is_some());
    assert_eq!(
        got.last_error.as_deref(),
        Some("HTTP 500"),
        "the last failure is kept"
    );
    assert_eq!(
        store
            .recent_key_deliveries(Some(ws), true, 10)
            .await
            .expect("outbox")
            .len(),
        1
    );
    // Final: recording again writes nothing.
    assert_eq!(
        store
            .record_key_delivery(&c2, &Outcome::Failed { error: "x".into() }, now())
            .await
            .expect("final"),
        None
    );

    // A permanent failure.
    let f = store
        .create_key_delivery(ws, &new(k.id, Channel::Email, "nobody@example.com"), None)
        .await
        .expect("create");
    let c3 = store
        .claim_key_deliveries(false, true, 10, LEASE, now())
        .await
        .expect("claim")
        .pop()
        .expect("one");
    let events = store
        .record_key_delivery(
            &c3,
            &Outcome::Failed {
                error: "SMTP 550".into(),
            },
            now(),
        )
        .await
        .expect("failed")
        .expect("held");
    assert_eq!(events[0].event_type, "instant_key.delivery_failed");
    let got = store.get_key_delivery(ws, f.id).await.expect("get");
    assert_eq!((got.status, got.sent_at), (Status::Failed, None));
    let logged = store
        .list_events(
            ws,
            &EventFilter {
                event_types: vec![
                    "instant_key.delivered".into(),
                    "instant_key.delivery_failed".into(),
                ],
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .expect("events");
    assert_eq!(logged.len(), 2);
    assert_eq!(
        store.next_key_delivery_due(true, true).await.expect("due"),
        None
    );
}
