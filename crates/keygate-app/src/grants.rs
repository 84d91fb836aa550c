//! Access grants: create, update, delete, read. One call says who, where, when and how; the
//! answer comes at once, with no provider call in the request path: the orchestrator does the
//! rest from the jobs written with the grant.

use std::collections::HashSet;

use keygate_domain::capability::{AccessMethodMode, PinCodeGenerator};
use keygate_domain::grant::{self, AccessGrant, GrantSpec, ModeRequest};
use keygate_domain::ids::{
    AccessGrantId, AccessMethodId, AccessSystemId, EntranceId, InstantKeyId, UserIdentityId,
    WorkspaceId,
};
use keygate_domain::instant_key::InstantKey;
use keygate_domain::model::{NewUserIdentity, now};
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::update::{self, GrantChange};
use keygate_domain::validate::Violations;
use keygate_domain::{Error, ErrorReason, FieldViolation};
use keygate_store::{GrantFilter, Idempotency, NewGrant};
use rand::RngExt as _;

use crate::App;
use crate::tracker::Committed;

/// Most entrances one grant may name.
pub const MAX_ENTRANCES: usize = 100;

/// The checks every list of entrance ids gets: at most [`MAX_ENTRANCES`], none repeated.
pub fn check_entrance_list(v: &mut Violations, ids: &[String]) {
    if ids.len() > MAX_ENTRANCES {
        v.check::<()>(Err(FieldViolation::new(
            "acs_entrance_ids",
            format!("at most {MAX_ENTRANCES} entrances"),
        )));
    }
    let mut seen = HashSet::new();
    if !ids.iter().all(|e| seen.insert(e)) {
        v.check::<()>(Err(FieldViolation::new(
            "acs_entrance_ids",
            "must not repeat an entrance",
        )));
    }
}

/// A requested PIN: empty is none; otherwise 4 to 12 digits.
pub fn pin(field: &str, code: &str) -> Result<Option<String>, FieldViolation> {
    if code.is_empty() {
        return Ok(None);
    }
    if (4..=12).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(Some(code.to_owned()))
    } else {
        Err(FieldViolation::new(field, "must be 4 to 12 digits"))
    }
}

/// Who a new grant is for.
#[derive(Clone, Debug)]
pub enum Grantee {
    /// A person given inline, created with the grant.
    New(NewUserIdentity),
    Existing(UserIdentityId),
}

/// A validated request for a new grant: what `CreateAccessGrant` asks for, or what
/// `CreateCredential` makes for a credential.
#[derive(Clone, Debug)]
pub struct CreateGrant {
    pub idem: Option<Idempotency>,
    pub name: Option<String>,
    pub access_grant_key: Option<String>,
    pub reservation_key: Option<String>,
    pub grantee: Grantee,
    pub entrance_ids: Vec<EntranceId>,
    pub modes: Vec<ModeRequest>,
    pub starts_at: Option<time::OffsetDateTime>,
    pub ends_at: Option<time::OffsetDateTime>,
    /// When set, every entrance must be of this access system (`INVALID_ARGUMENT` otherwise).
    pub only_system: Option<AccessSystemId>,
}

/// A validated `UpdateAccessGrant`.
#[derive(Clone, Debug)]
pub struct UpdateGrant {
    pub id: AccessGrantId,
    pub change: GrantChange,
}

impl App {
    /// Chooses the PIN of every code method whose access system leaves the choice to Keygate,
    /// and warns where a requested code cannot be honoured. Returns the chosen codes by method.
    async fn choose_pins(
        &self,
        ws: WorkspaceId,
        plan: &mut grant::GrantPlan,
        planning: &[grant::PlanningEntrance],
        at: time::OffsetDateTime,
    ) -> Result<(Vec<(AccessMethodId, String)>, Vec<grant::Notice>), Error> {
        let mut chosen = Vec::new();
        let mut warnings = Vec::new();
        for m in plan
            .methods
            .iter_mut()
            .filter(|m| m.mode == AccessMethodMode::Code)
        {
            let Some(rules) = m
                .doors
                .first()
                .and_then(|d| planning.iter().find(|p| p.acs_system_id == d.1))
                .and_then(|p| p.capabilities.pin_code_rules.clone())
            else {
                continue;
            };
            if rules.generator != PinCodeGenerator::Keygate {
                if m.requested_code.is_some() {
                    warnings.push(grant::Notice::new(
                        "requested_code_unavailable",
                        "this access system generates its own codes; the requested code was not used",
                        at,
                    ));
                }
                continue;
            }
            let doors: Vec<EntranceId> = m.doors.iter().map(|d| d.0).collect();
            let taken: HashSet<String> = self
                .store
                .active_codes(ws, &doors)
                .await?
                .into_iter()
                .collect();
            let (code, warning) = keygate_domain::pin::choose(
                &rules,
                m.requested_code.as_deref(),
                &taken,
                || rand::rng().random_range(0..10u8),
                at,
            )
            .ok_or_else(|| Error::FailedPrecondition {
                reason: ErrorReason::ModeNotSupported,
                message: "no free PIN code is left on these entrances".into(),
            })?;
            warnings.extend(warning);
            m.requested_code = Some(code.clone());
            for j in plan.jobs.iter_mut().filter(|j| j.access_method_id == m.id) {
                j.requested_code = Some(code.clone());
            }
            chosen.push((m.id, code));
        }
        Ok((chosen, warnings))
    }

