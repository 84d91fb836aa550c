//! The main use cases through `keygate-app` alone: the SQLite store, an in-process cache, no
//! gRPC. What an adapter would do is only the building of the typed command.

mod common;

use std::sync::Arc;

use keygate_app::App;
use keygate_app::grants::{CreateGrant, Grantee, UpdateGrant};
use keygate_app::idempotency;
use keygate_app::instant_keys::GenerateKey;
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::grant::ModeRequest;
use keygate_domain::ids::{EntranceId, WorkspaceId};
use keygate_domain::model::{NewUserIdentity, now};
use keygate_domain::update::{EndsAt, GrantChange};
use keygate_domain::{Error, ErrorReason};
use keygate_store::Store;
use keygate_store::conformance::{quick_start_entrances, seeded_workspace};
use keygate_store::testdb::TestDb;

struct Fixture {
    app: App,
    ws: WorkspaceId,
    doors: Vec<EntranceId>,
    _db: TestDb,
}

async fn fixture() -> Fixture {
    let db = TestDb::sqlite().await;
    let store: Arc<dyn Store> = db.store.clone();
    let ws = seeded_workspace(&*store, "app").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let app = common::app(store, Default::default());
    Fixture {
        app,
        ws,
        doors,
        _db: db,
    }
}

fn jane() -> Grantee {
    Grantee::New(NewUserIdentity {
        user_identity_key: None,
        full_name: "Jane Doe".into(),
        email_address: Some("jane@example.com".into()),
        phone_number: None,
    })
}

fn create(doors: &[EntranceId], request_id: Option<&str>, body: &[u8]) -> CreateGrant {
    CreateGrant {
        idem: idempotency::claim("CreateAccessGrant", request_id.map(str::to_owned), body),
        name: None,
        access_grant_key: None,
        reservation_key: None,
        grantee: jane(),
        entrance_ids: doors.to_vec(),
        modes: vec![
            ModeRequest {
                mode: AccessMethodMode::Card,
                code: None,
            },
            ModeRequest {
                mode: AccessMethodMode::MobileKey,
                code: None,
            },
        ],
        starts_at: None,
        ends_at: None,
        only_system: None,
    }
}

#[tokio::test]
async fn create_grant_with_an_inline_identity_queues_jobs_and_an_instant_key() {
    let f = fixture().await;
    let g = f
        .app
        .create_access_grant(f.ws, create(&f.doors, None, b"a"))
        .await
        .expect("create");
    assert_eq!(g.entrance_ids, f.doors);
    assert!(!g.access_method_ids.is_empty());
    assert!(
        g.instant_key_id.is_some(),
        "a mobile key brings an Instant Key"
    );
    let person = f
        .app
        .store
        .get_user_identity(f.ws, g.user_identity_id)
        .await
        .expect("the inline person was created");
    assert_eq!(person.full_name, "Jane Doe");
    assert_eq!(g.name, "Access for Jane Doe");
    let queued = f.app.store.count_jobs("queued").await.expect("jobs");
    assert!(queued >= 2, "one job per (method, system); got {queued}");
    // The read goes through the status cache and agrees with the store.
    let read = f.app.get_access_grant(f.ws, g.id).await.expect("get");
    assert_eq!(read, g);
}

#[tokio::test]
async fn a_replay_returns_the_first_grant_and_a_changed_body_is_refused() {
    let f = fixture().await;
    let first = f
        .app
        .create_access_grant(f.ws, create(&f.doors, Some("req-1"), b"body"))
        .await
        .expect("create");
    let again = f
        .app
        .create_access_grant(f.ws, create(&f.doors, Some("req-1"), b"body"))
        .await
        .expect("replay");
    assert_eq!(again.id, first.id);
    let other = f
        .app
        .create_access_grant(f.ws, create(&f.doors[..1], Some("req-1"), b"other body"))
        .await;
    match other {
        Err(Error::AlreadyExists { reason, .. }) => {
            assert_eq!(reason, ErrorReason::IdempotencyKeyReused)
        }
        other => panic!("expected IDEMPOTENCY_KEY_REUSED, got {other:?}"),
    }
}

