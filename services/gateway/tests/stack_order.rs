//! The middleware stack runs in the order `stack::ORDER` names, and each stage can stop a call.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use keygate_cache::InProcessCache;
use keygate_gateway::auth::Authenticator;
use keygate_gateway::stack::{self, ORDER, StackConfig, Trail};
use keygate_store::testdb::TestDb;
use tonic::body::Body;
use tower::{Layer as _, ServiceExt as _};

fn config() -> StackConfig {
    StackConfig {
        rate_per_second: 100.0,
        rate_burst: 100,
        max_deadline: Duration::from_secs(5),
        max_in_flight: 8,
        adaptive_in_flight: false,
        auth_failures_per_minute: 60,
        shared_rate: None,
    }
}

async fn run(path: &str, headers: &[(&str, &str)]) -> (Vec<&'static str>, Response<Body>) {
    let db = TestDb::sqlite().await;
    let auth = Authenticator::new(
        db.store.clone(),
        Arc::new(InProcessCache::new(10)),
        Some("admin".into()),
    );
    let probe = tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
    });
    let svc = stack::build(&config(), auth).layer(probe);
    let trail = Trail::default();
    let mut req = Request::builder().uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::empty()).expect("request");
    req.extensions_mut().insert(trail.clone());
    let resp = svc.oneshot(req).await.expect("infallible");
    let seen = trail.0.lock().expect("trail").clone();
    (seen, resp)
}

#[tokio::test]
async fn stages_run_in_the_named_order() {
    let (seen, resp) = run("/grpc.health.v1.Health/Check", &[]).await;
    assert_eq!(seen, ORDER);
    assert_eq!(
        ORDER,
        [
            "request_id",
            "trace",
            "metrics",
            "auth_failures",
            "auth",
            "rate_limit",
            "deadline",
            "load_shed",
            "decode_errors"
        ]
    );
    assert!(
        resp.headers().get("x-request-id").is_some(),
        "request id echoed"
    );
}

#[tokio::test]
async fn auth_stops_a_call_before_the_inner_stages() {
    let (seen, resp) = run("/keygate.v1.UserIdentityService/ListUserIdentities", &[]).await;
    assert_eq!(
        seen,
        ["request_id", "trace", "metrics", "auth_failures", "auth"]
    );
    assert_eq!(
        resp.headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()),
        Some("16"),
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn a_caller_request_id_is_kept() {
    let (_, resp) = run(
        "/grpc.health.v1.Health/Check",
        &[("x-request-id", "abc-123")],
    )
    .await;
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("abc-123")
    );
}

/// A stack over a store with one workspace; returns it and the workspace's API key.
async fn stack_with_key(
    auth_failures_per_minute: u32,
) -> (
    impl tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone,
    String,
    TestDb,
) {
    let db = TestDb::sqlite().await;
    let (ws, key, token) = keygate_app::workspaces::new_workspace(
        "Limits".into(),
        keygate_domain::model::WorkspaceType::Sandbox,
        "k".into(),
    );
    db.store
        .create_workspace(&ws, &key, &[])
        .await
        .expect("workspace");
    let auth = Authenticator::new(db.store.clone(), Arc::new(InProcessCache::new(100)), None);
    let probe = tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
    });
    let cfg = StackConfig {
        auth_failures_per_minute,
        ..config()
    };
    (stack::build(&cfg, auth).layer(probe), token, db)
}

/// A call from `peer` with `key` (none: no authorization header); its trail and status.
async fn call_from<S>(svc: &S, peer: &str, key: Option<&str>) -> (Vec<&'static str>, tonic::Status)
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible>
        + Clone,
{
    let mut req = Request::builder().uri("/keygate.v1.UserIdentityService/ListUserIdentities");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let mut req = req.body(Body::empty()).expect("request");
    let trail = Trail::default();
    req.extensions_mut().insert(trail.clone());
    req.extensions_mut()
        .insert(tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer.parse().expect("peer address")),
        });
    let resp = svc.clone().oneshot(req).await.expect("infallible");
    let status =
        tonic::Status::from_header_map(resp.headers()).unwrap_or_else(|| tonic::Status::ok(""));
    let seen = trail.0.lock().expect("trail").clone();
    (seen, status)
}

/// A key shaped like a Keygate key whose id exists nowhere.
fn forged() -> String {
    format!("kg_{}_{}", uuid::Uuid::new_v4().simple(), "A".repeat(43))
}

