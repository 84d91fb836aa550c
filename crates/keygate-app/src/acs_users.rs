//! The console flow of seed 000, step by step: access system users, access-group membership
//! and credentials. A credential is an access grant made behind the scenes through
//! [`App::create_access_grant`] (for the user's linked identity, on the user's entrances or its
//! groups' entrances); deleting one deletes that grant, so the orchestrator does all the
//! provisioning and revocation.

use std::collections::HashMap;

use keygate_domain::acs::{self, AcsCredential, AcsUser, AcsUserFilter, CredentialFilter};
use keygate_domain::capability::{AccessMethodMode, PermissionModel};
use keygate_domain::grant::{AccessGrant, AccessMethod, ModeRequest};
use keygate_domain::ids::{
    AccessGroupId, AccessSystemId, AcsCredentialId, AcsUserId, EntranceId, UserIdentityId,
    WorkspaceId,
};
use keygate_domain::model::{AccessSystem, NewUserIdentity, now};
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::validate;
use keygate_domain::{Error, ErrorReason, Resource};
use keygate_store::Idempotency;
use time::OffsetDateTime;

use crate::App;
use crate::grants::{CreateGrant, Grantee};

/// A validated `CreateAcsUser`.
#[derive(Clone, Debug)]
pub struct CreateAcsUser {
    pub idem: Option<Idempotency>,
    pub acs_system_id: AccessSystemId,
    /// Name, email and phone, checked as a user identity's are.
    pub person: NewUserIdentity,
    pub access_starts_at: Option<OffsetDateTime>,
    pub access_ends_at: Option<OffsetDateTime>,
}

/// A validated `CreateCredential`.
#[derive(Clone, Debug)]
pub struct CreateCredential {
    pub idem: Option<Idempotency>,
    pub acs_user_id: AcsUserId,
    /// Card, code or mobile key (a cloud key has no credential).
    pub mode: AccessMethodMode,
    /// The entrances as given: they are read only where the access system assigns entrances
    /// to credentials (on an access-groups system, giving any is the error).
    pub acs_entrance_ids: Vec<String>,
    pub starts_at: Option<OffsetDateTime>,
    pub ends_at: Option<OffsetDateTime>,
    pub code: Option<String>,
    /// Assigning an existing card number is refused (cards are issued, then encoded).
    pub card_number: String,
}

/// A credential as shown: its record, the access method that implements it, and whether its
/// access system lists entrances on credentials.
#[derive(Clone, Debug)]
pub struct CredentialView {
    pub credential: AcsCredential,
    pub method: AccessMethod,
    pub entrances_direct: bool,
}

/// `NotFound` of the grant or method behind a credential is the credential's `NotFound`.
fn as_credential(id: AcsCredentialId) -> impl FnOnce(Error) -> Error {
    move |e| match e {
        Error::NotFound { .. } => Error::not_found(Resource::Credential, id.to_string()),
        e => e,
    }
}

impl App {
    pub async fn create_acs_user(
        &self,
        ws: WorkspaceId,
        c: CreateAcsUser,
    ) -> Result<AcsUser, Error> {
        let CreateAcsUser {
            idem,
            acs_system_id,
            person,
            access_starts_at,
            access_ends_at,
        } = c;
        let user = AcsUser {
            id: AcsUserId::new(),
            workspace_id: ws,
            acs_system_id,
            full_name: person.full_name,
            email_address: person.email_address,
            phone_number: person.phone_number,
            access_starts_at,
            access_ends_at,
            user_identity_id: None,
            is_suspended: false,
            access_group_ids: Vec::new(),
            created_at: now(),
        };
        let created = self.store.create_acs_user(ws, &user, idem.as_ref()).await?;
        tracing::info!(acs_user_id = %created.id, acs_system_id = %acs_system_id, "access system user created");
        Ok(created)
    }

