//! The HTTP port: probes and Prometheus metrics. The delivery role merges in the Instant Key
//! pages (`keygate_delivery::instant_keys::router`) and, in outbox mode, `/outbox`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use keygate_telemetry::metrics::MetricsHandle;

pub fn router(ready: Arc<AtomicBool>, metrics: Option<MetricsHandle>) -> Router {
    let router = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(ready);
    match metrics {
        Some(m) => router.route("/metrics", get(move || render(m.clone()))),
        None => router,
    }
}

/// The Prometheus text exposition of this process's metrics.
async fn render(metrics: MetricsHandle) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn readyz(State(ready): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
    if ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
