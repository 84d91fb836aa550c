//! Every lifecycle event type, in the hosted API's dotted form, listed once. The proto documents
//! the same list; webhooks and `WatchEvents` carry these strings.

/// An event type and its description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventType {
    pub name: &'static str,
    pub description: &'static str,
}

macro_rules! event_types {
    ($($ident:ident = $name:literal, $desc:literal;)*) => {
        $(
            #[doc = $desc]
            pub const $ident: EventType = EventType { name: $name, description: $desc };
        )*
        /// Every event type Keygate emits.
        pub const ALL: &[EventType] = &[$($ident),*];
    };
}

event_types! {
    ACCESS_GRANT_CREATED = "access_grant.created", "An access grant was created.";
    ACCESS_GRANT_DELETED = "access_grant.deleted", "An access grant was deleted.";
    ACCESS_GRANT_ACCESS_GRANTED_TO_DOOR = "access_grant.access_granted_to_door", "Access was granted to one entrance of an access grant.";
    ACCESS_GRANT_ACCESS_GRANTED_TO_ALL_DOORS = "access_grant.access_granted_to_all_doors", "Access was granted to every entrance of an access grant.";
    ACCESS_GRANT_ACCESS_TO_DOOR_LOST = "access_grant.access_to_door_lost", "An access grant lost access to an entrance.";
    ACCESS_GRANT_ACCESS_TIMES_CHANGED = "access_grant.access_times_changed", "The starts_at or ends_at of an access grant changed.";
    ACCESS_GRANT_COULD_NOT_CREATE_REQUESTED_ACCESS_METHODS = "access_grant.could_not_create_requested_access_methods", "Some requested access methods could not be created.";
    ACCESS_METHOD_CREATED = "access_method.created", "An access method was created.";
    ACCESS_METHOD_ISSUED = "access_method.issued", "An access method was issued and can be delivered.";
    ACCESS_METHOD_REISSUED = "access_method.reissued", "An access method was issued again after a change.";
    ACCESS_METHOD_REVOKED = "access_method.revoked", "An access method was revoked.";
    ACCESS_METHOD_DELETED = "access_method.deleted", "An access method was deleted.";
    ACCESS_METHOD_CARD_ENCODING_REQUIRED = "access_method.card_encoding_required", "An access method representing a physical card requires encoding.";
    ACCESS_METHOD_DELAY_IN_ISSUING = "access_method.delay_in_issuing", "Issuing an access method is taking longer than expected.";
    ACCESS_METHOD_FAILED_TO_ISSUE = "access_method.failed_to_issue", "An access method could not be issued.";
    ACCESS_METHOD_USED = "access_method.used", "An access method opened an entrance: its access system reported the unlock.";
    ACTION_ATTEMPT_SUCCEEDED = "action_attempt.succeeded", "An action attempt finished with success.";
    ACTION_ATTEMPT_FAILED = "action_attempt.failed", "An action attempt finished with an error; its error type says why.";
    ACS_ENTRANCE_UNLOCKED = "acs_entrance.unlocked", "An entrance was unlocked remotely, for example from an Instant Key page.";
    ACS_ENTRANCE_ADDED = "acs_entrance.added", "A sync found a new entrance on an access system, or one that had been removed came back.";
    ACS_ENTRANCE_REMOVED = "acs_entrance.removed", "A sync found that an access system no longer has an entrance; the grants that used it have a warning.";
    ACS_SYSTEM_CONNECTED = "acs_system.connected", "An access system was connected, or can be reached again after an error.";
    ACS_SYSTEM_DISCONNECTED = "acs_system.disconnected", "An access system was disconnected, or an error stops Keygate from reaching it; its errors say why.";
    INSTANT_KEY_CREATED = "instant_key.created", "An Instant Key was created.";
    INSTANT_KEY_REVOKED = "instant_key.revoked", "An Instant Key was revoked.";
    INSTANT_KEY_DELIVERED = "instant_key.delivered", "The link of an Instant Key was accepted by the SMS or email provider.";
    INSTANT_KEY_DELIVERY_FAILED = "instant_key.delivery_failed", "Sending the link of an Instant Key by SMS or email failed for good.";
    USER_IDENTITY_DELETED = "user_identity.deleted", "A user identity was deleted, with every access grant and Instant Key it held.";
    WEBHOOK_DISABLED = "webhook.disabled", "A webhook was disabled after its deliveries kept failing.";
}

/// Looks an event type up by its dotted name.
pub fn by_name(name: &str) -> Option<EventType> {
    ALL.iter().copied().find(|e| e.name == name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_dotted() {
        let mut names: Vec<_> = super::ALL.iter().map(|e| e.name).collect();
        assert!(names.iter().all(|n| n.split('.').count() == 2));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), super::ALL.len());
    }
}