#[tokio::test]
async fn update_sets_new_times_and_removes_a_door() {
    let f = fixture().await;
    let g = f
        .app
        .create_access_grant(f.ws, create(&f.doors, None, b"a"))
        .await
        .expect("create");
    let ends = now() + time::Duration::days(3);
    let updated = f
        .app
        .update_access_grant(
            f.ws,
            UpdateGrant {
                id: g.id,
                change: GrantChange {
                    starts_at: None,
                    ends_at: EndsAt::Set(ends),
                    add: Vec::new(),
                    remove: vec![f.doors[1]],
                    name: Some("Late checkout".into()),
                },
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.name, "Late checkout");
    assert_eq!(
        updated.ends_at.map(|t| t.unix_timestamp()),
        Some(ends.unix_timestamp())
    );
    assert_eq!(updated.entrance_ids, vec![f.doors[0]]);
    // The tracker evicted the cached copy: a read after the update sees it.
    let read = f.app.get_access_grant(f.ws, g.id).await.expect("get");
    assert_eq!(read.name, "Late checkout");
}

#[tokio::test]
async fn delete_makes_the_grant_and_its_methods_not_found() {
    let f = fixture().await;
    let g = f
        .app
        .create_access_grant(f.ws, create(&f.doors, None, b"a"))
        .await
        .expect("create");
    // Warm the cache so the delete must evict it.
    f.app.get_access_grant(f.ws, g.id).await.expect("get");
    f.app.delete_access_grant(f.ws, g.id).await.expect("delete");
    assert!(matches!(
        f.app.get_access_grant(f.ws, g.id).await,
        Err(Error::NotFound { .. })
    ));
    for m in &g.access_method_ids {
        assert!(matches!(
            f.app.get_access_method(f.ws, *m).await,
            Err(Error::NotFound { .. })
        ));
    }
    // Another workspace's ids are NOT_FOUND too.
    let other = seeded_workspace(&*f.app.store, "other").await;
    let g2 = f
        .app
        .create_access_grant(f.ws, create(&f.doors, None, b"b"))
        .await
        .expect("create");
    assert!(matches!(
        f.app.get_access_grant(other, g2.id).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn generate_instant_key_for_a_person_and_replay_it() {
    let f = fixture().await;
    let g = f
        .app
        .create_access_grant(f.ws, create(&f.doors, None, b"a"))
        .await
        .expect("create");
    let cmd = GenerateKey {
        idem: idempotency::claim("GenerateInstantKey", Some("ik-1".into()), b"k"),
        user_identity_id: g.user_identity_id,
        max_use_count: 2,
        expires_at: None,
    };
    let (view, url) = f
        .app
        .generate_instant_key(f.ws, cmd.clone())
        .await
        .expect("generate");
    let key = view.key;
    assert_eq!(key.user_identity_id, g.user_identity_id);
    assert_eq!(key.max_use_count, 2);
    assert!(url.starts_with("http://keygate.test/ik/"), "{url}");
    assert!(key.expires_at.is_some_and(|e| e > now()));
    let (again, again_url) = f.app.generate_instant_key(f.ws, cmd).await.expect("replay");
    assert_eq!(again.key.id, key.id);
    assert_eq!(again_url, url);
    // Nobody to give it to: NOT_FOUND.
    let missing = GenerateKey {
        idem: None,
        user_identity_id: keygate_domain::ids::UserIdentityId::new(),
        max_use_count: 1,
        expires_at: None,
    };
    assert!(matches!(
        f.app.generate_instant_key(f.ws, missing).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn delete_identity_removes_the_person_and_their_access() {
    use keygate_app::instant_keys::Refused;
    use keygate_domain::instant_key::Inactive;
    let f = fixture().await;
    let g = f
        .app
        .create_access_grant(f.ws, create(&f.doors, None, b"a"))
        .await
        .expect("create");
    let key_id = g.instant_key_id.expect("the mobile key's Instant Key");
    let url = f.app.links.url(key_id).expect("url");
    let token = url.rsplit_once("/ik/").expect("a link").1;
    // Read through the status cache first, so a stale copy would show.
    f.app.get_access_grant(f.ws, g.id).await.expect("cached");
    f.app
        .view_instant_key(token, None)
        .await
        .expect("the page opens");
    let deleted = f
        .app
        .delete_user_identity(f.ws, g.user_identity_id)
        .await
        .expect("delete");
    assert_eq!(deleted.grants_deleted, 1);
    assert_eq!(deleted.instant_keys_revoked, 1);
    assert_eq!(deleted.acs_users_unlinked, 0);
    assert!(matches!(
        f.app
            .store
            .get_user_identity(f.ws, g.user_identity_id)
            .await,
        Err(Error::NotFound { .. })
    ));
    // The grant is gone from the cache too, and so are its methods.
    assert!(matches!(
        f.app.get_access_grant(f.ws, g.id).await,
        Err(Error::NotFound { .. })
    ));
    for m in &g.access_method_ids {
        assert!(matches!(
            f.app.store.get_access_method(f.ws, *m).await,
            Err(Error::NotFound { .. })
        ));
    }
    // The Instant Key page refuses, and so does an unlock of their door.
    assert!(matches!(
        f.app.view_instant_key(token, None).await,
        Err(Refused::Inactive(Inactive::Revoked))
    ));
    assert!(matches!(
        f.app.claim_instant_key(token, None).await,
        Err(Refused::Inactive(Inactive::Revoked))
    ));
    assert!(matches!(
        f.app
            .request_unlock(
                f.ws,
                g.user_identity_id,
                Some(g.id),
                f.doors[0],
                Some(key_id)
            )
            .await,
        Err(Refused::NotFound)
    ));
    // No new grant for them.
    let mut again = create(&f.doors, None, b"b");
    again.grantee = Grantee::Existing(g.user_identity_id);
    assert!(matches!(
        f.app.create_access_grant(f.ws, again).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        f.app.delete_user_identity(f.ws, g.user_identity_id).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_link_is_claimed_by_one_device_and_unlocks_only_the_persons_doors() {
    use keygate_app::instant_keys::Refused;
    use keygate_domain::instant_key::Inactive;
    let f = fixture().await;
    let g = f
        .app
        .create_access_grant(f.ws, create(&f.doors, None, b"a"))
        .await
        .expect("create");
    let key_id = g
        .instant_key_id
        .expect("a mobile key brings an Instant Key");
    let url = f.app.links.url(key_id).expect("url");
    let token = url.rsplit_once("/ik/").expect("a link").1;
    // Viewing the link (a previewer, a mail scanner, the phone before it acts) writes nothing.
    for _ in 0..3 {
        let seen = f.app.view_instant_key(token, None).await.expect("view");
        assert_eq!(seen.key.id, key_id);
        assert!(!seen.claimed);
    }
    let stored = f
        .app
        .get_instant_key(f.ws, keygate_app::instant_keys::KeyLookup::Id(key_id))
        .await
        .expect("get");
    assert_eq!(stored.key.use_count, 0, "a view claims nothing");
    // A first device claims the key and is given a device secret; it claims again with it.
    let first = f.app.claim_instant_key(token, None).await.expect("claim");
    assert_eq!(first.key.id, key_id);
    let device = first.new_device.expect("a new device secret");
    let again = f
        .app
        .claim_instant_key(token, Some(&device))
        .await
        .expect("the same device claims again");
    assert!(again.new_device.is_none());
    assert!(
        f.app
            .view_instant_key(token, Some(&device))
            .await
            .expect("view")
            .claimed
    );
    // The key may be claimed by one device: a second one is refused, viewing or claiming.
    assert!(matches!(
        f.app.claim_instant_key(token, None).await,
        Err(Refused::Inactive(Inactive::Exhausted))
    ));
    assert!(matches!(
        f.app
            .view_instant_key(token, Some("an-unknown-device"))
            .await,
        Err(Refused::Inactive(Inactive::Exhausted))
    ));
    // A made-up link is not found.
    assert!(matches!(
        f.app.view_instant_key("not-a-token", None).await,
        Err(Refused::NotFound)
    ));
    // An entrance that is not one of the person's is not found; nothing is queued.
    let other = keygate_domain::ids::EntranceId::new();
    assert!(matches!(
        f.app
            .request_unlock(f.ws, g.user_identity_id, Some(g.id), other, Some(key_id))
            .await,
        Err(Refused::NotFound)
    ));
}
