//! The storage conformance suite: every function here runs against every backend through
//! `conformance_suite!`, so SQLite and PostgreSQL are held to the same behaviour.

use std::collections::HashSet;
use std::sync::Arc;

use keygate_domain::ids::{AccessSystemId, ApiKeyId, UserIdentityId, WorkspaceId};
use keygate_domain::model::{
    ApiKey, NewAccessSystem, NewUserIdentity, UserIdentityFilter, UserIdentityPatch, Workspace,
    WorkspaceType,
};
use keygate_domain::page::PageRequest;
use keygate_domain::{Error, ErrorReason, Resource};
use keygate_providers::sandbox;
use time::OffsetDateTime;

use crate::{Idempotency, SCHEMA_VERSION, Store};

/// Instantiates every conformance test for one backend. `$make` is an async expression that
/// yields a `TestDb`.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(@tests $make;
                migrations_are_idempotent,
                bootstrap_happens_once,
                api_keys_lifecycle,
                sandbox_systems_are_seeded,
                access_system_reads_are_tenant_scoped,
                paging_visits_every_row_once,
                user_identity_crud,
                user_identity_key_is_unique_per_workspace,
                user_identity_is_tenant_scoped,
                user_identity_filters,
                idempotent_create_replays_and_refuses_reuse,
                concurrent_idempotent_creates_make_one,
                settings_are_set_once,
                idempotency_records_expire,
            );
        }
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = $make.await;
                $crate::conformance::$name(db.store.clone()).await;
            }
        )*
    };
}

fn now() -> OffsetDateTime {
    keygate_domain::model::now()
}

fn sandbox_systems() -> Vec<NewAccessSystem> {
    sandbox::SANDBOX_SYSTEM_TYPES
        .iter()
        .filter_map(|t| sandbox::new_system(t, None, None))
        .collect()
}

fn workspace(name: &str) -> (Workspace, ApiKey) {
    let ws = Workspace {
        id: WorkspaceId::new(),
        name: name.to_owned(),
        workspace_type: WorkspaceType::Sandbox,
        created_at: now(),
    };
    let key = api_key(ws.id);
    (ws, key)
}

fn api_key(ws: WorkspaceId) -> ApiKey {
    ApiKey {
        id: ApiKeyId::new(),
        workspace_id: ws,
        name: "default".into(),
        secret_sha256: vec![7; 32],
        created_at: now(),
        revoked_at: None,
    }
}

/// A sandbox workspace with its five systems.
pub async fn seeded_workspace(store: &dyn Store, name: &str) -> WorkspaceId {
    let (ws, key) = workspace(name);
    store
        .create_workspace(&ws, &key, &sandbox_systems())
        .await
        .expect("create workspace");
    ws.id
}

fn all() -> PageRequest {
    PageRequest {
        after: None,
        limit: 500,
    }
}

fn jane() -> NewUserIdentity {
    NewUserIdentity {
        user_identity_key: Some("guest-1".into()),
        full_name: "Jane Doe".into(),
        email_address: Some("Jane.Doe@example.com".into()),
        phone_number: Some("+15555551000".into()),
    }
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, Error>, resource: Resource) {
    match r {
        Err(Error::NotFound { resource: r, .. }) => assert_eq!(r, resource),
        other => panic!("expected NotFound({resource:?}), got {other:?}"),
    }
}

fn assert_reason<T: std::fmt::Debug>(r: Result<T, Error>, reason: ErrorReason) {
    match r {
        Err(e) => assert_eq!(e.reason(), reason, "{e}"),
        Ok(v) => panic!("expected {reason:?}, got Ok({v:?})"),
    }
}

pub async fn migrations_are_idempotent(store: Arc<dyn Store>) {
    assert_eq!(store.schema_version().await.ok(), Some(SCHEMA_VERSION));
    assert_eq!(store.migrate().await.ok(), Some(SCHEMA_VERSION));
    store.ping().await.expect("ping");
}

pub async fn bootstrap_happens_once(store: Arc<dyn Store>) {
    let (a, ka) = workspace("first");
    let (b, kb) = workspace("second");
    let systems = sandbox_systems();
    assert_eq!(
        store.bootstrap_workspace(&a, &ka, &systems).await.ok(),
        Some(None)
    );
    assert_eq!(
        store.bootstrap_workspace(&b, &kb, &systems).await.ok(),
        Some(Some(a.id))
    );
    let listed = store.list_workspaces(&all()).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0], a);
    assert_not_found(store.get_workspace(b.id).await, Resource::Workspace);
}

