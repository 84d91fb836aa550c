//! Requests into `keygate-app` commands, parsed once. Each conversion destructures every field
//! of its request, so a field added to the proto does not compile until it is handled here.
//! Field rules (lengths, formats, at-least-one) are `keygate-domain::validate` and the
//! `keygate-app` checks; every violation of a request is reported at once.

mod acs_users;
mod events;
pub mod filters;
mod grants;
mod identities;
mod instant_keys;
mod methods;
mod webhooks;
mod workspaces;

use keygate_app::idempotency;
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::ids::EntranceId;
use keygate_domain::validate;
use keygate_domain::{Error, Resource};
use keygate_proto::v1;

/// A request that parses into its `keygate-app` command. (A trait of this crate rather than
/// `TryFrom`, which the orphan rule forbids between two foreign types.)
pub trait IntoCommand {
    type Command;

    /// Parses the request once, reporting every field violation together.
    fn into_command(self) -> Result<Self::Command, Error>;
}

/// The domain mode of a proto enum value; `None` for unspecified or unknown values.
pub fn mode(i: i32) -> Option<AccessMethodMode> {
    match v1::AccessMethodMode::try_from(i).ok()? {
        v1::AccessMethodMode::Card => Some(AccessMethodMode::Card),
        v1::AccessMethodMode::Code => Some(AccessMethodMode::Code),
        v1::AccessMethodMode::MobileKey => Some(AccessMethodMode::MobileKey),
        v1::AccessMethodMode::CloudKey => Some(AccessMethodMode::CloudKey),
        v1::AccessMethodMode::Unspecified => None,
    }
}

/// Entrance ids, each a well-formed id (`INVALID_ARGUMENT` on `field` otherwise).
pub fn entrance_ids(field: &str, ids: &[String]) -> Result<Vec<EntranceId>, Error> {
    ids.iter()
        .map(|e| validate::id(field, e, Resource::Entrance))
        .collect()
}

/// The idempotency claim of a create: its `request_id` and a fingerprint of the request as
/// received, without the `request_id` itself.
pub fn claim<M: prost::Message>(
    operation: &'static str,
    request_id: Option<String>,
    body_without_request_id: &M,
) -> Option<keygate_store::Idempotency> {
    idempotency::claim(
        operation,
        request_id,
        &body_without_request_id.encode_to_vec(),
    )
}

/// A time field of a request: absent is `None`; one that is not a valid time is a violation.
pub(crate) fn time_field(
    v: &mut keygate_domain::validate::Violations,
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Option<time::OffsetDateTime> {
    let t = t?;
    v.check(
        crate::convert::from_ts(t)
            .ok_or_else(|| keygate_domain::FieldViolation::new(field, "is not a valid time")),
    )
}
