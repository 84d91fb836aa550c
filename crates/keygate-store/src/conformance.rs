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
                grants_are_written_in_one_transaction,
                grant_lists_filter_and_stay_in_their_workspace,
                idempotent_grant_creates_make_one_grant,
                jobs_are_leased_taken_over_and_fenced,
                a_reclaimed_job_is_fenced_even_for_the_same_owner,
                an_undecodable_job_goes_dead_and_the_rest_of_its_claim_runs,
                provision_outcomes_emit_events_once,
                event_sequence_follows_commit_order,
                deletes_release_what_they_held,
                deleting_a_person_removes_their_access,
                a_grant_racing_its_persons_delete_does_not_survive,
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
            .connect_access_system(
                WorkspaceId::new(),
                AccessSystemId::new(),
                &sandbox_systems()[0],
                &Default::default(),
                None,
            )
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

    store
        .delete_user_identity(ws, id, now())
        .await
        .expect("delete");
    assert_not_found(
        store.get_user_identity(ws, id).await,
        Resource::UserIdentity,
    );
    assert_not_found(
        store.delete_user_identity(ws, id, now()).await,
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
        store.delete_user_identity(a, in_b.id, now()).await,
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
    let won = values.into_iter().next();
    assert_eq!(store.read_setting("secret").await.expect("read"), won);
    assert_eq!(store.read_setting("never set").await.expect("read"), None);
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

// ---- access grants, jobs and events ----

use keygate_domain::capability::AccessMethodMode;
use keygate_domain::events::EventFilter;
use keygate_domain::grant::{self, GrantSpec, ModeRequest};
use keygate_domain::ids::{AccessGrantId, EntranceId};
use keygate_domain::tracker::{DoorOutcome, ProvisionResult};

use crate::{GrantFilter, MethodFilter, NewGrant};

/// Two entrances in two systems of different permission models (Salto Space: access groups,
/// cards that need encoding; Visionline: credential based), as in the quick start.
pub async fn quick_start_entrances(store: &dyn Store, ws: WorkspaceId) -> Vec<EntranceId> {
    let systems = store
        .list_access_systems(ws, None, &all())
        .await
        .expect("systems")
        .items;
    let mut picked = Vec::new();
    for t in ["virtual_salto_space", "virtual_visionline"] {
        let s = systems.iter().find(|s| s.system_type == t).expect("system");
        let e = store
            .list_entrances(ws, Some(s.id), &all())
            .await
            .expect("entrances")
            .items;
        let lobby = e
            .iter()
            .find(|e| e.can_unlock_with_card && e.can_unlock_with_mobile_key)
            .expect("door");
        picked.push(lobby.id);
    }
    picked
}

/// A planned grant for Jane over `entrances` with `modes`, as the gateway builds it.
pub async fn new_grant(
    store: &dyn Store,
    ws: WorkspaceId,
    entrances: &[EntranceId],
    modes: &[AccessMethodMode],
) -> NewGrant {
    let now = now();
    let planning = store
        .planning_entrances(ws, entrances)
        .await
        .expect("planning");
    let id = AccessGrantId::new();
    let requests: Vec<_> = modes
        .iter()
        .map(|m| ModeRequest {
            mode: *m,
            code: None,
        })
        .collect();
    let plan = grant::plan(id, &requests, &planning, now).expect("plan");
    let spec = GrantSpec {
        id,
        workspace_id: ws,
        user_identity_id: UserIdentityId::new(),
        access_grant_key: None,
        name: "Jane's stay".into(),
        reservation_key: None,
        starts_at: now,
        ends_at: Some(now + time::Duration::days(3)),
        entrance_ids: entrances.to_vec(),
        instant_key_id: None,
    };
    let (g, methods, events) = grant::assemble(spec, &plan, Vec::new(), now);
    NewGrant {
        grant: g,
        new_identity: Some(NewUserIdentity {
            user_identity_key: None,
            ..jane()
        }),
        entrances: planning
            .iter()
            .map(|p| (p.entrance_id, p.acs_system_id))
            .collect(),
        methods,
        jobs: plan.jobs,
        events,
        instant_key: None,
    }
}

/// The entrance called `name` in the workspace's access system of `system_type`.
pub async fn entrance_named(
    store: &dyn Store,
    ws: WorkspaceId,
    system_type: &str,
    name: &str,
) -> EntranceId {
    let systems = store
        .list_access_systems(ws, None, &all())
        .await
        .expect("systems")
        .items;
    let s = systems
        .iter()
        .find(|s| s.system_type == system_type)
        .expect("system");
    store
        .list_entrances(ws, Some(s.id), &all())
        .await
        .expect("entrances")
        .items
        .into_iter()
        .find(|e| e.display_name == name)
        .map(|e| e.id)
        .expect("entrance")
}

/// Plans and writes an update as the gateway does (no Keygate-chosen PINs).
pub async fn update_grant(
    store: &dyn Store,
    ws: WorkspaceId,
    id: AccessGrantId,
    change: &keygate_domain::update::GrantChange,
) -> Result<(grant::AccessGrant, Vec<keygate_domain::events::Event>), Error> {
    let before = store.access_grant_with_methods(ws, id).await?;
    let mut wanted = before.0.entrance_ids.clone();
    wanted.extend(change.add.iter().copied());
    let planning = store.planning_entrances(ws, &wanted).await?;
    let plan = keygate_domain::update::plan_update(&before.0, &before.1, change, &planning, now())?;
    store
        .update_access_grant(ws, &before, &plan.finish(&[], now()))
        .await
}

/// The provisioning work of a job (every job these tests make is one).
pub fn prov(j: &crate::Job) -> &keygate_domain::grant::ProvisionJob {
    match &j.work {
        keygate_domain::action::JobWork::Provision(p) => p,
        other => panic!("not a provision job: {other:?}"),
    }
}

fn grant_idem(request_id: &str) -> Idempotency {
    Idempotency {
        request_id: request_id.into(),
        operation: "CreateAccessGrant",
        request_sha256: vec![1; 32],
    }
}

pub async fn grants_are_written_in_one_transaction(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "grants").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let new = new_grant(
        &*store,
        ws,
        &doors,
        &[AccessMethodMode::Card, AccessMethodMode::MobileKey],
    )
    .await;
    let (g, events) = store
        .create_access_grant(ws, &new, None)
        .await
        .expect("create");
    assert_eq!(g.entrance_ids, doors);
    let got = store.get_access_grant(ws, g.id).await.expect("get");
    assert_eq!(got, g, "what create returns is what is stored");
    // Card: one per system; mobile key: one across both.
    assert_eq!(got.requested[0].created_access_method_ids.len(), 2);
    assert_eq!(got.requested[1].created_access_method_ids.len(), 1);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "access_method.created")
            .count(),
        3
    );
    assert_eq!(events[0].event_type, "access_grant.created");
    for m in &new.methods {
        let stored = store.get_access_method(ws, m.id).await.expect("method");
        assert_eq!(&stored, m);
    }
    assert_eq!(store.count_jobs("queued").await.ok(), Some(4));
    // The inline person exists.
    store
        .get_user_identity(ws, g.user_identity_id)
        .await
        .expect("inline identity created");
}

