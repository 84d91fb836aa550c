//! Updates of an access grant: new times, entrances added or removed, a new name. Plans only
//! what changes, from the grant's live methods and the capability descriptors: added doors go
//! onto the methods that can carry them (the one mobile key, the card or PIN of that access
//! system) or onto new methods; removed doors are taken back; and each (method, access system)
//! touched gets one provider job that carries the whole wanted state of that credential. No I/O.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use crate::action::{JobWork, RevokeJob};
use crate::capability::{AccessMethodMode, PermissionModel};
use crate::error::{Error, ErrorReason};
use crate::events::{self, NewEvent};
use crate::grant::{
    self, AccessGrant, AccessMethod, DoorState, DoorStatus, GrantPlan, ModeRequest, Notice,
    PendingChange, PlanningEntrance, ProvisionJob,
};
use crate::ids::{AccessSystemId, EntranceId};

/// What becomes of `ends_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndsAt {
    Keep,
    Set(OffsetDateTime),
    /// Open-ended from now on.
    Clear,
}

/// A requested change. Absent parts keep their value.
#[derive(Clone, Debug)]
pub struct GrantChange {
    pub starts_at: Option<OffsetDateTime>,
    pub ends_at: EndsAt,
    pub add: Vec<EntranceId>,
    pub remove: Vec<EntranceId>,
    pub name: Option<String>,
}

/// The planned update. `fresh` holds the methods that must be created for added entrances no
/// existing method can carry, as a creation plan (so PIN codes are chosen the same way as on
/// create); [`UpdatePlan::finish`] turns the whole into what the store writes.
#[derive(Clone, Debug)]
pub struct UpdatePlan {
    pub fresh: GrantPlan,
    grant: AccessGrant,
    methods: Vec<AccessMethod>,
    added: Vec<(EntranceId, AccessSystemId)>,
    removed: Vec<EntranceId>,
    jobs: Vec<JobWork>,
    events: Vec<NewEvent>,
}

/// Everything one update writes, in one transaction.
#[derive(Clone, Debug)]
pub struct GrantWrite {
    /// The grant after the update.
    pub grant: AccessGrant,
    /// Existing methods that changed (their new state).
    pub methods: Vec<AccessMethod>,
    /// Methods created for added entrances.
    pub new_methods: Vec<AccessMethod>,
    /// Entrances added to the grant, with their systems; and the ones taken off.
    pub added: Vec<(EntranceId, AccessSystemId)>,
    pub removed: Vec<EntranceId>,
    /// Provider jobs; each replaces any queued provision job of its (method, system).
    pub jobs: Vec<JobWork>,
    pub events: Vec<NewEvent>,
}

