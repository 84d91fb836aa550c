//! Access grants, their access methods and per-door state, and the planner that turns a request
//! into methods and provider jobs from the capability descriptors alone (no I/O).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::capability::{AccessMethodMode, CapabilityDescriptor, PermissionModel};
use crate::error::{Error, ErrorReason};
use crate::ids::{
    AccessGrantId, AccessGroupId, AccessMethodId, AccessSystemId, EntranceId, InstantKeyId,
    UserIdentityId, WorkspaceId,
};

/// Serde for times as Unix microseconds, the precision Keygate stores.
pub mod micros {
    use serde::{Deserialize as _, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let us = i64::deserialize(d)?;
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
            .map_err(serde::de::Error::custom)
    }
}

/// A warning or error on a resource: `{code, message, created_at}`, as the seeds carry them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub code: String,
    pub message: String,
    #[serde(with = "micros")]
    pub created_at: OffsetDateTime,
}

impl Notice {
    pub fn new(code: &str, message: impl Into<String>, at: OffsetDateTime) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            created_at: at,
        }
    }
}

/// Where one entrance of one access method stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoorState {
    /// Queued or being pushed to the access system.
    Pending,
    /// The access system confirmed access.
    Granted,
    /// The access system refused, or no way to grant exists (reason says which).
    Failed,
    /// Access was taken away.
    Revoked,
    /// The provider's answer was ambiguous (timeout, 5xx); read back before deciding.
    Unknown,
}

impl DoorState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Granted => "granted",
            Self::Failed => "failed",
            Self::Revoked => "revoked",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "granted" => Self::Granted,
            "failed" => Self::Failed,
            "revoked" => Self::Revoked,
            "unknown" => Self::Unknown,
            _ => return None,
        })
    }
}

/// The state of one entrance of an access method.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoorStatus {
    pub entrance_id: EntranceId,
    pub acs_system_id: AccessSystemId,
    pub state: DoorState,
    pub reason: Option<String>,
    pub updated_at: OffsetDateTime,
    /// A change to this door that an access system has not confirmed yet (an update of the
    /// grant): the door keeps its state until then.
    pub pending: Option<PendingChange>,
}

/// A change being pushed to an access system for one door, as `pending_mutations` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// `revoking_access` or `updating_access_times`.
    pub mutation_code: String,
    pub message: String,
    #[serde(with = "micros")]
    pub created_at: OffsetDateTime,
    /// Compact JSON of the state before and after; empty when not applicable.
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

/// One requested mode of a grant, and the methods made for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedAccessMethod {
    pub mode: AccessMethodMode,
    pub display_name: String,
    #[serde(with = "micros")]
    pub created_at: OffsetDateTime,
    pub created_access_method_ids: Vec<AccessMethodId>,
    pub code: Option<String>,
}

/// An access grant: who, where, when and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessGrant {
    pub id: AccessGrantId,
    pub workspace_id: WorkspaceId,
    pub user_identity_id: UserIdentityId,
    pub access_grant_key: Option<String>,
    pub name: String,
    pub reservation_key: Option<String>,
    pub starts_at: OffsetDateTime,
    pub ends_at: Option<OffsetDateTime>,
    pub entrance_ids: Vec<EntranceId>,
    pub requested: Vec<RequestedAccessMethod>,
    pub access_method_ids: Vec<AccessMethodId>,
    pub instant_key_id: Option<InstantKeyId>,
    pub warnings: Vec<Notice>,
    pub errors: Vec<Notice>,
    /// What is still being pushed to access systems, derived from the doors of its methods.
    pub pending_mutations: Vec<PendingChange>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The pending mutations that `doors` show: `provisioning_access` for a door not confirmed yet,
