//! `keygate.v1.AcsUserService`: an adapter over `keygate_app::acs_users` (the console flow of
//! seed 000: users, access-group membership, credentials made as access grants).

use keygate_app::App;
use keygate_app::acs_users::CredentialView;
use keygate_app::tokens::PageScope;
use keygate_domain::Resource;
use keygate_domain::validate;
use keygate_proto::v1::{self, acs_user_service_server::AcsUserService};
use keygate_wire::convert;
use keygate_wire::parse::IntoCommand as _;
use keygate_wire::parse::filters;
use tonic::Request;

use crate::auth::workspace;
use crate::error::{Reply, reply};

pub struct AcsUsers {
    pub app: App,
}

fn credential(v: &CredentialView) -> v1::Credential {
    convert::credential(&v.credential, &v.method, v.entrances_direct)
}

impl AcsUsers {
    /// `AddUserToAccessGroup` (`member`) and `RemoveUserFromAccessGroup`.
    async fn membership(
        &self,
        ws: keygate_domain::ids::WorkspaceId,
        user: &str,
        group: &str,
        member: bool,
    ) -> Result<v1::AcsUser, keygate_domain::Error> {
        let user = validate::id("acs_user_id", user, Resource::AcsUser)?;
        let group = validate::id("acs_access_group_id", group, Resource::AccessGroup)?;
        let u = self
            .app
            .set_access_group_membership(ws, user, group, member)
            .await?;
        Ok(convert::acs_user(&u))
    }
}

#[tonic::async_trait]
impl AcsUserService for AcsUsers {
    #[tracing::instrument(skip_all)]
    async fn create_acs_user(
        &self,
        req: Request<v1::CreateAcsUserRequest>,
    ) -> Reply<v1::CreateAcsUserResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let u = self
                .app
                .create_acs_user(ws, req.into_inner().into_command()?)
                .await?;
            Ok(v1::CreateAcsUserResponse {
                acs_user: Some(convert::acs_user(&u)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn get_acs_user(
        &self,
        req: Request<v1::GetAcsUserRequest>,
    ) -> Reply<v1::GetAcsUserResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id("acs_user_id", &req.get_ref().acs_user_id, Resource::AcsUser)?;
            let u = self.app.get_acs_user(ws, id).await?;
            Ok(v1::GetAcsUserResponse {
                acs_user: Some(convert::acs_user(&u)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_acs_users(
        &self,
        req: Request<v1::ListAcsUsersRequest>,
    ) -> Reply<v1::ListAcsUsersResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let parts = [
                "ListAcsUsers",
                r.acs_system_id.as_str(),
                r.user_identity_id.as_str(),
            ];
            let scope = PageScope::workspace(ws, &parts);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let filter = filters::acs_users(&r)?;
            let found = self.app.list_acs_users(ws, &filter, &page).await?;
            Ok(v1::ListAcsUsersResponse {
                acs_users: found.items.iter().map(convert::acs_user).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(acs_user_id = %req.get_ref().acs_user_id))]
    async fn delete_acs_user(
        &self,
        req: Request<v1::DeleteAcsUserRequest>,
    ) -> Reply<v1::DeleteAcsUserResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id("acs_user_id", &req.get_ref().acs_user_id, Resource::AcsUser)?;
            self.app.delete_acs_user(ws, id).await?;
            Ok(v1::DeleteAcsUserResponse {})
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(acs_user_id = %req.get_ref().acs_user_id))]
    async fn add_user_to_access_group(
        &self,
        req: Request<v1::AddUserToAccessGroupRequest>,
    ) -> Reply<v1::AddUserToAccessGroupResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let u = self
                .membership(ws, &r.acs_user_id, &r.acs_access_group_id, true)
                .await?;
            Ok(v1::AddUserToAccessGroupResponse { acs_user: Some(u) })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(acs_user_id = %req.get_ref().acs_user_id))]
    async fn remove_user_from_access_group(
        &self,
        req: Request<v1::RemoveUserFromAccessGroupRequest>,
    ) -> Reply<v1::RemoveUserFromAccessGroupResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let u = self
                .membership(ws, &r.acs_user_id, &r.acs_access_group_id, false)
                .await?;
            Ok(v1::RemoveUserFromAccessGroupResponse { acs_user: Some(u) })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(acs_user_id = %req.get_ref().acs_user_id))]
    async fn create_credential(
        &self,
        req: Request<v1::CreateCredentialRequest>,
    ) -> Reply<v1::CreateCredentialResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let c = self
                .app
                .create_credential(ws, req.into_inner().into_command()?)
                .await?;
            Ok(v1::CreateCredentialResponse {
                acs_credential: Some(credential(&c)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_credentials(
        &self,
        req: Request<v1::ListCredentialsRequest>,
    ) -> Reply<v1::ListCredentialsResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let parts = [
                "ListCredentials",
                r.acs_user_id.as_str(),
                r.acs_system_id.as_str(),
                r.user_identity_id.as_str(),
            ];
            let scope = PageScope::workspace(ws, &parts);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let filter = filters::credentials(&r)?;
            let found = self.app.list_credentials(ws, &filter, &page).await?;
            Ok(v1::ListCredentialsResponse {
                acs_credentials: found.items.iter().map(credential).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(acs_credential_id = %req.get_ref().acs_credential_id))]
    async fn delete_credential(
        &self,
        req: Request<v1::DeleteCredentialRequest>,
    ) -> Reply<v1::DeleteCredentialResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "acs_credential_id",
                &req.get_ref().acs_credential_id,
                Resource::Credential,
            )?;
            self.app.delete_credential(ws, id).await?;
            Ok(v1::DeleteCredentialResponse {})
        })
        .await
    }
}