pub async fn grant_lists_filter_and_stay_in_their_workspace(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "a").await;
    let b = seeded_workspace(&*store, "b").await;
    let doors = quick_start_entrances(&*store, a).await;
    let first = new_grant(&*store, a, &doors, &[AccessMethodMode::MobileKey]).await;
    let second = new_grant(&*store, a, &doors[..1], &[AccessMethodMode::Card]).await;
    let (g1, _) = store
        .create_access_grant(a, &first, None)
        .await
        .expect("g1");
    let (g2, _) = store
        .create_access_grant(a, &second, None)
        .await
        .expect("g2");
    let by_door = GrantFilter {
        acs_entrance_id: Some(doors[1]),
        ..Default::default()
    };
    let found = store
        .list_access_grants(a, &by_door, &all())
        .await
        .expect("by door")
        .items;
    assert_eq!(found.iter().map(|g| g.id).collect::<Vec<_>>(), vec![g1.id]);
    let by_user = GrantFilter {
        user_identity_id: Some(g2.user_identity_id),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_access_grants(a, &by_user, &all())
            .await
            .expect("by user")
            .items
            .len(),
        1
    );
    let methods = store
        .list_access_methods(
            a,
            &MethodFilter {
                access_grant_id: Some(g1.id),
                ..Default::default()
            },
            &all(),
        )
        .await
        .expect("methods")
        .items;
    assert_eq!(methods.len(), 1);
    assert_eq!(methods[0].doors.len(), 2);
    // Nothing of A is visible from B.
    assert_not_found(
        store.get_access_grant(b, g1.id).await,
        Resource::AccessGrant,
    );
    assert_not_found(
        store.get_access_method(b, methods[0].id).await,
        Resource::AccessMethod,
    );
    assert!(
        store
            .list_access_grants(b, &GrantFilter::default(), &all())
            .await
            .expect("b")
            .items
            .is_empty()
    );
    assert!(
        store
            .list_access_methods(b, &MethodFilter::default(), &all())
            .await
            .expect("b")
            .items
            .is_empty()
    );
    assert!(
        store
            .list_events(b, &EventFilter::default(), 0, 100)
            .await
            .expect("b events")
            .is_empty()
    );
    let some_event = store
        .list_events(a, &EventFilter::default(), 0, 1)
        .await
        .expect("a events")[0]
        .id;
    assert_not_found(store.get_event(b, some_event).await, Resource::Event);
}

