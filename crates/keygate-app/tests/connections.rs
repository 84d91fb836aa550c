//! Connected access systems through `keygate-app`, on SQLite and PostgreSQL: credentials sealed
//! at rest and refused without a key, adapter refusals as reasons with nothing stored, the sync
//! that adds, removes and restores entrances with stable ids (and warns the grants that lost a
//! door), health errors and their events, disconnection, the periodic sync, and tenancy.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keygate_app::App;
use keygate_app::connections::CredentialSeal;
use keygate_app::grants::{CreateGrant, Grantee};
use keygate_app::workspaces::{ConnectSystem, CreateWorkspace};
use keygate_cache::SealKeys;
use keygate_domain::capability::{
    AccessMethodMode, CapabilityDescriptor, PermissionModel, ProviderRateLimit,
};
use keygate_domain::events::EventFilter;
use keygate_domain::grant::ModeRequest;
use keygate_domain::ids::{AccessSystemId, EntranceId, WorkspaceId};
use keygate_domain::model::{NewAccessSystem, NewEntrance, NewUserIdentity, WorkspaceType};
use keygate_domain::page::PageRequest;
use keygate_domain::{Error, ErrorReason};
use keygate_providers::{
    AccessSystemProvider, Connection, HeldCredential, Holder, ProviderError, Registry,
};
use keygate_store::Store;
use keygate_store::testdb::TestDb;

const TOKEN: &str = "s3cret-t0ken-for-acme";

/// What the scripted system lists and how it answers.
struct Script {
    doors: Vec<(&'static str, &'static str)>,
    reachable: bool,
}

/// A real (not virtual) system type whose listing the test changes between syncs. It checks
/// its settings and token the way a vendor adapter would.
struct Acme {
    script: Mutex<Script>,
}

impl Acme {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(Script {
                doors: vec![("d-front", "Front Door"), ("d-dock", "Loading Dock")],
                reachable: true,
            }),
        })
    }

    fn set(&self, doors: &[(&'static str, &'static str)], reachable: bool) {
        let mut s = self.script.lock().expect("script");
        s.doors = doors.to_vec();
        s.reachable = reachable;
    }
}

#[async_trait]
impl AccessSystemProvider for Acme {
    fn system_types(&self) -> Vec<String> {
        vec!["acme_cloud".into()]
    }

    async fn discover(
        &self,
        system_type: &str,
        connection: &Connection,
    ) -> Result<NewAccessSystem, ProviderError> {
        let (doors, reachable) = {
            let s = self.script.lock().expect("script");
            (s.doors.clone(), s.reachable)
        };
        if connection.settings.get("site").is_none_or(|s| s.is_empty()) {
            return Err(ProviderError::Permanent(
                "invalid_connection_settings: site is required".into(),
            ));
        }
        if !reachable {
            return Err(ProviderError::Transient(
                "provider_unreachable: connection refused".into(),
            ));
        }
        if connection.credentials.get("token") != Some(TOKEN) {
            return Err(ProviderError::Permanent(
                "invalid_credentials: the token was refused".into(),
            ));
        }
        Ok(NewAccessSystem {
            name: connection.name.clone().unwrap_or_else(|| "Acme HQ".into()),
            external_type: "acme_site".into(),
            system_type: system_type.into(),
            is_virtual: false,
            time_zone: connection.time_zone.clone().unwrap_or_else(|| "UTC".into()),
            capabilities: CapabilityDescriptor {
                permission_model: PermissionModel::CredentialBased,
                supported_modes: vec![AccessMethodMode::Code, AccessMethodMode::CloudKey],
                pin_code_rules: None,
                is_card_encoding_required: false,
                can_remote_unlock: true,
                can_issue_mobile_keys: false,
                can_assign_entrances_directly: true,
                can_schedule_credentials: true,
                rate_limit: ProviderRateLimit {
                    requests_per_second: 3.0,
                    burst: 3,
                },
            },
            entrances: doors
                .iter()
                .map(|(ext, name)| NewEntrance {
                    external_id: (*ext).into(),
                    display_name: (*name).into(),
                    can_unlock_with_card: false,
                    can_unlock_with_code: true,
                    can_unlock_with_mobile_key: false,
                    can_unlock_with_cloud_key: true,
                    can_belong_to_reservation: false,
                })
                .collect(),
            access_groups: Vec::new(),
            encoders: Vec::new(),
        })
    }

