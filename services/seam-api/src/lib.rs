//! The Seam-compatible HTTP/JSON API: Seam's `/{namespace}/{action}` routes under [`PREFIX`]
//! on the HTTP port, so Seam's official SDKs (and the seed documents' quick start) run against
//! Keygate with only the endpoint and the key changed (docs/seam-compatibility.md).
//!
//! An adapter like the gRPC services: each request is authenticated through
//! `keygate_app::auth` (the same API keys, also in their `seam_` form), refused past the
//! workspace's request rate and the client's failed-authentication budget
//! (`keygate_app::throttle`, the limiters gRPC runs), parsed ([`params`]) into the
//! `keygate.v1` request gRPC would get and from there, through `keygate-wire`, into its
//! `keygate-app` command, and answered in Seam's JSON ([`json`]) and envelopes ([`reply`]).
//! Load shedding, the request timeout and the connection limits are the HTTP port's
//! (`services/keygate/src/http.rs`).

pub mod json;
pub mod params;
pub mod reply;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::any;
use keygate_app::App;
use keygate_app::auth::Authenticator;
use keygate_app::throttle::{ClientAddr, Limiters};
use keygate_domain::{Error, ErrorReason};
use tracing::Instrument as _;

use crate::params::Params;
use crate::routes::{Alt, Ctx};

/// Where the routes are served: `http://<http addr>/seam` is the endpoint to give the SDKs
/// (`SEAM_ENDPOINT`). A prefix keeps Seam's namespaces clear of the port's own paths
/// (`/livez`, `/readyz`, `/metrics`, the Instant Key pages).
pub const PREFIX: &str = "/seam";

/// What the routes need: the use cases, the authenticator and the limiters.
#[derive(Clone)]
pub struct SeamApi {
    pub app: App,
    pub auth: Authenticator,
    /// The per-workspace request rate and the failed-authentication budget per client: the
    /// process's one set, which gRPC's stack runs too (and Redis shares across replicas).
    pub limiters: Limiters,
}

/// The routes, to merge into the HTTP port.
pub fn router(api: SeamApi) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/{{*action}}"), any(handle))
        .with_state(Arc::new(api))
}

/// Whether the HTTP port's `path` is one of this API's (its refusals then use [`unavailable`]).
pub fn is_seam_path(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The HTTP port's own refusal (overloaded, timed out) in Seam's envelope, `503` with
/// `Retry-After: 1`, so the SDKs raise their API error rather than a transport one.
pub fn unavailable(why: &str) -> Response {
    reply::error_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
        why.trim_end(),
        None,
        Some(std::time::Duration::from_secs(1)),
        &uuid::Uuid::new_v4().to_string(),
    )
}

/// The key of a request in the form `keygate_app::auth` reads: a `seam_` key is turned into
/// its `kg_` form; anything else is passed on as it came (and refused there if it is no key).
fn keygate_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return out;
    };
    let converted = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .and_then(|t| keygate_app::tokens::api_key_from_seam(t.trim()))
        .and_then(|kg| HeaderValue::from_str(&format!("Bearer {kg}")).ok());
    out.insert(
        header::AUTHORIZATION,
        converted.unwrap_or_else(|| value.clone()),
    );
    out
}