pub async fn idempotent_grant_creates_make_one_grant(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "idem-grants").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let doors = doors.clone();
            tokio::spawn(async move {
                let new = new_grant(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
                store
                    .create_access_grant(ws, &new, Some(&grant_idem("same")))
                    .await
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.expect("join").expect("create").0.id);
    }
    assert_eq!(ids.len(), 1, "one grant for one request_id");
    assert_eq!(
        store
            .list_access_grants(ws, &GrantFilter::default(), &all())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    assert_eq!(
        store.count_jobs("queued").await.ok(),
        Some(2),
        "one set of provider jobs"
    );
    let other = Idempotency {
        request_sha256: vec![2; 32],
        ..grant_idem("same")
    };
    let new = new_grant(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
    assert_reason(
        store.create_access_grant(ws, &new, Some(&other)).await,
        ErrorReason::IdempotencyKeyReused,
    );
}

/// Claims every due job, one claim per access system with due jobs, as workers do.
#[async_trait::async_trait]
pub trait ClaimDue {
    async fn claim_due(
        &self,
        owner: &str,
        lease: std::time::Duration,
        at: time::OffsetDateTime,
    ) -> Result<Vec<crate::Job>, keygate_domain::Error>;
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> ClaimDue for S {
    async fn claim_due(
        &self,
        owner: &str,
        lease: std::time::Duration,
        at: time::OffsetDateTime,
    ) -> Result<Vec<crate::Job>, keygate_domain::Error> {
        let mut jobs = Vec::new();
        for d in self.due_systems(at, 1000).await? {
            let claim = crate::Claim {
                owner,
                workspace_id: d.workspace_id,
                acs_system_id: d.acs_system_id,
                limit: 1000,
                lease,
            };
            jobs.extend(self.claim_jobs(&claim, at).await?.jobs);
        }
        Ok(jobs)
    }
}

pub async fn jobs_are_leased_taken_over_and_fenced(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "jobs").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let new = new_grant(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
    store
        .create_access_grant(ws, &new, None)
        .await
        .expect("create");
    let t0 = now();
    let lease = std::time::Duration::from_secs(30);
    let mine = store.claim_due("worker-a", lease, t0).await.expect("claim");
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().all(|j| j.attempts == 1));
    assert!(
        store
            .claim_due("worker-b", lease, t0)
            .await
            .expect("claim")
            .is_empty(),
        "leased jobs are not handed out twice"
    );
    // worker-a dies; after the lease expires worker-b takes over.
    let later = t0 + time::Duration::seconds(31);
    let taken = store
        .claim_due("worker-b", lease, later)
        .await
        .expect("takeover");
    assert_eq!(taken.len(), 2);
    assert!(taken.iter().all(|j| j.attempts == 2));
    // worker-a comes back: its lease is gone, so its result is refused and nothing changes.
    let granted = |j: &crate::Job| ProvisionResult {
        doors: prov(j)
            .entrance_ids
            .iter()
            .map(|e| (*e, DoorOutcome::Granted))
            .collect(),
        code: None,
        card_encoding_required: false,
        client_session_token: Some("token".into()),
    };
    assert_eq!(
        store
            .complete_provision(&mine[0], &granted(&mine[0]), later)
            .await
            .expect("fenced"),
        None
    );
    assert!(
        !store
            .reschedule_job(&mine[0], later, "x", false, later)
            .await
            .expect("fenced")
    );
    // An ambiguous answer marks the job's pending doors unknown, with the reason.
    assert!(
        store
            .mark_unknown(&taken[1], "timeout", later)
            .await
            .expect("mark")
    );
    let m = store
        .get_access_method(ws, prov(&taken[1]).access_method_id)
        .await
        .expect("method");
    let unknown: Vec<_> = m
        .doors
        .iter()
        .filter(|d| d.acs_system_id == prov(&taken[1]).acs_system_id)
        .collect();
    assert!(
        unknown
            .iter()
            .all(|d| d.state == keygate_domain::grant::DoorState::Unknown
                && d.reason.as_deref() == Some("timeout"))
    );
    assert!(
        !store
            .mark_unknown(&mine[0], "x", later)
            .await
            .expect("fenced"),
        "a stale worker cannot"
    );
    // worker-b reschedules one (a transient failure) and completes the other.
    assert!(
        store
            .reschedule_job(
                &taken[0],
                later + time::Duration::seconds(5),
                "503",
                false,
                later
            )
            .await
            .expect("reschedule")
    );
    assert!(
        store
            .complete_provision(&taken[1], &granted(&taken[1]), later)
            .await
            .expect("complete")
            .is_some()
    );
    assert_eq!(store.count_jobs("done").await.ok(), Some(1));
    // Finished jobs are purged once old enough; queued ones never are.
    assert_eq!(
        store
            .purge_finished_jobs(later - time::Duration::days(1))
            .await
            .ok(),
        Some(0),
        "too recent"
    );
    assert_eq!(
        store
            .purge_finished_jobs(later + time::Duration::days(1))
            .await
            .ok(),
        Some(1)
    );
    assert_eq!(store.count_jobs("done").await.ok(), Some(0));
    assert!(
        store
            .claim_due("worker-c", lease, later)
            .await
            .expect("not due")
            .is_empty(),
        "rescheduled job waits for run_at"
    );
    let due = store
        .claim_due("worker-c", lease, later + time::Duration::seconds(6))
        .await
        .expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 3);
}

/// A claim is fenced by its own token, not by the worker's name: the same process claiming a
/// job again after its lease ran out cannot let the first task call or complete.
pub async fn a_reclaimed_job_is_fenced_even_for_the_same_owner(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "fencing").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let new = new_grant(&*store, ws, &doors[..1], &[AccessMethodMode::MobileKey]).await;
    store
        .create_access_grant(ws, &new, None)
        .await
        .expect("create");
    let t0 = now();
    let lease = std::time::Duration::from_secs(30);
    let due = store.due_systems(t0, 10).await.expect("due");
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!((due[0].workspace_id, due[0].due), (ws, 1));
    let first = store.claim_due("w", lease, t0).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert!(store.lease_valid(&first[0], t0).await.expect("valid"));
    assert!(
        store.due_systems(t0, 10).await.expect("due").is_empty(),
        "a leased job is not due"
    );
    // Renewed while it runs: still held past the first lease.
    let renewed_until = t0 + time::Duration::seconds(60);
    assert_eq!(
        store
            .renew_leases(&first[0].lease_token, renewed_until)
            .await
            .expect("renew"),
        1
    );
    let t31 = t0 + time::Duration::seconds(31);
    assert!(store.lease_valid(&first[0], t31).await.expect("valid"));
    assert!(
        store
            .claim_due("w", lease, t31)
            .await
            .expect("claim")
            .is_empty(),
        "a renewed lease is not taken over"
    );
    // Not renewed any more (the task stalled): the same owner claims it again.
    let t61 = t0 + time::Duration::seconds(61);
    assert!(!store.lease_valid(&first[0], t61).await.expect("valid"));
    let second = store.claim_due("w", lease, t61).await.expect("claim");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].attempts, 2);
    assert_ne!(second[0].lease_token, first[0].lease_token);
    // The stale task: no call, no renewal, no completion, no reschedule.
    assert!(!store.lease_valid(&first[0], t61).await.expect("valid"));
    assert_eq!(
        store
            .renew_leases(&first[0].lease_token, t61 + time::Duration::seconds(30))
            .await
            .expect("renew"),
        0
    );
    let granted = |j: &crate::Job| ProvisionResult {
        doors: prov(j)
            .entrance_ids
            .iter()
            .map(|e| (*e, DoorOutcome::Granted))
            .collect(),
        code: None,
        card_encoding_required: false,
        client_session_token: Some("token".into()),
    };
    assert_eq!(
        store
            .complete_provision(&first[0], &granted(&first[0]), t61)
            .await
            .expect("fenced"),
        None
    );
    assert!(
        !store
            .reschedule_job(&first[0], t61, "x", false, t61)
            .await
            .expect("fenced")
    );
    assert!(!store.bury_job(&first[0], "x", t61).await.expect("fenced"));
    // The current claim completes.
    assert!(store.lease_valid(&second[0], t61).await.expect("valid"));
    assert!(
        store
            .complete_provision(&second[0], &granted(&second[0]), t61)
            .await
            .expect("complete")
            .is_some()
    );
    assert_eq!(store.count_jobs("done").await.ok(), Some(1));
}

