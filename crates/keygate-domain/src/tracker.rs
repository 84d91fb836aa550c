//! Status transitions of access methods, as a pure function of a snapshot and a provider
//! outcome. The store applies the result in one transaction with the job's completion, so each
//! lifecycle event is emitted exactly once, by the transition that causes it.

use time::OffsetDateTime;

use crate::action::RevokeJob;
use crate::capability::AccessMethodMode;
use crate::events::{self, NewEvent};
use crate::grant::{AccessGrant, AccessMethod, DoorState, Notice, ProvisionJob};
use crate::ids::EntranceId;

/// What a provider did with one entrance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DoorOutcome {
    Granted,
    /// Refused for good; the reason is the provider's.
    Failed(String),
    /// No clear answer (timeout, 5xx): read back before deciding.
    Unknown(String),
}

/// The result of one provision job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionResult {
    pub doors: Vec<(EntranceId, DoorOutcome)>,
    /// A PIN the provider generated (or confirmed).
    pub code: Option<String>,
    /// Whether the credential must still be encoded on a card.
    pub card_encoding_required: bool,
    pub client_session_token: Option<String>,
}

/// The new state of a grant's methods, the grant's new warnings, and the events caused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub methods: Vec<AccessMethod>,
    pub grant_warnings: Vec<Notice>,
    /// Errors to add to the grant (a method that could not be issued at all).
    pub grant_errors: Vec<Notice>,
    pub events: Vec<NewEvent>,
}

fn settled(m: &AccessMethod) -> bool {
    m.doors.iter().all(|d| {
        matches!(
            d.state,
            DoorState::Granted | DoorState::Failed | DoorState::Revoked
        )
    })
}

/// Every door the grant still has is granted, with no change pending. Revoked doors (taken off
/// by an update) do not count.
pub fn all_granted(methods: &[AccessMethod]) -> bool {
    let mut live = methods
        .iter()
        .flat_map(|m| &m.doors)
        .filter(|d| d.state != DoorState::Revoked)
        .peekable();
    live.peek().is_some() && live.all(|d| d.state == DoorState::Granted && d.pending.is_none())
}

