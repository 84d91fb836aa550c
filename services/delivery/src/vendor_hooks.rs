//! Inbound vendor webhooks on the HTTP port: `POST /hooks/{acs_system_id}`, the URL a user
//! registers at the vendor (for Kisi, the Event Webhook integration's URL). An adapter like the
//! pages: it reads the body (at most [`keygate_app::vendor_hooks::MAX_BODY_BYTES`], else `413`)
//! and the headers, calls [`keygate_app::App::receive_vendor_webhook`], and answers at once
//! with JSON: `200 {"received": n, "duplicates": d, "recorded": r}`, or the refusal's status
//! with `{"error": reason, "message": ...}`:
//! - `404 access_system_not_found` (also for an id that is not one, a disconnected system,
//!   and a system type that takes no webhooks: `webhooks_not_supported`);
//! - `401 invalid_signature` and `401 stale_webhook`; `403 webhook_secret_not_set`;
//! - `400 invalid_payload`; `503 provider_unreachable` / `store_unavailable` with
//!   `Retry-After` (the vendor retries; what was recorded is not recorded twice).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use keygate_app::App;
use keygate_app::vendor_hooks::{HookError, InboundWebhook, MAX_BODY_BYTES};
use keygate_domain::ids::AccessSystemId;
use serde_json::json;

/// The route's path.
pub const PATH: &str = "/hooks/{acs_system_id}";

/// The most header bytes kept (names and values), so a request cannot make the adapter copy
/// more than that.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The router of inbound vendor webhooks.
pub fn router(app: App) -> Router {
    Router::new()
        .route(PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

fn answer(status: StatusCode, reason: &str, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({ "error": reason, "message": message })),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    }
    r
}

async fn receive(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(acs_system_id) = id.parse::<AccessSystemId>() else {
        return answer(
            StatusCode::NOT_FOUND,
            "access_system_not_found",
            "no such access system",
        );
    };
    let mut kept = std::collections::BTreeMap::new();
    let mut size = 0;
    for (name, value) in &headers {
        let Ok(value) = value.to_str() else { continue };
        size += name.as_str().len() + value.len();
        if size > MAX_HEADER_BYTES {
            break;
        }
        kept.insert(name.as_str().to_ascii_lowercase(), value.to_owned());
    }
    let hook = InboundWebhook {
        acs_system_id,
        headers: kept,
        body: body.to_vec(),
    };
    match app.receive_vendor_webhook(hook).await {
        Ok(r) => (
            StatusCode::OK,
            axum::Json(json!({
                "received": r.received,
                "duplicates": r.duplicates,
                "recorded": r.events.len(),
            })),
        )
            .into_response(),
        Err(e) => {
            let status = match &e {
                HookError::NotFound(_) => StatusCode::NOT_FOUND,
                HookError::Refused(w) => match w.reason() {
                    "webhooks_not_supported" => StatusCode::NOT_FOUND,
                    "webhook_secret_not_set" => StatusCode::FORBIDDEN,
                    "invalid_payload" => StatusCode::BAD_REQUEST,
                    _ => StatusCode::UNAUTHORIZED,
                },
                HookError::Unavailable(_) | HookError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            if status.is_server_error() {
                tracing::warn!(error = %e, "a vendor webhook could not be processed");
            } else {
                tracing::info!(reason = e.reason(), "a vendor webhook was refused");
            }
            // A store failure's message may name internals: only the reason goes out.
            let message = match &e {
                HookError::Store(_) => "the store did not answer; retry".to_owned(),
                e => e.to_string(),
            };
            answer(status, e.reason(), &message)
        }
    }
}
