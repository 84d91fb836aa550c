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
        auth_failures_per_minute: 60,
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
            "auth",
            "rate_limit",
            "deadline",
            "load_shed"
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
    assert_eq!(seen, ["request_id", "trace", "metrics", "auth"]);
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
