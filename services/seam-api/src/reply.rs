//! Replies in Seam's envelopes: `{<key>: ..., "ok": true}` on success, and on failure
//! `{"error": {"type", "message", "request_id", "validation_errors"?}, "ok": false}` with the
//! HTTP status Seam gives that kind of error. Every reply carries `seam-request-id`.
//!
//! The one place a domain error becomes an HTTP status here (gRPC's is
//! `services/gateway/src/error.rs`); unexpected errors are logged here, once.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_domain::{Error, ErrorReason, Resource};
use serde_json::{Map, Value, json};

/// The header every reply carries, as Seam's SDKs read it into their errors.
pub const REQUEST_ID_HEADER: &str = "seam-request-id";

/// A JSON reply with its status and request id.
pub fn json_reply(status: StatusCode, body: &Value, request_id: &str) -> Response {
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID_HEADER, v);
    }
    r
}

/// A success: the route's keys with `"ok": true`.
pub fn ok(mut body: Map<String, Value>, request_id: &str) -> Response {
    body.insert("ok".into(), Value::Bool(true));
    json_reply(StatusCode::OK, &Value::Object(body), request_id)
}

/// Seam's error type for a missing resource: its Seam name with `_not_found`.
fn not_found_type(resource: Resource) -> &'static str {
    match resource {
        Resource::Workspace => "workspace_not_found",
        Resource::ApiKey => "api_key_not_found",
        Resource::AccessSystem => "acs_system_not_found",
        Resource::Entrance => "acs_entrance_not_found",
        Resource::UserIdentity => "user_identity_not_found",
        Resource::AccessGrant => "access_grant_not_found",
        Resource::AccessMethod => "access_method_not_found",
        Resource::AcsUser => "acs_user_not_found",
        Resource::AccessGroup => "acs_access_group_not_found",
        Resource::Credential => "acs_credential_not_found",
        Resource::Event => "event_not_found",
        Resource::Encoder => "acs_encoder_not_found",
        Resource::ActionAttempt => "action_attempt_not_found",
        Resource::Webhook => "webhook_not_found",
        Resource::InstantKey => "instant_key_not_found",
    }
}

/// The top-level parameter a field path names (`requested_access_methods[0].mode` →
/// `requested_access_methods`), which is what Seam's `validation_errors` are keyed by.
fn parameter(field: &str) -> &str {
    let end = field.find(['.', '[']).unwrap_or(field.len());
    &field[..end]
}

/// `validation_errors` in the shape Seam's SDKs read (`{"_errors": [...], "<param>":
/// {"_errors": [...]}}`); the message of a nested field names its full path.
fn validation_errors(violations: &[(String, String)]) -> Value {
    let mut out = Map::new();
    out.insert("_errors".into(), json!([]));
    for (field, description) in violations {
        let top = parameter(field);
        let message = if top == field {
            description.clone()
        } else {
            format!("{field}: {description}")
        };
        let entry = out
            .entry(top.to_owned())
            .or_insert_with(|| json!({ "_errors": [] }));
        if let Some(list) = entry.get_mut("_errors").and_then(Value::as_array_mut) {
            list.push(Value::String(message));
        }
    }
    Value::Object(out)
}

fn lower(reason: ErrorReason) -> String {
    reason.as_str().to_ascii_lowercase()
}

