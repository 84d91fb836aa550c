//! Abuse limits of the use cases: unknown API key ids are remembered briefly (so made-up keys do
//! not reach the store each time), and a workspace's webhooks are capped, also under concurrent
//! creates. On SQLite and PostgreSQL (`KEYGATE_TEST_DATABASE_URL`), in-process and Redis
//! (`KEYGATE_TEST_REDIS_URL`) caches.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use keygate_app::auth::{Authenticator, Principal};
use keygate_app::ssrf::NetworkPolicy;
use keygate_app::tokens::mint_api_key;
use keygate_app::tracker::Committed;
use keygate_app::webhooks::CreateWebhook;
use keygate_app::workspaces::CreateApiKey;
use keygate_cache::{Cache, InProcessCache, RedisCache};
use keygate_domain::ids::{ApiKeyId, WorkspaceId};
use keygate_domain::model::{ApiKey, now};
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::{Error, ErrorReason};
use keygate_store::conformance::seeded_workspace;
use keygate_store::testdb::TestDb;
use keygate_store::{ApiKeyStore, Idempotency, Store};
use time::OffsetDateTime;

const PATH: &str = "/keygate.v1.AccessGrantService/ListAccessGrants";

/// The store's API keys, counting the look-ups that reach it.
struct Counting {
    store: Arc<dyn Store>,
    finds: AtomicUsize,
}

#[async_trait]
impl ApiKeyStore for Counting {
    async fn create_api_key(&self, key: &ApiKey) -> Result<(), Error> {
        self.store.create_api_key(key).await
    }

    async fn find_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, Error> {
        self.finds.fetch_add(1, Ordering::SeqCst);
        self.store.find_api_key(id).await
    }

