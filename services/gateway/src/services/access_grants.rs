//! `keygate.v1.AccessGrantService`: one call says who, where, when and how; the reply comes at
//! once, with no provider call in the request path. The orchestrator does the rest.

use std::collections::HashSet;
use std::sync::Arc;

use keygate_cache::bus::Doorbell;
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::events::NewEvent;
use keygate_domain::grant::{self, GrantSpec, ModeRequest};
use keygate_domain::ids::{
    AccessGrantId, AccessSystemId, EntranceId, InstantKeyId, UserIdentityId, WorkspaceId,
};
use keygate_domain::instant_key::InstantKey;
use keygate_domain::model::NewUserIdentity;
use keygate_domain::model::now;
use keygate_domain::update::{self, EndsAt, GrantChange};
use keygate_domain::validate::{self, Violations};
use keygate_domain::{Error, FieldViolation, Resource};
use keygate_proto::v1::{self, access_grant_service_server::AccessGrantService};
use keygate_store::{GrantFilter, Idempotency, NewGrant, Store};
use rand::RngExt as _;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::page_request;
use super::user_identities::idempotency;
use crate::auth::principal;
use crate::convert;
use crate::error::to_status;
use crate::links;
use crate::read_cache;
use crate::tokens::{PageScope, PageTokens};

/// Most entrances one grant may name.
const MAX_ENTRANCES: usize = 100;

pub struct AccessGrants {
    pub store: Arc<dyn Store>,
    pub tokens: PageTokens,
    pub doorbell: Doorbell,
    pub wake_orchestrator: Arc<Notify>,
    /// Instant Key links (derived from the key id, never stored).
    pub links: keygate_domain::instant_key::Links,
    pub cache: Arc<dyn keygate_cache::Cache>,
}

pub(crate) fn mode_from(i: i32) -> Option<AccessMethodMode> {
    match v1::AccessMethodMode::try_from(i).ok()? {
        v1::AccessMethodMode::Card => Some(AccessMethodMode::Card),
        v1::AccessMethodMode::Code => Some(AccessMethodMode::Code),
        v1::AccessMethodMode::MobileKey => Some(AccessMethodMode::MobileKey),
        v1::AccessMethodMode::CloudKey => Some(AccessMethodMode::CloudKey),
        v1::AccessMethodMode::Unspecified => None,
    }
}

