//! `keygate.v1.AccessGrantService`: an adapter over `keygate_app::grants`.

use keygate_app::App;
use keygate_app::tokens::PageScope;
use keygate_domain::Resource;
use keygate_domain::grant::AccessGrant;
use keygate_domain::validate;
use keygate_proto::v1::{self, access_grant_service_server::AccessGrantService};
use keygate_wire::parse::IntoCommand as _;
use keygate_wire::parse::filters;
use keygate_wire::{convert, links};
use tonic::Request;

use crate::auth::workspace;
use crate::error::{Reply, reply};

pub struct AccessGrants {
    pub app: App,
}

impl AccessGrants {
    /// The grant on the wire, with its Instant Key link.
    fn wire(&self, g: &AccessGrant) -> v1::AccessGrant {
        let mut pb = convert::access_grant(g);
        links::fill_grant(&self.app.links, &mut pb);
        pb
    }
}

#[tonic::async_trait]
impl AccessGrantService for AccessGrants {
    #[tracing::instrument(skip_all)]
    async fn create_access_grant(
        &self,
        req: Request<v1::CreateAccessGrantRequest>,
    ) -> Reply<v1::CreateAccessGrantResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let g = self.app.create_access_grant(ws, cmd).await?;
            Ok(v1::CreateAccessGrantResponse {
                access_grant: Some(self.wire(&g)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn get_access_grant(
        &self,
        req: Request<v1::GetAccessGrantRequest>,
    ) -> Reply<v1::GetAccessGrantResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "access_grant_id",
                &req.get_ref().access_grant_id,
                Resource::AccessGrant,
            )?;
            let g = self.app.get_access_grant(ws, id).await?;
            Ok(v1::GetAccessGrantResponse {
                access_grant: Some(self.wire(&g)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_access_grants(
        &self,
        req: Request<v1::ListAccessGrantsRequest>,
    ) -> Reply<v1::ListAccessGrantsResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let parts = [
                "ListAccessGrants",
                r.user_identity_id.as_str(),
                r.acs_entrance_id.as_str(),
                r.acs_system_id.as_str(),
            ];
            let scope = PageScope::workspace(ws, &parts);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let filter = filters::access_grants(&r)?;
            let found = self.app.list_access_grants(ws, &filter, &page).await?;
            Ok(v1::ListAccessGrantsResponse {
                access_grants: found.items.iter().map(|g| self.wire(g)).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(access_grant_id = %req.get_ref().access_grant_id))]
    async fn update_access_grant(
        &self,
        req: Request<v1::UpdateAccessGrantRequest>,
    ) -> Reply<v1::UpdateAccessGrantResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let g = self.app.update_access_grant(ws, cmd).await?;
            Ok(v1::UpdateAccessGrantResponse {
                access_grant: Some(self.wire(&g)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn delete_access_grant(
        &self,
        req: Request<v1::DeleteAccessGrantRequest>,
    ) -> Reply<v1::DeleteAccessGrantResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "access_grant_id",
                &req.get_ref().access_grant_id,
                Resource::AccessGrant,
            )?;
            self.app.delete_access_grant(ws, id).await?;
            Ok(v1::DeleteAccessGrantResponse {})
        })
        .await
    }
}
