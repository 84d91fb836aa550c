//! The access system user store on SQLite and on the real PostgreSQL: tenancy, idempotent
//! creates, memberships, links (one identity per user, unlinked when the identity goes), and
//! credentials that follow the access grant implementing them.

use std::sync::Arc;

use keygate_domain::acs::{AcsCredential, AcsUser, AcsUserFilter, CredentialFilter};
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::ids::{AcsCredentialId, AcsUserId, UserIdentityId};
use keygate_domain::model::{NewUserIdentity, now};
use keygate_domain::page::PageRequest;
use keygate_domain::{Error, ErrorReason, Resource};
use keygate_store::conformance::{entrance_named, new_grant, seeded_workspace};
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
    users_are_tenant_scoped_and_idempotent,
    memberships_and_links,
    credentials_follow_their_grant,
    unlinking_a_user,
);

fn page() -> PageRequest {
    PageRequest {
        after: None,
        limit: 500,
    }
}

fn not_found<T: std::fmt::Debug>(r: Result<T, Error>, resource: Resource) {
    match r {
        Err(Error::NotFound { resource: r, .. }) => assert_eq!(r, resource),
        other => panic!("expected NotFound({resource:?}), got {other:?}"),
    }
}

async fn salto_ks(
    store: &dyn Store,
    ws: keygate_domain::ids::WorkspaceId,
) -> keygate_domain::model::AccessSystem {
    store
        .list_access_systems(ws, Some("salto_ks_site"), &page())
        .await
        .expect("systems")
        .items
        .into_iter()
        .next()
        .expect("salto ks")
}

fn user(
    ws: keygate_domain::ids::WorkspaceId,
    system: keygate_domain::ids::AccessSystemId,
) -> AcsUser {
    AcsUser {
        id: AcsUserId::new(),
        workspace_id: ws,
        acs_system_id: system,
        full_name: "Jane Doe".into(),
        email_address: Some("jane.doe@example.com".into()),
        phone_number: None,
        access_starts_at: Some(now()),
        access_ends_at: Some(now() + time::Duration::days(3)),
        user_identity_id: None,
        is_suspended: false,
        access_group_ids: Vec::new(),
        created_at: now(),
    }
}

async fn identity(store: &dyn Store, ws: keygate_domain::ids::WorkspaceId) -> UserIdentityId {
    store
        .create_user_identity(
            ws,
            UserIdentityId::new(),
            &NewUserIdentity {
                user_identity_key: None,
                full_name: "Jane Doe".into(),
                email_address: None,
                phone_number: None,
            },
            None,
            now(),
        )
        .await
        .expect("identity")
        .id
}

