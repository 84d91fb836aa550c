//! `keygate.v1.AcsUserService`: the console flow of seed 000, step by step. An access system user
//! is a record in Keygate; a credential is an access grant made behind the scenes through the same
//! path as `CreateAccessGrant` (for the user's linked identity, on the user's entrances or its
//! groups' entrances), and deleting one deletes that grant, so the orchestrator does all the
//! provisioning and revocation.

use std::collections::HashMap;
use std::sync::Arc;

use keygate_domain::acs::{self, AcsCredential, AcsUser, AcsUserFilter, CredentialFilter};
use keygate_domain::capability::{AccessMethodMode, PermissionModel};
use keygate_domain::grant::{AccessGrant, ModeRequest};
use keygate_domain::ids::{
    AccessGroupId, AccessSystemId, AcsCredentialId, AcsUserId, EntranceId, UserIdentityId,
    WorkspaceId,
};
use keygate_domain::model::now;
use keygate_domain::validate::{self, Violations};
use keygate_domain::{Error, ErrorReason, FieldViolation, Resource};
use keygate_proto::v1::{self, acs_user_service_server::AcsUserService};
use keygate_store::Store;
use tonic::{Request, Response, Status};

use super::page_request;
use crate::auth::principal;
use crate::error::to_status;
use keygate_app::App;
use keygate_app::grants::{CreateGrant, Grantee, check_entrance_list, pin};
use keygate_app::tokens::{PageScope, PageTokens};
use keygate_wire::convert;
use keygate_wire::parse::claim as idempotency;
use keygate_wire::parse::mode as mode_from;

pub struct AcsUsers {
    pub store: Arc<dyn Store>,
    pub tokens: PageTokens,
    /// Credentials are access grants: made and deleted through the grant service's own path.
    pub app: App,
}