/// The absolute URL of this request without its query, for `next_page_url`.
fn base_url(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    Some(format!("{proto}://{host}{}", uri.path()))
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    State(api): State<Arc<SeamApi>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    // Read from the path itself so that no request is answered outside Seam's envelope.
    let action = uri
        .path()
        .strip_prefix(PREFIX)
        .and_then(|a| a.strip_prefix('/'))
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "seam_api",
        otel.name = %format!("seam {action}"),
        otel.kind = "server",
        http.method = %method,
        route = %action,
        request_id = %request_id,
        workspace_id = tracing::field::Empty,
        http.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    // A caller's `traceparent` makes this span its child, as on gRPC; the jobs a write queues
    // carry this span's context on.
    keygate_telemetry::propagation::set_parent_from_headers(&span, &headers);
    let started = std::time::Instant::now();
    async move {
        let client = client.map(|c| c.0.0);
        let resp = match body {
            Ok(body) => {
                serve(
                    &api,
                    &action,
                    &method,
                    &uri,
                    &headers,
                    client,
                    &body,
                    &request_id,
                )
                .await
            }
            Err(e) => reply::error_reply(
                e.status(),
                "invalid_input",
                &format!("the request body could not be read: {e}"),
                None,
                None,
                &request_id,
            ),
        };
        let status = resp.status().as_u16();
        let span = tracing::Span::current();
        span.record("http.status_code", status);
        if resp.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(latency_ms, status, "seam api request finished");
        resp
    }
    .instrument(span)
    .await
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    api: &SeamApi,
    action: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    client: Option<std::net::IpAddr>,
    body: &[u8],
    request_id: &str,
) -> Response {
    let Some(alt) = routes::route(action) else {
        return reply::error_reply(
            StatusCode::NOT_FOUND,
            "route_not_found",
            &format!(
                "no route /{action} on this Seam-compatible API (see docs/seam-compatibility.md)"
            ),
            None,
            None,
            request_id,
        );
    };
    let allowed = *method == Method::POST
        || match alt {
            Alt::Get => *method == Method::GET,
            Alt::Delete => *method == Method::DELETE,
            Alt::Patch => *method == Method::PATCH || *method == Method::PUT,
            Alt::None => false,
        };
    if !allowed {
        return reply::error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("/{action} does not take {method}"),
            None,
            None,
            request_id,
        );
    }

    // The client's budget of failed authentications is checked before its key is read.
    if let Some(ip) = client
        && let Err(wait) = api.limiters.auth_failures.check(ip)
    {
        keygate_telemetry::metrics::limit_refused("auth_failures");
        return reply::error(
            Error::LimitReached {
                reason: ErrorReason::AuthFailuresLimited,
                message: "too many failed authentications from this address; retry later".into(),
                retry_after: Some(wait),
            },
            request_id,
        );
    }
    // Only a workspace's API key acts here (the admin token is refused like a wrong key).
    let ws = match api
        .auth
        .authenticate(uri.path(), &keygate_headers(headers))
        .await
        .and_then(|p| p.workspace())
    {
        Ok(ws) => ws,
        Err(e) => {
            if let (Some(ip), Error::Unauthenticated { .. }) = (client, &e) {
                api.limiters.auth_failures.failed(ip);
            }
            return reply::error(e, request_id);
        }
    };
    tracing::Span::current().record("workspace_id", tracing::field::display(ws));
    if let Err(retry_after) = api.limiters.rate.check(ws).await {
        return reply::error(Error::RateLimited { retry_after }, request_id);
    }

    let query = uri.query().unwrap_or("");
    let uses_query = *method == Method::GET || *method == Method::DELETE;
    let parsed = if uses_query {
        Params::from_query(query)
    } else {
        Params::from_json(body).map(|mut p| {
            p.strict = Params::from_query(query).is_ok_and(|q| q.strict);
            p
        })
    };
    let mut params = match parsed {
        Ok(p) => p,
        Err(e) => return reply::error(e, request_id),
    };
    // The `Idempotency-Key` header is gRPC's `request_id`, checked by the same rule here so its
    // error names the header.
    let idempotency_key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) => match keygate_domain::validate::request_id(k) {
            Ok(k) => k,
            Err(v) => {
                return reply::error(Error::invalid("Idempotency-Key", v.description), request_id);
            }
        },
        Some(Err(_)) => {
            return reply::error(
                Error::invalid("Idempotency-Key", "must be printable text"),
                request_id,
            );
        }
    };
    let ctx = Ctx {
        ws,
        idempotency_key,
        get_url: if *method == Method::GET {
            base_url(headers, uri)
        } else {
            None
        },
        query: query.to_owned(),
    };
    match routes::call(&api.app, action, &mut params, &ctx).await {
        Ok(body) => reply::ok(body, request_id),
        Err(e) => reply::error(e, request_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_refusals_on_seam_paths_are_envelopes() {
        assert!(is_seam_path("/seam/access_grants/create"));
        assert!(is_seam_path("/seam"));
        assert!(!is_seam_path("/seamless"));
        assert!(!is_seam_path("/ik/abc"));
        let r = unavailable("server overloaded; retry in a moment\n");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert!(r.headers().contains_key(reply::REQUEST_ID_HEADER));
        assert_eq!(
            r.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json; charset=utf-8"[..])
        );
    }

    #[test]
    fn seam_keys_are_read_in_their_kg_form() {
        let k = keygate_app::tokens::mint_api_key();
        let seam = keygate_app::tokens::seam_api_key(&k.token, true).expect("seam form");
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {seam}")).expect("header"),
        );
        assert_eq!(
            keygate_headers(&h).get(header::AUTHORIZATION),
            Some(&HeaderValue::from_str(&format!("Bearer {}", k.token)).expect("header"))
        );
        // Anything else goes on as it came, to be refused by the authenticator.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert_eq!(
            keygate_headers(&h).get(header::AUTHORIZATION),
            Some(&HeaderValue::from_static("Bearer nope"))
        );
        assert!(keygate_headers(&HeaderMap::new()).is_empty());
    }
}
