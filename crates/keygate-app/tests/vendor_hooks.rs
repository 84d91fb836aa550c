//! Inbound vendor webhooks through `keygate-app`, on SQLite and PostgreSQL, with a scripted
//! adapter: a system found by id alone (unknown and disconnected ones are not found), a refused
//! delivery writes nothing, each vendor event once (within a delivery and across deliveries), an
//! unlock attributed to the method holding the door and never to another workspace's, an
//! attribution that cannot be made now retried by the vendor's next delivery, and an access
//! change that makes the system's waiting retries due and wakes the orchestrator.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keygate_app::App;
use keygate_app::connections::CredentialSeal;
use keygate_app::grants::{CreateGrant, Grantee};
use keygate_app::vendor_hooks::{HookError, InboundWebhook};
use keygate_app::workspaces::{ConnectSystem, CreateWorkspace};
use keygate_cache::SealKeys;
use keygate_domain::capability::{
    AccessMethodMode, CapabilityDescriptor, PermissionModel, ProviderRateLimit,
};
use keygate_domain::events::{ACCESS_METHOD_USED, EventFilter};
use keygate_domain::grant::{AccessGrant, ModeRequest};
use keygate_domain::ids::{AccessMethodId, AccessSystemId, EntranceId, WorkspaceId};
use keygate_domain::model::WorkspaceType;
use keygate_domain::model::{AccessSystem, NewAccessSystem, NewEntrance, NewUserIdentity};
use keygate_providers::{
    AccessSystemProvider, Connection, HeldCredential, Holder, Link, ProviderError, Registry,
    VendorEvent, VendorEventKind, WebhookError, WebhookHeaders,
};
use keygate_store::Store;
use keygate_store::conformance::ClaimDue;
use keygate_store::testdb::TestDb;
use serde_json::{Value, json};

const SECRET: &str = "hook-secret";

/// A vendor whose webhook carries `x-token: <webhook_secret>` and a JSON array of
/// `{"id", "kind": "unlock"|"change", "door", "actor"}`; who holds what is scripted.
#[derive(Default)]
struct Hooky {
    holders: Mutex<BTreeMap<String, Vec<AccessMethodId>>>,
    down: Mutex<bool>,
}

#[async_trait]
impl AccessSystemProvider for Hooky {
    fn system_types(&self) -> Vec<String> {
        vec!["hooky".into()]
    }

