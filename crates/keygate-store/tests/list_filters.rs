//! List filters the store applies itself (so a page is full): access grants by ids, key and
//! reservation key; entrances and encoders by ids. On SQLite and on the real PostgreSQL.

use std::sync::Arc;

use keygate_domain::capability::AccessMethodMode;
use keygate_domain::page::PageRequest;
use keygate_store::conformance::{new_grant, quick_start_entrances, seeded_workspace};
use keygate_store::{GrantFilter, Store};

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
    grants_by_id_and_key_fill_pages,
    entrances_and_encoders_by_id
);

fn page(limit: u32, after: Option<String>) -> PageRequest {
    PageRequest { after, limit }
}

async fn grants_by_id_and_key_fill_pages(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "A").await;
    let b = seeded_workspace(&*store, "B").await;
    let doors = quick_start_entrances(&*store, a).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let mut g = new_grant(&*store, a, &doors, &[AccessMethodMode::Card]).await;
        g.grant.access_grant_key = Some(format!("key-{i}"));
        g.grant.reservation_key = Some(if i % 2 == 0 { "even" } else { "odd" }.into());
        let (g, _) = store.create_access_grant(a, &g, None).await.expect("grant");
        ids.push(g.id);
    }
    // Grants 0 and 3, one a page: two full pages.
    let f = GrantFilter {
        access_grant_ids: vec![ids[3], ids[0]],
        ..Default::default()
    };
    let first = store
        .list_access_grants(a, &f, &page(1, None))
        .await
        .expect("page 1");
    assert_eq!(
        first.items.iter().map(|g| g.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    let after = first.next_after.clone().expect("more");
    let second = store
        .list_access_grants(a, &f, &page(1, Some(after)))
        .await
        .expect("page 2");
    assert_eq!(
        second.items.iter().map(|g| g.id).collect::<Vec<_>>(),
        vec![ids[3]]
    );
    assert!(second.next_after.is_none());
    // By key; by reservation key; both with ids.
    let by_key = GrantFilter {
        access_grant_key: Some("key-2".into()),
        ..Default::default()
    };
    let found = store
        .list_access_grants(a, &by_key, &page(50, None))
        .await
        .expect("by key")
        .items;
    assert_eq!(found.iter().map(|g| g.id).collect::<Vec<_>>(), vec![ids[2]]);
    let odd = GrantFilter {
        reservation_key: Some("odd".into()),
        ..Default::default()
    };
    let found = store
        .list_access_grants(a, &odd, &page(50, None))
        .await
        .expect("by reservation")
        .items;
    assert_eq!(
        found.iter().map(|g| g.id).collect::<Vec<_>>(),
        vec![ids[1], ids[3]]
    );
    let none = GrantFilter {
        access_grant_ids: vec![ids[0]],
        reservation_key: Some("odd".into()),
        ..Default::default()
    };
    assert!(
        store
            .list_access_grants(a, &none, &page(50, None))
            .await
            .expect("none")
            .items
            .is_empty()
    );
    // Another workspace's listing by these ids is empty.
    let f = GrantFilter {
        access_grant_ids: ids.clone(),
        ..Default::default()
    };
    assert!(
        store
            .list_access_grants(b, &f, &page(50, None))
            .await
            .expect("b")
            .items
            .is_empty()
    );
}

async fn entrances_and_encoders_by_id(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "A").await;
    let b = seeded_workspace(&*store, "B").await;
    let all = store
        .list_entrances(a, None, &page(500, None))
        .await
        .expect("all")
        .items;
    assert!(all.len() >= 3);
    let wanted = vec![all[2].id, all[0].id];
    let first = store
        .list_entrances_by_id(a, None, &wanted, &page(1, None))
        .await
        .expect("page 1");
    assert_eq!(
        first.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![all[0].id]
    );
    let second = store
        .list_entrances_by_id(a, None, &wanted, &page(1, first.next_after.clone()))
        .await
        .expect("page 2");
    assert_eq!(
        second.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![all[2].id]
    );
    assert!(second.next_after.is_none());
    // With a system: only that system's among them.
    let system = all[0].acs_system_id;
    let found = store
        .list_entrances_by_id(a, Some(system), &wanted, &page(50, None))
        .await
        .expect("by system")
        .items;
    assert!(
        found
            .iter()
            .all(|e| e.acs_system_id == system && wanted.contains(&e.id))
    );
    // Empty ids: every entrance, as list_entrances.
    assert_eq!(
        store
            .list_entrances_by_id(a, None, &[], &page(500, None))
            .await
            .expect("every")
            .items
            .len(),
        all.len()
    );
    assert!(
        store
            .list_entrances_by_id(b, None, &wanted, &page(50, None))
            .await
            .expect("b")
            .items
            .is_empty()
    );
    let encoders = store
        .list_encoders(a, None, &page(500, None))
        .await
        .expect("encoders")
        .items;
    let one = encoders.first().expect("the sandbox has an encoder");
    let found = store
        .list_encoders_by_id(a, None, &[one.id], &page(50, None))
        .await
        .expect("by id")
        .items;
    assert_eq!(found.iter().map(|e| e.id).collect::<Vec<_>>(), vec![one.id]);
    assert!(
        store
            .list_encoders_by_id(b, None, &[one.id], &page(50, None))
            .await
            .expect("b")
            .items
            .is_empty()
    );
}