/// Maps a domain error to its reply. Exhaustive on purpose: a new error variant does not
/// compile until it has an HTTP status.
pub fn error(err: Error, request_id: &str) -> Response {
    let message = err.to_string();
    let mut retry_after = None;
    let mut validation = None;
    let (status, kind): (StatusCode, String) = match &err {
        Error::InvalidArgument { violations } => {
            let v: Vec<(String, String)> = violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect();
            validation = Some(validation_errors(&v));
            (StatusCode::BAD_REQUEST, "invalid_input".into())
        }
        Error::InvalidToken { reason, .. } => {
            let field = match reason {
                ErrorReason::InvalidPageSize => "limit",
                ErrorReason::InvalidCursor | ErrorReason::InvalidPageToken => "page_cursor",
                ErrorReason::InvalidConnectionSettings => "settings",
                _ => "page_cursor",
            };
            validation = Some(validation_errors(&[(field.into(), message.clone())]));
            (StatusCode::BAD_REQUEST, "invalid_input".into())
        }
        Error::NotFound { resource, .. } => {
            (StatusCode::NOT_FOUND, not_found_type(*resource).into())
        }
        Error::AlreadyExists { reason, .. } => (StatusCode::CONFLICT, lower(*reason)),
        Error::Aborted { .. } => (StatusCode::CONFLICT, lower(err.reason())),
        Error::FailedPrecondition { reason, .. } => (StatusCode::BAD_REQUEST, lower(*reason)),
        Error::Unauthenticated { reason, .. } => (StatusCode::UNAUTHORIZED, lower(*reason)),
        Error::PermissionDenied { reason, .. } => (StatusCode::FORBIDDEN, lower(*reason)),
        Error::RateLimited { retry_after: after } => {
            retry_after = Some(*after);
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())
        }
        Error::LimitReached {
            reason,
            retry_after: after,
            ..
        } => {
            retry_after = *after;
            (StatusCode::TOO_MANY_REQUESTS, lower(*reason))
        }
        Error::NotImplemented { .. } => (StatusCode::NOT_IMPLEMENTED, "not_implemented".into()),
        Error::Unavailable { message } => {
            tracing::warn!(error = %message, "store unavailable");
            return error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the store of record is unavailable; retry with backoff",
                None,
                Some(std::time::Duration::from_secs(1)),
                request_id,
            );
        }
        Error::Internal { message } => {
            tracing::error!(error = %message, "internal error");
            return error_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                "internal error; the server log has the details under this request id",
                None,
                None,
                request_id,
            );
        }
    };
    error_reply(status, &kind, &message, validation, retry_after, request_id)
}

/// An error reply of a given type (routes and verbs that do not exist, too).
pub fn error_reply(
    status: StatusCode,
    kind: &str,
    message: &str,
    validation_errors: Option<Value>,
    retry_after: Option<std::time::Duration>,
    request_id: &str,
) -> Response {
    let mut e = Map::new();
    e.insert("type".into(), Value::String(kind.to_owned()));
    e.insert("message".into(), Value::String(message.to_owned()));
    e.insert("request_id".into(), Value::String(request_id.to_owned()));
    if let Some(v) = validation_errors {
        e.insert("validation_errors".into(), v);
    }
    let body = json!({ "error": Value::Object(e), "ok": false });
    let mut r = json_reply(status, &body, request_id);
    if let Some(after) = retry_after {
        // Whole seconds, rounded up: never tell a client to come back before it may.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use keygate_domain::FieldViolation;

    use super::*;

    #[test]
    fn validation_errors_are_keyed_by_parameter() {
        let v = validation_errors(&[
            ("requested_access_methods[0].mode".into(), "bad".into()),
            ("starts_at".into(), "late".into()),
        ]);
        assert_eq!(
            v["requested_access_methods"]["_errors"][0],
            "requested_access_methods[0].mode: bad"
        );
        assert_eq!(v["starts_at"]["_errors"][0], "late");
        assert_eq!(v["_errors"], json!([]));
    }

    #[test]
    fn statuses() {
        let r = error(
            Error::InvalidArgument {
                violations: vec![FieldViolation::new("x", "y")],
            },
            "r",
        );
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            r.headers().get(REQUEST_ID_HEADER).map(|v| v.as_bytes()),
            Some(&b"r"[..])
        );
        let r = error(
            Error::RateLimited {
                retry_after: std::time::Duration::from_millis(1200),
            },
            "r",
        );
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        let r = error(Error::not_found(Resource::Entrance, "x"), "r");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