/// and the change waiting on a door (`revoking_access`, `updating_access_times`). One per
/// (mutation, entrance), across methods.
pub fn pending_mutations<'a>(
    doors: impl IntoIterator<Item = &'a DoorStatus>,
) -> Vec<PendingChange> {
    let mut out: Vec<PendingChange> = Vec::new();
    for d in doors {
        let change = match (&d.pending, d.state) {
            (Some(p), _) => p.clone(),
            (None, DoorState::Pending | DoorState::Unknown) => PendingChange {
                mutation_code: "provisioning_access".into(),
                message: format!("granting access to entrance {}", d.entrance_id),
                created_at: d.updated_at,
                from: String::new(),
                to: String::new(),
            },
            _ => continue,
        };
        if !out
            .iter()
            .any(|c| c.mutation_code == change.mutation_code && c.message == change.message)
        {
            out.push(change);
        }
    }
    out
}

/// An access method: one way in (card, PIN, mobile key) for some of a grant's entrances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessMethod {
    pub id: AccessMethodId,
    pub workspace_id: WorkspaceId,
    pub access_grant_id: AccessGrantId,
    pub user_identity_id: UserIdentityId,
    pub mode: AccessMethodMode,
    pub display_name: String,
    pub is_issued: bool,
    pub issued_at: Option<OffsetDateTime>,
    pub is_card_encoding_required: bool,
    pub is_ready_for_encoding: bool,
    /// The PIN. Returned only to the owning workspace; never in events or logs.
    pub code: Option<String>,
    pub client_session_token: Option<String>,
    pub instant_key_id: Option<InstantKeyId>,
    pub doors: Vec<DoorStatus>,
    pub warnings: Vec<Notice>,
    pub errors: Vec<Notice>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// An entrance as the planner sees it: its flags, its system's capabilities, and the access
/// groups that open it.
#[derive(Clone, Debug)]
pub struct PlanningEntrance {
    pub entrance_id: EntranceId,
    pub display_name: String,
    pub acs_system_id: AccessSystemId,
    pub capabilities: CapabilityDescriptor,
    pub can_unlock_with_card: bool,
    pub can_unlock_with_code: bool,
    pub can_unlock_with_mobile_key: bool,
    pub can_unlock_with_cloud_key: bool,
    /// Groups of this entrance's system that open it, with every entrance each group opens.
    pub covering_groups: Vec<(AccessGroupId, Vec<EntranceId>)>,
}

impl PlanningEntrance {
    pub(crate) fn opens_with(&self, mode: AccessMethodMode) -> bool {
        let door = match mode {
            AccessMethodMode::Card => self.can_unlock_with_card,
            AccessMethodMode::Code => self.can_unlock_with_code,
            AccessMethodMode::MobileKey => self.can_unlock_with_mobile_key,
            AccessMethodMode::CloudKey => self.can_unlock_with_cloud_key,
        };
        let system = match mode {
            AccessMethodMode::MobileKey => self.capabilities.can_issue_mobile_keys,
            AccessMethodMode::CloudKey => self.capabilities.can_remote_unlock,
            m => self.capabilities.supports(m),
        };
        door && system
    }
}

/// A method the grant will have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMethod {
    pub id: AccessMethodId,
    pub mode: AccessMethodMode,
    pub display_name: String,
    pub requested_code: Option<String>,
    /// Every entrance of the method with its starting state (pending, or failed with a reason).
    pub doors: Vec<(EntranceId, AccessSystemId, DoorState, Option<String>)>,
}

/// One provider call to make: give the method's holder these entrances in one system, through
/// these access groups (group-based systems) or directly (credential-based systems).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionJob {
    pub access_grant_id: AccessGrantId,
    pub access_method_id: AccessMethodId,
    pub acs_system_id: AccessSystemId,
    pub mode: AccessMethodMode,
    pub entrance_ids: Vec<EntranceId>,
    pub access_group_ids: Vec<AccessGroupId>,
    pub requested_code: Option<String>,
    /// Doors of this method in this system that the call takes away (an update removed them
    /// from the grant); they turn revoked once the access system confirms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_entrance_ids: Vec<EntranceId>,
    /// The call changes a credential that was already pushed (new doors or times): when it
    /// settles, the method is reissued (a card must be encoded again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update: bool,
}

/// Everything a new grant creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantPlan {
    pub methods: Vec<PlannedMethod>,
    pub jobs: Vec<ProvisionJob>,
    pub warnings: Vec<Notice>,
    pub requested: Vec<RequestedAccessMethod>,
}

