//! Operator and webhook use cases through `keygate-app` alone: the SQLite store, an in-process
//! cache, no gRPC.

mod common;

use std::sync::Arc;

use keygate_app::App;
use keygate_app::auth::{Authenticator, Principal};
use keygate_app::idempotency;
use keygate_app::ssrf::NetworkPolicy;
use keygate_app::webhooks::CreateWebhook;
use keygate_app::workspaces::{ConnectSystem, CreateApiKey, CreateWorkspace};
use keygate_domain::ids::WorkspaceId;
use keygate_domain::model::WorkspaceType;
use keygate_domain::{Error, ErrorReason};
use keygate_store::Store;
use keygate_store::conformance::seeded_workspace;
use keygate_store::testdb::TestDb;

struct Fixture {
    app: App,
    ws: WorkspaceId,
    _db: TestDb,
}

async fn fixture(webhook_network: NetworkPolicy) -> Fixture {
    let db = TestDb::sqlite().await;
    let store: Arc<dyn Store> = db.store.clone();
    let ws = seeded_workspace(&*store, "operator").await;
    let app = common::app(store, webhook_network);
    Fixture { app, ws, _db: db }
}

fn hook(url: &str) -> CreateWebhook {
    CreateWebhook {
        idem: None,
        url: url.into(),
        event_types: Vec::new(),
    }
}

#[tokio::test]
async fn webhook_create_refuses_loopback_under_the_default_policy() {
    let f = fixture(NetworkPolicy::default()).await;
    let err = f
        .app
        .create_webhook(f.ws, hook("https://127.0.0.1:9/hook"))
        .await
        .expect_err("loopback refused");
    let Error::InvalidArgument { violations } = &err else {
        panic!("want INVALID_ARGUMENT, got {err:?}");
    };
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, "url");
    assert!(
        violations[0].description.contains("loopback"),
        "{violations:?}"
    );
    // An unknown event type is reported together with the URL.
    let mut both = hook("https://127.0.0.1:9/hook");
    both.event_types = vec!["no.such.event".into()];
    let Err(Error::InvalidArgument { violations }) = f.app.create_webhook(f.ws, both).await else {
        panic!("want INVALID_ARGUMENT");
    };
    assert_eq!(violations.len(), 2, "{violations:?}");

    let open = fixture(NetworkPolicy {
        allow_loopback: true,
        ..NetworkPolicy::default()
    })
    .await;
    let (w, secret) = open
        .app
        .create_webhook(open.ws, hook("https://127.0.0.1:9/hook"))
        .await
        .expect("loopback allowed by the policy");
    assert!(secret.starts_with(keygate_app::webhooks::SECRET_PREFIX));
    assert_eq!(
        open.app.get_webhook(open.ws, w.id).await.expect("get").url,
        w.url
    );
}

fn bearer(token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    h
}

#[tokio::test]
async fn a_revoked_api_key_fails_authentication_at_once() {
    let f = fixture(NetworkPolicy::default()).await;
    let auth = Authenticator::new(
        f.app.store.clone(),
        f.app.tracker.reads().cache().clone(),
        None,
    );
    let path = "/keygate.v1.AccessGrantService/ListAccessGrants";
    let (key, token) = f
        .app
        .create_api_key(f.ws, CreateApiKey { name: "ci".into() })
        .await
        .expect("create key");
    // The first authentication caches the key's record.
    let p = auth
        .authenticate(path, &bearer(&token))
        .await
        .expect("valid key");
    assert_eq!(
        p,
        Principal::Workspace {
            workspace_id: f.ws,
            api_key_id: key.id
        }
    );
    let revoked = f.app.revoke_api_key(f.ws, key.id).await.expect("revoke");
    assert!(revoked.revoked_at.is_some());
    let err = auth
        .authenticate(path, &bearer(&token))
        .await
        .expect_err("revoked at once, not after the cache TTL");
    assert_eq!(err.reason(), ErrorReason::ApiKeyRevoked);
}

#[tokio::test]
async fn only_known_system_types_can_be_connected() {
    let f = fixture(NetworkPolicy::default()).await;
    let err = f
        .app
        .connect_access_system(
            f.ws,
            ConnectSystem {
                idem: None,
                system_type: "acme_cloud".into(),
                name: None,
                time_zone: None,
                ..Default::default()
            },
        )
        .await
        .expect_err("unknown type");
    assert_eq!(err.reason(), ErrorReason::UnknownAccessSystemType);
    assert!(
        keygate_app::workspaces::time_zone("/etc/passwd").is_err(),
        "a path is not a time zone"
    );
    assert!(
        keygate_app::workspaces::time_zone("Mars/Olympus").is_err(),
        "a zone the IANA database does not know is refused"
    );
    assert_eq!(
        keygate_app::workspaces::time_zone(" Europe/Madrid ").expect("valid"),
        Some("Europe/Madrid".to_owned())
    );
}

/// A vendor this build did not know: its adapter, registered for its type, is all it takes to
/// connect it; what is stored (capabilities, doors) is what the adapter read.
struct Acme {
    reachable: bool,
}

#[async_trait::async_trait]
impl keygate_providers::AccessSystemProvider for Acme {
    fn system_types(&self) -> Vec<String> {
        vec!["acme_cloud".into()]
    }

