//! Abuse limits through the real server (tonic on loopback): a client address that failed
//! authentication too often is refused before auth; a workspace may hold only so many
//! `WatchEvents` streams open at once, and a stream ends with UNAUTHENTICATED within seconds of
//! its API key's revocation.

use std::sync::Arc;
use std::time::Duration;

use keygate_app::App;
use keygate_app::tokens::PageTokens;
use keygate_app::tracker::Tracker;
use keygate_app::workspaces::{CreateApiKey, CreateWorkspace};
use keygate_domain::ids::WorkspaceId;
use keygate_domain::instant_key::Links;
use keygate_domain::model::WorkspaceType;
use keygate_gateway::services::events::StreamLimits;
use keygate_gateway::{GatewayDeps, ServerConfig};
use keygate_proto::v1::event_service_client::EventServiceClient;
use keygate_proto::v1::{WatchEventsRequest, WatchEventsResponse};
use keygate_store::testdb::TestDb;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

struct Server {
    app: App,
    channel: Channel,
    _stop: watch::Sender<bool>,
    _db: TestDb,
}

async fn start(limits: StreamLimits) -> Server {
    start_with(limits, 60).await
}

async fn start_with(limits: StreamLimits, auth_failures_per_minute: u32) -> Server {
    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    let tracker = Tracker::in_process(
        store.clone(),
        Arc::new(keygate_cache::InProcessCache::new(1_000)),
    );
    let links = Links::new("http://keygate.test");
    links.set_secret(vec![5; 32]);
    let app = App::new(store, tracker, links, PageTokens::new(vec![6; 32]), {
        let mut r = keygate_providers::Registry::new();
        r.register(Arc::new(
            keygate_providers::virtual_system::VirtualSystems::new(Duration::ZERO),
        ));
        r
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let deps = GatewayDeps {
        app: app.clone(),
        admin_token: None,
        shutdown: stop_rx.clone(),
    };
    let mut cfg = ServerConfig {
        streams: limits,
        ..ServerConfig::default()
    };
    cfg.stack.auth_failures_per_minute = auth_failures_per_minute;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let mut stop = stop_rx;
    tokio::spawn(keygate_gateway::serve(
        listener,
        deps,
        cfg,
        health,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    Server {
        app,
        channel,
        _stop: stop_tx,
        _db: db,
    }
}

async fn workspace(app: &App) -> (WorkspaceId, String) {
    let (ws, _key, token) = app
        .create_workspace(CreateWorkspace {
            name: "Watchers".into(),
            workspace_type: WorkspaceType::Sandbox,
            api_key_name: None,
        })
        .await
        .expect("workspace");
    (ws.id, token)
}

async fn watch(
    channel: &Channel,
    key: &str,
) -> Result<tonic::Streaming<WatchEventsResponse>, tonic::Status> {
    let mut req = tonic::Request::new(WatchEventsRequest::default());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    EventServiceClient::new(channel.clone())
        .watch_events(req)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn streams_are_capped_per_workspace() {
    let s = start(StreamLimits {
        per_workspace: 2,
        recheck_every: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    let (_, key) = workspace(&s.app).await;
    let (_, other_key) = workspace(&s.app).await;
    let first = watch(&s.channel, &key).await.expect("first stream");
    let _second = watch(&s.channel, &key).await.expect("second stream");
    let refused = watch(&s.channel, &key).await.expect_err("third stream");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        refused
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone()),
        Some("WATCH_STREAM_LIMIT_REACHED".to_owned())
    );
    let _theirs = watch(&s.channel, &other_key)
        .await
        .expect("another workspace has its own cap");
    // Closing a stream frees its place (once the server notices the client left).
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match watch(&s.channel, &key).await {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the closed stream's place was never freed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
}

#[tokio::test]
async fn a_stream_ends_unauthenticated_soon_after_its_key_is_revoked() {
    let s = start(StreamLimits {
        per_workspace: 10,
        recheck_every: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let (ws, _) = workspace(&s.app).await;
    let (key, token) = s
        .app
        .create_api_key(
            ws,
            CreateApiKey {
                name: "watcher".into(),
            },
        )
        .await
        .expect("key");
    let mut stream = watch(&s.channel, &token).await.expect("stream");
    // Still open a while later: the re-check passes while the key stands.
    let early = tokio::time::timeout(Duration::from_millis(1200), stream.message()).await;
    assert!(early.is_err(), "the stream ended early: {early:?}");
    let revoked_at = std::time::Instant::now();
    s.app.revoke_api_key(ws, key.id).await.expect("revoke");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream outlived its key by 5 s");
    let status = end.expect_err("ends with an error");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone()),
        Some("API_KEY_REVOKED".to_owned())
    );
    assert!(
        revoked_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        revoked_at.elapsed()
    );
}

/// The re-check is one per key, shared by the key's streams: revoking a key ends all of its
/// streams and none of another key's; a key whose streams all closed is checked again when a
/// new stream opens.
#[tokio::test]
async fn a_revoked_key_ends_all_its_streams_and_only_those() {
    let s = start(StreamLimits {
        per_workspace: 10,
        recheck_every: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let (ws, _) = workspace(&s.app).await;
    let mut keys = Vec::new();
    for name in ["first", "second"] {
        keys.push(
            s.app
                .create_api_key(ws, CreateApiKey { name: name.into() })
                .await
                .expect("key"),
        );
    }
    let (first, first_token) = &keys[0];
    let (_, second_token) = &keys[1];

    // A stream of the first key opens and closes; its check ends with it.
    drop(watch(&s.channel, first_token).await.expect("stream"));
    tokio::time::sleep(Duration::from_millis(700)).await;

    let mut firsts = Vec::new();
    for _ in 0..3 {
        firsts.push(watch(&s.channel, first_token).await.expect("stream"));
    }
    let mut other = watch(&s.channel, second_token).await.expect("stream");
    s.app.revoke_api_key(ws, first.id).await.expect("revoke");
    for mut stream in firsts {
        let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a stream outlived its key by 5 s");
        let status = end.expect_err("ends with an error");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            status
                .get_error_details()
                .error_info()
                .map(|i| i.reason.clone()),
            Some("API_KEY_REVOKED".to_owned())
        );
    }
    let still = tokio::time::timeout(Duration::from_millis(900), other.message()).await;
    assert!(still.is_err(), "the other key's stream ended: {still:?}");
}

#[tokio::test]
async fn a_client_that_keeps_failing_authentication_is_refused_before_auth() {
    let s = start_with(StreamLimits::default(), 3).await;
    let (_, key) = workspace(&s.app).await;
    let forged = format!("kg_{}_{}", uuid::Uuid::new_v4().simple(), "A".repeat(43));
    for _ in 0..3 {
        let e = watch(&s.channel, &forged).await.expect_err("made-up key");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }
    let e = watch(&s.channel, &forged)
        .await
        .expect_err("over the budget");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    let details = e.get_error_details();
    assert_eq!(
        details.error_info().map(|i| i.reason.clone()),
        Some("AUTH_FAILURES_LIMITED".to_owned())
    );
    assert!(
        details.retry_info().and_then(|r| r.retry_delay).is_some(),
        "RetryInfo says when to retry"
    );
    // The peer address is the client: this one (127.0.0.1) is refused even with its good key.
    let e = watch(&s.channel, &key).await.expect_err("same address");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
}
