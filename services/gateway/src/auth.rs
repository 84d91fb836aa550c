//! The caller of a gRPC request, as the auth layer attached it (`keygate_app::auth` resolves
//! credentials; `stack.rs` runs it before any handler).

use keygate_domain::ids::WorkspaceId;
use keygate_domain::{Error, ErrorReason};

pub use keygate_app::auth::{Authenticator, Guard, Principal, guard_for};

/// Reads the principal the auth layer attached.
pub fn principal<T>(req: &tonic::Request<T>) -> Result<Principal, Error> {
    req.extensions()
        .get::<Principal>()
        .copied()
        .ok_or_else(|| Error::Unauthenticated {
            reason: ErrorReason::MissingCredentials,
            message: "no credentials".into(),
        })
}

/// The caller's workspace: the request must carry an API key (not the admin token).
pub fn workspace<T>(req: &tonic::Request<T>) -> Result<WorkspaceId, tonic::Status> {
    principal(req)
        .and_then(|p| p.workspace())
        .map_err(crate::error::to_status)
}
