//! `keygate.v1.UserIdentityService`: the people who receive access.

use std::sync::Arc;

use keygate_domain::ids::{AcsUserId, UserIdentityId, WorkspaceId};
use keygate_domain::model::{UserIdentity, UserIdentityFilter, now};
use keygate_domain::validate::{self, Violations};
use keygate_domain::{Error, Resource};
use keygate_proto::v1::{self, user_identity_service_server::UserIdentityService};
use keygate_store::{Idempotency, Store};
use sha2::{Digest as _, Sha256};
use tonic::{Request, Response, Status};

use super::page_request;
use crate::auth::principal;
use crate::error::to_status;
use keygate_app::tokens::{PageScope, PageTokens};
use keygate_wire::convert;

pub struct UserIdentities {
    pub store: Arc<dyn Store>,
    pub tokens: PageTokens,
    /// Serves `GenerateInstantKey`.
    pub instant_keys: Arc<super::instant_keys::InstantKeys>,
}

/// The idempotency claim of a create: its `request_id` and a hash of everything else.
pub(crate) fn idempotency<M: prost::Message + Clone>(
    operation: &'static str,
    request_id: Option<String>,
    body: &M,
) -> Option<Idempotency> {
    request_id.map(|request_id| Idempotency {
        request_id,
        operation,
        request_sha256: Sha256::digest(body.encode_to_vec()).to_vec(),
    })
}

impl UserIdentities {
    /// Identities on the wire, with the access system users linked to each (one query for all).
    async fn wire(
        &self,
        ws: WorkspaceId,
        identities: &[UserIdentity],
    ) -> Result<Vec<v1::UserIdentity>, Error> {
        let ids: Vec<UserIdentityId> = identities.iter().map(|u| u.id).collect();
        let links = self.store.linked_acs_users(ws, &ids).await?;
        Ok(identities
            .iter()
            .map(|u| {
                let mut pb = convert::user_identity(u);
                pb.acs_user_ids = links
                    .iter()
                    .filter(|(identity, _)| *identity == u.id)
                    .map(|(_, user)| user.to_string())
                    .collect();
                pb
            })
            .collect())
    }

    async fn wire_one(
        &self,
        ws: WorkspaceId,
        u: &UserIdentity,
    ) -> Result<v1::UserIdentity, Status> {
        self.wire(ws, std::slice::from_ref(u))
            .await
            .map_err(to_status)?
            .pop()
            .ok_or_else(|| {
                to_status(Error::Internal {
                    message: "a user identity went missing on the way out".into(),
                })
            })
    }
}

#[tonic::async_trait]
impl UserIdentityService for UserIdentities {
    #[tracing::instrument(skip_all, fields(acs_user_id = %req.get_ref().acs_user_id))]
    async fn link_acs_user(
        &self,
        req: Request<v1::LinkAcsUserRequest>,
    ) -> Result<Response<v1::LinkAcsUserResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let identity: UserIdentityId = validate::id(
            "user_identity_id",
            &r.user_identity_id,
            Resource::UserIdentity,
        )
        .map_err(to_status)?;
        let user: AcsUserId =
            validate::id("acs_user_id", &r.acs_user_id, Resource::AcsUser).map_err(to_status)?;
        self.store
            .link_acs_user(ws, user, identity)
            .await
            .map_err(to_status)?;
        let u = self
            .store
            .get_user_identity(ws, identity)
            .await
            .map_err(to_status)?;
        tracing::info!(user_identity_id = %identity, acs_user_id = %user, "access system user linked");
        Ok(Response::new(v1::LinkAcsUserResponse {
            user_identity: Some(self.wire_one(ws, &u).await?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn generate_instant_key(
        &self,
        req: Request<v1::GenerateInstantKeyRequest>,
    ) -> Result<Response<v1::GenerateInstantKeyResponse>, Status> {
        self.instant_keys.generate(req).await
    }

    #[tracing::instrument(skip_all)]
    async fn create_user_identity(
        &self,
        req: Request<v1::CreateUserIdentityRequest>,
    ) -> Result<Response<v1::CreateUserIdentityResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&r.request_id)).flatten();
        v.finish().map_err(to_status)?;
        let new = validate::new_user_identity(
            &r.user_identity_key,
            &r.full_name,
            &r.email_address,
            &r.phone_number,
        )
        .map_err(to_status)?;
        // The body hash leaves out the request_id itself.
        let body = v1::CreateUserIdentityRequest {
            request_id: String::new(),
            ..r
        };
        let idem = idempotency("CreateUserIdentity", request_id, &body);
        let created = self
            .store
            .create_user_identity(ws, UserIdentityId::new(), &new, idem.as_ref(), now())
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::CreateUserIdentityResponse {
            user_identity: Some(self.wire_one(ws, &created).await?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_user_identity(
        &self,
        req: Request<v1::GetUserIdentityRequest>,
    ) -> Result<Response<v1::GetUserIdentityResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: UserIdentityId = validate::id(
            "user_identity_id",
            &req.get_ref().user_identity_id,
            Resource::UserIdentity,
        )
        .map_err(to_status)?;
        let u = self
            .store
            .get_user_identity(ws, id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::GetUserIdentityResponse {
            user_identity: Some(self.wire_one(ws, &u).await?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_user_identities(
        &self,
        req: Request<v1::ListUserIdentitiesRequest>,
    ) -> Result<Response<v1::ListUserIdentitiesResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let filter_parts = [
            "ListUserIdentities",
            r.user_identity_key.as_str(),
            r.email_address.as_str(),
        ];
        let scope = PageScope::workspace(ws, &filter_parts);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let filter = UserIdentityFilter {
            user_identity_key: Some(r.user_identity_key.clone()).filter(|k| !k.is_empty()),
            email_address: Some(r.email_address.trim().to_owned()).filter(|e| !e.is_empty()),
        };
        let found = self
            .store
            .list_user_identities(ws, &filter, &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::ListUserIdentitiesResponse {
            user_identities: self.wire(ws, &found.items).await.map_err(to_status)?,
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_user_identity(
        &self,
        req: Request<v1::UpdateUserIdentityRequest>,
    ) -> Result<Response<v1::UpdateUserIdentityResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let v1::UpdateUserIdentityRequest {
            user_identity_id,
            user_identity_key,
            full_name,
            email_address,
            phone_number,
        } = req.into_inner();
        let id: UserIdentityId = validate::id(
            "user_identity_id",
            &user_identity_id,
            Resource::UserIdentity,
        )
        .map_err(to_status)?;
        let patch = validate::user_identity_patch(
            user_identity_key.as_deref(),
            full_name.as_deref(),
            email_address.as_deref(),
            phone_number.as_deref(),
        )
        .map_err(to_status)?;
        let u = self
            .store
            .update_user_identity(ws, id, &patch, now())
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::UpdateUserIdentityResponse {
            user_identity: Some(self.wire_one(ws, &u).await?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_user_identity(
        &self,
        req: Request<v1::DeleteUserIdentityRequest>,
    ) -> Result<Response<v1::DeleteUserIdentityResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: UserIdentityId = validate::id(
            "user_identity_id",
            &req.get_ref().user_identity_id,
            Resource::UserIdentity,
        )
        .map_err(to_status)?;
        self.instant_keys
            .app
            .delete_user_identity(ws, id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::DeleteUserIdentityResponse {}))
    }
}