/// Applies a provider outcome for `job` to the grant's methods.
pub fn apply(
    grant: &AccessGrant,
    methods: &[AccessMethod],
    job: &ProvisionJob,
    result: &ProvisionResult,
    now: OffsetDateTime,
) -> Transition {
    let before_all = all_granted(methods);
    let mut out = Transition {
        methods: methods.to_vec(),
        grant_warnings: Vec::new(),
        grant_errors: Vec::new(),
        events: Vec::new(),
    };
    let ev = |t| {
        NewEvent::new(t, now)
            .grant(grant.id)
            .user(grant.user_identity_id)
    };
    for m in out
        .methods
        .iter_mut()
        .filter(|m| m.id == job.access_method_id)
    {
        let was_settled = settled(m);
        for door in m
            .doors
            .iter_mut()
            .filter(|d| d.acs_system_id == job.acs_system_id)
        {
            let Some((_, outcome)) = result.doors.iter().find(|(e, _)| *e == door.entrance_id)
            else {
                continue;
            };
            let (state, reason) = match outcome {
                DoorOutcome::Granted => (DoorState::Granted, None),
                DoorOutcome::Failed(r) => (DoorState::Failed, Some(r.clone())),
                DoorOutcome::Unknown(r) => (DoorState::Unknown, Some(r.clone())),
            };
            if state != DoorState::Unknown && door.pending.take().is_some() {
                door.updated_at = now;
            }
            if job.update && door.state == DoorState::Granted && state == DoorState::Failed {
                // The change was refused, but the credential as it was still opens this door.
                out.grant_warnings.push(Notice::new(
                    "underprovisioned_access",
                    format!(
                        "entrance {} keeps its earlier access; the change was refused: {}",
                        door.entrance_id,
                        reason.unwrap_or_default()
                    ),
                    now,
                ));
                continue;
            }
            if door.state == state {
                continue;
            }
            door.state = state;
            door.reason = reason.clone();
            door.updated_at = now;
            match state {
                DoorState::Granted => out.events.push(
                    ev(events::ACCESS_GRANT_ACCESS_GRANTED_TO_DOOR)
                        .method(m.id)
                        .system(door.acs_system_id)
                        .entrance(door.entrance_id),
                ),
                DoorState::Failed => out.grant_warnings.push(Notice::new(
                    "underprovisioned_access",
                    format!(
                        "entrance {} could not be granted: {}",
                        door.entrance_id,
                        reason.unwrap_or_default()
                    ),
                    now,
                )),
                _ => {}
            }
        }
        // Doors the update took off: revoked once the access system has taken the change.
        let refused = !result.doors.is_empty()
            && result
                .doors
                .iter()
                .all(|(_, o)| matches!(o, DoorOutcome::Failed(_)));
        for door in m.doors.iter_mut().filter(|d| {
            d.acs_system_id == job.acs_system_id
                && job.removed_entrance_ids.contains(&d.entrance_id)
                && d.state != DoorState::Revoked
        }) {
            door.pending = None;
            door.updated_at = now;
            if refused {
                door.reason = Some("the access system refused to take this access back".into());
                out.grant_warnings.push(Notice::new(
                    "revocation_failed",
                    format!(
                        "access to entrance {} could not be taken back",
                        door.entrance_id
                    ),
                    now,
                ));
                continue;
            }
            if door.state == DoorState::Granted {
                out.events.push(
                    ev(events::ACCESS_GRANT_ACCESS_TO_DOOR_LOST)
                        .method(m.id)
                        .system(door.acs_system_id)
                        .entrance(door.entrance_id),
                );
            }
            door.state = DoorState::Revoked;
            door.reason = Some("removed from the grant".into());
        }
        if result.code.is_some() && m.mode == AccessMethodMode::Code {
            m.code.clone_from(&result.code);
        }
        if result.client_session_token.is_some() {
            m.client_session_token
                .clone_from(&result.client_session_token);
        }
        m.updated_at = now;
        if job.update {
            // An update settles when the last of its jobs for this method has: the method is
            // then issued again (a card must be encoded again first).
            let done = settled(m) && m.doors.iter().all(|d| d.pending.is_none());
            let granted = m.doors.iter().any(|d| d.state == DoorState::Granted);
            if !done || !granted {
                continue;
            }
            if m.mode == AccessMethodMode::Card && result.card_encoding_required {
                m.is_card_encoding_required = true;
                m.is_ready_for_encoding = true;
                out.events.push(
                    ev(events::ACCESS_METHOD_CARD_ENCODING_REQUIRED)
                        .method(m.id)
                        .system(job.acs_system_id),
                );
            } else if m.is_issued {
                out.events
                    .push(ev(events::ACCESS_METHOD_REISSUED).method(m.id));
            } else {
                m.is_issued = true;
                m.issued_at = Some(now);
                out.events
                    .push(ev(events::ACCESS_METHOD_ISSUED).method(m.id));
            }
            continue;
        }
        if was_settled || !settled(m) {
            continue;
        }
        let granted = m
            .doors
            .iter()
            .filter(|d| d.state == DoorState::Granted)
            .count();
        if granted == 0 {
            m.errors.push(Notice::new(
                "failed_to_issue",
                "no entrance of this access method could be granted",
                now,
            ));
            out.grant_errors.push(Notice::new(
                "cannot_create_requested_access_methods",
                format!(
                    "the {} access method {} could not be issued",
                    m.display_name, m.id
                ),
                now,
            ));
            out.events
                .push(ev(events::ACCESS_METHOD_FAILED_TO_ISSUE).method(m.id));
            out.events.push(
                ev(events::ACCESS_GRANT_COULD_NOT_CREATE_REQUESTED_ACCESS_METHODS).method(m.id),
            );
        } else if m.mode == AccessMethodMode::Card
            && (result.card_encoding_required || m.is_card_encoding_required)
        {
            m.is_card_encoding_required = true;
            m.is_ready_for_encoding = true;
            out.events.push(
                ev(events::ACCESS_METHOD_CARD_ENCODING_REQUIRED)
                    .method(m.id)
                    .system(job.acs_system_id),
            );
        } else if !m.is_issued {
            m.is_issued = true;
            m.issued_at = Some(now);
            out.events
                .push(ev(events::ACCESS_METHOD_ISSUED).method(m.id));
        }
    }
    if !before_all && all_granted(&out.methods) {
        out.events
            .push(ev(events::ACCESS_GRANT_ACCESS_GRANTED_TO_ALL_DOORS));
    }
    out
}