/// A requested mode, with an optional requested PIN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeRequest {
    pub mode: AccessMethodMode,
    pub code: Option<String>,
}

/// Plans a grant. Fails with FAILED_PRECONDITION (`MODE_NOT_SUPPORTED`) when a requested mode
/// opens none of the entrances. Card and PIN methods are split per access system (one card or
/// PIN cannot carry two vendors' credentials), PINs further per entrance where the system gives
/// each door its own code; a mobile key is one method across systems (one Instant Key).
pub fn plan(
    grant: AccessGrantId,
    modes: &[ModeRequest],
    entrances: &[PlanningEntrance],
    now: OffsetDateTime,
) -> Result<GrantPlan, Error> {
    let mut out = GrantPlan {
        methods: Vec::new(),
        jobs: Vec::new(),
        warnings: Vec::new(),
        requested: Vec::new(),
    };
    for req in modes {
        let (able, unable): (Vec<&PlanningEntrance>, Vec<&PlanningEntrance>) =
            entrances.iter().partition(|e| e.opens_with(req.mode));
        if able.is_empty() {
            let names: Vec<_> = entrances.iter().map(|e| e.display_name.as_str()).collect();
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::ModeNotSupported,
                message: format!(
                    "mode {:?} opens none of the chosen entrances ({})",
                    req.mode,
                    names.join(", ")
                ),
            });
        }
        for e in &unable {
            out.warnings.push(Notice::new(
                "underprovisioned_access",
                format!(
                    "{} cannot be opened with {}",
                    e.display_name,
                    req.mode.display_name()
                ),
                now,
            ));
        }
        // Which entrances share one method.
        let mut groups: BTreeMap<String, Vec<&PlanningEntrance>> = BTreeMap::new();
        for e in able {
            let key = match req.mode {
                AccessMethodMode::MobileKey | AccessMethodMode::CloudKey => String::new(),
                AccessMethodMode::Code
                    if e.capabilities
                        .pin_code_rules
                        .as_ref()
                        .is_some_and(|r| r.is_code_per_entrance) =>
                {
                    format!("{}:{}", e.acs_system_id, e.entrance_id)
                }
                _ => e.acs_system_id.to_string(),
            };
            groups.entry(key).or_default().push(e);
        }
        let mut ids = Vec::new();
        for doors in groups.into_values() {
            let method = AccessMethodId::new();
            ids.push(method);
            let mut planned = PlannedMethod {
                id: method,
                mode: req.mode,
                display_name: req.mode.display_name().to_owned(),
                requested_code: req.code.clone(),
                doors: Vec::new(),
            };
            let mut by_system: BTreeMap<AccessSystemId, Vec<&PlanningEntrance>> = BTreeMap::new();
            for d in doors {
                by_system.entry(d.acs_system_id).or_default().push(d);
            }
            for (system, doors) in by_system {
                let model = doors[0].capabilities.permission_model;
                let (groups, uncovered) = if model == PermissionModel::AccessGroups {
                    cover_with_groups(&doors)
                } else {
                    (Vec::new(), Vec::new())
                };
                let mut job_doors = Vec::new();
                for d in &doors {
                    if uncovered.contains(&d.entrance_id) {
                        let reason =
                            format!("no access group of its system opens {}", d.display_name);
                        out.warnings.push(Notice::new(
                            "underprovisioned_access",
                            reason.clone(),
                            now,
                        ));
                        planned.doors.push((
                            d.entrance_id,
                            system,
                            DoorState::Failed,
                            Some(reason),
                        ));
                    } else {
                        planned
                            .doors
                            .push((d.entrance_id, system, DoorState::Pending, None));
                        job_doors.push(d.entrance_id);
                    }
                }
                let extra = overprovisioned(&doors, &groups);
                if !extra.is_empty() {
                    out.warnings.push(Notice::new(
                        "overprovisioned_access",
                        format!(
                            "the access groups used also open {} other entrance(s)",
                            extra.len()
                        ),
                        now,
                    ));
                }
                if !job_doors.is_empty() {
                    out.jobs.push(ProvisionJob {
                        access_grant_id: grant,
                        access_method_id: method,
                        acs_system_id: system,
                        mode: req.mode,
                        entrance_ids: job_doors,
                        access_group_ids: groups,
                        requested_code: req.code.clone(),
                        removed_entrance_ids: Vec::new(),
                        update: false,
                    });
                }
            }
            out.methods.push(planned);
        }
        out.requested.push(RequestedAccessMethod {
            mode: req.mode,
            display_name: req.mode.display_name().to_owned(),
            created_at: now,
            created_access_method_ids: ids,
            code: req.code.clone(),
        });
    }
    Ok(out)
}