async fn users_are_tenant_scoped_and_idempotent(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "A").await;
    let b = seeded_workspace(&*store, "B").await;
    let system = salto_ks(&*store, a).await;
    let idem = Idempotency {
        request_id: "u-1".into(),
        operation: "CreateAcsUser",
        request_sha256: vec![1; 32],
    };
    let jane = user(a, system.id);
    let created = store
        .create_acs_user(a, &jane, Some(&idem))
        .await
        .expect("create");
    assert_eq!(created, jane);
    // A replay returns the first user, whatever the new one would have been.
    let replay = store
        .create_acs_user(a, &user(a, system.id), Some(&idem))
        .await
        .expect("replay");
    assert_eq!(replay.id, jane.id);
    let reused = store
        .create_acs_user(
            a,
            &user(a, system.id),
            Some(&Idempotency {
                request_sha256: vec![2; 32],
                ..idem.clone()
            }),
        )
        .await;
    assert_eq!(
        reused.err().map(|e| e.reason()),
        Some(ErrorReason::IdempotencyKeyReused)
    );
    // Another workspace's system cannot hold a user; another workspace cannot see one.
    not_found(
        store.create_acs_user(b, &user(b, system.id), None).await,
        Resource::AccessSystem,
    );
    not_found(store.get_acs_user(b, jane.id).await, Resource::AcsUser);
    assert!(
        store
            .list_acs_users(b, &AcsUserFilter::default(), &page())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    let mine = store
        .list_acs_users(
            a,
            &AcsUserFilter {
                acs_system_id: Some(system.id),
                ..Default::default()
            },
            &page(),
        )
        .await
        .expect("list");
    assert_eq!(mine.items.len(), 1);
    not_found(
        store.delete_acs_user(b, jane.id, now()).await,
        Resource::AcsUser,
    );
    store
        .delete_acs_user(a, jane.id, now())
        .await
        .expect("delete");
    not_found(store.get_acs_user(a, jane.id).await, Resource::AcsUser);
    not_found(
        store.delete_acs_user(a, jane.id, now()).await,
        Resource::AcsUser,
    );
    assert!(
        store
            .list_acs_users(a, &AcsUserFilter::default(), &page())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

async fn memberships_and_links(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "A").await;
    let b = seeded_workspace(&*store, "B").await;
    let system = salto_ks(&*store, a).await;
    let groups = store
        .list_access_groups(a, Some(system.id), &page())
        .await
        .expect("groups")
        .items;
    let jane = store
        .create_acs_user(a, &user(a, system.id), None)
        .await
        .expect("create");
    for _ in 0..2 {
        let u = store
            .set_access_group_member(a, jane.id, groups[0].id, true, now())
            .await
            .expect("add");
        assert_eq!(u.access_group_ids, vec![groups[0].id]);
    }
    let g = store
        .get_access_group(a, groups[0].id)
        .await
        .expect("group");
    assert_eq!(g.entrance_ids.len(), groups[0].entrance_ids.len());
    not_found(
        store.get_access_group(b, groups[0].id).await,
        Resource::AccessGroup,
    );
    not_found(
        store
            .set_access_group_member(b, jane.id, groups[0].id, true, now())
            .await,
        Resource::AcsUser,
    );
    let u = store
        .set_access_group_member(a, jane.id, groups[0].id, false, now())
        .await
        .expect("remove");
    assert!(u.access_group_ids.is_empty());

    let first = identity(&*store, a).await;
    let second = identity(&*store, a).await;
    not_found(
        store.link_acs_user(b, jane.id, first).await,
        Resource::UserIdentity,
    );
    store.link_acs_user(a, jane.id, first).await.expect("link");
    store
        .link_acs_user(a, jane.id, first)
        .await
        .expect("again: nothing changes");
    assert_eq!(
        store
            .link_acs_user(a, jane.id, second)
            .await
            .err()
            .map(|e| e.reason()),
        Some(ErrorReason::AcsUserAlreadyLinked)
    );
    assert_eq!(
        store
            .linked_acs_users(a, &[first, second])
            .await
            .expect("links"),
        vec![(first, jane.id)]
    );
    assert!(
        store
            .linked_acs_users(b, &[first])
            .await
            .expect("links")
            .is_empty()
    );
    // Deleting the identity unlinks its users.
    store
        .delete_user_identity(a, first, keygate_domain::model::now())
        .await
        .expect("delete");
    assert_eq!(
        store
            .get_acs_user(a, jane.id)
            .await
            .expect("user")
            .user_identity_id,
        None
    );
    store
        .link_acs_user(a, jane.id, second)
        .await
        .expect("link to another now");
}

async fn credentials_follow_their_grant(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "A").await;
    let b = seeded_workspace(&*store, "B").await;
    let room = entrance_named(&*store, a, "virtual_visionline", "Room 301").await;
    let new = new_grant(&*store, a, &[room], &[AccessMethodMode::MobileKey]).await;
    let (g, _) = store
        .create_access_grant(a, &new, None)
        .await
        .expect("grant");
    let system = store
        .get_entrance(a, room)
        .await
        .expect("room")
        .acs_system_id;
    let owner = store
        .create_acs_user(a, &user(a, system), None)
        .await
        .expect("user");
    let c = AcsCredential {
        id: AcsCredentialId::new(),
        workspace_id: a,
        acs_user_id: owner.id,
        acs_system_id: system,
        access_grant_id: g.id,
        access_method_id: g.access_method_ids[0],
        created_at: g.created_at,
        starts_at: g.starts_at,
        ends_at: g.ends_at,
    };
    assert_eq!(store.create_acs_credential(a, &c).await.expect("map"), c);
    // One credential per grant: a second mapping returns the first.
    let again = store
        .create_acs_credential(
            a,
            &AcsCredential {
                id: AcsCredentialId::new(),
                ..c.clone()
            },
        )
        .await
        .expect("map again");
    assert_eq!(again.id, c.id);
    assert_eq!(store.get_acs_credential(a, c.id).await.expect("get"), c);
    not_found(
        store.get_acs_credential(b, c.id).await,
        Resource::Credential,
    );
    let by_user = CredentialFilter {
        acs_user_id: Some(owner.id),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_acs_credentials(a, &by_user, &page())
            .await
            .expect("list")
            .items,
        vec![c.clone()]
    );
    assert!(
        store
            .list_acs_credentials(b, &CredentialFilter::default(), &page())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    // The grant's delete deletes the credential; the mapping stays for DeleteAcsUser.
    store
        .delete_access_grant(a, g.id, now())
        .await
        .expect("delete grant");
    not_found(
        store.get_acs_credential(a, c.id).await,
        Resource::Credential,
    );
    assert!(
        store
            .list_acs_credentials(a, &by_user, &page())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert_eq!(
        store
            .all_acs_credentials_of(a, owner.id)
            .await
            .expect("all"),
        vec![c.clone()]
    );
    assert_eq!(
        store
            .acs_credential_of_grant(a, g.id)
            .await
            .expect("of grant"),
        Some(c)
    );
    // A deleted user gets no new credential.
    store
        .delete_acs_user(a, owner.id, now())
        .await
        .expect("delete user");
    let other = new_grant(&*store, a, &[room], &[AccessMethodMode::MobileKey]).await;
    let (g2, _) = store
        .create_access_grant(a, &other, None)
        .await
        .expect("grant");
    not_found(
        store
            .create_acs_credential(
                a,
                &AcsCredential {
                    id: AcsCredentialId::new(),
                    access_grant_id: g2.id,
                    access_method_id: g2.access_method_ids[0],
                    ..store
                        .all_acs_credentials_of(a, owner.id)
                        .await
                        .expect("all")[0]
                        .clone()
                },
            )
            .await,
        Resource::AcsUser,
    );
}

async fn unlinking_a_user(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "A").await;
    let b = seeded_workspace(&*store, "B").await;
    let system = salto_ks(&*store, a).await;
    let jane = store
        .create_acs_user(a, &user(a, system.id), None)
        .await
        .expect("create");
    let first = identity(&*store, a).await;
    let second = identity(&*store, a).await;
    store.link_acs_user(a, jane.id, first).await.expect("link");
    // Another workspace sees neither the identity nor the user.
    not_found(
        store.unlink_acs_user(b, jane.id, first).await,
        Resource::UserIdentity,
    );
    let in_b = identity(&*store, b).await;
    not_found(
        store.unlink_acs_user(b, jane.id, in_b).await,
        Resource::AcsUser,
    );
    // Linked to another identity: refused, the link stays.
    assert_eq!(
        store
            .unlink_acs_user(a, jane.id, second)
            .await
            .err()
            .map(|e| e.reason()),
        Some(ErrorReason::AcsUserNotLinked)
    );
    assert_eq!(
        store
            .get_acs_user(a, jane.id)
            .await
            .expect("user")
            .user_identity_id,
        Some(first)
    );
    store
        .unlink_acs_user(a, jane.id, first)
        .await
        .expect("unlink");
    assert_eq!(
        store
            .get_acs_user(a, jane.id)
            .await
            .expect("user")
            .user_identity_id,
        None
    );
    assert!(
        store
            .linked_acs_users(a, &[first])
            .await
            .expect("links")
            .is_empty()
    );
    store
        .unlink_acs_user(a, jane.id, first)
        .await
        .expect("again: nothing changes");
    // Free to be linked to anyone now.
    store
        .link_acs_user(a, jane.id, second)
        .await
        .expect("link to another");
}