    async fn provision(
        &self,
        _system: &keygate_domain::model::AccessSystem,
        _job: &keygate_domain::grant::ProvisionJob,
        _holder: &Holder,
    ) -> Result<keygate_domain::tracker::ProvisionResult, ProviderError> {
        Err(ProviderError::Transient("not in this test".into()))
    }

    async fn revoke(
        &self,
        _system: &keygate_domain::model::AccessSystem,
        _job: &keygate_domain::action::RevokeJob,
    ) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn read_back(
        &self,
        _system: &keygate_domain::model::AccessSystem,
        _access_method_id: keygate_domain::ids::AccessMethodId,
    ) -> Result<Option<HeldCredential>, ProviderError> {
        Ok(None)
    }
}

struct Fixture {
    app: App,
    acme: Arc<Acme>,
    ws: WorkspaceId,
    _db: TestDb,
}

fn seal() -> CredentialSeal {
    CredentialSeal::new(
        SealKeys::for_purpose(keygate_app::connections::CREDENTIALS_PURPOSE, &[9; 32], &[])
            .expect("key"),
    )
}

async fn fixture(db: TestDb, with_key: bool) -> Fixture {
    let store: Arc<dyn Store> = db.store.clone();
    let acme = Acme::new();
    let mut app = common::app(store, Default::default());
    let mut providers: Registry = app.providers.clone();
    providers.register(acme.clone());
    app.providers = providers;
    if with_key {
        app.credentials = seal();
    }
    let (ws, _, _) = app
        .create_workspace(CreateWorkspace {
            name: "Acme Properties".into(),
            workspace_type: WorkspaceType::Production,
            api_key_name: None,
        })
        .await
        .expect("production workspace");
    Fixture {
        app,
        acme,
        ws: ws.id,
        _db: db,
    }
}

async fn backends() -> Vec<TestDb> {
    vec![TestDb::sqlite().await, TestDb::postgres().await]
}

fn acme_connect(token: &str) -> ConnectSystem {
    ConnectSystem {
        system_type: "acme_cloud".into(),
        time_zone: Some("Europe/Berlin".into()),
        settings: BTreeMap::from([("site".into(), "hq".into())]),
        credentials: BTreeMap::from([("token".into(), token.into())]),
        ..Default::default()
    }
}

async fn systems(app: &App, ws: WorkspaceId) -> usize {
    app.list_access_systems(
        ws,
        None,
        &PageRequest {
            after: None,
            limit: 100,
        },
    )
    .await
    .expect("systems")
    .items
    .len()
}

async fn event_types(app: &App, ws: WorkspaceId, system: AccessSystemId) -> Vec<String> {
    app.list_events(
        ws,
        &EventFilter {
            acs_system_id: Some(system),
            ..Default::default()
        },
        &PageRequest {
            after: None,
            limit: 500,
        },
    )
    .await
    .expect("events")
    .items
    .into_iter()
    .map(|e| e.event.event_type)
    .collect()
}