/// Greedy set cover: the fewest groups (preferring those opening fewer unrequested doors) that
/// open the doors; returns the groups and the doors no group opens.
pub fn cover_with_groups(doors: &[&PlanningEntrance]) -> (Vec<AccessGroupId>, Vec<EntranceId>) {
    let wanted: BTreeSet<EntranceId> = doors.iter().map(|d| d.entrance_id).collect();
    let mut candidates: BTreeMap<AccessGroupId, BTreeSet<EntranceId>> = BTreeMap::new();
    for d in doors {
        for (g, members) in &d.covering_groups {
            candidates.insert(*g, members.iter().copied().collect());
        }
    }
    let mut uncovered: BTreeSet<EntranceId> = wanted
        .iter()
        .copied()
        .filter(|e| candidates.values().any(|m| m.contains(e)))
        .collect();
    let never: Vec<EntranceId> = wanted.difference(&uncovered).copied().collect();
    let mut chosen = Vec::new();
    while !uncovered.is_empty() {
        let best = candidates
            .iter()
            .filter(|(g, _)| !chosen.contains(*g))
            .map(|(g, m)| {
                (
                    g,
                    m.intersection(&uncovered).count(),
                    m.difference(&wanted).count(),
                )
            })
            .filter(|(_, gain, _)| *gain > 0)
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
        let Some((g, _, _)) = best else { break };
        let g = *g;
        if let Some(m) = candidates.get(&g) {
            for e in m {
                uncovered.remove(e);
            }
        }
        chosen.push(g);
    }
    (chosen, never)
}

pub(crate) fn overprovisioned(
    doors: &[&PlanningEntrance],
    groups: &[AccessGroupId],
) -> BTreeSet<EntranceId> {
    let wanted: BTreeSet<EntranceId> = doors.iter().map(|d| d.entrance_id).collect();
    let mut extra = BTreeSet::new();
    for d in doors {
        for (g, members) in &d.covering_groups {
            if groups.contains(g) {
                extra.extend(members.iter().filter(|e| !wanted.contains(e)));
            }
        }
    }
    extra
}

/// How far in the past a `starts_at` may be before it earns a warning: a caller's "now" is a
/// little in the past by the time it arrives.
const START_GRACE: time::Duration = time::Duration::minutes(1);

/// A start in the past becomes now; more than a minute in the past also gets the warning
/// `starts_at_in_past`.
pub fn clamp_start(s: OffsetDateTime, now: OffsetDateTime) -> (OffsetDateTime, Option<Notice>) {
    if s >= now {
        return (s, None);
    }
    let warning = (s < now - START_GRACE).then(|| {
        let when = s
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| s.to_string());
        Notice::new(
            "starts_at_in_past",
            format!("starts_at {when} is in the past; access starts now"),
            now,
        )
    });
    (now, warning)
}