    async fn list_api_keys(
        &self,
        workspace: WorkspaceId,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, Error> {
        self.store.list_api_keys(workspace, page).await
    }

    async fn revoke_api_key(
        &self,
        workspace: WorkspaceId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey, Error> {
        self.store.revoke_api_key(workspace, id, at).await
    }
}

fn bearer(token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    h
}

fn redis_url() -> String {
    std::env::var("KEYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn caches() -> Vec<Arc<dyn Cache>> {
    vec![
        Arc::new(InProcessCache::new(1_000)),
        Arc::new(RedisCache::new(&redis_url()).expect("redis url")),
    ]
}

#[tokio::test]
async fn unknown_key_ids_reach_the_store_once_then_are_remembered() {
    let db = TestDb::sqlite().await;
    for cache in caches() {
        let counting = Arc::new(Counting {
            store: db.store.clone(),
            finds: AtomicUsize::new(0),
        });
        let auth = Authenticator::new(counting.clone(), cache.clone(), None);
        let forged = mint_api_key();
        for _ in 0..5 {
            let err = auth
                .authenticate(PATH, &bearer(&forged.token))
                .await
                .expect_err("unknown key");
            assert_eq!(err.reason(), ErrorReason::InvalidApiKey);
        }
        assert_eq!(
            counting.finds.load(Ordering::SeqCst),
            1,
            "{}: the same made-up id reached the store more than once",
            cache.name()
        );
    }
}

#[tokio::test]
async fn a_key_created_after_its_id_was_probed_authenticates_at_once() {
    let db = TestDb::sqlite().await;
    let ws = seeded_workspace(&*db.store, "probed").await;
    for cache in caches() {
        let app = {
            let mut app = common::app(db.store.clone(), NetworkPolicy::default());
            app.tracker =
                keygate_app::tracker::Tracker::in_process(db.store.clone(), cache.clone());
            app
        };
        let auth = Authenticator::new(db.store.clone(), cache.clone(), None);
        // Someone probes an id before a key with it exists: "not found" is remembered.
        let minted = mint_api_key();
        let err = auth
            .authenticate(PATH, &bearer(&minted.token))
            .await
            .expect_err("not yet created");
        assert_eq!(err.reason(), ErrorReason::InvalidApiKey);
        // The key is then created; its commit evicts the id, as CreateApiKey's does.
        db.store
            .create_api_key(&ApiKey {
                id: minted.id,
                workspace_id: ws,
                name: "late".into(),
                secret_sha256: minted.secret_sha256.clone(),
                created_at: now(),
                revoked_at: None,
            })
            .await
            .expect("create");
        app.tracker
            .committed(Committed::new(ws).api_key(minted.id))
            .await;
        let p = auth
            .authenticate(PATH, &bearer(&minted.token))
            .await
            .expect("not hidden by the negative entry");
        assert_eq!(
            p,
            Principal::Workspace {
                workspace_id: ws,
                api_key_id: minted.id
            }
        );
        // And through the use case: a new key works on its first call.
        let (key, token) = app
            .create_api_key(ws, CreateApiKey { name: "new".into() })
            .await
            .expect("create key");
        let p = auth
            .authenticate(PATH, &bearer(&token))
            .await
            .expect("new key");
        assert_eq!(
            p,
            Principal::Workspace {
                workspace_id: ws,
                api_key_id: key.id
            }
        );
    }
}

#[tokio::test]
async fn recheck_sees_revocation() {
    let db = TestDb::sqlite().await;
    let ws = seeded_workspace(&*db.store, "recheck").await;
    let app = common::app(db.store.clone(), NetworkPolicy::default());
    let auth = Authenticator::new(db.store.clone(), app.tracker.reads().cache().clone(), None);
    let (_, token) = app
        .create_api_key(ws, CreateApiKey { name: "w".into() })
        .await
        .expect("key");
    let p = auth
        .authenticate(PATH, &bearer(&token))
        .await
        .expect("valid");
    auth.recheck(&p).await.expect("still valid");
    let Principal::Workspace { api_key_id, .. } = p else {
        panic!("workspace principal");
    };
    app.revoke_api_key(ws, api_key_id).await.expect("revoke");
    let err = auth.recheck(&p).await.expect_err("revoked");
    assert_eq!(err.reason(), ErrorReason::ApiKeyRevoked);
    auth.recheck(&Principal::Operator)
        .await
        .expect("the operator has no key to revoke");
}

fn hook(n: usize, request_id: Option<&str>) -> CreateWebhook {
    CreateWebhook {
        idem: request_id.map(|r| Idempotency {
            request_id: r.into(),
            operation: "CreateWebhook",
            request_sha256: vec![n as u8; 32],
        }),
        url: format!("https://127.0.0.1:9/hook/{n}"),
        event_types: Vec::new(),
    }
}

fn loopback() -> NetworkPolicy {
    NetworkPolicy {
        allow_loopback: true,
        ..NetworkPolicy::default()
    }
}

#[tokio::test]
async fn webhooks_are_capped_per_workspace() {
    let db = TestDb::sqlite().await;
    let ws = seeded_workspace(&*db.store, "hooks").await;
    let other = seeded_workspace(&*db.store, "other").await;
    let mut app = common::app(db.store.clone(), loopback());
    app.limits.webhooks_per_workspace = 2;
    let (first, _) = app
        .create_webhook(ws, hook(1, Some("r1")))
        .await
        .expect("first");
    app.create_webhook(ws, hook(2, None)).await.expect("second");
    let err = app
        .create_webhook(ws, hook(3, None))
        .await
        .expect_err("third is over the cap");
    let Error::LimitReached { reason, .. } = &err else {
        panic!("want LimitReached, got {err:?}");
    };
    assert_eq!(*reason, ErrorReason::WebhookLimitReached);
    assert_eq!(err.reason().as_str(), "WEBHOOK_LIMIT_REACHED");
    // A replay of a create that succeeded is not a new webhook.
    let (again, _) = app
        .create_webhook(ws, hook(1, Some("r1")))
        .await
        .expect("replay");
    assert_eq!(again.id, first.id);
    // Another workspace has its own count.
    app.create_webhook(other, hook(4, None))
        .await
        .expect("other workspace");
    // Deleting one makes room.
    app.delete_webhook(ws, first.id).await.expect("delete");
    app.create_webhook(ws, hook(5, None))
        .await
        .expect("room again");
    // 0: no cap.
    app.limits.webhooks_per_workspace = 0;
    for n in 6..10 {
        app.create_webhook(ws, hook(n, None))
            .await
            .expect("uncapped");
    }
}

#[tokio::test]
async fn concurrent_creates_do_not_pass_the_cap_together_on_postgres() {
    let db = TestDb::postgres().await;
    let ws = seeded_workspace(&*db.store, "race").await;
    let mut app = common::app(db.store.clone(), loopback());
    app.limits.webhooks_per_workspace = 3;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..12 {
        let app = app.clone();
        tasks.spawn(async move { app.create_webhook(ws, hook(n, None)).await });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(_) => created += 1,
            Err(Error::LimitReached { .. }) => refused += 1,
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!((created, refused), (3, 9));
}