async fn entrance_ids(app: &App, ws: WorkspaceId, system: AccessSystemId) -> Vec<EntranceId> {
    let mut ids: Vec<_> = app
        .list_entrances(
            ws,
            Some(system),
            &PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("entrances")
        .items
        .into_iter()
        .map(|e| e.id)
        .collect();
    ids.sort();
    ids
}

fn reason(e: &Error) -> ErrorReason {
    e.reason()
}

#[tokio::test]
async fn credentials_are_sealed_at_rest_and_opened_only_for_the_adapter() {
    for db in backends().await {
        let f = fixture(db, true).await;
        let s = f
            .app
            .connect_access_system(f.ws, acme_connect(TOKEN))
            .await
            .expect("connect");
        assert!(!s.is_virtual);
        assert_eq!(s.settings.get("site").map(String::as_str), Some("hq"));
        assert!(s.health.errors.is_empty());
        assert!(s.health.last_synced_at.is_some());
        let stored = f
            .app
            .store
            .access_system_connection(f.ws, s.id)
            .await
            .expect("connection");
        let sealed = stored.credentials.expect("credentials stored sealed");
        assert!(!sealed.sealed.contains(TOKEN), "the token is not in clear");
        assert!(!format!("{sealed:?}").contains(&sealed.sealed));
        // The adapter gets them back through the directory, and only for this system.
        let link = f.app.directory().link(&s).await.expect("link");
        assert_eq!(link.credentials.get("token"), Some(TOKEN));
        assert!(!format!("{:?}", link.credentials).contains(TOKEN));
        assert_eq!(link.entrances.len(), 2);
        let mut moved = s.clone();
        moved.id = AccessSystemId::new();
        assert!(
            seal().open(f.ws, moved.id, &sealed).is_err(),
            "sealed credentials are bound to their system"
        );
        assert_eq!(
            event_types(&f.app, f.ws, s.id).await,
            ["acs_system.connected"]
        );
    }
}

#[tokio::test]
async fn refusals_name_their_reason_and_store_nothing() {
    for db in backends().await {
        let f = fixture(db, true).await;
        let before = systems(&f.app, f.ws).await;
        let err = f
            .app
            .connect_access_system(f.ws, acme_connect("wrong"))
            .await
            .expect_err("wrong token");
        assert_eq!(reason(&err), ErrorReason::InvalidCredentials, "{err:?}");
        assert!(!err.to_string().contains("wrong"), "{err}");

        let mut no_site = acme_connect(TOKEN);
        no_site.settings.clear();
        let err = f
            .app
            .connect_access_system(f.ws, no_site)
            .await
            .expect_err("no site");
        assert_eq!(reason(&err), ErrorReason::InvalidConnectionSettings);

        let mut bad_name = acme_connect(TOKEN);
        bad_name.settings.insert("Bad Name".into(), "x".into());
        let err = f
            .app
            .connect_access_system(f.ws, bad_name)
            .await
            .expect_err("bad setting name");
        assert_eq!(reason(&err), ErrorReason::InvalidConnectionSettings);

        f.acme.set(&[("d-front", "Front Door")], false);
        let err = f
            .app
            .connect_access_system(f.ws, acme_connect(TOKEN))
            .await
            .expect_err("unreachable");
        assert_eq!(reason(&err), ErrorReason::ProviderUnreachable, "{err:?}");
        f.acme.set(&[("d-front", "Front Door")], true);

        // A virtual system takes no settings.
        let mut virt = acme_connect(TOKEN);
        virt.system_type = "virtual_latch".into();
        virt.credentials.clear();
        let err = f
            .app
            .connect_access_system(f.ws, virt)
            .await
            .expect_err("virtual with settings");
        assert_eq!(reason(&err), ErrorReason::InvalidConnectionSettings);
        assert_eq!(systems(&f.app, f.ws).await, before, "nothing stored");
    }
}

#[tokio::test]
async fn credentials_without_a_key_are_refused_before_anyone_is_called() {
    let f = fixture(TestDb::sqlite().await, false).await;
    let err = f
        .app
        .connect_access_system(f.ws, acme_connect(TOKEN))
        .await
        .expect_err("no key");
    assert_eq!(reason(&err), ErrorReason::CredentialsKeyMissing);
    assert_eq!(systems(&f.app, f.ws).await, 0);
}

fn grant_on(doors: &[EntranceId]) -> CreateGrant {
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
        entrance_ids: doors.to_vec(),
        modes: vec![ModeRequest {
            mode: AccessMethodMode::Code,
            code: None,
        }],
        starts_at: None,
        ends_at: None,
        only_system: None,
    }
}

