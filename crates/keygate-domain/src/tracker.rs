//! Status transitions of access methods, as a pure function of a snapshot and a provider
//! outcome. The store applies the result in one transaction with the job's completion, so each
//! lifecycle event is emitted exactly once, by the transition that causes it.

use time::OffsetDateTime;

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

fn all_granted(methods: &[AccessMethod]) -> bool {
    methods
        .iter()
        .all(|m| m.doors.iter().all(|d| d.state == DoorState::Granted))
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
        if result.code.is_some() && m.mode == AccessMethodMode::Code {
            m.code.clone_from(&result.code);
        }
        if result.client_session_token.is_some() {
            m.client_session_token
                .clone_from(&result.client_session_token);
        }
        m.updated_at = now;
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
            instant_key_url: None,
            warnings: Vec::new(),
            errors: Vec::new(),
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
            instant_key_url: None,
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
