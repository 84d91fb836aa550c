//! User identities: the people who receive access, and the access system users linked to them.

use keygate_domain::Error;
use keygate_domain::events;
use keygate_domain::ids::{AcsUserId, UserIdentityId, WorkspaceId};
use keygate_domain::model::{
    IdentityDeleted, NewUserIdentity, UserIdentity, UserIdentityFilter, UserIdentityPatch, now,
};
use keygate_domain::page::{Page, PageRequest};
use keygate_store::Idempotency;

use crate::App;
use crate::tracker::Committed;

/// A validated `CreateUserIdentity`.
#[derive(Clone, Debug)]
pub struct CreateIdentity {
    pub idem: Option<Idempotency>,
    pub person: NewUserIdentity,
}

/// A person as shown: the record and the access system users linked to it.
#[derive(Clone, Debug)]
pub struct IdentityView {
    pub identity: UserIdentity,
    pub acs_user_ids: Vec<AcsUserId>,
}

impl App {
    pub async fn create_user_identity(
        &self,
        ws: WorkspaceId,
        c: CreateIdentity,
    ) -> Result<IdentityView, Error> {
        let CreateIdentity { idem, person } = c;
        let created = self
            .store
            .create_user_identity(ws, UserIdentityId::new(), &person, idem.as_ref(), now())
            .await?;
        self.identity_view(ws, created).await
    }

    pub async fn get_user_identity(
        &self,
        ws: WorkspaceId,
        id: UserIdentityId,
    ) -> Result<IdentityView, Error> {
        let u = self.store.get_user_identity(ws, id).await?;
        self.identity_view(ws, u).await
    }

    pub async fn list_user_identities(
        &self,
        ws: WorkspaceId,
        filter: &UserIdentityFilter,
        page: &PageRequest,
    ) -> Result<Page<IdentityView>, Error> {
        let found = self.store.list_user_identities(ws, filter, page).await?;
        Ok(Page {
            items: self.identity_views(ws, found.items).await?,
            next_after: found.next_after,
        })
    }

    pub async fn update_user_identity(
        &self,
        ws: WorkspaceId,
        id: UserIdentityId,
        patch: &UserIdentityPatch,
    ) -> Result<IdentityView, Error> {
        let u = self
            .store
            .update_user_identity(ws, id, patch, now())
            .await?;
        self.identity_view(ws, u).await
    }

    /// Links an access system user to a person (seed 000's "User identity: link").
    pub async fn link_acs_user(
        &self,
        ws: WorkspaceId,
        user: AcsUserId,
        identity: UserIdentityId,
    ) -> Result<IdentityView, Error> {
        self.store.link_acs_user(ws, user, identity).await?;
        let u = self.store.get_user_identity(ws, identity).await?;
        tracing::info!(user_identity_id = %identity, acs_user_id = %user, "access system user linked");
        self.identity_view(ws, u).await
    }

    /// Unlinks an access system user from a person (Seam's `user_identities/remove_acs_user`).
    /// The person loses what they held through that user: the unlink commits first (so no new
    /// credential can be issued through it), then each credential issued through the user is
    /// deleted through its grant's delete (revoke jobs follow), as `DeleteAcsUser` does. The
    /// user itself stays, unlinked. A retry after a failure finishes the job: unlinking a user
    /// linked to no one changes nothing and deletes what is left. A user linked to another
    /// identity is `ACS_USER_NOT_LINKED`.
    pub async fn unlink_acs_user(
        &self,
        ws: WorkspaceId,
        user: AcsUserId,
        identity: UserIdentityId,
    ) -> Result<IdentityView, Error> {
        self.store.unlink_acs_user(ws, user, identity).await?;
        let credentials = self.store.all_acs_credentials_of(ws, user).await?;
        for c in &credentials {
            match self.delete_access_grant(ws, c.access_grant_id).await {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let u = self.store.get_user_identity(ws, identity).await?;
        tracing::info!(user_identity_id = %identity, acs_user_id = %user, credentials = credentials.len(), "access system user unlinked; revocation queued");
        self.identity_view(ws, u).await
    }

    /// Deletes a person and their access, in one transaction: every access grant (so every
    /// credential and access method) deleted with its revocation queued, every Instant Key
    /// revoked, linked access system users unlinked. The revocations then run as jobs, like a
    /// `DeleteAccessGrant`'s. Returns what was taken away.
    pub async fn delete_user_identity(
        &self,
        ws: WorkspaceId,
        id: UserIdentityId,
    ) -> Result<IdentityDeleted, Error> {
        let (summary, events) = self.store.delete_user_identity(ws, id, now()).await?;
        // As for each grant deleted: their status and their methods' are stale, revocations
        // are queued, and the events are announced.
        let mut committed = Committed::new(ws)
            .methods(events.iter().filter_map(|e| e.access_method_id))
            .events(&events);
        for g in events
            .iter()
            .filter(|e| e.event_type == events::ACCESS_GRANT_DELETED.name)
            .filter_map(|e| e.access_grant_id)
        {
            committed = committed.grant(g);
        }
        if summary.grants_deleted > 0 {
            committed = committed.jobs();
        }
        self.tracker.committed(committed).await;
        tracing::info!(
            user_identity_id = %id,
            grants_deleted = summary.grants_deleted,
            instant_keys_revoked = summary.instant_keys_revoked,
            acs_users_unlinked = summary.acs_users_unlinked,
            "user identity deleted; revocation queued"
        );
        Ok(summary)
    }

    async fn identity_view(&self, ws: WorkspaceId, u: UserIdentity) -> Result<IdentityView, Error> {
        self.identity_views(ws, vec![u])
            .await?
            .pop()
            .ok_or_else(|| Error::Internal {
                message: "a user identity went missing on the way out".into(),
            })
    }

    /// Identities with the access system users linked to each (one query for all).
    async fn identity_views(
        &self,
        ws: WorkspaceId,
        identities: Vec<UserIdentity>,
    ) -> Result<Vec<IdentityView>, Error> {
        let ids: Vec<UserIdentityId> = identities.iter().map(|u| u.id).collect();
        let links = self.store.linked_acs_users(ws, &ids).await?;
        Ok(identities
            .into_iter()
            .map(|identity| IdentityView {
                acs_user_ids: links
                    .iter()
                    .filter(|(i, _)| *i == identity.id)
                    .map(|(_, user)| *user)
                    .collect(),
                identity,
            })
            .collect())
    }
}