#[tokio::test]
async fn a_sync_adds_removes_and_restores_doors_with_stable_ids_and_warns_the_grants() {
    for db in backends().await {
        let f = fixture(db, true).await;
        let s = f
            .app
            .connect_access_system(f.ws, acme_connect(TOKEN))
            .await
            .expect("connect");
        let first = entrance_ids(&f.app, f.ws, s.id).await;
        assert_eq!(first.len(), 2);
        let link = f.app.directory().link(&s).await.expect("link");
        let dock = *link
            .entrances
            .iter()
            .find(|(_, ext)| ext.as_str() == "d-dock")
            .expect("dock")
            .0;
        let grant = f
            .app
            .create_access_grant(f.ws, grant_on(&[dock]))
            .await
            .expect("grant on the dock");

        // Nothing changed: nothing happens, ids are stable.
        let (_, report) = f.app.sync_access_system(f.ws, s.id).await.expect("sync");
        assert_eq!(report, Default::default());
        assert_eq!(entrance_ids(&f.app, f.ws, s.id).await, first);

        // The dock is gone and a gate is new.
        f.acme
            .set(&[("d-front", "Front Door"), ("d-gate", "Gate")], true);
        let (after, report) = f.app.sync_access_system(f.ws, s.id).await.expect("sync");
        assert_eq!(report.entrances_added.len(), 1);
        assert_eq!(report.entrances_removed, vec![dock]);
        assert_eq!(report.grants_warned, vec![grant.id]);
        assert!(after.health.last_synced_at >= s.health.last_synced_at);
        let e = f
            .app
            .get_entrance(f.ws, dock)
            .await
            .expect("still readable");
        assert!(e.removed_at.is_some());
        let g = f.app.get_access_grant(f.ws, grant.id).await.expect("grant");
        let w = g
            .warnings
            .iter()
            .find(|w| w.code == "entrance_removed")
            .expect("the grant shows the lost door");
        assert!(w.message.contains("Loading Dock"), "{}", w.message);
        let err = f
            .app
            .create_access_grant(f.ws, grant_on(&[dock]))
            .await
            .expect_err("a removed door cannot be granted");
        assert_eq!(reason(&err), ErrorReason::EntranceRemoved);
        let types = event_types(&f.app, f.ws, s.id).await;
        for t in [
            "acs_entrance.added",
            "acs_entrance.removed",
            "access_grant.access_to_door_lost",
        ] {
            assert!(types.iter().any(|x| x == t), "{t} missing in {types:?}");
        }

        // The dock comes back with its old id; a second identical sync changes nothing.
        f.acme.set(
            &[
                ("d-front", "Front Door"),
                ("d-gate", "Gate"),
                ("d-dock", "Loading Dock B"),
            ],
            true,
        );
        let (_, report) = f.app.sync_access_system(f.ws, s.id).await.expect("sync");
        assert_eq!(report.entrances_restored, vec![dock]);
        assert!(report.entrances_added.is_empty());
        let e = f.app.get_entrance(f.ws, dock).await.expect("dock");
        assert!(e.removed_at.is_none());
        assert_eq!(e.display_name, "Loading Dock B");
        let (_, report) = f.app.sync_access_system(f.ws, s.id).await.expect("sync");
        assert_eq!(report, Default::default());
        assert_eq!(entrance_ids(&f.app, f.ws, s.id).await.len(), 3);
    }
}

#[tokio::test]
async fn an_unreachable_system_shows_the_error_until_a_good_sync_clears_it() {
    for db in backends().await {
        let f = fixture(db, true).await;
        let s = f
            .app
            .connect_access_system(f.ws, acme_connect(TOKEN))
            .await
            .expect("connect");
        f.acme.set(
            &[("d-front", "Front Door"), ("d-dock", "Loading Dock")],
            false,
        );
        let err = f
            .app
            .sync_access_system(f.ws, s.id)
            .await
            .expect_err("unreachable");
        assert_eq!(reason(&err), ErrorReason::ProviderUnreachable);
        // Twice: one error, one event.
        f.app
            .sync_access_system(f.ws, s.id)
            .await
            .expect_err("still unreachable");
        let down = f.app.get_access_system(f.ws, s.id).await.expect("system");
        assert_eq!(
            down.health
                .errors
                .iter()
                .map(|e| e.code.as_str())
                .collect::<Vec<_>>(),
            ["provider_unreachable"]
        );
        assert_eq!(
            entrance_ids(&f.app, f.ws, s.id).await.len(),
            2,
            "nothing lost"
        );
        f.acme.set(
            &[("d-front", "Front Door"), ("d-dock", "Loading Dock")],
            true,
        );
        let (up, _) = f.app.sync_access_system(f.ws, s.id).await.expect("back");
        assert!(up.health.errors.is_empty());
        assert_eq!(
            event_types(&f.app, f.ws, s.id).await,
            [
                "acs_system.connected",
                "acs_system.disconnected",
                "acs_system.connected"
            ]
        );
    }
}