/// Plans `change` on `grant`, whose live (not deleted) methods are `methods`. `planning` has
/// every entrance the grant will have (kept and added), for group cover and capabilities.
pub fn plan_update(
    grant: &AccessGrant,
    methods: &[AccessMethod],
    change: &GrantChange,
    planning: &[PlanningEntrance],
    now: OffsetDateTime,
) -> Result<UpdatePlan, Error> {
    if grant.ends_at.is_some_and(|e| e <= now) {
        return Err(Error::FailedPrecondition {
            reason: ErrorReason::ResourceInactive,
            message: format!(
                "access grant {} has already ended; create a new grant instead",
                grant.id
            ),
        });
    }
    let mut warnings = Vec::new();
    let starts_at = match change.starts_at {
        Some(s) => {
            let (s, warning) = grant::clamp_start(s, now);
            warnings.extend(warning);
            s
        }
        None => grant.starts_at,
    };
    let ends_at = match change.ends_at {
        EndsAt::Keep => grant.ends_at,
        EndsAt::Set(e) => Some(e),
        EndsAt::Clear => None,
    };
    if let Some(end) = ends_at
        && (end <= starts_at || end <= now)
    {
        return Err(Error::invalid(
            "ends_at",
            "must be after starts_at and in the future",
        ));
    }
    let times_changed = starts_at != grant.starts_at || ends_at != grant.ends_at;

    let removing: BTreeSet<EntranceId> = change
        .remove
        .iter()
        .copied()
        .filter(|e| grant.entrance_ids.contains(e))
        .collect();
    let mut entrance_ids: Vec<EntranceId> = grant
        .entrance_ids
        .iter()
        .copied()
        .filter(|e| !removing.contains(e))
        .collect();
    let mut adding: Vec<EntranceId> = Vec::new();
    for e in &change.add {
        if !entrance_ids.contains(e) && !adding.contains(e) {
            adding.push(*e);
        }
    }
    entrance_ids.extend(adding.iter().copied());
    if entrance_ids.is_empty() {
        return Err(Error::invalid(
            "remove_acs_entrance_ids",
            "the grant would have no entrance left; delete it instead",
        ));
    }
    let planning_of = |e: &EntranceId| planning.iter().find(|p| p.entrance_id == *e);
    let added_planning: Vec<&PlanningEntrance> = adding.iter().filter_map(planning_of).collect();
    for p in &added_planning {
        if !grant.requested.iter().any(|r| p.opens_with(r.mode)) {
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::ModeNotSupported,
                message: format!(
                    "{} cannot be opened with any of the grant's access methods",
                    p.display_name
                ),
            });
        }
    }

    // Added entrances go onto an existing method of their mode where one can carry them.
    let mut after: Vec<AccessMethod> = methods.to_vec();
    let mut fresh = GrantPlan {
        methods: Vec::new(),
        jobs: Vec::new(),
        warnings: Vec::new(),
        requested: Vec::new(),
    };
    let mut requested = grant.requested.clone();
    for r in &mut requested {
        let mut leftovers: Vec<PlanningEntrance> = Vec::new();
        for p in &added_planning {
            if !p.opens_with(r.mode) {
                warnings.push(Notice::new(
                    "underprovisioned_access",
                    format!(
                        "{} cannot be opened with {}",
                        p.display_name,
                        r.mode.display_name()
                    ),
                    now,
                ));
                continue;
            }
            match after.iter_mut().find(|m| carries(m, r.mode, p)) {
                Some(m) => m.doors.push(DoorStatus {
                    entrance_id: p.entrance_id,
                    acs_system_id: p.acs_system_id,
                    state: DoorState::Pending,
                    reason: None,
                    updated_at: now,
                    pending: None,
                }),
                None => leftovers.push((*p).clone()),
            }
        }
        if leftovers.is_empty() {
            continue;
        }
        let mut p = grant::plan(
            grant.id,
            &[ModeRequest {
                mode: r.mode,
                code: r.code.clone(),
            }],
            &leftovers,
            now,
        )?;
        for q in &p.requested {
            r.created_access_method_ids
                .extend(q.created_access_method_ids.iter().copied());
        }
        fresh.methods.append(&mut p.methods);
        fresh.jobs.append(&mut p.jobs);
        fresh.warnings.append(&mut p.warnings);
    }

    let window = |s: OffsetDateTime, e: Option<OffsetDateTime>| {
        serde_json::json!({
            "starts_at": s.unix_timestamp(),
            "ends_at": e.map(|e| e.unix_timestamp()),
        })
        .to_string()
    };
    let (from, to) = (
        window(grant.starts_at, grant.ends_at),
        window(starts_at, ends_at),
    );
    let mut jobs = Vec::new();
    for (m, before) in after.iter_mut().zip(methods) {
        for d in &mut m.doors {
            if !removing.contains(&d.entrance_id) || d.state == DoorState::Revoked {
                continue;
            }
            if d.state == DoorState::Failed {
                // Never reached the access system: nothing to take back.
                d.state = DoorState::Revoked;
                d.reason = Some("removed from the grant".into());
                d.updated_at = now;
                d.pending = None;
            } else {
                d.pending = Some(PendingChange {
                    mutation_code: "revoking_access".into(),
                    message: format!("removing access to entrance {}", d.entrance_id),
                    created_at: now,
                    from: String::new(),
                    to: String::new(),
                });
            }
        }
        let systems: BTreeSet<AccessSystemId> = m.doors.iter().map(|d| d.acs_system_id).collect();
        for system in systems {
            let in_system = |d: &&mut DoorStatus| d.acs_system_id == system;
            let is_new =
                |d: &DoorStatus| !before.doors.iter().any(|b| b.entrance_id == d.entrance_id);
            let added_here = m
                .doors
                .iter()
                .any(|d| d.acs_system_id == system && is_new(d));
            let removed_here: Vec<EntranceId> = m
                .doors
                .iter()
                .filter(|d| d.acs_system_id == system && is_revoking(d))
                .map(|d| d.entrance_id)
                .collect();
            let wanted_any = m
                .doors
                .iter()
                .any(|d| d.acs_system_id == system && is_wanted(d));
            if !(added_here || !removed_here.is_empty() || (times_changed && wanted_any)) {
                continue;
            }
            if !wanted_any {
                jobs.push(JobWork::Revoke(RevokeJob {
                    access_grant_id: grant.id,
                    access_method_id: m.id,
                    acs_system_id: system,
                    entrance_ids: removed_here,
                }));
                continue;
            }
            let model = m
                .doors
                .iter()
                .filter(|d| d.acs_system_id == system)
                .find_map(|d| planning_of(&d.entrance_id))
                .map(|p| p.capabilities.permission_model);
            let mut groups = Vec::new();
            if model == Some(PermissionModel::AccessGroups) {
                let wanted: Vec<&PlanningEntrance> = m
                    .doors
                    .iter()
                    .filter(|d| d.acs_system_id == system && is_wanted(d))
                    .filter_map(|d| planning_of(&d.entrance_id))
                    .collect();
                let (chosen, uncovered) = grant::cover_with_groups(&wanted);
                groups = chosen;
                for d in m.doors.iter_mut().filter(in_system) {
                    if uncovered.contains(&d.entrance_id) && is_wanted(d) {
                        let reason = "no access group of its system opens this entrance";
                        warnings.push(Notice::new(
                            "underprovisioned_access",
                            format!("entrance {}: {reason}", d.entrance_id),
                            now,
                        ));
                        d.state = DoorState::Failed;
                        d.reason = Some(reason.into());
                    }
                }
            }
            let entrance_ids: Vec<EntranceId> = m
                .doors
                .iter()
                .filter(|d| d.acs_system_id == system && is_wanted(d))
                .map(|d| d.entrance_id)
                .collect();
            if entrance_ids.is_empty() {
                continue;
            }
            if times_changed {
                for d in m.doors.iter_mut().filter(in_system) {
                    if d.state == DoorState::Granted && d.pending.is_none() {
                        d.pending = Some(PendingChange {
                            mutation_code: "updating_access_times".into(),
                            message: format!("updating access times on entrance {}", d.entrance_id),
                            created_at: now,
                            from: from.clone(),
                            to: to.clone(),
                        });
                    }
                }
            }
            jobs.push(JobWork::Provision(ProvisionJob {
                access_grant_id: grant.id,
                access_method_id: m.id,
                acs_system_id: system,
                mode: m.mode,
                entrance_ids,
                access_group_ids: groups,
                // The PIN stays the same across an update.
                requested_code: m.code.clone(),
                removed_entrance_ids: removed_here,
                update: true,
            }));
        }
        if *m != *before {
            m.updated_at = now;
        }
    }
    let changed: Vec<AccessMethod> = after
        .into_iter()
        .zip(methods)
        .filter(|(a, b)| a != *b)
        .map(|(a, _)| a)
        .collect();

    let mut events = Vec::new();
    if times_changed {
        events.push(
            NewEvent::new(events::ACCESS_GRANT_ACCESS_TIMES_CHANGED, now)
                .grant(grant.id)
                .user(grant.user_identity_id),
        );
    }
    if times_changed {
        warnings.push(Notice::new(
            "updating_access_times",
            "the access systems are being told the new access times",
            now,
        ));
    }
    let mut g = grant.clone();
    g.starts_at = starts_at;
    g.ends_at = ends_at;
    if let Some(name) = &change.name {
        g.name.clone_from(name);
    }
    g.entrance_ids = entrance_ids;
    g.access_method_ids
        .extend(fresh.methods.iter().map(|m| m.id));
    g.requested = requested;
    // A warning about an earlier time change is replaced, not repeated.
    if times_changed {
        g.warnings.retain(|w| w.code != "updating_access_times");
    }
    g.warnings.extend(warnings);
    g.updated_at = now;
    let added = adding
        .iter()
        .filter_map(|e| planning_of(e).map(|p| (*e, p.acs_system_id)))
        .collect();
    Ok(UpdatePlan {
        fresh,
        grant: g,
        methods: changed,
        added,
        removed: removing.into_iter().collect(),
        jobs,
        events,
    })
}