/// One job whose payload cannot be read must not hold up the jobs claimed with it.
pub async fn an_undecodable_job_goes_dead_and_the_rest_of_its_claim_runs(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "dead letters").await;
    let doors = quick_start_entrances(&*store, ws).await;
    for _ in 0..3 {
        let new = new_grant(&*store, ws, &doors[..1], &[AccessMethodMode::MobileKey]).await;
        store
            .create_access_grant(ws, &new, None)
            .await
            .expect("create");
    }
    // One job's payload is corrupted (a job written by a newer version, a bad migration...).
    let corrupt = "UPDATE jobs SET payload = '{\"kind\":\"teleport\"}' WHERE job_id = (SELECT MIN(job_id) FROM jobs)";
    match store.pool() {
        crate::StorePool::Postgres(p) => {
            sqlx::query(corrupt).execute(&p).await.expect("corrupt");
        }
        crate::StorePool::Sqlite(p) => {
            sqlx::query(corrupt).execute(&p).await.expect("corrupt");
        }
    }
    let t0 = now();
    let claimed = store
        .claim_jobs(
            &crate::Claim {
                owner: "w",
                workspace_id: ws,
                acs_system_id: prov_system(&*store, ws).await,
                limit: 10,
                lease: std::time::Duration::from_secs(30),
            },
            t0,
        )
        .await
        .expect("claim");
    assert_eq!(claimed.dead, 1);
    assert_eq!(claimed.jobs.len(), 2, "the rest of the claim is returned");
    assert_eq!(store.count_jobs("dead").await.ok(), Some(1));
    assert_eq!(store.count_jobs("running").await.ok(), Some(2));
    assert!(
        store
            .claim_due(
                "w",
                std::time::Duration::from_secs(30),
                t0 + time::Duration::seconds(3600)
            )
            .await
            .expect("claim")
            .iter()
            .all(|j| claimed.jobs.iter().any(|c| c.id == j.id)),
        "the dead job is never claimed again"
    );
}