    async fn discover(
        &self,
        system_type: &str,
        _connection: &Connection,
    ) -> Result<NewAccessSystem, ProviderError> {
        Ok(NewAccessSystem {
            name: "Hooky HQ".into(),
            external_type: "hooky_site".into(),
            system_type: system_type.into(),
            is_virtual: false,
            time_zone: "UTC".into(),
            capabilities: CapabilityDescriptor {
                permission_model: PermissionModel::CredentialBased,
                supported_modes: vec![AccessMethodMode::MobileKey, AccessMethodMode::CloudKey],
                pin_code_rules: None,
                is_card_encoding_required: false,
                can_remote_unlock: true,
                can_issue_mobile_keys: true,
                can_assign_entrances_directly: true,
                can_schedule_credentials: true,
                rate_limit: ProviderRateLimit {
                    requests_per_second: 5.0,
                    burst: 5,
                },
            },
            entrances: ["door-1", "door-2"]
                .iter()
                .map(|d| NewEntrance {
                    external_id: (*d).into(),
                    display_name: (*d).into(),
                    can_unlock_with_card: false,
                    can_unlock_with_code: false,
                    can_unlock_with_mobile_key: true,
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
        _system: &AccessSystem,
        _job: &keygate_domain::grant::ProvisionJob,
        _holder: &Holder,
    ) -> Result<keygate_domain::tracker::ProvisionResult, ProviderError> {
        Err(ProviderError::Transient("not in this test".into()))
    }

    async fn revoke(
        &self,
        _system: &AccessSystem,
        _job: &keygate_domain::action::RevokeJob,
    ) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn read_back(
        &self,
        _system: &AccessSystem,
        _m: AccessMethodId,
    ) -> Result<Option<HeldCredential>, ProviderError> {
        Ok(None)
    }

    fn parse_webhook(
        &self,
        link: &Link,
        headers: &WebhookHeaders,
        body: &[u8],
        now: time::OffsetDateTime,
    ) -> Result<Vec<VendorEvent>, WebhookError> {
        let secret = link
            .credentials
            .get("webhook_secret")
            .ok_or_else(|| WebhookError::SecretNotSet("none".into()))?;
        if headers.get("x-token").map(String::as_str) != Some(secret) {
            return Err(WebhookError::InvalidSignature("wrong token".into()));
        }
        let items: Vec<Value> = serde_json::from_slice(body)
            .map_err(|e| WebhookError::InvalidPayload(e.to_string()))?;
        Ok(items
            .iter()
            .map(|v| VendorEvent {
                vendor_event_id: v["id"].as_str().unwrap_or_default().to_owned(),
                occurred_at: now,
                kind: match v["kind"].as_str() {
                    Some("unlock") => VendorEventKind::Unlocked {
                        entrance: v["door"].as_str().unwrap_or_default().to_owned(),
                        actor: v["actor"].as_str().map(str::to_owned),
                    },
                    Some("change") => VendorEventKind::AccessChanged,
                    other => VendorEventKind::Ignored {
                        event_type: other.unwrap_or_default().to_owned(),
                    },
                },
            })
            .collect())
    }

    async fn webhook_actor_methods(
        &self,
        _system: &AccessSystem,
        actor: &str,
    ) -> Result<Vec<AccessMethodId>, ProviderError> {
        if *self.down.lock().expect("down") {
            return Err(ProviderError::Transient(
                "provider_unreachable: down".into(),
            ));
        }
        Ok(self
            .holders
            .lock()
            .expect("holders")
            .get(actor)
            .cloned()
            .unwrap_or_default())
    }
}

struct Fixture {
    app: App,
    hooky: Arc<Hooky>,
    _db: TestDb,
}

async fn fixture(db: TestDb) -> Fixture {
    let store: Arc<dyn Store> = db.store.clone();
    let hooky = Arc::new(Hooky::default());
    let mut app = common::app(store, Default::default());
    let mut providers: Registry = app.providers.clone();
    providers.register(hooky.clone());
    app.providers = providers;
    app.credentials = CredentialSeal::new(
        SealKeys::for_purpose(keygate_app::connections::CREDENTIALS_PURPOSE, &[9; 32], &[])
            .expect("key"),
    );
    Fixture {
        app,
        hooky,
        _db: db,
    }
}

async fn tenant(app: &App, name: &str, secret: Option<&str>) -> (WorkspaceId, AccessSystem) {
    let (ws, _, _) = app
        .create_workspace(CreateWorkspace {
            name: name.into(),
            workspace_type: WorkspaceType::Production,
            api_key_name: None,
        })
        .await
        .expect("workspace");
    let mut credentials = BTreeMap::from([("api_key".to_owned(), "k".to_owned())]);
    if let Some(s) = secret {
        credentials.insert("webhook_secret".into(), s.into());
    }
    let system = app
        .connect_access_system(
            ws.id,
            ConnectSystem {
                system_type: "hooky".into(),
                credentials,
                ..Default::default()
            },
        )
        .await
        .expect("connect");
    (ws.id, system)
}

async fn door(app: &App, ws: WorkspaceId, system: AccessSystemId, ext: &str) -> EntranceId {
    app.store
        .external_ids(ws, system)
        .await
        .expect("ids")
        .entrances
        .into_iter()
        .find(|(_, e)| e == ext)
        .expect("door")
        .0
}

async fn grant(app: &App, ws: WorkspaceId, doors: &[EntranceId]) -> AccessGrant {
    app.create_access_grant(
        ws,
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
                mode: AccessMethodMode::MobileKey,
                code: None,
            }],
            starts_at: None,
            ends_at: None,
            only_system: None,
        },
    )
    .await
    .expect("grant")
}

fn hook(system: AccessSystemId, token: &str, body: Value) -> InboundWebhook {
    InboundWebhook {
        acs_system_id: system,
        headers: BTreeMap::from([("x-token".to_owned(), token.to_owned())]),
        body: body.to_string().into_bytes(),
    }
}

async fn used(app: &App, ws: WorkspaceId) -> Vec<keygate_domain::events::Event> {
    app.store
        .list_events(
            ws,
            &EventFilter {
                event_types: vec![ACCESS_METHOD_USED.name.into()],
                ..EventFilter::default()
            },
            0,
            100,
        )
        .await
        .expect("events")
}

async fn backends() -> Vec<TestDb> {
    vec![TestDb::sqlite().await, TestDb::postgres().await]
}

#[tokio::test]
async fn an_unlock_is_recorded_once_and_attributed_to_its_grant() {
    for db in backends().await {
        let f = fixture(db).await;
        let (ws, system) = tenant(&f.app, "Acme", Some(SECRET)).await;
        let (other_ws, other_system) = tenant(&f.app, "Other", Some(SECRET)).await;
        let d1 = door(&f.app, ws, system.id, "door-1").await;
        let g = grant(&f.app, ws, &[d1]).await;
        let method = g.access_method_ids[0];
        let od = door(&f.app, other_ws, other_system.id, "door-1").await;
        let theirs = grant(&f.app, other_ws, &[od]).await.access_method_ids[0];
        f.hooky.holders.lock().expect("holders").extend([
            ("jane".to_owned(), vec![method]),
            // A vendor account mixing up tenants: never attributed across workspaces.
            ("mallory".to_owned(), vec![theirs]),
        ]);

        // Unknown and disconnected systems are not found; a refused delivery writes nothing.
        let body = json!([{"id": "e1", "kind": "unlock", "door": "door-1", "actor": "jane"}]);
        assert!(matches!(
            f.app
                .receive_vendor_webhook(hook(AccessSystemId::new(), SECRET, body.clone()))
                .await,
            Err(HookError::NotFound(_))
        ));
        let e = f
            .app
            .receive_vendor_webhook(hook(system.id, "forged", body.clone()))
            .await
            .expect_err("forged");
        assert_eq!(e.reason(), "invalid_signature");
        assert!(used(&f.app, ws).await.is_empty());

        // Twice in one delivery, then again: one event, attributed.
        let twice = json!([
            {"id": "e1", "kind": "unlock", "door": "door-1", "actor": "jane"},
            {"id": "e1", "kind": "unlock", "door": "door-1", "actor": "jane"},
        ]);
        let r = f
            .app
            .receive_vendor_webhook(hook(system.id, SECRET, twice))
            .await
            .expect("accepted");
        assert_eq!((r.received, r.duplicates, r.events.len()), (2, 1, 1));
        let r = f
            .app
            .receive_vendor_webhook(hook(system.id, SECRET, body))
            .await
            .expect("accepted");
        assert_eq!((r.duplicates, r.events.len()), (1, 0));
        let got = used(&f.app, ws).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].access_grant_id, Some(g.id));
        assert_eq!(got[0].access_method_id, Some(method));
        assert_eq!(got[0].acs_entrance_id, Some(d1));
        assert_eq!(got[0].acs_system_id, Some(system.id));
        assert_eq!(got[0].user_identity_id, Some(g.user_identity_id));