#[tokio::test]
async fn a_disconnected_system_keeps_its_record_but_is_called_no_more() {
    for db in backends().await {
        let f = fixture(db, true).await;
        let s = f
            .app
            .connect_access_system(f.ws, acme_connect(TOKEN))
            .await
            .expect("connect");
        let d = f
            .app
            .disconnect_access_system(f.ws, s.id)
            .await
            .expect("disconnect");
        assert!(d.health.disconnected_at.is_some());
        assert_eq!(d.health.errors[0].code, "account_disconnected");
        let again = f
            .app
            .disconnect_access_system(f.ws, s.id)
            .await
            .expect("twice");
        assert_eq!(again.health.disconnected_at, d.health.disconnected_at);
        let stored = f
            .app
            .store
            .access_system_connection(f.ws, s.id)
            .await
            .expect("connection");
        assert!(stored.credentials.is_none(), "credentials are deleted");
        let err = f
            .app
            .sync_access_system(f.ws, s.id)
            .await
            .expect_err("disconnected");
        assert_eq!(reason(&err), ErrorReason::AccessSystemDisconnected);
        let err = f
            .app
            .providers
            .read_back(&d, keygate_domain::ids::AccessMethodId::new())
            .await
            .expect_err("no calls");
        assert!(err.to_string().contains("account_disconnected"), "{err}");
        assert_eq!(entrance_ids(&f.app, f.ws, s.id).await.len(), 2);
        assert_eq!(
            event_types(&f.app, f.ws, s.id).await,
            ["acs_system.connected", "acs_system.disconnected"]
        );
    }
}

