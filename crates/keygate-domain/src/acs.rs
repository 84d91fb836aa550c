//! Access system users and their credentials: the console flow of seed 000, step by step. An ACS
//! user is a record in Keygate (a person on one access system, linked to a user identity); a
//! credential is a view of the access grant made for it, so the grant machinery (planning, jobs,
//! revocation, Instant Keys) does all the work.

use time::OffsetDateTime;

use crate::ids::{
    AccessGrantId, AccessGroupId, AccessMethodId, AccessSystemId, AcsCredentialId, AcsUserId,
    UserIdentityId, WorkspaceId,
};

/// A user on one access system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcsUser {
    pub id: AcsUserId,
    pub workspace_id: WorkspaceId,
    pub acs_system_id: AccessSystemId,
    pub full_name: String,
    pub email_address: Option<String>,
    pub phone_number: Option<String>,
    /// The user's access schedule; absent ends mean always.
    pub access_starts_at: Option<OffsetDateTime>,
    pub access_ends_at: Option<OffsetDateTime>,
    pub user_identity_id: Option<UserIdentityId>,
    pub is_suspended: bool,
    /// The access groups it is a member of, in id order.
    pub access_group_ids: Vec<AccessGroupId>,
    pub created_at: OffsetDateTime,
}

/// Filters of `ListAcsUsers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcsUserFilter {
    pub acs_system_id: Option<AccessSystemId>,
    pub user_identity_id: Option<UserIdentityId>,
}

/// A credential: which access grant (and which of its access methods) implements it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcsCredential {
    pub id: AcsCredentialId,
    pub workspace_id: WorkspaceId,
    pub acs_user_id: AcsUserId,
    pub acs_system_id: AccessSystemId,
    pub access_grant_id: AccessGrantId,
    pub access_method_id: AccessMethodId,
    pub created_at: OffsetDateTime,
    /// The schedule of the grant, read with the credential (the grant holds it, so an update of
    /// the grant's times shows here too).
    pub starts_at: OffsetDateTime,
    pub ends_at: Option<OffsetDateTime>,
}

/// Filters of `ListCredentials`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialFilter {
    pub acs_user_id: Option<AcsUserId>,
    pub acs_system_id: Option<AccessSystemId>,
    pub user_identity_id: Option<UserIdentityId>,
}

/// The schedule of a credential: what the caller asked for, within the user's access schedule
/// (a credential may narrow the user's access, never widen it). A start taken from the user's
/// schedule that has already passed means "now".
pub fn credential_schedule(
    user: &AcsUser,
    starts_at: Option<OffsetDateTime>,
    ends_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
    let start = match (starts_at, user.access_starts_at) {
        (Some(s), Some(u)) => Some(s.max(u)),
        (Some(s), None) => Some(s),
        (None, Some(u)) if u > now => Some(u),
        (None, _) => None,
    };
    let end = match (ends_at, user.access_ends_at) {
        (Some(e), Some(u)) => Some(e.min(u)),
        (e, u) => e.or(u),
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn user(starts: Option<OffsetDateTime>, ends: Option<OffsetDateTime>) -> AcsUser {
        AcsUser {
            id: AcsUserId::new(),
            workspace_id: WorkspaceId::new(),
            acs_system_id: AccessSystemId::new(),
            full_name: "Jane Doe".into(),
            email_address: None,
            phone_number: None,
            access_starts_at: starts,
            access_ends_at: ends,
            user_identity_id: None,
            is_suspended: false,
            access_group_ids: Vec::new(),
            created_at: crate::model::now(),
        }
    }

    #[test]
    fn credentials_narrow_the_users_schedule() {
        let now = crate::model::now();
        let (a, b, c) = (
            now + Duration::days(1),
            now + Duration::days(2),
            now + Duration::days(3),
        );
        // Nothing asked: the user's schedule.
        assert_eq!(
            credential_schedule(&user(Some(a), Some(c)), None, None, now),
            (Some(a), Some(c))
        );
        // Asked within: as asked; asked beyond: cut to the user's.
        assert_eq!(
            credential_schedule(&user(Some(a), Some(c)), Some(b), Some(b), now),
            (Some(b), Some(b))
        );
        assert_eq!(
            credential_schedule(&user(Some(b), Some(b)), Some(a), Some(c), now),
            (Some(b), Some(b))
        );
        // A user whose access already started: the credential starts now.
        assert_eq!(
            credential_schedule(&user(Some(now - Duration::days(1)), None), None, None, now),
            (None, None)
        );
        assert_eq!(
            credential_schedule(&user(None, None), Some(a), None, now),
            (Some(a), None)
        );
    }
}