pub(crate) fn pin(field: &str, code: &str) -> Result<Option<String>, FieldViolation> {
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
pub(crate) enum Grantee {
    /// A person given inline, created with the grant.
    New(NewUserIdentity),
    Existing(UserIdentityId),
}

/// A validated request for a new grant: what `CreateAccessGrant` asks for, or what
/// `CreateCredential` makes for a credential.
pub(crate) struct GrantRequest {
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

/// The checks every list of entrance ids gets: at most [`MAX_ENTRANCES`], none repeated.
pub(crate) fn check_entrance_list(v: &mut Violations, ids: &[String]) {
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

impl AccessGrants {
    /// The grant on the wire, with its Instant Key link.
    fn wire(&self, g: &keygate_domain::grant::AccessGrant) -> v1::AccessGrant {
        let mut pb = convert::access_grant(g);
        links::fill_grant(&self.links, &mut pb);
        pb
    }

    /// Chooses the PIN of every code method whose access system leaves the choice to Keygate,
    /// and warns where a requested code cannot be honoured. Returns the chosen codes by method.
    async fn choose_pins(
        &self,
        ws: keygate_domain::ids::WorkspaceId,
        plan: &mut grant::GrantPlan,
        planning: &[grant::PlanningEntrance],
        at: time::OffsetDateTime,
    ) -> Result<
        (
            Vec<(keygate_domain::ids::AccessMethodId, String)>,
            Vec<grant::Notice>,
        ),
        Error,
    > {
        use keygate_domain::capability::PinCodeGenerator;
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
            let taken: std::collections::HashSet<String> = self
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
                reason: keygate_domain::ErrorReason::ModeNotSupported,
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
    pub(crate) async fn replayed(
        &self,
        ws: WorkspaceId,
        idem: Option<&Idempotency>,
    ) -> Result<Option<keygate_domain::grant::AccessGrant>, Error> {
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
    /// claim, in one transaction; then wakes the orchestrator. The one way a grant is made:
    /// `CreateAccessGrant`, and `AcsUserService.CreateCredential` for a credential.
    pub(crate) async fn create(
        &self,
        ws: WorkspaceId,
        r: GrantRequest,
    ) -> Result<keygate_domain::grant::AccessGrant, Error> {
        let GrantRequest {
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
                    events.push(
                        NewEvent::new(keygate_domain::events::INSTANT_KEY_CREATED, at)
                            .grant(g.id)
                            .user(g.user_identity_id)
                            .instant_key(key_id),
                    );
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
                    reason: keygate_domain::ErrorReason::PinCodeTaken,
                    ..
                }) if attempt < 3 => continue,
                other => break other?,
            }
        };
        if let Some(last) = appended.last() {
            self.doorbell.ring(ws.to_string(), last.seq);
            self.wake_orchestrator.notify_one();
        }
        tracing::info!(access_grant_id = %created.id, methods = created.access_method_ids.len(), "access grant created");
        Ok(created)
    }

    /// Deletes a grant and its methods (they are `NOT_FOUND` at once; revoke jobs take the access
    /// back), evicts their cached reads and wakes the orchestrator: the one way a grant is
    /// deleted, by `DeleteAccessGrant` and by `AcsUserService` for credentials.
    pub(crate) async fn delete(&self, ws: WorkspaceId, id: AccessGrantId) -> Result<(), Error> {
        let events = self.store.delete_access_grant(ws, id, now()).await?;
        let mut keys = vec![read_cache::grant_key(ws, &id.to_string())];
        keys.extend(
            events
                .iter()
                .filter_map(|e| e.access_method_id)
                .map(|m| read_cache::method_key(ws, &m.to_string())),
        );
        keygate_cache::evict(&*self.cache, &keys).await;
        if let Some(last) = events.last() {
            self.doorbell.ring(ws.to_string(), last.seq);
        }
        self.wake_orchestrator.notify_one();
        tracing::info!(access_grant_id = %id, "access grant deleted; revocation queued");
        Ok(())
    }
}

#[tonic::async_trait]
impl AccessGrantService for AccessGrants {
    #[tracing::instrument(skip_all)]
    async fn create_access_grant(
        &self,
        req: Request<v1::CreateAccessGrantRequest>,
    ) -> Result<Response<v1::CreateAccessGrantResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&r.request_id)).flatten();
        let name = v.check(validate::optional_name("name", &r.name)).flatten();
        let key = v
            .check(validate::optional_name(
                "access_grant_key",
                &r.access_grant_key,
            ))
            .flatten();
        let reservation = v
            .check(validate::optional_name(
                "reservation_key",
                &r.reservation_key,
            ))
            .flatten();
        if r.acs_entrance_ids.is_empty() {
            v.check::<()>(Err(FieldViolation::new(
                "acs_entrance_ids",
                "at least one entrance is required",
            )));
        }
        check_entrance_list(&mut v, &r.acs_entrance_ids);
        if r.requested_access_methods.is_empty() {
            v.check::<()>(Err(FieldViolation::new(
                "requested_access_methods",
                "at least one access method is required",
            )));
        }
        let mut modes = Vec::new();
        for (i, m) in r.requested_access_methods.iter().enumerate() {
            let field = format!("requested_access_methods[{i}]");
            let Some(mode) = mode_from(m.mode) else {
                v.check::<()>(Err(FieldViolation::new(
                    format!("{field}.mode"),
                    "must be card, code, mobile_key or cloud_key",
                )));
                continue;
            };
            if modes.iter().any(|x: &ModeRequest| x.mode == mode) {
                v.check::<()>(Err(FieldViolation::new(
                    format!("{field}.mode"),
                    "each mode may be requested once",
                )));
            }
            let code = v.check(pin(&format!("{field}.code"), &m.code)).flatten();
            if code.is_some() && mode != AccessMethodMode::Code {
                v.check::<()>(Err(FieldViolation::new(
                    format!("{field}.code"),
                    "only a code (PIN) method takes a code",
                )));
            }
            modes.push(ModeRequest { mode, code });
        }
        let grantee = match &r.grantee {
            Some(v1::create_access_grant_request::Grantee::UserIdentity(p)) => Some(Grantee::New(
                validate::new_user_identity(
                    &p.user_identity_key,
                    &p.full_name,
                    &p.email_address,
                    &p.phone_number,
                )
                .map_err(to_status)?,
            )),
            Some(v1::create_access_grant_request::Grantee::UserIdentityId(id)) => {
                Some(Grantee::Existing(
                    validate::id("user_identity_id", id, Resource::UserIdentity)
                        .map_err(to_status)?,
                ))
            }
            None => {
                v.check::<()>(Err(FieldViolation::new(
                    "user_identity",
                    "give user_identity or user_identity_id",
                )));
                None
            }
        };
        v.finish().map_err(to_status)?;
        let grantee = grantee.ok_or_else(|| {
            to_status(Error::Internal {
                message: "validation accepted a request without a grantee".into(),
            })
        })?;
        let body = v1::CreateAccessGrantRequest {
            request_id: String::new(),
            ..r.clone()
        };
        let idem = idempotency("CreateAccessGrant", request_id, &body);
        if let Some(first) = self.replayed(ws, idem.as_ref()).await.map_err(to_status)? {
            return Ok(Response::new(v1::CreateAccessGrantResponse {
                access_grant: Some(self.wire(&first)),
            }));
        }
        let entrance_ids: Vec<EntranceId> = r
            .acs_entrance_ids
            .iter()
            .map(|e| validate::id("acs_entrance_ids", e, Resource::Entrance))
            .collect::<Result<_, Error>>()
            .map_err(to_status)?;
        let created = self
            .create(
                ws,
                GrantRequest {
                    idem,
                    name,
                    access_grant_key: key,
                    reservation_key: reservation,
                    grantee,
                    entrance_ids,
                    modes,
                    starts_at: r.starts_at.as_ref().and_then(convert::from_ts),
                    ends_at: r.ends_at.as_ref().and_then(convert::from_ts),
                    only_system: None,
                },
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::CreateAccessGrantResponse {
            access_grant: Some(self.wire(&created)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_access_grant(
        &self,
        req: Request<v1::GetAccessGrantRequest>,
    ) -> Result<Response<v1::GetAccessGrantResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: AccessGrantId = validate::id(
            "access_grant_id",
            &req.get_ref().access_grant_id,
            Resource::AccessGrant,
        )
        .map_err(to_status)?;
        let key = read_cache::grant_key(ws, &id.to_string());
        let store = self.store.clone();
        let g = read_cache::read_through(&self.cache, &key, async move {
            Ok(convert::access_grant(
                &store.get_access_grant(ws, id).await?,
            ))
        })
        .await
        .map_err(to_status)?;
        let mut g = g;
        links::fill_grant(&self.links, &mut g);
        Ok(Response::new(v1::GetAccessGrantResponse {
            access_grant: Some(g),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_access_grants(
        &self,
        req: Request<v1::ListAccessGrantsRequest>,
    ) -> Result<Response<v1::ListAccessGrantsResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let parts = [
            "ListAccessGrants",
            r.user_identity_id.as_str(),
            r.acs_entrance_id.as_str(),
            r.acs_system_id.as_str(),
        ];
        let scope = PageScope::workspace(ws, &parts);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let filter = GrantFilter {
            user_identity_id: validate::optional_id(
                "user_identity_id",
                &r.user_identity_id,
                Resource::UserIdentity,
            )
            .map_err(to_status)?,
            acs_entrance_id: validate::optional_id(
                "acs_entrance_id",
                &r.acs_entrance_id,
                Resource::Entrance,
            )
            .map_err(to_status)?,
            acs_system_id: validate::optional_id(
                "acs_system_id",
                &r.acs_system_id,
                Resource::AccessSystem,
            )
            .map_err(to_status)?,
        };
        let found = self
            .store
            .list_access_grants(ws, &filter, &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::ListAccessGrantsResponse {
            access_grants: found.items.iter().map(|g| self.wire(g)).collect(),
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all, fields(access_grant_id = %req.get_ref().access_grant_id))]
    async fn update_access_grant(
        &self,
        req: Request<v1::UpdateAccessGrantRequest>,
    ) -> Result<Response<v1::UpdateAccessGrantResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let at = now();
        let id: AccessGrantId =
            validate::id("access_grant_id", &r.access_grant_id, Resource::AccessGrant)
                .map_err(to_status)?;
        let mut v = Violations::default();
        let name = r.name.as_deref().map(|n| {
            v.check(validate::optional_name("name", n))
                .flatten()
                .unwrap_or_default()
        });
        let mut timestamp = |field: &str, t: &Option<prost_types::Timestamp>| {
            t.as_ref().and_then(|t| {
                v.check(
                    convert::from_ts(t)
                        .ok_or_else(|| FieldViolation::new(field, "is not a valid time")),
                )
            })
        };
        let starts_at = timestamp("starts_at", &r.starts_at);
        let new_end = timestamp("ends_at", &r.ends_at);
        let ends_at = match (new_end, r.clear_ends_at) {
            (Some(_), true) => {
                v.check::<()>(Err(FieldViolation::new(
                    "clear_ends_at",
                    "cannot be set together with ends_at",
                )));
                EndsAt::Keep
            }
            (Some(e), false) => EndsAt::Set(e),
            (None, true) => EndsAt::Clear,
            (None, false) => EndsAt::Keep,
        };
        for (field, ids) in [
            ("add_acs_entrance_ids", &r.add_acs_entrance_ids),
            ("remove_acs_entrance_ids", &r.remove_acs_entrance_ids),
        ] {
            if ids.len() > MAX_ENTRANCES {
                v.check::<()>(Err(FieldViolation::new(
                    field,
                    format!("at most {MAX_ENTRANCES} entrances"),
                )));
            }
        }
        if r.add_acs_entrance_ids
            .iter()
            .any(|e| r.remove_acs_entrance_ids.contains(e))
        {
            v.check::<()>(Err(FieldViolation::new(
                "remove_acs_entrance_ids",
                "an entrance cannot be both added and removed",
            )));
        }
        v.finish().map_err(to_status)?;
        let parse = |field: &str, ids: &[String]| -> Result<Vec<EntranceId>, Status> {
            ids.iter()
                .map(|e| validate::id(field, e, Resource::Entrance))
                .collect::<Result<_, Error>>()
                .map_err(to_status)
        };
        let change = GrantChange {
            starts_at,
            ends_at,
            add: parse("add_acs_entrance_ids", &r.add_acs_entrance_ids)?,
            remove: parse("remove_acs_entrance_ids", &r.remove_acs_entrance_ids)?,
            name,
        };
        // Planned from a snapshot and written only if the grant is still as it was; a job that
        // completed in between makes the store refuse, and the update is planned again.
        let mut attempt = 0;
        let (updated, appended) = loop {
            attempt += 1;
            let before = self
                .store
                .access_grant_with_methods(ws, id)
                .await
                .map_err(to_status)?;
            if before.0.ends_at.is_some_and(|e| e <= at) {
                return Err(to_status(Error::FailedPrecondition {
                    reason: keygate_domain::ErrorReason::ResourceInactive,
                    message: format!(
                        "access grant {id} has already ended; create a new grant instead"
                    ),
                }));
            }
            let mut wanted = before.0.entrance_ids.clone();
            wanted.extend(
                change
                    .add
                    .iter()
                    .filter(|e| !before.0.entrance_ids.contains(e)),
            );
            wanted.dedup();
            let planning = self
                .store
                .planning_entrances(ws, &wanted)
                .await
                .map_err(to_status)?;
            let mut plan = update::plan_update(&before.0, &before.1, &change, &planning, at)
                .map_err(to_status)?;
            let (chosen, pin_warnings) = self
                .choose_pins(ws, &mut plan.fresh, &planning, at)
                .await
                .map_err(to_status)?;
            plan.fresh.warnings.extend(pin_warnings);
            let write = plan.finish(&chosen, at);
            match self.store.update_access_grant(ws, &before, &write).await {
                Err(Error::Aborted { .. }) if attempt < 5 => continue,
                Err(Error::AlreadyExists {
                    reason: keygate_domain::ErrorReason::PinCodeTaken,
                    ..
                }) if attempt < 5 => continue,
                Ok(done) => {
                    let mut keys = vec![read_cache::grant_key(ws, &id.to_string())];
                    keys.extend(
                        before
                            .1
                            .iter()
                            .map(|m| read_cache::method_key(ws, &m.id.to_string())),
                    );
                    keygate_cache::evict(&*self.cache, &keys).await;
                    break done;
                }
                Err(e) => return Err(to_status(e)),
            }
        };
        if let Some(last) = appended.last() {
            self.doorbell.ring(ws.to_string(), last.seq);
        }
        self.wake_orchestrator.notify_one();
        tracing::info!(access_grant_id = %id, "access grant updated");
        Ok(Response::new(v1::UpdateAccessGrantResponse {
            access_grant: Some(self.wire(&updated)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_access_grant(
        &self,
        req: Request<v1::DeleteAccessGrantRequest>,
    ) -> Result<Response<v1::DeleteAccessGrantResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: AccessGrantId = validate::id(
            "access_grant_id",
            &req.get_ref().access_grant_id,
            Resource::AccessGrant,
        )
        .map_err(to_status)?;
        self.delete(ws, id).await.map_err(to_status)?;
        Ok(Response::new(v1::DeleteAccessGrantResponse {}))
    }
}
