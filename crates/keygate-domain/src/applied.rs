//! The events of changes the store applies inside its transactions (deletions, revocations,
//! completions): constructed here, like every other event, so the store only appends them.

use time::OffsetDateTime;

use crate::action::{EncodeJob, UnlockJob};
use crate::events::{self, EventType, NewEvent};
use crate::grant::AccessMethod;
use crate::ids::{AccessGrantId, AccessSystemId, EntranceId, InstantKeyId, UserIdentityId};

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
    about_unlock(NewEvent::new(events::ACS_ENTRANCE_UNLOCKED, at), u)
}

/// `access_method.used`: the access system reported (through its webhook) that the person
/// opened `entrance` with `m`'s credential, at `at` (the system's time of the unlock).
pub fn access_method_used(
    m: &AccessMethod,
    system: AccessSystemId,
    entrance: EntranceId,
    at: OffsetDateTime,
) -> NewEvent {
    NewEvent::new(events::ACCESS_METHOD_USED, at)
        .grant(m.access_grant_id)
        .method(m.id)
        .system(system)
        .entrance(entrance)
        .user(m.user_identity_id)
}

/// How an unlock's action attempt ended: `action_attempt.succeeded` or `action_attempt.failed`
/// (the attempt carries the error type: `unlock_expired`, `access_revoked`, ...).
pub fn unlock_finished(u: &UnlockJob, succeeded: bool, at: OffsetDateTime) -> NewEvent {
    let t = if succeeded {
        events::ACTION_ATTEMPT_SUCCEEDED
    } else {
        events::ACTION_ATTEMPT_FAILED
    };
    about_unlock(NewEvent::new(t, at), u)
}

/// How a card encoding's action attempt ended.
pub fn encode_finished(e: &EncodeJob, succeeded: bool, at: OffsetDateTime) -> NewEvent {
    let t = if succeeded {
        events::ACTION_ATTEMPT_SUCCEEDED
    } else {
        events::ACTION_ATTEMPT_FAILED
    };
    NewEvent::new(t, at)
        .system(e.acs_system_id)
        .method(e.access_method_id)
        .attempt(e.action_attempt_id)
}

fn about_unlock(e: NewEvent, u: &UnlockJob) -> NewEvent {
    let mut e = e
        .system(u.acs_system_id)
        .entrance(u.acs_entrance_id)
        .attempt(u.action_attempt_id);
    if let Some(p) = u.user_identity_id {
        e = e.user(p);
    }
    if let Some(g) = u.access_grant_id {
        e = e.grant(g);
    }
    if let Some(m) = u.access_method_id {
        e = e.method(m);
    }
    if let Some(k) = u.instant_key_id {
        e = e.instant_key(k);
    }
    e
}

fn with_grant(e: NewEvent, grant: Option<AccessGrantId>) -> NewEvent {
    match grant {
        Some(g) => e.grant(g),
        None => e,
    }
}
