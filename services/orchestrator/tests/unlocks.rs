//! Remote unlocks through the application layer and the orchestrator, against real stores and
//! the virtual access systems: at most once, never late, never after revocation. What reached a
//! door is read from the virtual systems' own record of the unlocks they performed.

use std::sync::Arc;
use std::time::Duration;

use keygate_app::App;
use keygate_app::grants::{CreateGrant, Grantee};
use keygate_app::idempotency;
use keygate_app::instant_keys::GenerateKey;
use keygate_app::tokens::PageTokens;
use keygate_app::tracker::Tracker;
use keygate_app::unlock::{UnlockDoor, UnlockEntrance};
use keygate_domain::action::{ActionAttempt, AttemptStatus, unlock_errors};
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::events::EventFilter;
use keygate_domain::grant::{AccessGrant, AccessMethod, DoorState, ModeRequest};
use keygate_domain::ids::{ActionAttemptId, EntranceId, WorkspaceId};
use keygate_domain::instant_key::Links;
use keygate_domain::model::{NewUserIdentity, now};
use keygate_domain::page::PageRequest;
use keygate_domain::{Error, ErrorReason};
use keygate_orchestrator::{Orchestrator, OrchestratorConfig};
use keygate_providers::virtual_system::VirtualSystems;
use keygate_store::conformance::{entrance_named, seeded_workspace};
use keygate_store::testdb::TestDb;
use keygate_store::{Claim, MethodFilter, Store};
use tokio::sync::watch;

struct Running {
    stop: watch::Sender<bool>,
}

impl Running {
    /// Stops the orchestrator and gives its loop time to notice.
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

struct Fixture {
    app: App,
    systems: VirtualSystems,
    ws: WorkspaceId,
    /// Salto KS's Main Entrance: remote unlock, mobile and cloud keys.
    door: EntranceId,
    /// Salto Space's lobby: no remote unlock.
    no_remote: EntranceId,
}

async fn fixture(store: Arc<dyn Store>, deadline: Duration) -> Fixture {
    let ws = seeded_workspace(&*store, "unlocks").await;
    let door = entrance_named(&*store, ws, "virtual_salto_ks", "Main Entrance").await;
    let no_remote = entrance_named(&*store, ws, "virtual_salto_space", "Main Lobby").await;
    let tracker = Tracker::in_process(
        store.clone(),
        Arc::new(keygate_cache::InProcessCache::new(1_000)),
    );
    let links = Links::new("http://keygate.test");
    links.set_secret(vec![5; 32]);
    let app = App {
        unlock_deadline: deadline,
        ..App::new(
            store,
            tracker,
            links,
            PageTokens::new(vec![6; 32]),
            keygate_providers::Registry::new(),
        )
    };
    Fixture {
        app,
        systems: VirtualSystems::new(Duration::from_millis(20)),
        ws,
        door,
        no_remote,
    }
}

impl Fixture {
    fn start(&self) -> Running {
        self.start_with(OrchestratorConfig::default())
    }

    fn start_with(&self, base: OrchestratorConfig) -> Running {
        let (stop, rx) = watch::channel(false);
        let o = Orchestrator::new(
            self.app.store.clone(),
            Arc::new(self.systems.clone()),
            self.app.tracker.clone(),
            OrchestratorConfig {
                owner: "unlocks".into(),
                poll: Duration::from_millis(20),
                backoff_base: Duration::from_millis(5),
                backoff_cap: Duration::from_millis(20),
                ..base
            },
        );
        tokio::spawn(o.run(rx));
        Running { stop }
    }

    /// A grant for a new person over the door with a mobile key and a cloud key, issued on the
    /// virtual system (the orchestrator runs until every door is granted, then stops).
    async fn create_grant(&self, modes: &[AccessMethodMode]) -> AccessGrant {
        self.app
            .create_access_grant(
                self.ws,
                CreateGrant {
                    idem: None,
                    name: None,
                    access_grant_key: None,
                    reservation_key: None,
                    grantee: Grantee::New(NewUserIdentity {
                        user_identity_key: None,
                        full_name: "Jane Doe".into(),
                        email_address: Some("jane@example.com".into()),
                        phone_number: None,
                    }),
                    entrance_ids: vec![self.door],
                    modes: modes
                        .iter()
                        .map(|mode| ModeRequest {
                            mode: *mode,
                            code: None,
                        })
                        .collect(),
                    starts_at: None,
                    ends_at: None,
                    only_system: None,
                },
            )
            .await
            .expect("create grant")
    }