use time::OffsetDateTime;

use crate::ids::{
    AccessGrantId, AccessMethodId, AccessSystemId, ActionAttemptId, EntranceId, EventId,
    InstantKeyId, UserIdentityId, WorkspaceId,
};

/// An event about to be appended to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub id: EventId,
    pub event_type: EventType,
    pub occurred_at: OffsetDateTime,
    pub access_grant_id: Option<AccessGrantId>,
    pub access_method_id: Option<AccessMethodId>,
    pub acs_system_id: Option<AccessSystemId>,
    pub acs_entrance_id: Option<EntranceId>,
    pub user_identity_id: Option<UserIdentityId>,
    pub instant_key_id: Option<InstantKeyId>,
    pub action_attempt_id: Option<ActionAttemptId>,
}

impl NewEvent {
    pub fn new(event_type: EventType, at: OffsetDateTime) -> Self {
        Self {
            id: EventId::new(),
            event_type,
            occurred_at: at,
            access_grant_id: None,
            access_method_id: None,
            acs_system_id: None,
            acs_entrance_id: None,
            user_identity_id: None,
            instant_key_id: None,
            action_attempt_id: None,
        }
    }
    pub fn grant(mut self, id: AccessGrantId) -> Self {
        self.access_grant_id = Some(id);
        self
    }
    pub fn method(mut self, id: AccessMethodId) -> Self {
        self.access_method_id = Some(id);
        self
    }
    pub fn system(mut self, id: AccessSystemId) -> Self {
        self.acs_system_id = Some(id);
        self
    }
    pub fn entrance(mut self, id: EntranceId) -> Self {
        self.acs_entrance_id = Some(id);
        self
    }
    pub fn user(mut self, id: UserIdentityId) -> Self {
        self.user_identity_id = Some(id);
        self
    }
    pub fn instant_key(mut self, id: InstantKeyId) -> Self {
        self.instant_key_id = Some(id);
        self
    }
    pub fn attempt(mut self, id: ActionAttemptId) -> Self {
        self.action_attempt_id = Some(id);
        self
    }
}

/// An event in the log. `seq` orders a workspace's events in commit order; it is the cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    pub workspace_id: WorkspaceId,
    pub id: EventId,
    pub event_type: String,
    pub description: String,
    pub occurred_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub access_grant_id: Option<AccessGrantId>,
    pub access_method_id: Option<AccessMethodId>,
    pub acs_system_id: Option<AccessSystemId>,
    pub acs_entrance_id: Option<EntranceId>,
    pub user_identity_id: Option<UserIdentityId>,
    pub instant_key_id: Option<InstantKeyId>,
    pub action_attempt_id: Option<ActionAttemptId>,
}

/// Filters of `ListEvents` / `WatchEvents`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub event_types: Vec<String>,
    pub access_grant_id: Option<AccessGrantId>,
    pub access_method_id: Option<AccessMethodId>,
    pub acs_system_id: Option<AccessSystemId>,
    pub acs_entrance_id: Option<EntranceId>,
    pub user_identity_id: Option<UserIdentityId>,
    pub occurred_after: Option<OffsetDateTime>,
    pub occurred_before: Option<OffsetDateTime>,
}

impl EventFilter {
    /// Whether an event passes the filter: the same test the store runs in SQL when it lists
    /// (each set field must equal the event's; times compare at the log's microsecond
    /// precision, `occurred_after` inclusive, `occurred_before` exclusive). The process's event
    /// tail reads the log once, unfiltered, and applies each watch's filter with this.
    pub fn matches(&self, e: &Event) -> bool {
        fn micros(t: OffsetDateTime) -> i128 {
            t.unix_timestamp_nanos() / 1_000
        }
        (self.event_types.is_empty() || self.event_types.contains(&e.event_type))
            && self
                .access_grant_id
                .is_none_or(|g| e.access_grant_id == Some(g))
            && self
                .access_method_id
                .is_none_or(|m| e.access_method_id == Some(m))
            && self
                .acs_system_id
                .is_none_or(|s| e.acs_system_id == Some(s))
            && self
                .acs_entrance_id
                .is_none_or(|x| e.acs_entrance_id == Some(x))
            && self
                .user_identity_id
                .is_none_or(|u| e.user_identity_id == Some(u))
            && self
                .occurred_after
                .is_none_or(|t| micros(e.occurred_at) >= micros(t))
            && self
                .occurred_before
                .is_none_or(|t| micros(e.occurred_at) < micros(t))
    }
}