#[tokio::test]
async fn a_client_that_failed_too_often_is_refused_before_auth() {
    use tonic_types::StatusExt as _;
    let (svc, key, _db) = stack_with_key(3).await;
    let attacker = "198.51.100.7:40000";
    for _ in 0..3 {
        let (seen, status) = call_from(&svc, attacker, Some(&forged())).await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(seen.contains(&"auth"), "within its budget: authenticated");
    }
    let (seen, status) = call_from(&svc, attacker, Some(&forged())).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        seen,
        ["request_id", "trace", "metrics", "auth_failures"],
        "refused before any key lookup"
    );
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().map(|i| i.reason.as_str()),
        Some("AUTH_FAILURES_LIMITED")
    );
    let delay = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(20),
        "{delay:?}"
    );
    // Even its good key waits: the refusal comes before credentials are read.
    let (_, status) = call_from(&svc, attacker, Some(&key)).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    // Health checks need no credentials and stay open to it.
    let mut req = Request::builder()
        .uri("/grpc.health.v1.Health/Check")
        .body(Body::empty())
        .expect("request");
    req.extensions_mut()
        .insert(tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(attacker.parse().expect("peer")),
        });
    let resp = svc.clone().oneshot(req).await.expect("infallible");
    assert!(
        resp.headers().get("grpc-status").is_none(),
        "health is not refused"
    );
    // Another client is not affected.
    let (_, status) = call_from(&svc, "203.0.113.9:5000", Some(&key)).await;
    assert_eq!(status.code(), tonic::Code::Ok);
    let (_, status) = call_from(&svc, "203.0.113.9:5000", None).await;
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "a missing key counts too"
    );
}

#[tokio::test]
async fn successful_authentications_are_not_counted() {
    let (svc, key, _db) = stack_with_key(2).await;
    let client = "192.0.2.10:1234";
    for _ in 0..20 {
        let (_, status) = call_from(&svc, client, Some(&key)).await;
        assert_eq!(status.code(), tonic::Code::Ok);
    }
    let (_, status) = call_from(&svc, client, Some(&forged())).await;
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "its budget is whole"
    );
}

#[tokio::test]
async fn zero_turns_the_failed_auth_limit_off() {
    let (svc, _key, _db) = stack_with_key(0).await;
    for _ in 0..50 {
        let (_, status) = call_from(&svc, "192.0.2.11:1", Some(&forged())).await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
}

/// Past the in-flight limit a call is refused at once with `RESOURCE_EXHAUSTED`,
/// `SERVER_OVERLOADED` and a `RetryInfo`; health checks still pass; a freed place is taken again.
#[tokio::test]
async fn load_shedding_refuses_at_once_with_a_time_to_retry() {
    const REFLECTION: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let db = TestDb::sqlite().await;
    let auth = Authenticator::new(db.store.clone(), Arc::new(InProcessCache::new(10)), None);
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(tokio::sync::Notify::new());
    let (gate, inside) = (release.clone(), entered.clone());
    // The inner service holds every reflection call until a permit is released.
    let probe = tower::service_fn(move |req: Request<Body>| {
        let (gate, inside) = (gate.clone(), inside.clone());
        async move {
            if req.uri().path() == REFLECTION {
                inside.notify_one();
                let _ = gate.acquire().await.map(|p| p.forget());
            }
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        }
    });
    let cfg = StackConfig {
        max_in_flight: 1,
        ..config()
    };
    let svc = stack::build(&cfg, auth).layer(probe);
    let req = |path: &str| {
        Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request")
    };

    let held = tokio::spawn(svc.clone().oneshot(req(REFLECTION)));
    entered.notified().await; // the first call holds the one place
    let started = std::time::Instant::now();
    let resp = svc
        .clone()
        .oneshot(req(REFLECTION))
        .await
        .expect("infallible");
    let took = started.elapsed();
    let status = tonic::Status::from_header_map(resp.headers()).expect("a refusal");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        took < Duration::from_millis(100),
        "refused at once: {took:?}"
    );
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert_eq!(
        details.error_info().map(|i| i.reason.clone()),
        Some("SERVER_OVERLOADED".to_owned())
    );
    let retry = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(retry >= Duration::from_millis(50) && retry <= Duration::from_secs(2));

    // Health checks are never shed.
    let resp = svc
        .clone()
        .oneshot(req("/grpc.health.v1.Health/Check"))
        .await
        .expect("infallible");
    assert!(tonic::Status::from_header_map(resp.headers()).is_none());

    release.add_permits(2);
    held.await.expect("task").expect("infallible");
    let resp = svc.oneshot(req(REFLECTION)).await.expect("infallible");
    assert!(
        tonic::Status::from_header_map(resp.headers()).is_none(),
        "the place was freed"
    );
}
