//! The events of changes the store applies inside its transactions (deletions, revocations,
//! completions): constructed here, like every other event, so the store only appends them.

use time::OffsetDateTime;

use crate::action::UnlockJob;
use crate::events::{self, EventType, NewEvent};
use crate::grant::AccessMethod;
use crate::ids::{AccessGrantId, AccessSystemId, InstantKeyId, UserIdentityId};

/// `access_grant.deleted`.
pub fn access_grant_deleted(
    grant: AccessGrantId,
    user: UserIdentityId,
    at: OffsetDateTime,
) -> NewEvent {
    NewEvent::new(events::ACCESS_GRANT_DELETED, at)
        .grant(grant)
        .user(user)
}

/// `user_identity.deleted`, after the deletion events of everything the person held.
pub fn user_identity_deleted(user: UserIdentityId, at: OffsetDateTime) -> NewEvent {
    NewEvent::new(events::USER_IDENTITY_DELETED, at).user(user)
}

/// `access_method.deleted`.
pub fn access_method_deleted(m: &AccessMethod, at: OffsetDateTime) -> NewEvent {
    NewEvent::new(events::ACCESS_METHOD_DELETED, at)
        .grant(m.access_grant_id)
        .method(m.id)
        .user(m.user_identity_id)
}

/// `access_method.issued`, or `access_method.reissued` when it had been issued before, as
/// a card encoded by `system` is.
pub fn card_encoded(
    m: &AccessMethod,
    system: AccessSystemId,
    was_issued: bool,
    at: OffsetDateTime,
) -> NewEvent {
    let kind = if was_issued {
        events::ACCESS_METHOD_REISSUED
    } else {
        events::ACCESS_METHOD_ISSUED
    };
    NewEvent::new(kind, at)
        .grant(m.access_grant_id)
        .method(m.id)
        .system(system)
        .user(m.user_identity_id)
}

/// `instant_key.revoked`, of the person's key (and its grant, when a grant made it).
pub fn instant_key_revoked(
    key: InstantKeyId,
    user: UserIdentityId,
    grant: Option<AccessGrantId>,
    at: OffsetDateTime,
) -> NewEvent {
    with_grant(
        NewEvent::new(events::INSTANT_KEY_REVOKED, at)
            .user(user)
            .instant_key(key),
        grant,
    )
}

/// An Instant Key delivery's outcome (`instant_key.delivered` or
/// `instant_key.delivery_failed`).
pub fn instant_key_delivery(
    event_type: EventType,
    key: InstantKeyId,
    user: UserIdentityId,
    grant: Option<AccessGrantId>,
    at: OffsetDateTime,
) -> NewEvent {
    with_grant(
        NewEvent::new(event_type, at).user(user).instant_key(key),
        grant,
    )
}

/// `acs_entrance.unlocked`, after an unlock the access system confirmed.
pub fn entrance_unlocked(u: &UnlockJob, at: OffsetDateTime) -> NewEvent {
    let e = NewEvent::new(events::ACS_ENTRANCE_UNLOCKED, at)
        .system(u.acs_system_id)
        .entrance(u.acs_entrance_id)
        .attempt(u.action_attempt_id);
    let e = match u.user_identity_id {
        Some(p) => e.user(p),
        None => e,
    };
    let e = match u.access_grant_id {
        Some(g) => e.grant(g),
        None => e,
    };
    match u.instant_key_id {
        Some(k) => e.instant_key(k),
        None => e,
    }
}

fn with_grant(e: NewEvent, grant: Option<AccessGrantId>) -> NewEvent {
    match grant {
        Some(g) => e.grant(g),
        None => e,
    }
}