#[tokio::test]
async fn the_periodic_sync_reads_every_due_system_including_virtual_ones() {
    let db = TestDb::sqlite().await;
    let f = fixture(db, true).await;
    let s = f
        .app
        .connect_access_system(f.ws, acme_connect(TOKEN))
        .await
        .expect("connect");
    // A sandbox workspace's virtual systems go through the same sync, and nothing changes.
    let (sandbox, _, _) = f
        .app
        .create_workspace(CreateWorkspace {
            name: "Sandbox".into(),
            workspace_type: WorkspaceType::Sandbox,
            api_key_name: None,
        })
        .await
        .expect("sandbox");
    let virtual_systems = f
        .app
        .list_access_systems(
            sandbox.id,
            None,
            &PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("systems")
        .items;
    let before: Vec<_> = {
        let mut v = Vec::new();
        for vs in &virtual_systems {
            v.push(entrance_ids(&f.app, sandbox.id, vs.id).await);
        }
        v
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.acme.set(&[("d-front", "Front Door")], true);
    let n = f
        .app
        .sync_due(Duration::from_millis(10), 100)
        .await
        .expect("sync due");
    assert_eq!(n, 1 + virtual_systems.len());
    for (vs, ids) in virtual_systems.iter().zip(&before) {
        assert_eq!(&entrance_ids(&f.app, sandbox.id, vs.id).await, ids);
        let e = f
            .app
            .list_entrances(
                sandbox.id,
                Some(vs.id),
                &PageRequest {
                    after: None,
                    limit: 100,
                },
            )
            .await
            .expect("entrances");
        assert!(e.items.iter().all(|e| e.removed_at.is_none()));
    }
    let removed = f
        .app
        .list_entrances(
            f.ws,
            Some(s.id),
            &PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("entrances")
        .items
        .into_iter()
        .filter(|e| e.removed_at.is_some())
        .count();
    assert_eq!(removed, 1, "the periodic sync saw the dock go");
    assert_eq!(
        f.app
            .sync_due(Duration::from_secs(3600), 100)
            .await
            .expect("nothing due"),
        0
    );
}

#[tokio::test]
async fn another_workspaces_system_is_not_found() {
    let f = fixture(TestDb::sqlite().await, true).await;
    let s = f
        .app
        .connect_access_system(f.ws, acme_connect(TOKEN))
        .await
        .expect("connect");
    let (other, _, _) = f
        .app
        .create_workspace(CreateWorkspace {
            name: "Other".into(),
            workspace_type: WorkspaceType::Production,
            api_key_name: None,
        })
        .await
        .expect("other");
    let err = f
        .app
        .sync_access_system(other.id, s.id)
        .await
        .expect_err("foreign");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let err = f
        .app
        .disconnect_access_system(other.id, s.id)
        .await
        .expect_err("foreign");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let s = f.app.get_access_system(f.ws, s.id).await.expect("mine");
    assert!(s.health.disconnected_at.is_none());
}

#[tokio::test]
async fn what_a_call_says_of_the_connection_shows_on_the_system() {
    use keygate_app::connections::observe_call;
    let f = fixture(TestDb::sqlite().await, true).await;
    let s = f
        .app
        .connect_access_system(f.ws, acme_connect(TOKEN))
        .await
        .expect("connect");
    let store = &*f.app.store;
    // A fault the system answered with says nothing of the connection.
    let busy = ProviderError::Transient("503 service unavailable".into());
    observe_call(store, &f.app.tracker, &s, Err(&busy), Vec::new())
        .await
        .expect("observe");
    let s = f.app.get_access_system(f.ws, s.id).await.expect("system");
    assert!(s.health.errors.is_empty());
    for code in [
        "budget_exhausted",
        "invalid_credentials",
        "provider_unreachable",
    ] {
        let e = ProviderError::Transient(format!("{code}: said by the vendor"));
        observe_call(store, &f.app.tracker, &s, Err(&e), Vec::new())
            .await
            .expect("observe");
        let down = f.app.get_access_system(f.ws, s.id).await.expect("system");
        assert_eq!(down.health.errors.len(), 1, "{down:?}");
        assert_eq!(down.health.errors[0].code, code);
        // The same again writes nothing new.
        observe_call(store, &f.app.tracker, &down, Err(&e), Vec::new())
            .await
            .expect("observe");
        observe_call(store, &f.app.tracker, &down, Ok(()), Vec::new())
            .await
            .expect("observe");
        let up = f.app.get_access_system(f.ws, s.id).await.expect("system");
        assert!(up.health.errors.is_empty(), "cleared by an answer: {up:?}");
    }
    let types = event_types(&f.app, f.ws, s.id).await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "acs_system.disconnected")
            .count(),
        3,
        "{types:?}"
    );
}

#[tokio::test]
async fn a_budget_nearly_spent_is_a_warning_that_the_calls_raise_and_clear() {
    use keygate_app::connections::{BUDGET_NEARLY_EXHAUSTED, observe_call};
    use keygate_domain::grant::Notice;
    let f = fixture(TestDb::sqlite().await, true).await;
    let s = f
        .app
        .connect_access_system(f.ws, acme_connect(TOKEN))
        .await
        .expect("connect");
    let store = &*f.app.store;
    let warn = |spent: u64| {
        vec![Notice::new(
            BUDGET_NEARLY_EXHAUSTED,
            format!("{spent} of 1000 calls spent"),
            keygate_domain::model::now(),
        )]
    };
    observe_call(store, &f.app.tracker, &s, Ok(()), warn(900))
        .await
        .expect("observe");
    let warned = f.app.get_access_system(f.ws, s.id).await.expect("system");
    assert_eq!(warned.health.warnings.len(), 1, "{warned:?}");
    assert_eq!(warned.health.warnings[0].code, BUDGET_NEARLY_EXHAUSTED);
    assert!(warned.health.errors.is_empty(), "a warning is not an error");
    // Spent further: the warning stands as first raised (no write per call).
    observe_call(store, &f.app.tracker, &warned, Ok(()), warn(950))
        .await
        .expect("observe");
    let still = f.app.get_access_system(f.ws, s.id).await.expect("system");
    assert_eq!(still.health.warnings, warned.health.warnings);
    // A warning code no call raises is not taken from an adapter.
    let odd = vec![Notice::new("made_up", "x", keygate_domain::model::now())];
    observe_call(store, &f.app.tracker, &still, Ok(()), odd)
        .await
        .expect("observe");
    let renewed = f.app.get_access_system(f.ws, s.id).await.expect("system");
    assert!(renewed.health.warnings.is_empty(), "{renewed:?}");
    // No event says the system went down for a warning.
    let types = event_types(&f.app, f.ws, s.id).await;
    assert!(
        !types.iter().any(|t| t == "acs_system.disconnected"),
        "{types:?}"
    );
}