/// The one access system with due jobs in `ws`.
async fn prov_system(store: &dyn Store, ws: WorkspaceId) -> AccessSystemId {
    store
        .due_systems(now(), 10)
        .await
        .expect("due")
        .into_iter()
        .find(|d| d.workspace_id == ws)
        .expect("a due system")
        .acs_system_id
}

pub async fn provision_outcomes_emit_events_once(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "events").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let new = new_grant(
        &*store,
        ws,
        &doors,
        &[AccessMethodMode::MobileKey, AccessMethodMode::Card],
    )
    .await;
    let (g, created) = store
        .create_access_grant(ws, &new, None)
        .await
        .expect("create");
    let jobs = store
        .claim_due("w", std::time::Duration::from_secs(30), now())
        .await
        .expect("claim");
    assert_eq!(jobs.len(), 4, "mobile key and card, each in two systems");
    let mut emitted = Vec::new();
    for j in &jobs {
        let r = ProvisionResult {
            doors: prov(j)
                .entrance_ids
                .iter()
                .map(|e| (*e, DoorOutcome::Granted))
                .collect(),
            code: None,
            card_encoding_required: prov(j).mode == AccessMethodMode::Card,
            client_session_token: (prov(j).mode == AccessMethodMode::MobileKey)
                .then(|| "t".to_owned()),
        };
        emitted.extend(
            store
                .complete_provision(j, &r, now())
                .await
                .expect("complete")
                .expect("lease held"),
        );
    }
    let count = |t: &str| emitted.iter().filter(|e| e.event_type == t).count();
    assert_eq!(
        count("access_grant.access_granted_to_door"),
        4,
        "2 doors × (mobile key + card)"
    );
    assert_eq!(count("access_method.issued"), 1, "the mobile key");
    assert_eq!(
        count("access_method.card_encoding_required"),
        2,
        "a card per system"
    );
    assert_eq!(count("access_grant.access_granted_to_all_doors"), 1);
    let mobile = store
        .list_access_methods(
            ws,
            &MethodFilter {
                access_grant_id: Some(g.id),
                ..Default::default()
            },
            &all(),
        )
        .await
        .expect("methods")
        .items
        .into_iter()
        .find(|m| m.mode == AccessMethodMode::MobileKey)
        .expect("mobile");
    assert!(mobile.is_issued && mobile.issued_at.is_some());
    assert_eq!(mobile.client_session_token.as_deref(), Some("t"));
    // The log holds exactly what was returned, in order, and filters work.
    let log = store
        .list_events(ws, &EventFilter::default(), 0, 1000)
        .await
        .expect("log");
    assert_eq!(log.len(), created.len() + emitted.len());
    let after = created.last().expect("created events").seq;
    let tail = store
        .list_events(ws, &EventFilter::default(), after, 1000)
        .await
        .expect("tail");
    assert_eq!(
        tail, emitted,
        "resuming after a cursor yields exactly the later events"
    );
    let only = EventFilter {
        event_types: vec![
            "access_method.issued".into(),
            "access_grant.access_granted_to_all_doors".into(),
        ],
        ..Default::default()
    };
    assert_eq!(
        store
            .list_events(ws, &only, 0, 1000)
            .await
            .expect("filtered")
            .len(),
        2
    );
    let ev = store.get_event(ws, tail[0].id).await.expect("get event");
    assert_eq!(ev, tail[0]);
}

