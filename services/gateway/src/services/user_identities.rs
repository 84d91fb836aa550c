//! `keygate.v1.UserIdentityService`: an adapter over `keygate_app::identities` (and
//! `keygate_app::instant_keys` for `GenerateInstantKey`).

use std::sync::Arc;

use keygate_app::App;
use keygate_app::tokens::PageScope;
use keygate_domain::Resource;
use keygate_domain::validate;
use keygate_proto::v1::{self, user_identity_service_server::UserIdentityService};
use keygate_wire::convert::{self, identity_view};
use keygate_wire::parse::IntoCommand as _;
use tonic::Request;

use crate::auth::workspace;
use crate::error::{Reply, reply};

pub struct UserIdentities {
    pub app: App,
    /// Serves `GenerateInstantKey` (its reply is an Instant Key's).
    pub instant_keys: Arc<super::instant_keys::InstantKeys>,
}

#[tonic::async_trait]
impl UserIdentityService for UserIdentities {
    #[tracing::instrument(skip_all, fields(acs_user_id = %req.get_ref().acs_user_id))]
    async fn link_acs_user(
        &self,
        req: Request<v1::LinkAcsUserRequest>,
    ) -> Reply<v1::LinkAcsUserResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let identity = validate::id(
                "user_identity_id",
                &r.user_identity_id,
                Resource::UserIdentity,
            )?;
            let user = validate::id("acs_user_id", &r.acs_user_id, Resource::AcsUser)?;
            let u = self.app.link_acs_user(ws, user, identity).await?;
            Ok(v1::LinkAcsUserResponse {
                user_identity: Some(identity_view(&u)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(acs_user_id = %req.get_ref().acs_user_id))]
    async fn unlink_acs_user(
        &self,
        req: Request<v1::UnlinkAcsUserRequest>,
    ) -> Reply<v1::UnlinkAcsUserResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let identity = validate::id(
                "user_identity_id",
                &r.user_identity_id,
                Resource::UserIdentity,
            )?;
            let user = validate::id("acs_user_id", &r.acs_user_id, Resource::AcsUser)?;
            let u = self.app.unlink_acs_user(ws, user, identity).await?;
            Ok(v1::UnlinkAcsUserResponse {
                user_identity: Some(identity_view(&u)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn generate_instant_key(
        &self,
        req: Request<v1::GenerateInstantKeyRequest>,
    ) -> Reply<v1::GenerateInstantKeyResponse> {
        self.instant_keys.generate(req).await
    }

    #[tracing::instrument(skip_all)]
    async fn create_user_identity(
        &self,
        req: Request<v1::CreateUserIdentityRequest>,
    ) -> Reply<v1::CreateUserIdentityResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let u = self.app.create_user_identity(ws, cmd).await?;
            Ok(v1::CreateUserIdentityResponse {
                user_identity: Some(identity_view(&u)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn get_user_identity(
        &self,
        req: Request<v1::GetUserIdentityRequest>,
    ) -> Reply<v1::GetUserIdentityResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "user_identity_id",
                &req.get_ref().user_identity_id,
                Resource::UserIdentity,
            )?;
            let u = self.app.get_user_identity(ws, id).await?;
            Ok(v1::GetUserIdentityResponse {
                user_identity: Some(identity_view(&u)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_user_identities(
        &self,
        req: Request<v1::ListUserIdentitiesRequest>,
    ) -> Reply<v1::ListUserIdentitiesResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let filter_parts = [
                "ListUserIdentities",
                r.user_identity_key.as_str(),
                r.email_address.as_str(),
            ];
            let scope = PageScope::workspace(ws, &filter_parts);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let filter = validate::user_identity_filter(&r.user_identity_key, &r.email_address)?;
            let found = self.app.list_user_identities(ws, &filter, &page).await?;
            Ok(v1::ListUserIdentitiesResponse {
                user_identities: found.items.iter().map(identity_view).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn update_user_identity(
        &self,
        req: Request<v1::UpdateUserIdentityRequest>,
    ) -> Reply<v1::UpdateUserIdentityResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let (id, patch) = req.into_inner().into_command()?;
            let u = self.app.update_user_identity(ws, id, &patch).await?;
            Ok(v1::UpdateUserIdentityResponse {
                user_identity: Some(identity_view(&u)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn delete_user_identity(
        &self,
        req: Request<v1::DeleteUserIdentityRequest>,
    ) -> Reply<v1::DeleteUserIdentityResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "user_identity_id",
                &req.get_ref().user_identity_id,
                Resource::UserIdentity,
            )?;
            let deleted = self.app.delete_user_identity(ws, id).await?;
            Ok(convert::identity_deleted(&deleted))
        })
        .await
    }
}