    async fn discover(
        &self,
        system_type: &str,
        connection: &keygate_providers::Connection,
    ) -> Result<keygate_domain::model::NewAccessSystem, keygate_providers::ProviderError> {
        use keygate_domain::capability::{
            AccessMethodMode, CapabilityDescriptor, PermissionModel, ProviderRateLimit,
        };
        if !self.reachable {
            return Err(keygate_providers::ProviderError::Transient(
                "connection refused".into(),
            ));
        }
        let door = |name: &str| keygate_domain::model::NewEntrance {
            external_id: name.to_lowercase().replace(' ', "-"),
            display_name: name.into(),
            can_unlock_with_card: false,
            can_unlock_with_code: true,
            can_unlock_with_mobile_key: false,
            can_unlock_with_cloud_key: true,
            can_belong_to_reservation: false,
        };
        Ok(keygate_domain::model::NewAccessSystem {
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
            entrances: vec![door("Front Door"), door("Loading Dock")],
            access_groups: Vec::new(),
            encoders: Vec::new(),
        })
    }

    async fn provision(
        &self,
        _system: &keygate_domain::model::AccessSystem,
        _job: &keygate_domain::grant::ProvisionJob,
        _holder: &keygate_providers::Holder,
    ) -> Result<keygate_domain::tracker::ProvisionResult, keygate_providers::ProviderError> {
        Err(keygate_providers::ProviderError::Transient(
            "not in this test".into(),
        ))
    }

    async fn revoke(
        &self,
        _system: &keygate_domain::model::AccessSystem,
        _job: &keygate_domain::action::RevokeJob,
    ) -> Result<(), keygate_providers::ProviderError> {
        Ok(())
    }

    async fn read_back(
        &self,
        _system: &keygate_domain::model::AccessSystem,
        _access_method_id: keygate_domain::ids::AccessMethodId,
    ) -> Result<Option<keygate_providers::HeldCredential>, keygate_providers::ProviderError> {
        Ok(None)
    }
}

fn acme(name: Option<&str>) -> ConnectSystem {
    ConnectSystem {
        idem: None,
        system_type: "acme_cloud".into(),
        name: name.map(str::to_owned),
        time_zone: Some("Europe/Berlin".into()),
        ..Default::default()
    }
}

async fn system_count(f: &Fixture, ws: WorkspaceId) -> usize {
    f.app
        .list_access_systems(
            ws,
            None,
            &keygate_domain::page::PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("systems")
        .items
        .len()
}

#[tokio::test]
async fn a_new_vendor_is_an_adapter_and_a_registration() {
    let mut f = fixture(NetworkPolicy::default()).await;
    let (prod, _, _) = f
        .app
        .create_workspace(CreateWorkspace {
            name: "Acme production".into(),
            workspace_type: WorkspaceType::Production,
            api_key_name: None,
        })
        .await
        .expect("production workspace");
    let prod = prod.id;
    assert_eq!(system_count(&f, prod).await, 0, "production starts empty");
    // Not registered: refused, with the types this build knows; nothing stored.
    let err = f
        .app
        .connect_access_system(prod, acme(None))
        .await
        .expect_err("unknown type");
    assert_eq!(err.reason(), ErrorReason::UnknownAccessSystemType);
    assert!(err.to_string().contains("virtual_salto_ks"), "{err}");
    // Registered but unreachable: FAILED_PRECONDITION `PROVIDER_UNREACHABLE`, nothing stored.
    f.app
        .providers
        .register(Arc::new(Acme { reachable: false }));
    let err = f
        .app
        .connect_access_system(prod, acme(None))
        .await
        .expect_err("unreachable");
    assert_eq!(err.reason(), ErrorReason::ProviderUnreachable, "{err:?}");
    assert_eq!(system_count(&f, prod).await, 0);
    // Reachable: stored as the adapter read it, once per request_id.
    f.app.providers.register(Arc::new(Acme { reachable: true }));
    let cmd = ConnectSystem {
        idem: idempotency::claim("ConnectAccessSystem", Some("acme-1".into()), b"acme"),
        ..acme(Some("Berlin office"))
    };
    let s = f
        .app
        .connect_access_system(prod, cmd.clone())
        .await
        .expect("connect");
    let again = f
        .app
        .connect_access_system(prod, cmd)
        .await
        .expect("replay");
    assert_eq!(again.id, s.id, "a replay answers the first system");
    assert_eq!(
        (
            s.system_type.as_str(),
            s.name.as_str(),
            s.time_zone.as_str()
        ),
        ("acme_cloud", "Berlin office", "Europe/Berlin")
    );
    assert!(!s.is_virtual);
    assert_eq!(s.capabilities.rate_limit.requests_per_second, 3.0);
    let doors = f
        .app
        .list_entrances(
            prod,
            Some(s.id),
            &keygate_domain::page::PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("entrances")
        .items;
    let names: Vec<_> = doors.iter().map(|d| d.display_name.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"Front Door") && names.contains(&"Loading Dock"));
    assert_eq!(system_count(&f, prod).await, 1);
    // Sandbox workspaces connect only virtual systems, production ones only real ones.
    let before = system_count(&f, f.ws).await;
    let err = f
        .app
        .connect_access_system(f.ws, acme(None))
        .await
        .expect_err("real system in a sandbox");
    assert_eq!(err.reason(), ErrorReason::WorkspaceTypeMismatch);
    assert_eq!(system_count(&f, f.ws).await, before);
    let err = f
        .app
        .connect_access_system(
            prod,
            ConnectSystem {
                system_type: "virtual_latch".into(),
                ..acme(None)
            },
        )
        .await
        .expect_err("virtual system in production");
    assert_eq!(err.reason(), ErrorReason::WorkspaceTypeMismatch);
    assert_eq!(system_count(&f, prod).await, 1);
}