impl UpdatePlan {
    /// The write, with the PIN codes Keygate chose for new code methods.
    pub fn finish(
        self,
        chosen: &[(crate::ids::AccessMethodId, String)],
        now: OffsetDateTime,
    ) -> GrantWrite {
        let UpdatePlan {
            fresh,
            mut grant,
            methods,
            added,
            removed,
            mut jobs,
            mut events,
        } = self;
        grant.warnings.extend(fresh.warnings.iter().cloned());
        let mut new_methods: Vec<AccessMethod> = fresh
            .methods
            .iter()
            .map(|p| grant::planned_method(&grant, p, now))
            .collect();
        for m in &mut new_methods {
            m.code = chosen
                .iter()
                .find(|(id, _)| *id == m.id)
                .map(|(_, c)| c.clone());
        }
        grant.errors.extend(grant::creation_events(
            &grant,
            &mut new_methods,
            &mut events,
            now,
        ));
        jobs.extend(fresh.jobs.into_iter().map(JobWork::Provision));
        GrantWrite {
            grant,
            methods,
            new_methods,
            added,
            removed,
            jobs,
            events,
        }
    }
}

/// Whether method `m` of `mode` can take entrance `p` on: the one mobile key spans systems;
/// a card or a shared PIN is one credential per access system; per-door PINs never share.
fn carries(m: &AccessMethod, mode: AccessMethodMode, p: &PlanningEntrance) -> bool {
    if m.mode != mode {
        return false;
    }
    let live = |d: &DoorStatus| d.state != DoorState::Revoked && !is_revoking(d);
    match mode {
        AccessMethodMode::MobileKey | AccessMethodMode::CloudKey => true,
        AccessMethodMode::Code
            if p.capabilities
                .pin_code_rules
                .as_ref()
                .is_some_and(|r| r.is_code_per_entrance) =>
        {
            false
        }
        _ => m
            .doors
            .iter()
            .any(|d| d.acs_system_id == p.acs_system_id && live(d)),
    }
}