/// A time field of a request: absent is `None`; one that is not a valid time is a violation.
fn time_field(
    v: &mut Violations,
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Option<time::OffsetDateTime> {
    let t = t?;
    v.check(convert::from_ts(t).ok_or_else(|| FieldViolation::new(field, "is not a valid time")))
}

/// `NotFound` of the grant or method behind a credential is the credential's `NotFound`.
fn as_credential(id: AcsCredentialId) -> impl FnOnce(Error) -> Error {
    move |e| match e {
        Error::NotFound { .. } => Error::not_found(Resource::Credential, id.to_string()),
        e => e,
    }
}

impl AcsUsers {
    /// The credential that `grant` implements for `user`. It is recorded on first sight, so a
    /// replay after a crash between the grant's commit and this record still finds one.
    async fn credential_of(
        &self,
        ws: WorkspaceId,
        user: &AcsUser,
        grant: &AccessGrant,
    ) -> Result<AcsCredential, Error> {
        if let Some(c) = self.store.acs_credential_of_grant(ws, grant.id).await? {
            return Ok(c);
        }
        let method = grant
            .access_method_ids
            .first()
            .copied()
            .ok_or_else(|| Error::Internal {
                message: format!(
                    "the grant of a credential has no access method: {}",
                    grant.id
                ),
            })?;
        let c = AcsCredential {
            id: AcsCredentialId::new(),
            workspace_id: ws,
            acs_user_id: user.id,
            acs_system_id: user.acs_system_id,
            access_grant_id: grant.id,
            access_method_id: method,
            created_at: grant.created_at,
            starts_at: grant.starts_at,
            ends_at: grant.ends_at,
        };
        match self.store.create_acs_credential(ws, &c).await {
            // The user was deleted meanwhile: its new grant is taken back too.
            Err(e @ Error::NotFound { .. }) => {
                match self.app.delete_access_grant(ws, grant.id).await {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(other) => return Err(other),
                }
                Err(e)
            }
            other => other,
        }
    }

    /// A credential on the wire: its access method, with entrances listed where the access
    /// system assigns them directly (`systems` caches that per system).
    async fn wire(
        &self,
        ws: WorkspaceId,
        c: &AcsCredential,
        systems: &mut HashMap<AccessSystemId, bool>,
    ) -> Result<v1::Credential, Error> {
        let m = self
            .store
            .get_access_method(ws, c.access_method_id)
            .await
            .map_err(as_credential(c.id))?;
        let direct = match systems.get(&c.acs_system_id) {
            Some(d) => *d,
            None => {
                let s = self.store.get_access_system(ws, c.acs_system_id).await?;
                let d = s.capabilities.can_assign_entrances_directly;
                systems.insert(s.id, d);
                d
            }
        };
        Ok(convert::credential(c, &m, direct))
    }

    /// The entrances a new credential opens: the given ones on a system that assigns entrances
    /// to credentials, the user's groups' entrances on an access-groups system.
    async fn credential_entrances(
        &self,
        ws: WorkspaceId,
        user: &AcsUser,
        system: &keygate_domain::model::AccessSystem,
        mode: AccessMethodMode,
        given: &[String],
    ) -> Result<Vec<EntranceId>, Error> {
        let caps = &system.capabilities;
        if caps.can_assign_entrances_directly {
            if given.is_empty() {
                return Err(Error::invalid(
                    "acs_entrance_ids",
                    format!(
                        "{} assigns entrances to each credential: name at least one",
                        system.name
                    ),
                ));
            }
            let per_door_pin = caps
                .pin_code_rules
                .as_ref()
                .is_some_and(|r| r.is_code_per_entrance);
            if mode == AccessMethodMode::Code && per_door_pin && given.len() > 1 {
                return Err(Error::invalid(
                    "acs_entrance_ids",
                    format!(
                        "{} gives each entrance its own PIN code: create one code credential per entrance",
                        system.name
                    ),
                ));
            }
            return given
                .iter()
                .map(|e| validate::id("acs_entrance_ids", e, Resource::Entrance))
                .collect();
        }
        if caps.permission_model != PermissionModel::AccessGroups {
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::CapabilityNotSupported,
                message: format!(
                    "{} neither assigns entrances to credentials nor uses access groups",
                    system.name
                ),
            });
        }
        if !given.is_empty() {
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::CapabilityNotSupported,
                message: format!(
                    "{} grants access through access groups, not per credential: leave acs_entrance_ids empty and put the user in groups with AddUserToAccessGroup",
                    system.name
                ),
            });
        }
        if user.access_group_ids.is_empty() {
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::AcsUserNotInAccessGroup,
                message: format!(
                    "access system user {} is in no access group of {}, so a credential would open nothing: call AddUserToAccessGroup first",
                    user.id, system.name
                ),
            });
        }
        let mut entrances: Vec<EntranceId> = Vec::new();
        for g in &user.access_group_ids {
            for e in self.store.get_access_group(ws, *g).await?.entrance_ids {
                if !entrances.contains(&e) {
                    entrances.push(e);
                }
            }
        }
        Ok(entrances)
    }

    /// `AddUserToAccessGroup` and `RemoveUserFromAccessGroup`.
    async fn membership(
        &self,
        ws: WorkspaceId,
        user: &str,
        group: &str,
        member: bool,
    ) -> Result<AcsUser, Error> {
        let user: AcsUserId = validate::id("acs_user_id", user, Resource::AcsUser)?;
        let group: AccessGroupId =
            validate::id("acs_access_group_id", group, Resource::AccessGroup)?;
        let u = self.store.get_acs_user(ws, user).await?;
        let g = self.store.get_access_group(ws, group).await?;
        let system = self.store.get_access_system(ws, u.acs_system_id).await?;
        if system.capabilities.permission_model != PermissionModel::AccessGroups {
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::CapabilityNotSupported,
                message: format!(
                    "{} does not use access groups: its credentials carry their entrances (acs_entrance_ids of CreateCredential)",
                    system.name
                ),
            });
        }
        if g.acs_system_id != u.acs_system_id {
            return Err(Error::invalid(
                "acs_access_group_id",
                format!(
                    "access group {:?} belongs to another access system than the user ({})",
                    g.display_name, system.name
                ),
            ));
        }
        let u = self
            .store
            .set_access_group_member(ws, user, group, member, now())
            .await?;
        tracing::info!(acs_user_id = %user, acs_access_group_id = %group, member, "access group membership set");
        Ok(u)
    }
}

