//! Action attempts: long operations a caller starts and then polls (card encoding today,
//! remote unlock with delivery). `pending` → `success` | `error`, with typed errors.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::grant::ProvisionJob;
use crate::ids::{
    AccessMethodId, AccessSystemId, ActionAttemptId, EncoderId, EntranceId, WorkspaceId,
};

/// What an attempt does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionType {
    EncodeCredential,
    UnlockDoor,
}

/// Where an attempt stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    Pending,
    Success,
    Error,
}

/// A typed failure, such as `encoder_not_online` or `incompatible_card_format`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    pub error_type: String,
    pub message: String,
}

/// What a successful encoding produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedCard {
    pub acs_credential_id: String,
    pub card_number: String,
}

/// An action attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionAttempt {
    pub id: ActionAttemptId,
    pub workspace_id: WorkspaceId,
    pub action_type: ActionType,
    pub status: AttemptStatus,
    pub access_method_id: Option<AccessMethodId>,
    pub acs_encoder_id: Option<EncoderId>,
    pub acs_entrance_id: Option<EntranceId>,
    pub result: Option<EncodedCard>,
    pub error: Option<AttemptError>,
    pub created_at: OffsetDateTime,
    pub completed_at: Option<OffsetDateTime>,
}

/// Encode a card method's credential on an encoder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeJob {
    pub action_attempt_id: ActionAttemptId,
    pub access_method_id: AccessMethodId,
    pub acs_system_id: AccessSystemId,
    pub acs_encoder_id: EncoderId,
}

/// Unlock one entrance remotely (from an Instant Key page, a person's access method, or an
/// operator). At most once and never late: the worker sends it only on its first claim and
/// only before `expires_at`, after checking that what allowed it still does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockJob {
    pub action_attempt_id: ActionAttemptId,
    pub acs_system_id: AccessSystemId,
    pub acs_entrance_id: EntranceId,
    /// The person the door is opened for; `None` for an operator's remote unlock.
    #[serde(default)]
    pub user_identity_id: Option<crate::ids::UserIdentityId>,
    /// The Instant Key the unlock came from, when it came from one.
    pub instant_key_id: Option<crate::ids::InstantKeyId>,
    /// The grant that allows it, when a person's grant does.
    #[serde(default)]
    pub access_grant_id: Option<crate::ids::AccessGrantId>,
    /// The access method it was asked through (`UnlockDoor`), when it was.
    #[serde(default)]
    pub access_method_id: Option<AccessMethodId>,
    /// The deadline: past it the unlock is never sent (the attempt ends `unlock_expired`).
    /// `None` only for jobs queued before deadlines existed: those are never sent either.
    #[serde(default)]
    pub expires_at: Option<OffsetDateTime>,
}

/// The error types an unlock's action attempt ends with when Keygate itself stops it, before or
/// instead of the access system's answer.
pub mod unlock_errors {
    /// Past its deadline (default 30 s from the request) before it could be sent.
    pub const EXPIRED: &str = "unlock_expired";
    /// The Instant Key, grant, access method or person that allowed it was revoked or deleted.
    pub const ACCESS_REVOKED: &str = "access_revoked";
    /// The grant's window closed (or has not opened) before it could be sent.
    pub const WINDOW_CLOSED: &str = "access_window_closed";
    /// The entrance (or its access system) cannot be unlocked remotely.
    pub const NOT_SUPPORTED: &str = "remote_unlock_not_supported";
    /// It may have been sent once already (its first claim was lost): never sent again.
    pub const NOT_CONFIRMED: &str = "unlock_not_confirmed";
    /// What allowed it could not be checked (the store failed): not sent.
    pub const CHECK_FAILED: &str = "access_check_failed";
}

/// What a revocation or deletion takes away, for cancelling the unlocks it allowed that are
/// still queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnlockScope {
    InstantKey(crate::ids::InstantKeyId),
    Grant(crate::ids::AccessGrantId),
    Method(AccessMethodId),
    Person(crate::ids::UserIdentityId),
}

impl UnlockScope {
    /// Whether `u` was allowed by what this scope takes away.
    pub fn covers(&self, u: &UnlockJob) -> bool {
        match *self {
            Self::InstantKey(k) => u.instant_key_id == Some(k),
            Self::Grant(g) => u.access_grant_id == Some(g),
            Self::Method(m) => u.access_method_id == Some(m),
            Self::Person(p) => u.user_identity_id == Some(p),
        }
    }
}

/// Take a method's access away in one system (after a delete).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeJob {
    pub access_grant_id: crate::ids::AccessGrantId,
    pub access_method_id: AccessMethodId,
    pub acs_system_id: AccessSystemId,
    pub entrance_ids: Vec<EntranceId>,
}

/// The work of one orchestration job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobWork {
    Provision(ProvisionJob),
    Encode(EncodeJob),
    Revoke(RevokeJob),
    Unlock(UnlockJob),
}

impl JobWork {
    /// The access system the job talks to (for per-system limits and breakers).
    pub fn acs_system_id(&self) -> AccessSystemId {
        match self {
            Self::Provision(p) => p.acs_system_id,
            Self::Encode(e) => e.acs_system_id,
            Self::Revoke(r) => r.acs_system_id,
            Self::Unlock(u) => u.acs_system_id,
        }
    }

    /// The id the job is about: the access method, or the action attempt of an encoding.
    pub fn subject_id(&self) -> String {
        match self {
            Self::Provision(p) => p.access_method_id.to_string(),
            Self::Encode(e) => e.action_attempt_id.to_string(),
            Self::Revoke(r) => r.access_method_id.to_string(),
            Self::Unlock(u) => u.action_attempt_id.to_string(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Provision(_) => "provision",
            Self::Encode(_) => "encode",
            Self::Revoke(_) => "revoke",
            Self::Unlock(_) => "unlock",
        }
    }
}