fn is_revoking(d: &DoorStatus) -> bool {
    d.pending
        .as_ref()
        .is_some_and(|p| p.mutation_code == "revoking_access")
}

/// A door the credential should open after the update.
fn is_wanted(d: &DoorStatus) -> bool {
    !matches!(d.state, DoorState::Revoked | DoorState::Failed) && !is_revoking(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::{CapabilityDescriptor, ProviderRateLimit};
    use crate::grant::{ModeRequest, PlanningEntrance, assemble};
    use crate::ids::{AccessGrantId, UserIdentityId, WorkspaceId};
    use AccessMethodMode::{Card, MobileKey};

    fn caps(model: PermissionModel) -> CapabilityDescriptor {
        CapabilityDescriptor {
            permission_model: model,
            supported_modes: vec![Card, MobileKey],
            pin_code_rules: None,
            is_card_encoding_required: true,
            can_remote_unlock: false,
            can_issue_mobile_keys: true,
            can_assign_entrances_directly: true,
            can_schedule_credentials: true,
            rate_limit: ProviderRateLimit {
                requests_per_second: 1.0,
                burst: 1,
            },
        }
    }

    fn door(name: &str, system: AccessSystemId) -> PlanningEntrance {
        PlanningEntrance {
            entrance_id: EntranceId::new(),
            display_name: name.into(),
            acs_system_id: system,
            capabilities: caps(PermissionModel::CredentialBased),
            can_unlock_with_card: true,
            can_unlock_with_code: false,
            can_unlock_with_mobile_key: true,
            can_unlock_with_cloud_key: false,
            covering_groups: Vec::new(),
        }
    }

    /// A card + mobile key grant over `doors`, every door already granted.
    fn granted(
        doors: &[PlanningEntrance],
        now: OffsetDateTime,
    ) -> (AccessGrant, Vec<AccessMethod>) {
        let id = AccessGrantId::new();
        let modes = [Card, MobileKey].map(|mode| ModeRequest { mode, code: None });
        let plan = grant::plan(id, &modes, doors, now).expect("plan");
        let spec = grant::GrantSpec {
            id,
            workspace_id: WorkspaceId::new(),
            user_identity_id: UserIdentityId::new(),
            access_grant_key: None,
            name: "stay".into(),
            reservation_key: None,
            starts_at: now,
            ends_at: Some(now + time::Duration::days(2)),
            entrance_ids: doors.iter().map(|d| d.entrance_id).collect(),
            instant_key_id: None,
        };
        let (g, mut methods, _) = assemble(spec, &plan, Vec::new(), now);
        for m in &mut methods {
            m.is_issued = true;
            for d in &mut m.doors {
                d.state = DoorState::Granted;
            }
        }
        (g, methods)
    }

    fn change() -> GrantChange {
        GrantChange {
            starts_at: None,
            ends_at: EndsAt::Keep,
            add: Vec::new(),
            remove: Vec::new(),
            name: None,
        }
    }

    fn kinds(w: &GrantWrite) -> Vec<(&'static str, AccessSystemId, bool)> {
        w.jobs
            .iter()
            .map(|j| match j {
                JobWork::Provision(p) => ("provision", p.acs_system_id, p.update),
                JobWork::Revoke(r) => ("revoke", r.acs_system_id, false),
                JobWork::Encode(e) => ("encode", e.acs_system_id, false),
                JobWork::Unlock(u) => ("unlock", u.acs_system_id, false),
            })
            .collect()
    }

    #[test]
    fn new_times_reach_every_credential_once() {
        let now = crate::model::now();
        let (s1, s2) = (AccessSystemId::new(), AccessSystemId::new());
        let doors = [door("A", s1), door("B", s2)];
        let (g, ms) = granted(&doors, now);
        let c = GrantChange {
            ends_at: EndsAt::Set(now + time::Duration::days(5)),
            ..change()
        };
        let w = plan_update(&g, &ms, &c, &doors, now)
            .expect("plan")
            .finish(&[], now);
        // Two cards (one per system) and one mobile key over both: four credentials.
        assert_eq!(w.jobs.len(), 4, "{:?}", kinds(&w));
        assert!(
            kinds(&w)
                .iter()
                .all(|(k, _, update)| *k == "provision" && *update)
        );
        assert_eq!(w.events.len(), 1);
        assert_eq!(
            w.events[0].event_type.name,
            "access_grant.access_times_changed"
        );
        assert!(w.methods.iter().flat_map(|m| &m.doors).all(|d| {
            d.pending
                .as_ref()
                .is_some_and(|p| p.mutation_code == "updating_access_times")
        }));
        assert!(
            w.grant
                .warnings
                .iter()
                .any(|n| n.code == "updating_access_times")
        );
    }

    #[test]
    fn a_removed_door_is_revoked_where_it_was_the_last_and_dropped_elsewhere() {
        let now = crate::model::now();
        let (s1, s2) = (AccessSystemId::new(), AccessSystemId::new());
        let doors = [door("A", s1), door("B", s2), door("C", s2)];
        let (g, ms) = granted(&doors, now);
        let c = GrantChange {
            remove: vec![doors[0].entrance_id, doors[1].entrance_id],
            ..change()
        };
        let w = plan_update(&g, &ms, &c, &doors, now)
            .expect("plan")
            .finish(&[], now);
        assert_eq!(w.grant.entrance_ids, vec![doors[2].entrance_id]);
        let mut k = kinds(&w);
        k.sort_by_key(|(kind, _, _)| *kind);
        // The card of s1 and the mobile key in s1 lose their only door there: revoked. In s2 the
        // card and the mobile key keep C: their credentials are re-sent without B.
        assert_eq!(
            k.iter()
                .filter(|(kind, s, _)| *kind == "revoke" && *s == s1)
                .count(),
            2
        );
        assert_eq!(
            k.iter()
                .filter(|(kind, s, _)| *kind == "provision" && *s == s2)
                .count(),
            2
        );
        for j in &w.jobs {
            if let JobWork::Provision(p) = j {
                assert_eq!(p.entrance_ids, vec![doors[2].entrance_id]);
                assert_eq!(p.removed_entrance_ids, vec![doors[1].entrance_id]);
            }
        }
        assert!(
            w.events.is_empty(),
            "loss is reported once the systems confirm"
        );
    }

    #[test]
    fn added_doors_join_the_methods_that_can_carry_them() {
        let now = crate::model::now();
        let (s1, s2) = (AccessSystemId::new(), AccessSystemId::new());
        let doors = [door("A", s1), door("B", s1), door("C", s2)];
        let (g, ms) = granted(&doors[..1], now);
        let c = GrantChange {
            add: vec![doors[1].entrance_id, doors[2].entrance_id],
            ..change()
        };
        let w = plan_update(&g, &ms, &c, &doors, now)
            .expect("plan")
            .finish(&[], now);
        // B joins s1's card and the mobile key; C joins the mobile key and needs a card of its own.
        assert_eq!(w.new_methods.len(), 1);
        assert_eq!(w.new_methods[0].mode, Card);
        assert_eq!(w.new_methods[0].doors[0].entrance_id, doors[2].entrance_id);
        let mobile = w
            .methods
            .iter()
            .find(|m| m.mode == MobileKey)
            .expect("mobile");
        assert_eq!(mobile.doors.len(), 3);
        assert_eq!(w.grant.access_method_ids.len(), 3);
        assert_eq!(
            w.grant.requested[0].created_access_method_ids.len(),
            2,
            "the new card is listed under its mode"
        );
        assert!(
            w.events
                .iter()
                .any(|e| e.event_type.name == "access_method.created")
        );
        assert_eq!(w.added.len(), 2);
    }

    #[test]
    fn refusals() {
        let now = crate::model::now();
        let s1 = AccessSystemId::new();
        let doors = [door("A", s1)];
        let (mut g, ms) = granted(&doors, now);
        let all_gone = GrantChange {
            remove: vec![doors[0].entrance_id],
            ..change()
        };
        let e = plan_update(&g, &ms, &all_gone, &doors, now).expect_err("empty");
        assert_eq!(e.reason(), ErrorReason::InvalidField);
        let backwards = GrantChange {
            ends_at: EndsAt::Set(g.starts_at - time::Duration::hours(1)),
            ..change()
        };
        assert!(plan_update(&g, &ms, &backwards, &doors, now).is_err());
        let mut lobby = door("Lobby", s1);
        lobby.can_unlock_with_card = false;
        lobby.can_unlock_with_mobile_key = false;
        let unusable = GrantChange {
            add: vec![lobby.entrance_id],
            ..change()
        };
        let planning = [doors[0].clone(), lobby.clone()];
        let e = plan_update(&g, &ms, &unusable, &planning, now).expect_err("mode");
        assert_eq!(e.reason(), ErrorReason::ModeNotSupported);
        assert!(e.to_string().contains("Lobby"));
        g.ends_at = Some(now - time::Duration::minutes(1));
        let e = plan_update(&g, &ms, &change(), &doors, now).expect_err("ended");
        assert_eq!(e.reason(), ErrorReason::ResourceInactive);
    }
}
