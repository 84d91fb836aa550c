//! The one place a domain error becomes a gRPC status: a `google.rpc.Status` carrying an
//! `ErrorInfo` with the stable reason, `BadRequest` field violations for input errors, and
//! `RetryInfo` for rate limits. Unexpected errors are logged here, once, with their detail;
//! the caller sees only the reason and the request id.

use keygate_domain::{Error, ErrorReason};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// `google.rpc.ErrorInfo.domain` of every Keygate error.
pub const ERROR_DOMAIN: &str = "keygate.dev";

/// What every unary handler returns.
pub type Reply<T> = Result<tonic::Response<T>, Status>;

/// The one way a handler replies: runs the parse-and-call body and maps its domain error,
/// if any, through [`to_status`].
pub async fn reply<T>(body: impl Future<Output = Result<T, Error>>) -> Reply<T> {
    body.await.map(tonic::Response::new).map_err(to_status)
}

/// Maps a domain error to a status. Exhaustive on purpose: a new error variant does not
/// compile until it has a gRPC code.
pub fn to_status(err: Error) -> Status {
    let reason = err.reason().as_str();
    let mut details = ErrorDetails::new();
    let (code, message) = match &err {
        Error::InvalidArgument { violations } => {
            for v in violations {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
            (Code::InvalidArgument, err.to_string())
        }
        Error::InvalidToken { reason, .. } => {
            let field = match reason {
                keygate_domain::ErrorReason::InvalidPageSize => "page_size",
                keygate_domain::ErrorReason::InvalidCursor => "cursor",
                keygate_domain::ErrorReason::InvalidConnectionSettings => "settings",
                _ => "page_token",
            };
            details.add_bad_request_violation(field, err.to_string());
            (Code::InvalidArgument, err.to_string())
        }
        Error::NotFound { .. } => (Code::NotFound, err.to_string()),
        Error::AlreadyExists { .. } => (Code::AlreadyExists, err.to_string()),
        Error::FailedPrecondition { .. } => (Code::FailedPrecondition, err.to_string()),
        Error::Unauthenticated { .. } => (Code::Unauthenticated, err.to_string()),
        Error::PermissionDenied { .. } => (Code::PermissionDenied, err.to_string()),
        Error::Aborted { .. } => (Code::Aborted, err.to_string()),
        Error::RateLimited { retry_after } => {
            details.set_retry_info(Some(*retry_after));
            (Code::ResourceExhausted, err.to_string())
        }
        Error::LimitReached { retry_after, .. } => {
            if let Some(after) = retry_after {
                details.set_retry_info(Some(*after));
            }
            (Code::ResourceExhausted, err.to_string())
        }
        Error::NotImplemented { .. } => (Code::Unimplemented, err.to_string()),
        Error::Unavailable { message } => {
            tracing::warn!(error = %message, "store unavailable");
            (
                Code::Unavailable,
                "the store of record is unavailable; retry with backoff".to_owned(),
            )
        }
        Error::Internal { message } => {
            tracing::error!(error = %message, "internal error");
            (
                Code::Internal,
                "internal error; the server log has the details under this request id".to_owned(),
            )
        }
    };
    details.set_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(code, message, details)
}

/// The UNAVAILABLE end of a `WatchEvents` stream (shutdown, a client too slow): `reason` in
/// `ErrorInfo`, with the stream's resume cursor as `metadata["cursor"]`.
pub fn ended_with_cursor(reason: ErrorReason, message: &str, cursor: String) -> Status {
    let mut details = ErrorDetails::new();
    let metadata = std::collections::HashMap::from([("cursor".to_owned(), cursor)]);
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
    Status::with_error_details(Code::Unavailable, message, details)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keygate_domain::{FieldViolation, Resource};
    use tonic_types::StatusExt as _;

    use super::*;

    #[test]
    fn input_errors_carry_field_violations_and_reason() {
        let s = to_status(Error::InvalidArgument {
            violations: vec![FieldViolation::new("phone_number", "must be E.164")],
        });
        assert_eq!(s.code(), Code::InvalidArgument);
        let d = s.get_error_details();
        assert_eq!(
            d.error_info().map(|i| i.reason.as_str()),
            Some("INVALID_FIELD")
        );
        let br = d.bad_request().expect("bad request");
        assert_eq!(br.field_violations[0].field, "phone_number");
    }

    #[test]
    fn rate_limits_say_when_to_retry() {
        let s = to_status(Error::RateLimited {
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        let d = s.get_error_details();
        assert_eq!(
            d.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn not_found_names_the_resource_reason() {
        let s = to_status(Error::not_found(Resource::UserIdentity, "x"));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(
            s.get_error_details()
                .error_info()
                .map(|i| i.reason.clone())
                .as_deref(),
            Some("USER_IDENTITY_NOT_FOUND")
        );
    }

    #[test]
    fn internal_errors_do_not_leak_detail() {
        let s = to_status(Error::Internal {
            message: "password=hunter2".into(),
        });
        assert!(!s.message().contains("hunter2"));
    }
}