pub async fn event_sequence_follows_commit_order(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "seq").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let doors = doors.clone();
            tokio::spawn(async move {
                let new = new_grant(&*store, ws, &doors, &[AccessMethodMode::MobileKey]).await;
                store
                    .create_access_grant(ws, &new, None)
                    .await
                    .map(|(_, e)| e.len())
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("join").expect("create");
    }
    let log = store
        .list_events(ws, &EventFilter::default(), 0, 10_000)
        .await
        .expect("log");
    let seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
    let want: Vec<i64> = (1..=i64::try_from(total).expect("small")).collect();
    assert_eq!(seqs, want, "gapless and unique per workspace");
    // Events of one grant are contiguous: each transaction appends its batch under the counter lock.
    for w in log.windows(2) {
        if w[1].event_type == "access_grant.created" {
            continue;
        }
        assert_eq!(w[0].access_grant_id, w[1].access_grant_id);
    }
}

pub async fn deletes_release_what_they_held(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "deletes").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let modes = [AccessMethodMode::Card, AccessMethodMode::MobileKey];
    let mut new = new_grant(&*store, ws, &doors, &modes).await;
    new.grant.access_grant_key = Some("booking-1".into());
    let (g, _) = store
        .create_access_grant(ws, &new, None)
        .await
        .expect("create");
    // A deleted method leaves the grant's lists.
    let card = g.requested[0].created_access_method_ids[0];
    store
        .delete_access_method(ws, card, now())
        .await
        .expect("delete method");
    let after = store.get_access_grant(ws, g.id).await.expect("get");
    assert!(
        !after.access_method_ids.contains(&card),
        "{:?}",
        after.access_method_ids
    );
    assert_eq!(after.access_method_ids.len(), 2);
    // A deleted grant frees its access_grant_key.
    store
        .delete_access_grant(ws, g.id, now())
        .await
        .expect("delete grant");
    let mut again = new_grant(&*store, ws, &doors, &modes).await;
    again.grant.access_grant_key = Some("booking-1".into());
    store
        .create_access_grant(ws, &again, None)
        .await
        .expect("the key is free again");
    // Retention: events older than the cut are gone, newer ones stay.
    let before = store
        .list_events(ws, &EventFilter::default(), 0, 1000)
        .await
        .expect("events");
    assert!(!before.is_empty());
    assert_eq!(
        store
            .purge_events(now() - time::Duration::hours(1))
            .await
            .ok(),
        Some(0)
    );
    let purged = store
        .purge_events(now() + time::Duration::seconds(1))
        .await
        .expect("purge");
    assert!(purged >= before.len() as u64);
    let left = store
        .list_events(ws, &EventFilter::default(), 0, 1000)
        .await
        .expect("events");
    assert!(left.is_empty());
}

/// A grant of `modes` over `doors` for the existing person `person`, with the grant's Instant
/// Key when it has a mobile key (as `CreateAccessGrant` writes one).
async fn grant_for(
    store: &dyn Store,
    ws: WorkspaceId,
    person: UserIdentityId,
    doors: &[EntranceId],
    modes: &[AccessMethodMode],
) -> NewGrant {
    let mut new = new_grant(store, ws, doors, modes).await;
    new.new_identity = None;
    new.grant.user_identity_id = person;
    for m in &mut new.methods {
        m.user_identity_id = person;
    }
    if modes.contains(&AccessMethodMode::MobileKey) {
        let key = keygate_domain::instant_key::InstantKey {
            id: keygate_domain::ids::InstantKeyId::new(),
            workspace_id: ws,
            user_identity_id: person,
            access_grant_id: Some(new.grant.id),
            created_at: now(),
            expires_at: new.grant.ends_at,
            max_use_count: 1,
            use_count: 0,
            revoked_at: None,
        };
        new.grant.instant_key_id = Some(key.id);
        for m in new
            .methods
            .iter_mut()
            .filter(|m| m.mode == AccessMethodMode::MobileKey)
        {
            m.instant_key_id = Some(key.id);
        }
        let token = format!("{:064x}", key.id.as_uuid().as_u128());
        new.instant_key = Some((key, token));
    }
    new
}

