//! The vendor event store on SQLite and on the real PostgreSQL: a system found by its id alone,
//! each vendor event recorded once (concurrent deliveries included) with the events it causes,
//! per access system; retries hastened by a change that landed; old ids forgotten.

use std::sync::Arc;

use keygate_domain::capability::AccessMethodMode;
use keygate_domain::events::{ACCESS_METHOD_USED, EventFilter, NewEvent};
use keygate_domain::ids::AccessSystemId;
use keygate_domain::model::now;
use keygate_store::conformance::{ClaimDue, new_grant, quick_start_entrances, seeded_workspace};
use keygate_store::{Store, VendorEventRecord};
use time::Duration;

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
    a_vendor_event_is_recorded_once_per_system,
    concurrent_deliveries_record_one,
    a_landed_change_hastens_the_systems_retries,
    old_ids_are_forgotten,
);

fn record(id: &str, system: AccessSystemId, hasten: bool) -> VendorEventRecord {
    VendorEventRecord {
        vendor_event_id: id.to_owned(),
        events: vec![NewEvent::new(ACCESS_METHOD_USED, now()).system(system)],
        hasten_retries: hasten,
        forget_before: now() - Duration::days(7),
    }
}

fn used() -> EventFilter {
    EventFilter {
        event_types: vec![ACCESS_METHOD_USED.name.to_owned()],
        ..EventFilter::default()
    }
}

async fn first_system(store: &dyn Store, ws: keygate_domain::ids::WorkspaceId) -> AccessSystemId {
    let page = keygate_domain::page::PageRequest {
        after: None,
        limit: 10,
    };
    store
        .list_access_systems(ws, None, &page)
        .await
        .expect("systems")
        .items[0]
        .id
}

async fn a_vendor_event_is_recorded_once_per_system(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "vendor events").await;
    let other = seeded_workspace(&*store, "another tenant").await;
    let system = first_system(&*store, ws).await;
    let theirs = first_system(&*store, other).await;

    assert_eq!(
        store.access_system_workspace(system).await.expect("find"),
        Some(ws)
    );
    assert_eq!(
        store.access_system_workspace(theirs).await.expect("find"),
        Some(other)
    );
    assert_eq!(
        store
            .access_system_workspace(AccessSystemId::new())
            .await
            .expect("find"),
        None
    );

    let first = store
        .record_vendor_event(ws, system, &record("e1", system, false), now())
        .await
        .expect("record")
        .expect("new");
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].event_type, ACCESS_METHOD_USED.name);
    assert_eq!(
        store
            .record_vendor_event(ws, system, &record("e1", system, false), now())
            .await
            .expect("record"),
        None,
        "a repeated delivery writes nothing"
    );
    assert_eq!(
        store
            .seen_vendor_events(ws, system, &["e1".into(), "e2".into()])
            .await
            .expect("seen"),
        vec!["e1".to_owned()]
    );
    // Ids are per system: another tenant's system has its own.
    assert!(
        store
            .seen_vendor_events(other, theirs, &["e1".into()])
            .await
            .expect("seen")
            .is_empty()
    );
    assert!(
        store
            .record_vendor_event(other, theirs, &record("e1", theirs, false), now())
            .await
            .expect("record")
            .is_some()
    );
    let events = store
        .list_events(ws, &used(), 0, 100)
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
}

async fn concurrent_deliveries_record_one(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "racing deliveries").await;
    let system = first_system(&*store, ws).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_vendor_event(ws, system, &record("same", system, false), now())
                .await
        }));
    }
    let mut new = 0;
    for t in tasks {
        if t.await.expect("join").expect("record").is_some() {
            new += 1;
        }
    }
    assert_eq!(new, 1);
    let events = store
        .list_events(ws, &used(), 0, 100)
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
}

async fn a_landed_change_hastens_the_systems_retries(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "hasten").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let new = new_grant(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
    store
        .create_access_grant(ws, &new, None)
        .await
        .expect("create");
    let t0 = now();
    let jobs = store
        .claim_due("worker", std::time::Duration::from_secs(30), t0)
        .await
        .expect("claim");
    assert!(!jobs.is_empty());
    // Every job's answer was lost: each waits for its retry in an hour.
    let later = t0 + Duration::hours(1);
    for j in &jobs {
        assert!(
            store
                .reschedule_job(j, later, "timeout", false, t0)
                .await
                .expect("reschedule")
        );
    }
    assert!(store.due_systems(t0, 10).await.expect("due").is_empty());
    let system = match &jobs[0].work {
        keygate_domain::action::JobWork::Provision(p) => p.acs_system_id,
        other => panic!("a provision job, not {other:?}"),
    };
    let on_system = jobs
        .iter()
        .filter(|j| matches!(&j.work, keygate_domain::action::JobWork::Provision(p) if p.acs_system_id == system))
        .count() as u64;
    // An event that says nothing of a change hastens nothing.
    let r = store
        .record_vendor_event(ws, system, &record("unlock", system, false), t0)
        .await
        .expect("record")
        .expect("new");
    assert_eq!(r.retries_hastened, 0);
    let r = store
        .record_vendor_event(ws, system, &record("landed", system, true), t0)
        .await
        .expect("record")
        .expect("new");
    assert_eq!(r.retries_hastened, on_system);
    let due = store.due_systems(t0, 10).await.expect("due");
    assert!(
        due.iter()
            .any(|d| d.acs_system_id == system && d.workspace_id == ws),
        "{due:?}"
    );
    // Its repeat hastens nothing more.
    assert_eq!(
        store
            .record_vendor_event(ws, system, &record("landed", system, true), t0)
            .await
            .expect("record"),
        None
    );
}

async fn old_ids_are_forgotten(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "forget").await;
    let system = first_system(&*store, ws).await;
    let long_ago = now() - Duration::days(10);
    store
        .record_vendor_event(ws, system, &record("old", system, false), long_ago)
        .await
        .expect("record")
        .expect("new");
    store
        .record_vendor_event(ws, system, &record("fresh", system, false), now())
        .await
        .expect("record")
        .expect("new");
    assert_eq!(
        store
            .seen_vendor_events(ws, system, &["old".into(), "fresh".into()])
            .await
            .expect("seen"),
        vec!["fresh".to_owned()]
    );
}