        // Another workspace's method, an unknown door, a stranger: seen, no event.
        let r = f
            .app
            .receive_vendor_webhook(hook(
                system.id,
                SECRET,
                json!([
                    {"id": "e2", "kind": "unlock", "door": "door-1", "actor": "mallory"},
                    {"id": "e3", "kind": "unlock", "door": "nowhere", "actor": "jane"},
                    {"id": "e4", "kind": "unlock", "door": "door-2", "actor": "jane"},
                    {"id": "e5", "kind": "unlock", "door": "door-1", "actor": "nobody"},
                ]),
            ))
            .await
            .expect("accepted");
        assert_eq!((r.received, r.events.len()), (4, 0));
        assert!(used(&f.app, other_ws).await.is_empty());

        // The vendor cannot say who unlocked: nothing recorded for it; its retry is processed.
        *f.hooky.down.lock().expect("down") = true;
        let later = json!([{"id": "e6", "kind": "unlock", "door": "door-1", "actor": "jane"}]);
        let e = f
            .app
            .receive_vendor_webhook(hook(system.id, SECRET, later.clone()))
            .await
            .expect_err("unavailable");
        assert_eq!(e.reason(), "provider_unreachable");
        *f.hooky.down.lock().expect("down") = false;
        let r = f
            .app
            .receive_vendor_webhook(hook(system.id, SECRET, later))
            .await
            .expect("retried");
        assert_eq!(r.events.len(), 1);

        // A system connected without a secret takes nothing; a disconnected one is not found.
        let (_, no_secret) = tenant(&f.app, "Unsigned", None).await;
        let e = f
            .app
            .receive_vendor_webhook(hook(no_secret.id, SECRET, json!([])))
            .await
            .expect_err("no secret");
        assert_eq!(e.reason(), "webhook_secret_not_set");
        f.app
            .disconnect_access_system(ws, system.id)
            .await
            .expect("disconnect");
        assert!(matches!(
            f.app
                .receive_vendor_webhook(hook(system.id, SECRET, json!([])))
                .await,
            Err(HookError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn an_access_change_makes_waiting_retries_due_and_wakes_the_orchestrator() {
    for db in backends().await {
        let f = fixture(db).await;
        let (ws, system) = tenant(&f.app, "Acme", Some(SECRET)).await;
        let d1 = door(&f.app, ws, system.id, "door-1").await;
        grant(&f.app, ws, &[d1]).await;
        let t0 = keygate_domain::model::now();
        let jobs = f
            .app
            .store
            .claim_due("worker", Duration::from_secs(30), t0)
            .await
            .expect("claim");
        assert_eq!(jobs.len(), 1);
        assert!(
            f.app
                .store
                .reschedule_job(&jobs[0], t0 + time::Duration::hours(1), "lost", false, t0)
                .await
                .expect("reschedule")
        );
        let bell = f.app.tracker.orchestrator_bell();
        // The grant's own wake-up, stored as a permit, is taken first.
        let _ = tokio::time::timeout(Duration::from_millis(20), bell.notified()).await;
        let rung = bell.notified();
        let r = f
            .app
            .receive_vendor_webhook(hook(
                system.id,
                SECRET,
                json!([{"id": "c1", "kind": "change"}]),
            ))
            .await
            .expect("accepted");
        assert_eq!(r.retries_hastened, 1);
        tokio::time::timeout(Duration::from_secs(1), rung)
            .await
            .expect("the orchestrator was woken");
        let due = f
            .app
            .store
            .due_systems(keygate_domain::model::now(), 10)
            .await
            .expect("due");
        assert!(due.iter().any(|d| d.acs_system_id == system.id), "{due:?}");
    }
}