    /// The grant that `idem` already created, when this is a replay. It is returned before the
    /// request is validated again, which could now fail (a past `starts_at`, a deleted user
    /// identity).
    pub async fn replayed_grant(
        &self,
        ws: WorkspaceId,
        idem: Option<&Idempotency>,
    ) -> Result<Option<AccessGrant>, Error> {
        let Some(idem) = idem else { return Ok(None) };
        let Some(first) = self.store.replay(ws, idem).await? else {
            return Ok(None);
        };
        let first: AccessGrantId = first.parse().map_err(|_| Error::Internal {
            message: "stored grant id".into(),
        })?;
        self.store.get_access_grant(ws, first).await.map(Some)
    }

    /// Plans a grant and writes it, with its methods, jobs, events, Instant Key and idempotency
    /// claim, in one transaction. The one way a grant is made: `CreateAccessGrant`, and
    /// `CreateCredential` for a credential. A replay of the same `request_id` returns the
    /// first grant.
    pub async fn create_access_grant(
        &self,
        ws: WorkspaceId,
        r: CreateGrant,
    ) -> Result<AccessGrant, Error> {
        if let Some(first) = self.replayed_grant(ws, r.idem.as_ref()).await? {
            return Ok(first);
        }
        let CreateGrant {
            idem,
            name,
            access_grant_key: key,
            reservation_key: reservation,
            grantee,
            entrance_ids,
            modes,
            starts_at,
            ends_at,
            only_system,
        } = r;
        let at = now();
        let (starts_at, ends_at, warning) = grant::schedule(starts_at, ends_at, at)?;
        let (new_identity, existing_identity, person_name) = match grantee {
            Grantee::New(p) => {
                let name = p.full_name.clone();
                (Some(p), None, name)
            }
            Grantee::Existing(id) => {
                let name = self.store.get_user_identity(ws, id).await?.full_name;
                (None, Some(id), name)
            }
        };
        let planning = self.store.planning_entrances(ws, &entrance_ids).await?;
        if let Some(system) = only_system
            && let Some(e) = planning.iter().find(|p| p.acs_system_id != system)
        {
            return Err(Error::invalid(
                "acs_entrance_ids",
                format!("{} belongs to another access system", e.display_name),
            ));
        }
        let wants_mobile = modes.iter().any(|m| m.mode == AccessMethodMode::MobileKey);
        let name = name.unwrap_or_else(|| format!("Access for {person_name}"));
        // A PIN Keygate chose can be taken by a concurrent grant on the same door between the
        // choice and the commit; the store checks again under the workspace's lock and refuses,
        // and the choice is made again.
        let mut attempt = 0;
        let (created, appended) = loop {
            attempt += 1;
            let id = AccessGrantId::new();
            let mut plan = grant::plan(id, &modes, &planning, at)?;
            // The grant's Instant Key: created with it, expiring with it.
            let key_id = wants_mobile.then(InstantKeyId::new);
            let (chosen, mut pin_warnings) = self.choose_pins(ws, &mut plan, &planning, at).await?;
            let spec = GrantSpec {
                id,
                workspace_id: ws,
                user_identity_id: existing_identity.unwrap_or_default(),
                access_grant_key: key.clone(),
                name: name.clone(),
                reservation_key: reservation.clone(),
                starts_at,
                ends_at,
                entrance_ids: entrance_ids.clone(),
                instant_key_id: key_id,
            };
            pin_warnings.extend(warning.clone());
            let (g, mut methods, mut events) = grant::assemble(spec, &plan, pin_warnings, at);
            let instant_key = match key_id {
                Some(key_id) => {
                    let key = InstantKey {
                        id: key_id,
                        workspace_id: ws,
                        user_identity_id: g.user_identity_id,
                        access_grant_id: Some(g.id),
                        created_at: at,
                        expires_at: g.ends_at,
                        max_use_count: 1,
                        use_count: 0,
                        revoked_at: None,
                    };
                    let (_, token_sha256) = self.links.mint(key_id)?;
                    events.push(key.created_event());
                    Some((key, token_sha256))
                }
                None => None,
            };
            // A code Keygate chose is known now; showing it on the method lets the next grant
            // on these doors avoid it.
            for m in &mut methods {
                if let Some(code) = chosen
                    .iter()
                    .find(|(id, _)| *id == m.id)
                    .map(|(_, c)| c.clone())
                {
                    m.code = Some(code);
                }
            }
            let new = NewGrant {
                grant: g,
                new_identity: new_identity.clone(),
                entrances: planning
                    .iter()
                    .map(|p| (p.entrance_id, p.acs_system_id))
                    .collect(),
                methods,
                jobs: plan.jobs,
                events,
                instant_key,
            };
            match self
                .store
                .create_access_grant(ws, &new, idem.as_ref())
                .await
            {
                Err(Error::AlreadyExists {
                    reason: ErrorReason::PinCodeTaken,
                    ..
                }) if attempt < 3 => continue,
                other => break other?,
            }
        };
        if !appended.is_empty() {
            self.tracker
                .committed(Committed::new(ws).events(&appended).jobs())
                .await;
        }
        tracing::info!(access_grant_id = %created.id, methods = created.access_method_ids.len(), "access grant created");
        Ok(created)
    }