    async fn issued_grant(&self) -> (AccessGrant, AccessMethod, AccessMethod) {
        let g = self
            .create_grant(&[AccessMethodMode::MobileKey, AccessMethodMode::CloudKey])
            .await;
        let run = self.start();
        let mut methods = Vec::new();
        for _ in 0..500 {
            methods = self.methods(&g).await;
            if methods.len() == 2
                && methods
                    .iter()
                    .all(|m| m.doors.iter().all(|d| d.state == DoorState::Granted))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        run.stop().await;
        let pick = |mode| {
            methods
                .iter()
                .find(|m| m.mode == mode && m.doors.iter().all(|d| d.state == DoorState::Granted))
                .cloned()
                .unwrap_or_else(|| panic!("an issued {mode:?} method: {methods:?}"))
        };
        (
            g,
            pick(AccessMethodMode::MobileKey),
            pick(AccessMethodMode::CloudKey),
        )
    }

    async fn methods(&self, g: &AccessGrant) -> Vec<AccessMethod> {
        self.app
            .store
            .list_access_methods(
                self.ws,
                &MethodFilter {
                    access_grant_id: Some(g.id),
                    ..Default::default()
                },
                &PageRequest {
                    after: None,
                    limit: 100,
                },
            )
            .await
            .expect("methods")
            .items
    }

    async fn unlock_door(&self, m: &AccessMethod, request_id: Option<&str>) -> ActionAttempt {
        self.app
            .unlock_door(
                self.ws,
                UnlockDoor {
                    idem: idempotency::claim(
                        "UnlockDoor",
                        request_id.map(str::to_owned),
                        m.id.to_string().as_bytes(),
                    ),
                    access_method_id: m.id,
                    acs_entrance_id: self.door,
                },
            )
            .await
            .expect("unlock door")
    }

    async fn attempt(&self, id: ActionAttemptId) -> ActionAttempt {
        self.app
            .get_action_attempt(self.ws, id)
            .await
            .expect("attempt")
    }

    /// Waits until the attempt is no longer pending.
    async fn finished(&self, id: ActionAttemptId) -> ActionAttempt {
        for _ in 0..500 {
            let a = self.attempt(id).await;
            if a.status != AttemptStatus::Pending {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("attempt {id} still pending");
    }

    async fn failed_events(&self) -> usize {
        self.app
            .store
            .list_events(self.ws, &EventFilter::default(), 0, 1000)
            .await
            .expect("events")
            .iter()
            .filter(|e| e.event_type == "action_attempt.failed")
            .count()
    }
}

fn error_type(a: &ActionAttempt) -> &str {
    a.error.as_ref().map_or("", |e| e.error_type.as_str())
}

/// Each way of asking sends one unlock that reaches the door once; a replay by `request_id`
/// answers the first attempt and sends nothing more.
async fn an_unlock_reaches_the_door_once(store: Arc<dyn Store>) {
    let f = fixture(store, Duration::from_secs(30)).await;
    let (g, mobile, cloud) = f.issued_grant().await;
    let _run = f.start();
    let a = f.unlock_door(&cloud, Some("tap-1")).await;
    assert_eq!(a.access_method_id, Some(cloud.id));
    let again = f.unlock_door(&cloud, Some("tap-1")).await;
    assert_eq!(again.id, a.id, "a replay answers the first attempt");
    let done = f.finished(a.id).await;
    assert_eq!(done.status, AttemptStatus::Success, "{done:?}");
    // Through the mobile key and the Instant Key page path too.
    let b = f.unlock_door(&mobile, None).await;
    assert_eq!(f.finished(b.id).await.status, AttemptStatus::Success);
    let c = f
        .app
        .request_unlock(f.ws, g.user_identity_id, Some(g.id), f.door, None)
        .await
        .expect("page unlock");
    assert_eq!(f.finished(c).await.status, AttemptStatus::Success);
    // An operator's unlock.
    let d = f
        .app
        .unlock_entrance(
            f.ws,
            UnlockEntrance {
                idem: None,
                acs_entrance_id: f.door,
            },
        )
        .await
        .expect("operator unlock");
    assert_eq!(f.finished(d.id).await.status, AttemptStatus::Success);
    let sent: Vec<_> = f
        .systems
        .unlocks()
        .iter()
        .map(|u| u.action_attempt_id)
        .collect();
    assert_eq!(
        sent,
        vec![a.id, b.id, c, d.id],
        "each unlock reached the door once"
    );
}

/// Asked while no orchestrator runs; the orchestrator starts after the deadline: nothing reaches
/// the door and every attempt fails `unlock_expired`, with its event.
async fn a_late_unlock_is_never_sent(store: Arc<dyn Store>) {
    let f = fixture(store, Duration::from_secs(2)).await;
    let (g, _mobile, cloud) = f.issued_grant().await;
    let a = f.unlock_door(&cloud, None).await;
    let b = f
        .app
        .request_unlock(f.ws, g.user_identity_id, Some(g.id), f.door, None)
        .await
        .expect("page unlock");
    let c = f
        .app
        .unlock_entrance(
            f.ws,
            UnlockEntrance {
                idem: None,
                acs_entrance_id: f.door,
            },
        )
        .await
        .expect("operator unlock");
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let _run = f.start();
    for id in [a.id, b, c.id] {
        let done = f.finished(id).await;
        assert_eq!(done.status, AttemptStatus::Error);
        assert_eq!(error_type(&done), unlock_errors::EXPIRED, "{done:?}");
    }
    assert!(f.systems.unlocks().is_empty(), "no door opened late");
    assert_eq!(f.failed_events().await, 3);
}

/// Revoking the Instant Key, deleting the access method or the grant ends their queued unlocks
/// at once (`access_revoked`), and the orchestrator that starts afterwards sends none of them.
/// A change the cancellation does not cover (the grant's window closing) is caught by the check
/// just before the call.
async fn a_revoked_unlock_is_never_sent(store: Arc<dyn Store>) {
    let f = fixture(store, Duration::from_secs(30)).await;
    let (g, mobile, cloud) = f.issued_grant().await;
    let key = f
        .app
        .generate_instant_key(
            f.ws,
            GenerateKey {
                idem: None,
                user_identity_id: g.user_identity_id,
                max_use_count: 1,
                expires_at: None,
            },
        )
        .await
        .expect("key")
        .0
        .key;
    let through_key = f
        .app
        .request_unlock(f.ws, g.user_identity_id, None, f.door, Some(key.id))
        .await
        .expect("page unlock");
    let through_cloud = f.unlock_door(&cloud, None).await;
    f.app
        .revoke_instant_key(f.ws, key.id)
        .await
        .expect("revoke key");
    f.app
        .delete_access_method(f.ws, cloud.id)
        .await
        .expect("delete method");
    for id in [through_key, through_cloud.id] {
        let a = f.attempt(id).await;
        assert_eq!(a.status, AttemptStatus::Error, "ended at once: {a:?}");
        assert_eq!(error_type(&a), unlock_errors::ACCESS_REVOKED);
    }
    // Deleting the grant ends the mobile key's queued unlock too.
    let through_mobile = f.unlock_door(&mobile, None).await;
    f.app
        .delete_access_grant(f.ws, g.id)
        .await
        .expect("delete grant");
    assert_eq!(
        error_type(&f.attempt(through_mobile.id).await),
        unlock_errors::ACCESS_REVOKED
    );
    let _run = f.start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(f.systems.unlocks().is_empty(), "no revoked unlock was sent");
    assert_eq!(f.failed_events().await, 3);
}

/// Deleting the person ends every unlock queued for them, in the delete's transaction.
async fn a_deleted_persons_unlocks_are_never_sent(store: Arc<dyn Store>) {
    let f = fixture(store, Duration::from_secs(30)).await;
    let (g, mobile, cloud) = f.issued_grant().await;
    let queued = [
        f.unlock_door(&mobile, None).await.id,
        f.unlock_door(&cloud, None).await.id,
        f.app
            .request_unlock(f.ws, g.user_identity_id, None, f.door, None)
            .await
            .expect("page unlock"),
    ];
    f.app
        .delete_user_identity(f.ws, g.user_identity_id)
        .await
        .expect("delete person");
    for id in queued {
        let a = f.attempt(id).await;
        assert_eq!(error_type(&a), unlock_errors::ACCESS_REVOKED, "{a:?}");
    }
    let _run = f.start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(f.systems.unlocks().is_empty());
    assert_eq!(f.failed_events().await, 3);
}

/// An unlock asked after a backlog of provisions on the same access system is claimed before
/// them: with one call at a time and 40 provisions of 100 ms queued first (4 s of work), an
/// unlock with a 2 s deadline still reaches the door.
async fn an_unlock_jumps_the_queue(store: Arc<dyn Store>) {
    let f = fixture(store, Duration::from_secs(2)).await;
    let (_g, _mobile, cloud) = f.issued_grant().await;
    for _ in 0..40 {
        f.create_grant(&[AccessMethodMode::MobileKey]).await;
    }
    let a = f.unlock_door(&cloud, None).await;
    f.systems
        .set_delay(cloud.doors[0].acs_system_id, Duration::from_millis(100));
    let _run = f.start_with(OrchestratorConfig {
        per_system_concurrency: 1,
        ..Default::default()
    });
    let done = f.finished(a.id).await;
    assert_eq!(done.status, AttemptStatus::Success, "{done:?}");
    assert_eq!(f.systems.unlocks().len(), 1);
}

/// A grant whose window closed after the unlock was asked: the check just before the call
/// refuses it.
async fn a_closed_window_is_checked_before_the_call(store: Arc<dyn Store>) {
    let f = fixture(store, Duration::from_secs(30)).await;
    let (g, _mobile, cloud) = f.issued_grant().await;
    let a = f.unlock_door(&cloud, None).await;
    f.app
        .update_access_grant(
            f.ws,
            keygate_app::grants::UpdateGrant {
                id: g.id,
                change: keygate_domain::update::GrantChange {
                    starts_at: Some(now() + time::Duration::days(1)),
                    ends_at: keygate_domain::update::EndsAt::Keep,
                    add: Vec::new(),
                    remove: Vec::new(),
                    name: None,
                },
            },
        )
        .await
        .expect("move the window");
    let _run = f.start();
    let done = f.finished(a.id).await;
    assert_eq!(done.status, AttemptStatus::Error);
    assert!(
        [unlock_errors::WINDOW_CLOSED, unlock_errors::ACCESS_REVOKED].contains(&error_type(&done)),
        "{done:?}"
    );
    assert!(f.systems.unlocks().is_empty());
}

/// An unlock whose first claim was lost (a worker that died after it may have sent it) is never
/// sent again: the next claim ends it `unlock_not_confirmed`.
async fn a_reclaimed_unlock_is_never_resent(store: Arc<dyn Store>) {
    let f = fixture(store, Duration::from_secs(30)).await;
    let (_g, _mobile, cloud) = f.issued_grant().await;
    let a = f.unlock_door(&cloud, None).await;
    let claimed = f
        .app
        .store
        .claim_jobs(
            &Claim {
                owner: "a worker that dies",
                workspace_id: f.ws,
                acs_system_id: cloud.doors[0].acs_system_id,
                limit: 10,
                lease: Duration::from_millis(200),
            },
            now(),
        )
        .await
        .expect("claim");
    assert_eq!(claimed.jobs.len(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _run = f.start();
    let done = f.finished(a.id).await;
    assert_eq!(error_type(&done), unlock_errors::NOT_CONFIRMED, "{done:?}");
    assert!(f.systems.unlocks().is_empty());
}

/// Refusals at request time: typed, and nothing queued.
async fn refusals_are_typed(store: Arc<dyn Store>) {
    let f = fixture(store, Duration::from_secs(30)).await;
    let (_g, mobile, _cloud) = f.issued_grant().await;
    let not_remote = f
        .app
        .unlock_entrance(
            f.ws,
            UnlockEntrance {
                idem: None,
                acs_entrance_id: f.no_remote,
            },
        )
        .await;
    assert!(
        matches!(
            not_remote,
            Err(Error::FailedPrecondition {
                reason: ErrorReason::CapabilityNotSupported,
                ..
            })
        ),
        "{not_remote:?}"
    );
    let not_its_door = f
        .app
        .unlock_door(
            f.ws,
            UnlockDoor {
                idem: None,
                access_method_id: mobile.id,
                acs_entrance_id: f.no_remote,
            },
        )
        .await;
    assert!(
        matches!(not_its_door, Err(Error::NotFound { .. })),
        "{not_its_door:?}"
    );
    // Another workspace's method is NOT_FOUND.
    let other = seeded_workspace(&*f.app.store, "other").await;
    let foreign = f
        .app
        .unlock_door(
            other,
            UnlockDoor {
                idem: None,
                access_method_id: mobile.id,
                acs_entrance_id: f.door,
            },
        )
        .await;
    assert!(
        matches!(foreign, Err(Error::NotFound { .. })),
        "{foreign:?}"
    );
}

macro_rules! suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reaches_the_door_once() {
                an_unlock_reaches_the_door_once($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn late_unlock_never_sent() {
                a_late_unlock_is_never_sent($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn revoked_unlock_never_sent() {
                a_revoked_unlock_is_never_sent($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deleted_persons_unlocks_never_sent() {
                a_deleted_persons_unlocks_are_never_sent($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unlock_jumps_the_queue() {
                an_unlock_jumps_the_queue($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn closed_window_checked() {
                a_closed_window_is_checked_before_the_call($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reclaimed_unlock_never_resent() {
                a_reclaimed_unlock_is_never_resent($make.await.store).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn refusals() {
                refusals_are_typed($make.await.store).await
            }
        }
    };
}

suite!(sqlite, TestDb::sqlite());
suite!(postgres, TestDb::postgres());