    pub async fn get_acs_user(&self, ws: WorkspaceId, id: AcsUserId) -> Result<AcsUser, Error> {
        self.store.get_acs_user(ws, id).await
    }

    /// Users by filter; a filter naming nothing in the workspace is `NOT_FOUND`, not an empty
    /// list.
    pub async fn list_acs_users(
        &self,
        ws: WorkspaceId,
        filter: &AcsUserFilter,
        page: &PageRequest,
    ) -> Result<Page<AcsUser>, Error> {
        if let Some(s) = filter.acs_system_id {
            self.store.get_access_system(ws, s).await?;
        }
        if let Some(u) = filter.user_identity_id {
            self.store.get_user_identity(ws, u).await?;
        }
        self.store.list_acs_users(ws, filter, page).await
    }

    /// Deletes a user: its credentials first, each through its grant's delete (revoke jobs
    /// follow); one already deleted is skipped, so a retry after a failure finishes the job.
    pub async fn delete_acs_user(&self, ws: WorkspaceId, id: AcsUserId) -> Result<(), Error> {
        self.store.get_acs_user(ws, id).await?;
        let credentials = self.store.all_acs_credentials_of(ws, id).await?;
        for c in &credentials {
            match self.delete_access_grant(ws, c.access_grant_id).await {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.store.delete_acs_user(ws, id, now()).await?;
        tracing::info!(acs_user_id = %id, credentials = credentials.len(), "access system user deleted; revocation queued");
        Ok(())
    }

    /// `AddUserToAccessGroup` (`member`) and `RemoveUserFromAccessGroup`: only on a system that
    /// uses access groups, and only a group of the user's own system.
    pub async fn set_access_group_membership(
        &self,
        ws: WorkspaceId,
        user: AcsUserId,
        group: AccessGroupId,
        member: bool,
    ) -> Result<AcsUser, Error> {
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

    /// Issues a credential to a user linked to an identity: checks what the user's access
    /// system can issue, then makes the grant. A replay returns the first credential before
    /// anything is checked again.
    pub async fn create_credential(
        &self,
        ws: WorkspaceId,
        c: CreateCredential,
    ) -> Result<CredentialView, Error> {
        let CreateCredential {
            idem,
            acs_user_id: user_id,
            mode,
            acs_entrance_ids,
            starts_at,
            ends_at,
            code,
            card_number,
        } = c;
        if let Some(grant) = self.replayed_grant(ws, idem.as_ref()).await? {
            let user = self.store.get_acs_user(ws, user_id).await?;
            let c = self.credential_of(ws, &user, &grant).await?;
            return self.credential_view(ws, c, &mut HashMap::new()).await;
        }
        let user = self.store.get_acs_user(ws, user_id).await?;
        let identity: UserIdentityId = user.user_identity_id.ok_or_else(|| Error::FailedPrecondition {
            reason: ErrorReason::AcsUserNotLinked,
            message: format!(
                "access system user {user_id} is not linked to a user identity, and a credential is issued to one: call UserIdentityService.LinkAcsUser first"
            ),
        })?;
        let system = self.store.get_access_system(ws, user.acs_system_id).await?;
        let caps = &system.capabilities;
        let can_issue = match mode {
            AccessMethodMode::MobileKey => caps.can_issue_mobile_keys,
            m => caps.supports(m),
        };
        if !can_issue {
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::ModeNotSupported,
                message: format!(
                    "{} cannot issue {} credentials",
                    system.name,
                    mode.display_name()
                ),
            });
        }
        if let Some(code) = &code {
            match &caps.pin_code_rules {
                Some(rules) if rules.can_request_code => {
                    let (min, max) = (usize::from(rules.min_length), usize::from(rules.max_length));
                    if !(min..=max).contains(&code.len()) {
                        return Err(Error::invalid(
                            "code",
                            format!("must be {min} to {max} digits on {}", system.name),
                        ));
                    }
                }
                _ => {
                    return Err(Error::FailedPrecondition {
                        reason: ErrorReason::CapabilityNotSupported,
                        message: format!(
                            "{} chooses its own PIN codes: leave code empty",
                            system.name
                        ),
                    });
                }
            }
        }
        if !card_number.is_empty() {
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::CapabilityNotSupported,
                message: "assigning an existing card number is not supported: leave card_number empty to issue a card, then encode it with AccessMethodService.EncodeAccessMethod".into(),
            });
        }
        let entrance_ids = self
            .credential_entrances(ws, &user, &system, mode, &acs_entrance_ids)
            .await?;
        let (starts_at, ends_at) = acs::credential_schedule(&user, starts_at, ends_at, now());
        let grant = self
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
            .await?;
        let c = self.credential_of(ws, &user, &grant).await?;
        tracing::info!(acs_credential_id = %c.id, access_grant_id = %grant.id, "credential created");
        let mut systems = HashMap::from([(system.id, caps.can_assign_entrances_directly)]);
        self.credential_view(ws, c, &mut systems).await
    }

    /// Credentials by filter; a filter naming nothing in the workspace is `NOT_FOUND`. A
    /// credential deleted between the page and its read is left out.
    pub async fn list_credentials(
        &self,
        ws: WorkspaceId,
        filter: &CredentialFilter,
        page: &PageRequest,
    ) -> Result<Page<CredentialView>, Error> {
        if let Some(u) = filter.acs_user_id {
            self.store.get_acs_user(ws, u).await?;
        }
        if let Some(s) = filter.acs_system_id {
            self.store.get_access_system(ws, s).await?;
        }
        if let Some(u) = filter.user_identity_id {
            self.store.get_user_identity(ws, u).await?;
        }
        let found = self.store.list_acs_credentials(ws, filter, page).await?;
        let mut systems = HashMap::new();
        let mut items = Vec::with_capacity(found.items.len());
        for c in found.items {
            match self.credential_view(ws, c, &mut systems).await {
                Ok(v) => items.push(v),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Page {
            items,
            next_after: found.next_after,
        })
    }

    /// Deletes a credential by deleting its grant (revoke jobs follow).
    pub async fn delete_credential(
        &self,
        ws: WorkspaceId,
        id: AcsCredentialId,
    ) -> Result<(), Error> {
        let c = self.store.get_acs_credential(ws, id).await?;
        self.delete_access_grant(ws, c.access_grant_id)
            .await
            .map_err(as_credential(id))?;
        tracing::info!(acs_credential_id = %id, access_grant_id = %c.access_grant_id, "credential deleted; revocation queued");
        Ok(())
    }

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
                match self.delete_access_grant(ws, grant.id).await {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(other) => return Err(other),
                }
                Err(e)
            }
            other => other,
        }
    }

    /// A credential with its access method, and whether its system assigns entrances directly
    /// (`systems` caches that per system).
    async fn credential_view(
        &self,
        ws: WorkspaceId,
        c: AcsCredential,
        systems: &mut HashMap<AccessSystemId, bool>,
    ) -> Result<CredentialView, Error> {
        let method = self
            .store
            .get_access_method(ws, c.access_method_id)
            .await
            .map_err(as_credential(c.id))?;
        let entrances_direct = match systems.get(&c.acs_system_id) {
            Some(d) => *d,
            None => {
                let s = self.store.get_access_system(ws, c.acs_system_id).await?;
                let d = s.capabilities.can_assign_entrances_directly;
                systems.insert(s.id, d);
                d
            }
        };
        Ok(CredentialView {
            credential: c,
            method,
            entrances_direct,
        })
    }

    /// The entrances a new credential opens: the given ones on a system that assigns entrances
    /// to credentials, the user's groups' entrances on an access-groups system.
    async fn credential_entrances(
        &self,
        ws: WorkspaceId,
        user: &AcsUser,
        system: &AccessSystem,
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
}