pub async fn deleting_a_person_removes_their_access(store: Arc<dyn Store>) {
    use keygate_domain::action::JobWork;
    let ws = seeded_workspace(&*store, "person-delete").await;
    let other = seeded_workspace(&*store, "person-delete-other").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let person = store
        .create_user_identity(ws, UserIdentityId::new(), &jane(), None, now())
        .await
        .expect("person")
        .id;
    // Two grants (cards and a mobile key with its Instant Key; a mobile key alone), a key of
    // no grant, and a linked access system user.
    let both = [AccessMethodMode::Card, AccessMethodMode::MobileKey];
    let (g1, _) = store
        .create_access_grant(
            ws,
            &grant_for(&*store, ws, person, &doors, &both).await,
            None,
        )
        .await
        .expect("first grant");
    let (g2, _) = store
        .create_access_grant(
            ws,
            &grant_for(
                &*store,
                ws,
                person,
                &doors[..1],
                &[AccessMethodMode::MobileKey],
            )
            .await,
            None,
        )
        .await
        .expect("second grant");
    let loose = keygate_domain::instant_key::InstantKey {
        id: keygate_domain::ids::InstantKeyId::new(),
        workspace_id: ws,
        user_identity_id: person,
        access_grant_id: None,
        created_at: now(),
        expires_at: None,
        max_use_count: 1,
        use_count: 0,
        revoked_at: None,
    };
    let token = format!("{:064x}", loose.id.as_uuid().as_u128());
    store
        .create_instant_key(ws, &loose, &token, None)
        .await
        .expect("key");
    let system = store
        .list_access_systems(ws, None, &all())
        .await
        .expect("systems")
        .items[0]
        .id;
    let acs_user = keygate_domain::acs::AcsUser {
        id: keygate_domain::ids::AcsUserId::new(),
        workspace_id: ws,
        acs_system_id: system,
        full_name: "Jane Doe".into(),
        email_address: None,
        phone_number: None,
        access_starts_at: None,
        access_ends_at: None,
        user_identity_id: None,
        is_suspended: false,
        access_group_ids: Vec::new(),
        created_at: now(),
    };
    store
        .create_acs_user(ws, &acs_user, None)
        .await
        .expect("acs user");
    store
        .link_acs_user(ws, acs_user.id, person)
        .await
        .expect("link");
    let methods: Vec<_> = [&g1, &g2]
        .iter()
        .flat_map(|g| g.access_method_ids.clone())
        .collect();
    assert_eq!(methods.len(), 4, "two cards and two mobile keys");

    // Another workspace cannot delete (or even see) the person, and changes nothing.
    assert_not_found(
        store.delete_user_identity(other, person, now()).await,
        Resource::UserIdentity,
    );
    store
        .get_user_identity(ws, person)
        .await
        .expect("untouched");
    store.get_access_grant(ws, g1.id).await.expect("untouched");

    let queued_before = store.count_jobs("queued").await.expect("count");
    let (summary, events) = store
        .delete_user_identity(ws, person, now())
        .await
        .expect("delete");
    assert_eq!(
        summary,
        keygate_domain::model::IdentityDeleted {
            grants_deleted: 2,
            instant_keys_revoked: 3,
            acs_users_unlinked: 1,
        }
    );

    // The person, their grants and their methods are gone.
    assert_not_found(
        store.get_user_identity(ws, person).await,
        Resource::UserIdentity,
    );
    for g in [&g1, &g2] {
        assert_not_found(
            store.get_access_grant(ws, g.id).await,
            Resource::AccessGrant,
        );
    }
    for m in &methods {
        assert_not_found(
            store.get_access_method(ws, *m).await,
            Resource::AccessMethod,
        );
    }
    let listed = store
        .list_access_grants(
            ws,
            &GrantFilter {
                user_identity_id: Some(person),
                ..Default::default()
            },
            &all(),
        )
        .await
        .expect("list");
    assert!(listed.items.is_empty());
    // Every Instant Key of theirs is revoked.
    let keys = store
        .list_instant_keys(ws, Some(person), &all())
        .await
        .expect("keys")
        .items;
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.revoked_at.is_some()), "{keys:?}");
    // Their access system user stays, unlinked.
    assert_eq!(
        store
            .get_acs_user(ws, acs_user.id)
            .await
            .expect("acs user")
            .user_identity_id,
        None
    );
    // Revocation follows as jobs: one per (method, access system) of every door.
    assert_eq!(
        store.count_jobs("queued").await.expect("count") - queued_before,
        5,
        "cards: 2 methods in 1 system each; mobile keys: 2 systems, then 1"
    );
    let mut revoked_methods = HashSet::new();
    for system in store
        .list_access_systems(ws, None, &all())
        .await
        .expect("systems")
        .items
    {
        let claimed = store
            .claim_jobs(
                &crate::Claim {
                    owner: "deleter",
                    workspace_id: ws,
                    acs_system_id: system.id,
                    limit: 100,
                    lease: std::time::Duration::from_secs(30),
                },
                now(),
            )
            .await
            .expect("claim");
        for j in claimed.jobs {
            if let JobWork::Revoke(r) = &j.work {
                revoked_methods.insert(r.access_method_id);
            }
        }
    }
    assert_eq!(
        revoked_methods,
        methods.iter().copied().collect::<HashSet<_>>(),
        "every method's revocation is queued"
    );
    // The events, in the same transaction, `user_identity.deleted` last.
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let n = |t: &str| types.iter().filter(|x| **x == t).count();
    assert_eq!(n("access_method.deleted"), 4, "{types:?}");
    assert_eq!(n("access_grant.deleted"), 2, "{types:?}");
    assert_eq!(n("instant_key.revoked"), 3, "{types:?}");
    assert_eq!(types.last(), Some(&"user_identity.deleted"), "{types:?}");
    assert!(events.iter().all(|e| e.user_identity_id == Some(person)));
    let logged = store
        .list_events(
            ws,
            &EventFilter {
                event_types: vec!["user_identity.deleted".into()],
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .expect("events");
    assert_eq!(logged.len(), 1, "the log holds what the delete returned");

    // Nothing new can be made for them, and deleting again is NOT_FOUND.
    let late = grant_for(&*store, ws, person, &doors, &both).await;
    assert_not_found(
        store.create_access_grant(ws, &late, None).await,
        Resource::UserIdentity,
    );
    let late_key = keygate_domain::instant_key::InstantKey {
        id: keygate_domain::ids::InstantKeyId::new(),
        ..loose
    };
    assert_not_found(
        store
            .create_instant_key(ws, &late_key, &format!("{:064x}", 7), None)
            .await,
        Resource::UserIdentity,
    );
    assert_not_found(
        store.delete_user_identity(ws, person, now()).await,
        Resource::UserIdentity,
    );
}

/// Grants created while their person is being deleted either fail `NOT_FOUND` or are deleted
/// with the person: none survives.
pub async fn a_grant_racing_its_persons_delete_does_not_survive(store: Arc<dyn Store>) {
    let ws = seeded_workspace(&*store, "person-race").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let person = store
        .create_user_identity(ws, UserIdentityId::new(), &jane(), None, now())
        .await
        .expect("person")
        .id;
    // A grant that `DeleteAccessGrant` deletes at the same time as the person: whichever goes
    // first, the person's delete succeeds. (Timing decides the interleaving; this does not
    // force the one where the person's delete waits on the grant's lock.)
    let (doomed, _) = store
        .create_access_grant(
            ws,
            &grant_for(&*store, ws, person, &doors[..1], &[AccessMethodMode::Card]).await,
            None,
        )
        .await
        .expect("grant");
    let single = {
        let store = store.clone();
        tokio::spawn(async move { store.delete_access_grant(ws, doomed.id, now()).await })
    };
    let mut creates = Vec::new();
    for _ in 0..6 {
        let new = grant_for(&*store, ws, person, &doors[..1], &[AccessMethodMode::Card]).await;
        let store = store.clone();
        creates.push(tokio::spawn(async move {
            store.create_access_grant(ws, &new, None).await
        }));
    }
    tokio::task::yield_now().await;
    store
        .delete_user_identity(ws, person, now())
        .await
        .expect("delete");
    match single.await.expect("task") {
        Ok(_) => {}
        Err(e) => assert!(
            matches!(
                e,
                Error::NotFound {
                    resource: Resource::AccessGrant,
                    ..
                }
            ),
            "{e}"
        ),
    }
    for c in creates {
        match c.await.expect("task") {
            Ok((g, _)) => assert_not_found(
                store.get_access_grant(ws, g.id).await,
                Resource::AccessGrant,
            ),
            Err(e) => assert!(
                matches!(
                    e,
                    Error::NotFound {
                        resource: Resource::UserIdentity,
                        ..
                    }
                ),
                "{e}"
            ),
        }
    }
    let left = store
        .list_access_grants(
            ws,
            &GrantFilter {
                user_identity_id: Some(person),
                ..Default::default()
            },
            &all(),
        )
        .await
        .expect("list");
    assert!(left.items.is_empty(), "{:?}", left.items);
}