    /// A grant by id, through the status cache.
    pub async fn get_access_grant(
        &self,
        ws: WorkspaceId,
        id: AccessGrantId,
    ) -> Result<AccessGrant, Error> {
        self.tracker.reads().access_grant(ws, id).await
    }

    pub async fn list_access_grants(
        &self,
        ws: WorkspaceId,
        filter: &GrantFilter,
        page: &PageRequest,
    ) -> Result<Page<AccessGrant>, Error> {
        self.store.list_access_grants(ws, filter, page).await
    }

    /// New times, entrances added or removed, a new name: only what changed is sent again.
    /// Planned from a snapshot and written only if the grant is still as it was; a job that
    /// completed in between makes the store refuse, and the update is planned again (up to five
    /// times, then `ABORTED`).
    pub async fn update_access_grant(
        &self,
        ws: WorkspaceId,
        u: UpdateGrant,
    ) -> Result<AccessGrant, Error> {
        let UpdateGrant { id, change } = u;
        let at = now();
        let mut attempt = 0;
        let (updated, appended, methods) = loop {
            attempt += 1;
            let before = self.store.access_grant_with_methods(ws, id).await?;
            if before.0.ends_at.is_some_and(|e| e <= at) {
                return Err(Error::FailedPrecondition {
                    reason: ErrorReason::ResourceInactive,
                    message: format!(
                        "access grant {id} has already ended; create a new grant instead"
                    ),
                });
            }
            let mut wanted = before.0.entrance_ids.clone();
            wanted.extend(
                change
                    .add
                    .iter()
                    .filter(|e| !before.0.entrance_ids.contains(e)),
            );
            wanted.dedup();
            let planning = self.store.planning_entrances(ws, &wanted).await?;
            let mut plan = update::plan_update(&before.0, &before.1, &change, &planning, at)?;
            let (chosen, pin_warnings) =
                self.choose_pins(ws, &mut plan.fresh, &planning, at).await?;
            plan.fresh.warnings.extend(pin_warnings);
            let write = plan.finish(&chosen, at);
            match self.store.update_access_grant(ws, &before, &write).await {
                Err(Error::Aborted { .. }) if attempt < 5 => continue,
                Err(Error::AlreadyExists {
                    reason: ErrorReason::PinCodeTaken,
                    ..
                }) if attempt < 5 => continue,
                Ok((updated, appended)) => {
                    let methods: Vec<AccessMethodId> = before.1.iter().map(|m| m.id).collect();
                    break (updated, appended, methods);
                }
                Err(e) => return Err(e),
            }
        };
        self.tracker
            .committed(
                Committed::new(ws)
                    .grant(id)
                    .methods(methods)
                    .events(&appended)
                    .jobs(),
            )
            .await;
        tracing::info!(access_grant_id = %id, "access grant updated");
        Ok(updated)
    }

    /// Deletes a grant and its methods (they are `NOT_FOUND` at once; revoke jobs take the
    /// access back): the one way a grant is deleted, by `DeleteAccessGrant` and for credentials.
    pub async fn delete_access_grant(
        &self,
        ws: WorkspaceId,
        id: AccessGrantId,
    ) -> Result<(), Error> {
        let events = self.store.delete_access_grant(ws, id, now()).await?;
        let methods: Vec<AccessMethodId> =
            events.iter().filter_map(|e| e.access_method_id).collect();
        self.tracker
            .committed(
                Committed::new(ws)
                    .grant(id)
                    .methods(methods)
                    .events(&events)
                    .jobs(),
            )
            .await;
        tracing::info!(access_grant_id = %id, "access grant deleted; revocation queued");
        Ok(())
    }
}