/// Checks a schedule: `ends_at` after `starts_at`; a `starts_at` in the past becomes now, with
/// a warning.
pub fn schedule(
    starts_at: Option<OffsetDateTime>,
    ends_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(OffsetDateTime, Option<OffsetDateTime>, Option<Notice>), Error> {
    let (start, warning) = match starts_at {
        Some(s) => clamp_start(s, now),
        None => (now, None),
    };
    if let Some(end) = ends_at
        && end <= start
    {
        return Err(Error::invalid(
            "ends_at",
            "must be after starts_at (and after now)",
        ));
    }
    Ok((start, ends_at, warning))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::{PinCodeGenerator, PinCodeRules, ProviderRateLimit};
    use AccessMethodMode::*;

    fn caps(
        model: PermissionModel,
        modes: Vec<AccessMethodMode>,
        per_door_pin: bool,
    ) -> CapabilityDescriptor {
        CapabilityDescriptor {
            permission_model: model,
            pin_code_rules: modes.contains(&Code).then_some(PinCodeRules {
                generator: PinCodeGenerator::Keygate,
                min_length: 4,
                max_length: 6,
                can_request_code: true,
                is_code_per_entrance: per_door_pin,
            }),
            supported_modes: modes,
            is_card_encoding_required: true,
            can_remote_unlock: true,
            can_issue_mobile_keys: true,
            can_assign_entrances_directly: model != PermissionModel::AccessGroups,
            can_schedule_credentials: true,
            rate_limit: ProviderRateLimit {
                requests_per_second: 1.0,
                burst: 1,
            },
        }
    }

    fn door(
        name: &str,
        system: AccessSystemId,
        c: &CapabilityDescriptor,
        groups: Vec<(AccessGroupId, Vec<EntranceId>)>,
    ) -> PlanningEntrance {
        PlanningEntrance {
            entrance_id: EntranceId::new(),
            display_name: name.into(),
            acs_system_id: system,
            capabilities: c.clone(),
            can_unlock_with_card: c.supports(Card),
            can_unlock_with_code: c.supports(Code),
            can_unlock_with_mobile_key: true,
            can_unlock_with_cloud_key: true,
            covering_groups: groups,
        }
    }

    fn now() -> OffsetDateTime {
        crate::model::now()
    }

    #[test]
    fn card_splits_per_system_and_mobile_key_spans_them() {
        let (s1, s2) = (AccessSystemId::new(), AccessSystemId::new());
        let c1 = caps(
            PermissionModel::CredentialBased,
            vec![Card, MobileKey],
            false,
        );
        let c2 = caps(
            PermissionModel::ReservationOverride,
            vec![Card, MobileKey],
            false,
        );
        let doors = [door("A", s1, &c1, vec![]), door("B", s2, &c2, vec![])];
        let p = plan(
            AccessGrantId::new(),
            &[
                ModeRequest {
                    mode: Card,
                    code: None,
                },
                ModeRequest {
                    mode: MobileKey,
                    code: None,
                },
            ],
            &doors,
            now(),
        )
        .expect("plan");
        assert_eq!(p.requested.len(), 2);
        assert_eq!(
            p.requested[0].created_access_method_ids.len(),
            2,
            "a card per system"
        );
        assert_eq!(
            p.requested[1].created_access_method_ids.len(),
            1,
            "one mobile key"
        );
        assert_eq!(p.jobs.len(), 4, "one job per (system, method)");
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn group_systems_use_the_fewest_groups_and_warn_on_gaps() {
        let s = AccessSystemId::new();
        let c = caps(PermissionModel::AccessGroups, vec![MobileKey], false);
        let (ga, gb) = (AccessGroupId::new(), AccessGroupId::new());
        let mut a = door("A", s, &c, vec![]);
        let mut b = door("B", s, &c, vec![]);
        let lonely = door("Server Room", s, &c, vec![]);
        let other = EntranceId::new();
        a.covering_groups = vec![
            (ga, vec![a.entrance_id, b.entrance_id, other]),
            (gb, vec![a.entrance_id]),
        ];
        b.covering_groups = vec![(ga, vec![a.entrance_id, b.entrance_id, other])];
        let p = plan(
            AccessGrantId::new(),
            &[ModeRequest {
                mode: MobileKey,
                code: None,
            }],
            &[a, b, lonely],
            now(),
        )
        .expect("plan");
        assert_eq!(p.jobs.len(), 1);
        assert_eq!(p.jobs[0].access_group_ids, vec![ga]);
        assert_eq!(p.jobs[0].entrance_ids.len(), 2);
        let codes: Vec<_> = p.warnings.iter().map(|w| w.code.as_str()).collect();
        assert!(codes.contains(&"underprovisioned_access"));
        assert!(codes.contains(&"overprovisioned_access"));
        let failed: Vec<_> = p.methods[0]
            .doors
            .iter()
            .filter(|d| d.2 == DoorState::Failed)
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(failed[0].3.as_deref().unwrap_or("").contains("Server Room"));
    }

    #[test]
    fn a_method_no_door_of_which_can_be_granted_fails_at_creation() {
        let s = AccessSystemId::new();
        let c = caps(PermissionModel::AccessGroups, vec![MobileKey], false);
        let lonely = door("Server Room", s, &c, vec![]);
        let id = AccessGrantId::new();
        let p = plan(
            id,
            &[ModeRequest {
                mode: MobileKey,
                code: None,
            }],
            &[lonely],
            now(),
        )
        .expect("plan");
        assert!(p.jobs.is_empty());
        let spec = GrantSpec {
            id,
            workspace_id: WorkspaceId::new(),
            user_identity_id: UserIdentityId::new(),
            access_grant_key: None,
            name: "g".into(),
            reservation_key: None,
            starts_at: now(),
            ends_at: None,
            entrance_ids: Vec::new(),
            instant_key_id: None,
        };
        let (g, methods, events) = assemble(spec, &p, Vec::new(), now());
        assert!(
            g.errors
                .iter()
                .any(|e| e.code == "cannot_create_requested_access_methods")
        );
        assert!(
            methods[0]
                .errors
                .iter()
                .any(|e| e.code == "failed_to_issue")
        );
        assert!(
            events
                .iter()
                .any(|e| e.event_type.name == "access_method.failed_to_issue")
        );
    }

    #[test]
    fn per_door_pins_make_a_method_per_door() {
        let s = AccessSystemId::new();
        let c = caps(PermissionModel::CredentialBased, vec![Code], true);
        let p = plan(
            AccessGrantId::new(),
            &[ModeRequest {
                mode: Code,
                code: None,
            }],
            &[door("A", s, &c, vec![]), door("B", s, &c, vec![])],
            now(),
        )
        .expect("plan");
        assert_eq!(p.methods.len(), 2);
    }

    #[test]
    fn a_mode_no_door_supports_is_refused() {
        let s = AccessSystemId::new();
        let c = caps(PermissionModel::CredentialBased, vec![MobileKey], false);
        let err = plan(
            AccessGrantId::new(),
            &[ModeRequest {
                mode: Card,
                code: None,
            }],
            &[door("Lobby", s, &c, vec![])],
            now(),
        )
        .expect_err("refused");
        assert_eq!(err.reason(), ErrorReason::ModeNotSupported);
        assert!(err.to_string().contains("Lobby"));
    }

    #[test]
    fn schedules() {
        let n = now();
        let (s, e, w) = schedule(
            Some(n - time::Duration::hours(1)),
            Some(n + time::Duration::hours(1)),
            n,
        )
        .expect("ok");
        assert_eq!(s, n);
        assert!(e.is_some() && w.is_some());
        assert!(
            schedule(
                Some(n + time::Duration::hours(2)),
                Some(n + time::Duration::hours(1)),
                n
            )
            .is_err()
        );
        assert!(schedule(None, None, n).expect("open").1.is_none());
    }
}

/// What a new grant is, apart from its plan.
#[derive(Clone, Debug)]
pub struct GrantSpec {
    pub id: AccessGrantId,
    pub workspace_id: WorkspaceId,
    pub user_identity_id: UserIdentityId,
    pub access_grant_key: Option<String>,
    pub name: String,
    pub reservation_key: Option<String>,
    pub starts_at: OffsetDateTime,
    pub ends_at: Option<OffsetDateTime>,
    pub entrance_ids: Vec<EntranceId>,
    /// The Instant Key, when a mobile key was requested.
    pub instant_key_id: Option<InstantKeyId>,
}

/// Turns a spec and its plan into the grant, its methods, and the creation events.
pub fn assemble(
    spec: GrantSpec,
    plan: &GrantPlan,
    mut warnings: Vec<Notice>,
    now: OffsetDateTime,
) -> (AccessGrant, Vec<AccessMethod>, Vec<crate::events::NewEvent>) {
    use crate::events::{self, NewEvent};
    warnings.extend(plan.warnings.iter().cloned());
    let grant = AccessGrant {
        id: spec.id,
        workspace_id: spec.workspace_id,
        user_identity_id: spec.user_identity_id,
        access_grant_key: spec.access_grant_key,
        name: spec.name,
        reservation_key: spec.reservation_key,
        starts_at: spec.starts_at,
        ends_at: spec.ends_at,
        entrance_ids: spec.entrance_ids,
        requested: plan.requested.clone(),
        access_method_ids: plan.methods.iter().map(|m| m.id).collect(),
        instant_key_id: spec.instant_key_id,
        warnings,
        errors: Vec::new(),
        pending_mutations: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    let mut methods: Vec<AccessMethod> = plan
        .methods
        .iter()
        .map(|p| planned_method(&grant, p, now))
        .collect();
    let mut evs = vec![
        NewEvent::new(events::ACCESS_GRANT_CREATED, now)
            .grant(grant.id)
            .user(grant.user_identity_id),
    ];
    let mut grant = grant;
    grant.errors = creation_events(&grant, &mut methods, &mut evs, now);
    grant.pending_mutations = pending_mutations(methods.iter().flat_map(|m| &m.doors));
    (grant, methods, evs)
}

/// The access method of a planned method of `grant`, before any provider call.
pub(crate) fn planned_method(
    grant: &AccessGrant,
    p: &PlannedMethod,
    now: OffsetDateTime,
) -> AccessMethod {
    AccessMethod {
        id: p.id,
        workspace_id: grant.workspace_id,
        access_grant_id: grant.id,
        user_identity_id: grant.user_identity_id,
        mode: p.mode,
        display_name: p.display_name.clone(),
        is_issued: false,
        issued_at: None,
        is_card_encoding_required: false,
        is_ready_for_encoding: false,
        code: None,
        client_session_token: None,
        instant_key_id: (p.mode == AccessMethodMode::MobileKey)
            .then_some(grant.instant_key_id)
            .flatten(),
        doors: p
            .doors
            .iter()
            .map(|(e, s, state, reason)| DoorStatus {
                entrance_id: *e,
                acs_system_id: *s,
                state: *state,
                reason: reason.clone(),
                updated_at: now,
                pending: None,
            })
            .collect(),
        warnings: Vec::new(),
        errors: Vec::new(),
        created_at: now,
        updated_at: now,
    }
}

/// Appends `access_method.created` per new method, and fails (with its events) every method
/// no door of which can be granted: it has no provider job, so it fails here, visibly, rather
/// than stay pending for ever. Returns the errors for the grant.
pub(crate) fn creation_events(
    grant: &AccessGrant,
    methods: &mut [AccessMethod],
    evs: &mut Vec<crate::events::NewEvent>,
    now: OffsetDateTime,
) -> Vec<Notice> {
    use crate::events::{self, NewEvent};
    let mut grant_errors = Vec::new();
    for m in methods {
        evs.push(
            NewEvent::new(events::ACCESS_METHOD_CREATED, now)
                .grant(grant.id)
                .method(m.id)
                .user(grant.user_identity_id),
        );
        if m.doors.iter().all(|d| d.state == DoorState::Failed) {
            grant_errors.push(Notice::new(
                "cannot_create_requested_access_methods",
                format!(
                    "the {} access method {} could not be issued",
                    m.display_name, m.id
                ),
                now,
            ));
            m.errors.push(Notice::new(
                "failed_to_issue",
                "no entrance of this access method can be granted",
                now,
            ));
            for t in [
                events::ACCESS_METHOD_FAILED_TO_ISSUE,
                events::ACCESS_GRANT_COULD_NOT_CREATE_REQUESTED_ACCESS_METHODS,
            ] {
                evs.push(
                    NewEvent::new(t, now)
                        .grant(grant.id)
                        .method(m.id)
                        .user(grant.user_identity_id),
                );
            }
        }
    }
    grant_errors
}