pub async fn api_keys_lifecycle(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "keys").await;
    let other = seeded_workspace(&*store, "other").await;
    let extra = api_key(ws);
    store.create_api_key(&extra).await.expect("create key");
    assert_eq!(
        store.find_api_key(extra.id).await.ok(),
        Some(Some(extra.clone()))
    );
    assert_eq!(store.find_api_key(ApiKeyId::new()).await.ok(), Some(None));
    assert_eq!(
        store
            .list_api_keys(ws, &all())
            .await
            .map(|p| p.items.len())
            .ok(),
        Some(2)
    );
    assert_not_found(
        store.create_api_key(&api_key(WorkspaceId::new())).await,
        Resource::Workspace,
    );

    // Another workspace cannot revoke it, and it stays active.
    assert_not_found(
        store.revoke_api_key(other, extra.id, now()).await,
        Resource::ApiKey,
    );
    let found = store
        .find_api_key(extra.id)
        .await
        .expect("find")
        .expect("exists");
    assert!(found.revoked_at.is_none());

    let first = store
        .revoke_api_key(ws, extra.id, now())
        .await
        .expect("revoke");
    let at = first.revoked_at.expect("revoked_at set");
    let again = store
        .revoke_api_key(ws, extra.id, now())
        .await
        .expect("revoke again");
    assert_eq!(
        again.revoked_at,
        Some(at),
        "a second revoke keeps the first time"
    );
}

pub async fn sandbox_systems_are_seeded(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "seeded").await;
    let systems = store
        .list_access_systems(ws, None, &all())
        .await
        .expect("list")
        .items;
    assert_eq!(systems.len(), 5);
    for expected in sandbox_systems() {
        let s = systems
            .iter()
            .find(|s| s.system_type == expected.system_type)
            .expect("system stored");
        assert_eq!(
            s.capabilities, expected.capabilities,
            "capabilities round-trip"
        );
        assert_eq!(s.external_type, expected.external_type);
        let entrances = store
            .list_entrances(ws, Some(s.id), &all())
            .await
            .expect("entrances")
            .items;
        assert_eq!(entrances.len(), expected.entrances.len());
        let mut names: Vec<_> = entrances.iter().map(|e| e.display_name.clone()).collect();
        let mut want: Vec<_> = expected
            .entrances
            .iter()
            .map(|e| e.display_name.clone())
            .collect();
        names.sort();
        want.sort();
        assert_eq!(names, want);
        let groups = store
            .list_access_groups(ws, Some(s.id), &all())
            .await
            .expect("groups")
            .items;
        assert_eq!(groups.len(), expected.access_groups.len());
        for (g, want) in groups.iter().zip(&expected.access_groups) {
            // Groups were inserted in seed order, and UUIDv7 ids keep that order.
            assert_eq!(g.display_name, want.display_name);
            assert_eq!(g.entrance_ids.len(), want.entrance_indexes.len());
            let ids: HashSet<_> = entrances.iter().map(|e| e.id).collect();
            assert!(g.entrance_ids.iter().all(|e| ids.contains(e)));
        }
        let encoders = store
            .list_encoders(ws, Some(s.id), &all())
            .await
            .expect("encoders")
            .items;
        assert_eq!(encoders.len(), expected.encoders.len());
    }
    let only = store
        .list_access_systems(ws, Some("latch_building"), &all())
        .await
        .expect("filter");
    assert_eq!(only.items.len(), 1);
}

pub async fn access_system_reads_are_tenant_scoped(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "a").await;
    let b = seeded_workspace(&*store, "b").await;
    let sys_b = store
        .list_access_systems(b, None, &all())
        .await
        .expect("list")
        .items[0]
        .id;
    let ent_b = store
        .list_entrances(b, None, &all())
        .await
        .expect("list")
        .items[0]
        .id;
    assert_not_found(
        store.get_access_system(a, sys_b).await,
        Resource::AccessSystem,
    );
    assert_not_found(store.get_entrance(a, ent_b).await, Resource::Entrance);
    assert_not_found(
        store.list_entrances(a, Some(sys_b), &all()).await,
        Resource::AccessSystem,
    );
    assert_not_found(
        store.list_access_groups(a, Some(sys_b), &all()).await,
        Resource::AccessSystem,
    );
    assert_not_found(
        store.list_encoders(a, Some(sys_b), &all()).await,
        Resource::AccessSystem,
    );
    assert_not_found(
        store
            .list_entrances(a, Some(AccessSystemId::new()), &all())
            .await,
        Resource::AccessSystem,
    );
    let a_entrances = store
        .list_entrances(a, None, &all())
        .await
        .expect("list")
        .items;
    assert!(a_entrances.iter().all(|e| e.id != ent_b));
    assert_not_found(
        store
            .connect_access_system(WorkspaceId::new(), &sandbox_systems()[0])
            .await,
        Resource::Workspace,
    );
}

