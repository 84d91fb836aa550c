//! Reflection, health, readiness, limits and shutdown, as grpcurl and Kubernetes see them.

use std::time::Duration;

use keygate_proto::v1;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;

use crate::harness::*;

const SERVICES: [&str; 10] = [
    "keygate.v1.AccessGrantService",
    "keygate.v1.AccessMethodService",
    "keygate.v1.AccessSystemService",
    "keygate.v1.AcsUserService",
    "keygate.v1.UserIdentityService",
    "keygate.v1.InstantKeyService",
    "keygate.v1.EventService",
    "keygate.v1.WebhookService",
    "keygate.v1.ActionAttemptService",
    "keygate.admin.v1.WorkspaceService",
];

async fn list_v1(ch: &tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection v1")
        .into_inner();
    match stream.next().await {
        Some(Ok(r)) => match r.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected {other:?}"),
        },
        other => panic!("unexpected {other:?}"),
    }
}

async fn list_v1alpha(ch: &tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    match stream.next().await {
        Some(Ok(r)) => match r.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected {other:?}"),
        },
        other => panic!("unexpected {other:?}"),
    }
}

async fn health(ch: &tonic::transport::Channel, service: &str) -> i32 {
    HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status
}

#[tokio::test]
async fn reflection_and_health_need_no_credentials() {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::default());
    let ch = kg.channel().await;
    for listed in [list_v1(&ch).await, list_v1alpha(&ch).await] {
        for s in SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
            assert!(listed.iter().any(|l| l == s), "{s} not in {listed:?}");
        }
    }
    assert_eq!(health(&ch, "").await, ServingStatus::Serving as i32);
    for s in SERVICES {
        assert_eq!(health(&ch, s).await, ServingStatus::Serving as i32, "{s}");
    }
    assert_eq!(kg.http_status("/livez"), 200);
    assert_eq!(kg.http_status("/readyz"), 200);
}

#[tokio::test]
async fn not_serving_until_the_schema_is_migrated() {
    let dir = DataDir::new();
    let opts = Options {
        extra_args: vec!["--migrate-on-start".into(), "false".into()],
        ..Options::default()
    };
    let mut kg = Keygate::start_until(&dir.0, &opts, "keygate: HTTP");
    let ch = kg.channel().await;
    assert_eq!(health(&ch, "").await, ServingStatus::NotServing as i32);
    assert_eq!(
        health(&ch, "keygate.v1.UserIdentityService").await,
        ServingStatus::NotServing as i32
    );
    assert_eq!(kg.http_status("/readyz"), 503);
    assert_eq!(
        kg.http_status("/livez"),
        200,
        "alive while waiting for the schema"
    );

    let check = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["migrate", "--check", "--data-dir"])
        .arg(&dir.0)
        .output()
        .expect("migrate --check");
    assert!(
        !check.status.success(),
        "--check fails on an empty database"
    );
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["migrate", "--data-dir"])
        .arg(&dir.0)
        .output()
        .expect("migrate");
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    kg.wait_for_line("keygate: ready", Duration::from_secs(30));
    assert_eq!(health(&ch, "").await, ServingStatus::Serving as i32);
    assert_eq!(kg.http_status("/readyz"), 200);
}

#[tokio::test]
async fn sigterm_flips_health_ends_streams_and_exits_in_time() {
    let dir = DataDir::new();
    let opts = Options {
        extra_args: vec!["--drain-secs".into(), "3".into()],
        ..Options::default()
    };
    let mut kg = Keygate::start(&dir.0, &opts);
    let ch = kg.channel().await;
    let mut watch = HealthClient::new(ch.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("first").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let (status, took) = kg.terminate(Duration::from_secs(10));
    assert!(status.success(), "clean exit, got {status:?}");
    assert!(
        took < Duration::from_secs(5),
        "exit bounded by the drain time, took {took:?}"
    );

    // The watcher saw NOT_SERVING, and then its stream ended instead of hanging.
    let mut saw_not_serving = false;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
        match item {
            Ok(r) if r.status == ServingStatus::NotServing as i32 => saw_not_serving = true,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(saw_not_serving, "health flipped to NOT_SERVING before exit");
}

#[tokio::test]
async fn per_workspace_rate_limit_says_when_to_retry() {
    let dir = DataDir::new();
    let opts = Options {
        extra_args: ["--rate-limit-rps", "0.5", "--rate-limit-burst", "3"]
            .map(String::from)
            .to_vec(),
        ..Options::with_admin()
    };
    let kg = Keygate::start(&dir.0, &opts);
    let ch = kg.channel().await;
    let (_a, key_a) = create_workspace(&ch, "Busy", true).await;
    let (_b, key_b) = create_workspace(&ch, "Quiet", true).await;
    let mut ui = identities(&ch);
    for _ in 0..3 {
        ui.list_user_identities(authed(&key_a, v1::ListUserIdentitiesRequest::default()))
            .await
            .expect("within burst");
    }
    let s = assert_fails(
        ui.list_user_identities(authed(&key_a, v1::ListUserIdentitiesRequest::default()))
            .await,
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );
    let delay = s
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(2),
        "{delay:?}"
    );
    // Another workspace has its own bucket.
    ui.list_user_identities(authed(&key_b, v1::ListUserIdentitiesRequest::default()))
        .await
        .expect("other workspace unaffected");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_unary_call_finish() {
    use sqlx::Connection as _;
    let dir = DataDir::new();
    let opts = Options {
        extra_args: vec!["--drain-secs".into(), "10".into()],
        ..Options::default()
    };
    let mut kg = Keygate::start(&dir.0, &opts);
    let key = kg.sandbox_key.clone().expect("sandbox key");
    let ch = kg.channel().await;

    // Hold SQLite's write lock so the next write blocks inside the server (busy timeout 5 s).
    let url = format!("sqlite://{}", dir.0.join("keygate.db").display());
    let mut blocker = sqlx::SqliteConnection::connect(&url).await.expect("open");
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .expect("lock");

    let call = {
        let ch = ch.clone();
        let key = key.clone();
        tokio::spawn(async move {
            identities(&ch)
                .create_user_identity(authed(&key, jane("drain-1")))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !call.is_finished(),
        "the call is in flight, waiting for the lock"
    );

    let pid = kg.pid();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    tokio::time::sleep(Duration::from_millis(400)).await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("unlock");

    let created = call
        .await
        .expect("join")
        .expect("the in-flight call completed after SIGTERM");
    assert_eq!(
        created.into_inner().user_identity.expect("ui").full_name,
        "Jane Doe"
    );
    let (status, took) = kg.terminate_wait(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10));
}