#[tonic::async_trait]
impl AcsUserService for AcsUsers {
    #[tracing::instrument(skip_all)]
    async fn create_acs_user(
        &self,
        req: Request<v1::CreateAcsUserRequest>,
    ) -> Result<Response<v1::CreateAcsUserResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&r.request_id)).flatten();
        let schedule = r.access_schedule.as_ref();
        let starts_at = time_field(
            &mut v,
            "access_schedule.starts_at",
            schedule.and_then(|s| s.starts_at.as_ref()),
        );
        let ends_at = time_field(
            &mut v,
            "access_schedule.ends_at",
            schedule.and_then(|s| s.ends_at.as_ref()),
        );
        if let (Some(s), Some(e)) = (starts_at, ends_at)
            && e <= s
        {
            v.check::<()>(Err(FieldViolation::new(
                "access_schedule.ends_at",
                "must be after access_schedule.starts_at",
            )));
        }
        v.finish().map_err(to_status)?;
        let system: AccessSystemId =
            validate::id("acs_system_id", &r.acs_system_id, Resource::AccessSystem)
                .map_err(to_status)?;
        // The same checks as a user identity's name, email and phone.
        let person =
            validate::new_user_identity("", &r.full_name, &r.email_address, &r.phone_number)
                .map_err(to_status)?;
        let body = v1::CreateAcsUserRequest {
            request_id: String::new(),
            ..r
        };
        let idem = idempotency("CreateAcsUser", request_id, &body);
        let user = AcsUser {
            id: AcsUserId::new(),
            workspace_id: ws,
            acs_system_id: system,
            full_name: person.full_name,
            email_address: person.email_address,
            phone_number: person.phone_number,
            access_starts_at: starts_at,
            access_ends_at: ends_at,
            user_identity_id: None,
            is_suspended: false,
            access_group_ids: Vec::new(),
            created_at: now(),
        };
        let created = self
            .store
            .create_acs_user(ws, &user, idem.as_ref())
            .await
            .map_err(to_status)?;
        tracing::info!(acs_user_id = %created.id, acs_system_id = %system, "access system user created");
        Ok(Response::new(v1::CreateAcsUserResponse {
            acs_user: Some(convert::acs_user(&created)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_acs_user(
        &self,
        req: Request<v1::GetAcsUserRequest>,
    ) -> Result<Response<v1::GetAcsUserResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: AcsUserId =
            validate::id("acs_user_id", &req.get_ref().acs_user_id, Resource::AcsUser)
                .map_err(to_status)?;
        let u = self.store.get_acs_user(ws, id).await.map_err(to_status)?;
        Ok(Response::new(v1::GetAcsUserResponse {
            acs_user: Some(convert::acs_user(&u)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_acs_users(
        &self,
        req: Request<v1::ListAcsUsersRequest>,
    ) -> Result<Response<v1::ListAcsUsersResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let parts = [
            "ListAcsUsers",
            r.acs_system_id.as_str(),
            r.user_identity_id.as_str(),
        ];
        let scope = PageScope::workspace(ws, &parts);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let filter = AcsUserFilter {
            acs_system_id: validate::optional_id(
                "acs_system_id",
                &r.acs_system_id,
                Resource::AccessSystem,
            )
            .map_err(to_status)?,
            user_identity_id: validate::optional_id(
                "user_identity_id",
                &r.user_identity_id,
                Resource::UserIdentity,
            )
            .map_err(to_status)?,
        };
        // A filter naming nothing in the workspace is NOT_FOUND, not an empty list.
        if let Some(s) = filter.acs_system_id {
            self.store
                .get_access_system(ws, s)
                .await
                .map_err(to_status)?;
        }
        if let Some(u) = filter.user_identity_id {
            self.store
                .get_user_identity(ws, u)
                .await
                .map_err(to_status)?;
        }
        let found = self
            .store
            .list_acs_users(ws, &filter, &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::ListAcsUsersResponse {
            acs_users: found.items.iter().map(convert::acs_user).collect(),
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all, fields(acs_user_id = %req.get_ref().acs_user_id))]
    async fn delete_acs_user(
        &self,
        req: Request<v1::DeleteAcsUserRequest>,
    ) -> Result<Response<v1::DeleteAcsUserResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: AcsUserId =
            validate::id("acs_user_id", &req.get_ref().acs_user_id, Resource::AcsUser)
                .map_err(to_status)?;
        self.store.get_acs_user(ws, id).await.map_err(to_status)?;
        // Its credentials first, each through its grant's delete (revoke jobs follow); one
        // already deleted is skipped, so a retry after a failure finishes the job.
        let credentials = self
            .store
            .all_acs_credentials_of(ws, id)
            .await
            .map_err(to_status)?;
        for c in &credentials {
            match self.app.delete_access_grant(ws, c.access_grant_id).await {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(to_status(e)),
            }
        }
        self.store
            .delete_acs_user(ws, id, now())
            .await
            .map_err(to_status)?;
        tracing::info!(acs_user_id = %id, credentials = credentials.len(), "access system user deleted; revocation queued");
        Ok(Response::new(v1::DeleteAcsUserResponse {}))
    }

    #[tracing::instrument(skip_all, fields(acs_user_id = %req.get_ref().acs_user_id))]
    async fn add_user_to_access_group(
        &self,
        req: Request<v1::AddUserToAccessGroupRequest>,
    ) -> Result<Response<v1::AddUserToAccessGroupResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let u = self
            .membership(ws, &r.acs_user_id, &r.acs_access_group_id, true)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::AddUserToAccessGroupResponse {
            acs_user: Some(convert::acs_user(&u)),
        }))
    }

    #[tracing::instrument(skip_all, fields(acs_user_id = %req.get_ref().acs_user_id))]
    async fn remove_user_from_access_group(
        &self,
        req: Request<v1::RemoveUserFromAccessGroupRequest>,
    ) -> Result<Response<v1::RemoveUserFromAccessGroupResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let u = self
            .membership(ws, &r.acs_user_id, &r.acs_access_group_id, false)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::RemoveUserFromAccessGroupResponse {
            acs_user: Some(convert::acs_user(&u)),
        }))
    }

    #[tracing::instrument(skip_all, fields(acs_user_id = %req.get_ref().acs_user_id))]
    async fn create_credential(
        &self,
        req: Request<v1::CreateCredentialRequest>,
    ) -> Result<Response<v1::CreateCredentialResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&r.request_id)).flatten();
        let mode = match mode_from(r.access_method) {
            Some(AccessMethodMode::CloudKey) => v.check(Err(FieldViolation::new(
                "access_method",
                "a cloud key has no credential: choose card, code or mobile_key",
            ))),
            Some(m) => Some(m),
            None => v.check(Err(FieldViolation::new(
                "access_method",
                "must be card, code or mobile_key",
            ))),
        };
        check_entrance_list(&mut v, &r.acs_entrance_ids);
        let code = v.check(pin("code", &r.code)).flatten();
        if code.is_some() && mode != Some(AccessMethodMode::Code) {
            v.check::<()>(Err(FieldViolation::new(
                "code",
                "only a code (PIN) credential takes a code",
            )));
        }
        if !r.card_number.is_empty() && mode != Some(AccessMethodMode::Card) {
            v.check::<()>(Err(FieldViolation::new(
                "card_number",
                "only a card credential takes a card number",
            )));
        }
        let starts_at = time_field(&mut v, "starts_at", r.starts_at.as_ref());
        let ends_at = time_field(&mut v, "ends_at", r.ends_at.as_ref());
        v.finish().map_err(to_status)?;
        let user_id: AcsUserId =
            validate::id("acs_user_id", &r.acs_user_id, Resource::AcsUser).map_err(to_status)?;
        let mode = mode.ok_or_else(|| {
            to_status(Error::Internal {
                message: "validation accepted a request without a mode".into(),
            })
        })?;
        let body = v1::CreateCredentialRequest {
            request_id: String::new(),
            ..r.clone()
        };
        let idem = idempotency("CreateCredential", request_id, &body);
        // A replay returns the first credential before anything is checked again.
        if let Some(grant) = self
            .app
            .replayed_grant(ws, idem.as_ref())
            .await
            .map_err(to_status)?
        {
            let user = self
                .store
                .get_acs_user(ws, user_id)
                .await
                .map_err(to_status)?;
            let c = self
                .credential_of(ws, &user, &grant)
                .await
                .map_err(to_status)?;
            return Ok(Response::new(v1::CreateCredentialResponse {
                acs_credential: Some(
                    self.wire(ws, &c, &mut HashMap::new())
                        .await
                        .map_err(to_status)?,
                ),
            }));
        }
        let user = self
            .store
            .get_acs_user(ws, user_id)
            .await
            .map_err(to_status)?;
        let identity: UserIdentityId = user.user_identity_id.ok_or_else(|| {
            to_status(Error::FailedPrecondition {
                reason: ErrorReason::AcsUserNotLinked,
                message: format!(
                    "access system user {user_id} is not linked to a user identity, and a credential is issued to one: call UserIdentityService.LinkAcsUser first"
                ),
            })
        })?;
        let system = self
            .store
            .get_access_system(ws, user.acs_system_id)
            .await
            .map_err(to_status)?;
        let caps = &system.capabilities;
        let can_issue = match mode {
            AccessMethodMode::MobileKey => caps.can_issue_mobile_keys,
            m => caps.supports(m),
        };
        if !can_issue {
            return Err(to_status(Error::FailedPrecondition {
                reason: ErrorReason::ModeNotSupported,
                message: format!(
                    "{} cannot issue {} credentials",
                    system.name,
                    mode.display_name()
                ),
            }));
        }
        if let Some(code) = &code {
            match &caps.pin_code_rules {
                Some(rules) if rules.can_request_code => {
                    let (min, max) = (usize::from(rules.min_length), usize::from(rules.max_length));
                    if !(min..=max).contains(&code.len()) {
                        return Err(to_status(Error::invalid(
                            "code",
                            format!("must be {min} to {max} digits on {}", system.name),
                        )));
                    }
                }
                _ => {
                    return Err(to_status(Error::FailedPrecondition {
                        reason: ErrorReason::CapabilityNotSupported,
                        message: format!(
                            "{} chooses its own PIN codes: leave code empty",
                            system.name
                        ),
                    }));
                }
            }
        }
        if !r.card_number.is_empty() {
            return Err(to_status(Error::FailedPrecondition {
                reason: ErrorReason::CapabilityNotSupported,
                message: "assigning an existing card number is not supported: leave card_number empty to issue a card, then encode it with AccessMethodService.EncodeAccessMethod".into(),
            }));
        }
        let entrance_ids = self
            .credential_entrances(ws, &user, &system, mode, &r.acs_entrance_ids)
            .await
            .map_err(to_status)?;
        let (starts_at, ends_at) = acs::credential_schedule(&user, starts_at, ends_at, now());
        let grant = self
            .app
            .create_access_grant(
                ws,
                CreateGrant {
                    idem,
                    name: Some(format!("{} for {}", mode.display_name(), user.full_name)),
                    access_grant_key: None,
                    reservation_key: None,
                    grantee: Grantee::Existing(identity),
                    entrance_ids,
                    modes: vec![ModeRequest { mode, code }],
                    starts_at,
                    ends_at,
                    only_system: Some(system.id),
                },
            )
            .await
            .map_err(to_status)?;
        let c = self
            .credential_of(ws, &user, &grant)
            .await
            .map_err(to_status)?;
        tracing::info!(acs_credential_id = %c.id, access_grant_id = %grant.id, "credential created");
        let mut systems = HashMap::from([(system.id, caps.can_assign_entrances_directly)]);
        Ok(Response::new(v1::CreateCredentialResponse {
            acs_credential: Some(self.wire(ws, &c, &mut systems).await.map_err(to_status)?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_credentials(
        &self,
        req: Request<v1::ListCredentialsRequest>,
    ) -> Result<Response<v1::ListCredentialsResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let parts = [
            "ListCredentials",
            r.acs_user_id.as_str(),
            r.acs_system_id.as_str(),
            r.user_identity_id.as_str(),
        ];
        let scope = PageScope::workspace(ws, &parts);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let filter = CredentialFilter {
            acs_user_id: validate::optional_id("acs_user_id", &r.acs_user_id, Resource::AcsUser)
                .map_err(to_status)?,
            acs_system_id: validate::optional_id(
                "acs_system_id",
                &r.acs_system_id,
                Resource::AccessSystem,
            )
            .map_err(to_status)?,
            user_identity_id: validate::optional_id(
                "user_identity_id",
                &r.user_identity_id,
                Resource::UserIdentity,
            )
            .map_err(to_status)?,
        };
        // A filter naming nothing in the workspace is NOT_FOUND, not an empty list.
        if let Some(u) = filter.acs_user_id {
            self.store.get_acs_user(ws, u).await.map_err(to_status)?;
        }
        if let Some(s) = filter.acs_system_id {
            self.store
                .get_access_system(ws, s)
                .await
                .map_err(to_status)?;
        }
        if let Some(u) = filter.user_identity_id {
            self.store
                .get_user_identity(ws, u)
                .await
                .map_err(to_status)?;
        }
        let found = self
            .store
            .list_acs_credentials(ws, &filter, &page)
            .await
            .map_err(to_status)?;
        let mut systems = HashMap::new();
        let mut credentials = Vec::with_capacity(found.items.len());
        for c in &found.items {
            match self.wire(ws, c, &mut systems).await {
                Ok(pb) => credentials.push(pb),
                // Deleted between the page and this read.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(to_status(e)),
            }
        }
        Ok(Response::new(v1::ListCredentialsResponse {
            acs_credentials: credentials,
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all, fields(acs_credential_id = %req.get_ref().acs_credential_id))]
    async fn delete_credential(
        &self,
        req: Request<v1::DeleteCredentialRequest>,
    ) -> Result<Response<v1::DeleteCredentialResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: AcsCredentialId = validate::id(
            "acs_credential_id",
            &req.get_ref().acs_credential_id,
            Resource::Credential,
        )
        .map_err(to_status)?;
        let c = self
            .store
            .get_acs_credential(ws, id)
            .await
            .map_err(to_status)?;
        self.app
            .delete_access_grant(ws, c.access_grant_id)
            .await
            .map_err(as_credential(id))
            .map_err(to_status)?;
        tracing::info!(acs_credential_id = %id, access_grant_id = %c.access_grant_id, "credential deleted; revocation queued");
        Ok(Response::new(v1::DeleteCredentialResponse {}))
    }
}