pub async fn paging_visits_every_row_once(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "paging").await;
    let total = store
        .list_entrances(ws, None, &all())
        .await
        .expect("all")
        .items
        .len();
    let mut seen = Vec::new();
    let mut page = PageRequest {
        after: None,
        limit: 4,
    };
    loop {
        let p = store.list_entrances(ws, None, &page).await.expect("page");
        assert!(p.items.len() <= 4);
        seen.extend(p.items.iter().map(|e| e.id));
        match p.next_after {
            Some(after) => page.after = Some(after),
            None => break,
        }
    }
    assert_eq!(seen.len(), total);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        total,
        "no row twice"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages come in id order");
}

pub async fn user_identity_crud(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "crud").await;
    let id = UserIdentityId::new();
    let created = store
        .create_user_identity(ws, id, &jane(), None, now())
        .await
        .expect("create");
    assert_eq!(created.full_name, "Jane Doe");
    assert_eq!(
        store.get_user_identity(ws, id).await.ok(),
        Some(created.clone())
    );

    let patch = UserIdentityPatch {
        full_name: Some("Jane Q. Doe".into()),
        email_address: Some(None),
        ..Default::default()
    };
    let updated = store
        .update_user_identity(ws, id, &patch, now())
        .await
        .expect("update");
    assert_eq!(updated.full_name, "Jane Q. Doe");
    assert_eq!(updated.email_address, None);
    assert_eq!(
        updated.phone_number, created.phone_number,
        "absent fields are kept"
    );
    assert_eq!(updated.user_identity_key, created.user_identity_key);
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(store.get_user_identity(ws, id).await.ok(), Some(updated));

    store.delete_user_identity(ws, id).await.expect("delete");
    assert_not_found(
        store.get_user_identity(ws, id).await,
        Resource::UserIdentity,
    );
    assert_not_found(
        store.delete_user_identity(ws, id).await,
        Resource::UserIdentity,
    );
    assert_not_found(
        store.update_user_identity(ws, id, &patch, now()).await,
        Resource::UserIdentity,
    );
}

pub async fn user_identity_key_is_unique_per_workspace(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "a").await;
    let b = seeded_workspace(&*store, "b").await;
    let first = store
        .create_user_identity(a, UserIdentityId::new(), &jane(), None, now())
        .await
        .expect("first");
    assert_reason(
        store
            .create_user_identity(a, UserIdentityId::new(), &jane(), None, now())
            .await,
        ErrorReason::UserIdentityKeyTaken,
    );
    // The same key in another workspace is fine.
    store
        .create_user_identity(b, UserIdentityId::new(), &jane(), None, now())
        .await
        .expect("other workspace");
    // Identities without a key never collide.
    for _ in 0..2 {
        let keyless = NewUserIdentity {
            user_identity_key: None,
            ..jane()
        };
        store
            .create_user_identity(a, UserIdentityId::new(), &keyless, None, now())
            .await
            .expect("keyless");
    }
    // Taking the key by update is refused too, and changes nothing.
    let other = NewUserIdentity {
        user_identity_key: Some("guest-2".into()),
        ..jane()
    };
    let second = store
        .create_user_identity(a, UserIdentityId::new(), &other, None, now())
        .await
        .expect("second");
    let steal = UserIdentityPatch {
        user_identity_key: Some(Some("guest-1".into())),
        full_name: Some("Thief".into()),
        ..Default::default()
    };
    assert_reason(
        store
            .update_user_identity(a, second.id, &steal, now())
            .await,
        ErrorReason::UserIdentityKeyTaken,
    );
    assert_eq!(
        store.get_user_identity(a, second.id).await.ok(),
        Some(second)
    );
    assert_eq!(store.get_user_identity(a, first.id).await.ok(), Some(first));
}

pub async fn user_identity_is_tenant_scoped(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "a").await;
    let b = seeded_workspace(&*store, "b").await;
    let in_b = store
        .create_user_identity(b, UserIdentityId::new(), &jane(), None, now())
        .await
        .expect("create");
    assert_not_found(
        store.get_user_identity(a, in_b.id).await,
        Resource::UserIdentity,
    );
    let patch = UserIdentityPatch {
        full_name: Some("Mallory".into()),
        ..Default::default()
    };
    assert_not_found(
        store.update_user_identity(a, in_b.id, &patch, now()).await,
        Resource::UserIdentity,
    );
    assert_not_found(
        store.delete_user_identity(a, in_b.id).await,
        Resource::UserIdentity,
    );
    assert!(
        store
            .list_user_identities(a, &UserIdentityFilter::default(), &all())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert_eq!(
        store.get_user_identity(b, in_b.id).await.ok(),
        Some(in_b),
        "untouched"
    );
}

