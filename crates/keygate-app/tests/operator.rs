//! Operator and webhook use cases through `keygate-app` alone: the SQLite store, an in-process
//! cache, no gRPC.

mod common;

use std::sync::Arc;

use keygate_app::App;
use keygate_app::auth::{Authenticator, Principal};
use keygate_app::ssrf::NetworkPolicy;
use keygate_app::webhooks::CreateWebhook;
use keygate_app::workspaces::{ConnectSystem, CreateApiKey};
use keygate_domain::ids::WorkspaceId;
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
                system_type: "acme_cloud".into(),
                name: None,
                time_zone: None,
            },
        )
        .await
        .expect_err("unknown type");
    assert_eq!(err.reason(), ErrorReason::UnknownAccessSystemType);
    assert!(
        keygate_app::workspaces::time_zone("/etc/passwd").is_err(),
        "a path is not a time zone"
    );
    assert_eq!(
        keygate_app::workspaces::time_zone(" Europe/Madrid ").expect("valid"),
        Some("Europe/Madrid".to_owned())
    );
}