/// Applies a confirmed revocation (`job`'s doors are gone from its access system) to the
/// grant's methods. `grant_live` is false when the grant itself was deleted: then no door is
/// left to report on, so there is no "all doors" event; `method_live` is false when the method
/// was deleted: its partial revocations are steps of the delete, not a change to report.
pub fn revoked(
    grant_live: bool,
    method_live: bool,
    methods: &[AccessMethod],
    job: &RevokeJob,
    now: OffsetDateTime,
) -> Transition {
    let before_all = all_granted(methods);
    let mut out = Transition {
        methods: methods.to_vec(),
        grant_warnings: Vec::new(),
        grant_errors: Vec::new(),
        events: Vec::new(),
    };
    for m in out
        .methods
        .iter_mut()
        .filter(|m| m.id == job.access_method_id)
    {
        let ev = |t| {
            NewEvent::new(t, now)
                .grant(m.access_grant_id)
                .method(m.id)
                .user(m.user_identity_id)
        };
        let was_revoked = m.doors.iter().all(|d| d.state == DoorState::Revoked);
        let mut changed = false;
        for d in m.doors.iter_mut().filter(|d| {
            d.acs_system_id == job.acs_system_id && job.entrance_ids.contains(&d.entrance_id)
        }) {
            changed |= d.state != DoorState::Revoked;
            if d.state == DoorState::Granted {
                out.events.push(
                    ev(events::ACCESS_GRANT_ACCESS_TO_DOOR_LOST)
                        .system(d.acs_system_id)
                        .entrance(d.entrance_id),
                );
            }
            d.state = DoorState::Revoked;
            d.pending = None;
            d.updated_at = now;
        }
        if !was_revoked && m.doors.iter().all(|d| d.state == DoorState::Revoked) {
            m.is_issued = false;
            out.events.push(ev(events::ACCESS_METHOD_REVOKED));
        } else if changed
            && method_live
            && m.is_issued
            && settled(m)
            && m.doors.iter().all(|d| d.pending.is_none())
        {
            // The last step of an update that took some of the method's doors away (the other
            // steps already settled): the method stands changed, as after an update job.
            out.events.push(ev(events::ACCESS_METHOD_REISSUED));
        }
        m.updated_at = now;
    }
    if grant_live
        && !before_all
        && all_granted(&out.methods)
        && let Some(m) = methods.first()
    {
        out.events.push(
            NewEvent::new(events::ACCESS_GRANT_ACCESS_GRANTED_TO_ALL_DOORS, now)
                .grant(m.access_grant_id)
                .user(m.user_identity_id),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::DoorStatus;
    use crate::ids::*;

    fn fixture(
        mode: AccessMethodMode,
        doors: usize,
    ) -> (AccessGrant, Vec<AccessMethod>, ProvisionJob) {
        let now = crate::model::now();
        let system = AccessSystemId::new();
        let grant = AccessGrant {
            id: AccessGrantId::new(),
            workspace_id: WorkspaceId::new(),
            user_identity_id: UserIdentityId::new(),
            access_grant_key: None,
            name: "g".into(),
            reservation_key: None,
            starts_at: now,
            ends_at: None,
            entrance_ids: Vec::new(),
            requested: Vec::new(),
            access_method_ids: Vec::new(),
            instant_key_id: None,
            warnings: Vec::new(),
            errors: Vec::new(),
            pending_mutations: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        let doors: Vec<DoorStatus> = (0..doors)
            .map(|_| DoorStatus {
                entrance_id: EntranceId::new(),
                acs_system_id: system,
                state: DoorState::Pending,
                reason: None,
                updated_at: now,
                pending: None,
            })
            .collect();
        let m = AccessMethod {
            id: AccessMethodId::new(),
            workspace_id: grant.workspace_id,
            access_grant_id: grant.id,
            user_identity_id: grant.user_identity_id,
            mode,
            display_name: mode.display_name().into(),
            is_issued: false,
            issued_at: None,
            is_card_encoding_required: false,
            is_ready_for_encoding: false,
            code: None,
            client_session_token: None,
            instant_key_id: None,
            doors: doors.clone(),
            warnings: Vec::new(),
            errors: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        let job = ProvisionJob {
            access_grant_id: grant.id,
            access_method_id: m.id,
            acs_system_id: system,
            mode,
            entrance_ids: doors.iter().map(|d| d.entrance_id).collect(),
            access_group_ids: Vec::new(),
            requested_code: None,
            removed_entrance_ids: Vec::new(),
            update: false,
        };
        (grant, vec![m], job)
    }

    fn names(t: &Transition) -> Vec<&str> {
        t.events.iter().map(|e| e.event_type.name).collect()
    }

    #[test]
    fn a_mobile_key_is_issued_once_all_doors_are_granted() {
        let (g, ms, job) = fixture(AccessMethodMode::MobileKey, 2);
        let all = ProvisionResult {
            doors: job
                .entrance_ids
                .iter()
                .map(|e| (*e, DoorOutcome::Granted))
                .collect(),
            code: None,
            card_encoding_required: false,
            client_session_token: Some("tok".into()),
        };
        let t = apply(&g, &ms, &job, &all, crate::model::now());
        assert_eq!(
            names(&t),
            [
                "access_grant.access_granted_to_door",
                "access_grant.access_granted_to_door",
                "access_method.issued",
                "access_grant.access_granted_to_all_doors"
            ]
        );
        assert!(t.methods[0].is_issued);
        // Replaying the same outcome changes nothing and emits nothing.
        let again = apply(&g, &t.methods, &job, &all, crate::model::now());
        assert!(again.events.is_empty());
    }

    #[test]
    fn a_card_needs_encoding_before_it_is_issued() {
        let (g, ms, job) = fixture(AccessMethodMode::Card, 1);
        let r = ProvisionResult {
            doors: vec![(job.entrance_ids[0], DoorOutcome::Granted)],
            code: None,
            card_encoding_required: true,
            client_session_token: None,
        };
        let t = apply(&g, &ms, &job, &r, crate::model::now());
        assert!(names(&t).contains(&"access_method.card_encoding_required"));
        assert!(!t.methods[0].is_issued && t.methods[0].is_card_encoding_required);
    }

    #[test]
    fn partial_failure_keeps_the_granted_door_and_warns() {
        let (g, ms, job) = fixture(AccessMethodMode::MobileKey, 2);
        let r = ProvisionResult {
            doors: vec![
                (job.entrance_ids[0], DoorOutcome::Granted),
                (job.entrance_ids[1], DoorOutcome::Failed("rejected".into())),
            ],
            code: None,
            card_encoding_required: false,
            client_session_token: None,
        };
        let t = apply(&g, &ms, &job, &r, crate::model::now());
        assert!(t.methods[0].is_issued, "the granted door is usable");
        assert_eq!(t.grant_warnings.len(), 1);
        assert!(t.grant_warnings[0].message.contains("rejected"));
        assert!(!names(&t).contains(&"access_grant.access_granted_to_all_doors"));
    }

    #[test]
    fn unknown_outcomes_settle_nothing() {
        let (g, ms, job) = fixture(AccessMethodMode::MobileKey, 1);
        let r = ProvisionResult {
            doors: vec![(job.entrance_ids[0], DoorOutcome::Unknown("timeout".into()))],
            code: None,
            card_encoding_required: false,
            client_session_token: None,
        };
        let t = apply(&g, &ms, &job, &r, crate::model::now());
        assert!(t.events.is_empty());
        assert_eq!(t.methods[0].doors[0].state, DoorState::Unknown);
    }
}