pub async fn user_identity_filters(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "filters").await;
    store
        .create_user_identity(ws, UserIdentityId::new(), &jane(), None, now())
        .await
        .expect("jane");
    let john = NewUserIdentity {
        user_identity_key: Some("guest-2".into()),
        full_name: "John Roe".into(),
        email_address: Some("john@example.com".into()),
        phone_number: None,
    };
    store
        .create_user_identity(ws, UserIdentityId::new(), &john, None, now())
        .await
        .expect("john");
    let by_key = UserIdentityFilter {
        user_identity_key: Some("guest-2".into()),
        ..Default::default()
    };
    let got = store
        .list_user_identities(ws, &by_key, &all())
        .await
        .expect("by key")
        .items;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].full_name, "John Roe");
    let by_email = UserIdentityFilter {
        email_address: Some("jane.doe@EXAMPLE.com".into()),
        ..Default::default()
    };
    let got = store
        .list_user_identities(ws, &by_email, &all())
        .await
        .expect("by email")
        .items;
    assert_eq!(got.len(), 1, "email filter is case-insensitive");
    assert_eq!(got[0].full_name, "Jane Doe");
}

fn idem(request_id: &str, body: u8) -> Idempotency {
    Idempotency {
        request_id: request_id.into(),
        operation: "CreateUserIdentity",
        request_sha256: vec![body; 32],
    }
}

pub async fn idempotent_create_replays_and_refuses_reuse(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "idem").await;
    let first = store
        .create_user_identity(
            ws,
            UserIdentityId::new(),
            &jane(),
            Some(&idem("r-1", 1)),
            now(),
        )
        .await
        .expect("first");
    let replay = store
        .create_user_identity(
            ws,
            UserIdentityId::new(),
            &jane(),
            Some(&idem("r-1", 1)),
            now(),
        )
        .await
        .expect("replay");
    assert_eq!(replay, first);
    assert_reason(
        store
            .create_user_identity(
                ws,
                UserIdentityId::new(),
                &jane(),
                Some(&idem("r-1", 2)),
                now(),
            )
            .await,
        ErrorReason::IdempotencyKeyReused,
    );
    let listed = store
        .list_user_identities(ws, &UserIdentityFilter::default(), &all())
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    // The same request_id in another workspace is independent.
    let other = seeded_workspace(&*store, "idem-other").await;
    store
        .create_user_identity(
            other,
            UserIdentityId::new(),
            &jane(),
            Some(&idem("r-1", 2)),
            now(),
        )
        .await
        .expect("other workspace");
}

pub async fn concurrent_idempotent_creates_make_one(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "race").await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_user_identity(
                        ws,
                        UserIdentityId::new(),
                        &jane(),
                        Some(&idem("race", 9)),
                        now(),
                    )
                    .await
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.expect("join").expect("create").id);
    }
    assert_eq!(ids.len(), 1, "every caller got the same identity");
    let listed = store
        .list_user_identities(ws, &UserIdentityFilter::default(), &all())
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
}

pub async fn settings_are_set_once(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.setting_or_init("secret", &format!("v{i}")).await })
        })
        .collect();
    let mut values = HashSet::new();
    for t in tasks {
        values.insert(t.await.expect("join").expect("setting"));
    }
    assert_eq!(values.len(), 1);
}

pub async fn idempotency_records_expire(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "purge").await;
    let old = now() - time::Duration::days(2);
    store
        .create_user_identity(
            ws,
            UserIdentityId::new(),
            &jane(),
            Some(&idem("old", 1)),
            old,
        )
        .await
        .expect("old");
    let fresh = NewUserIdentity {
        user_identity_key: None,
        ..jane()
    };
    store
        .create_user_identity(
            ws,
            UserIdentityId::new(),
            &fresh,
            Some(&idem("new", 1)),
            now(),
        )
        .await
        .expect("new");
    let purged = store
        .purge_idempotency(now() - time::Duration::days(1))
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    // The expired request id is free again (a new create), the fresh one still replays.
    let again = NewUserIdentity {
        user_identity_key: Some("guest-9".into()),
        ..jane()
    };
    store
        .create_user_identity(
            ws,
            UserIdentityId::new(),
            &again,
            Some(&idem("old", 2)),
            now(),
        )
        .await
        .expect("reuse after expiry");
}
