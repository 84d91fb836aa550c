//! `keygate.admin.v1.WorkspaceService`: the operator API (admin token only), an adapter over
//! `keygate_app::workspaces`.

use keygate_app::App;
use keygate_app::tokens::PageScope;
use keygate_domain::validate;
use keygate_domain::{Error, ErrorReason, Resource};
use keygate_proto::admin::{self, workspace_service_server::WorkspaceService};
use keygate_wire::convert;
use keygate_wire::parse::IntoCommand as _;
use tonic::{Request, Status};

use crate::auth::{Principal, principal};
use crate::error::{Reply, reply, to_status};

pub struct Workspaces {
    pub app: App,
}

/// The caller must be the operator (authentication: the stack already asked for the admin
/// token on this path; this is the second lock).
fn operator<T>(req: &Request<T>) -> Result<(), Status> {
    match principal(req).map_err(to_status)? {
        Principal::Operator => Ok(()),
        _ => Err(to_status(Error::Unauthenticated {
            reason: ErrorReason::InvalidAdminToken,
            message: "the operator API needs the admin token".into(),
        })),
    }
}

#[tonic::async_trait]
impl WorkspaceService for Workspaces {
    #[tracing::instrument(skip_all)]
    async fn create_workspace(
        &self,
        req: Request<admin::CreateWorkspaceRequest>,
    ) -> Reply<admin::CreateWorkspaceResponse> {
        operator(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let (ws, key, token) = self.app.create_workspace(cmd).await?;
            let seam_api_key_token = self.app.seam_api_key_token(ws.id, &token).await?;
            Ok(admin::CreateWorkspaceResponse {
                workspace: Some(convert::workspace(&ws)),
                api_key: Some(convert::api_key(&key)),
                api_key_token: token,
                seam_api_key_token,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_workspaces(
        &self,
        req: Request<admin::ListWorkspacesRequest>,
    ) -> Reply<admin::ListWorkspacesResponse> {
        operator(&req)?;
        let r = req.into_inner();
        reply(async {
            let filter = ["ListWorkspaces"];
            let scope = PageScope::operator(&filter);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let found = self.app.list_workspaces(&page).await?;
            Ok(admin::ListWorkspacesResponse {
                workspaces: found.items.iter().map(convert::workspace).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn create_api_key(
        &self,
        req: Request<admin::CreateApiKeyRequest>,
    ) -> Reply<admin::CreateApiKeyResponse> {
        operator(&req)?;
        reply(async {
            let (ws, cmd) = req.into_inner().into_command()?;
            let (key, token) = self.app.create_api_key(ws, cmd).await?;
            let seam_api_key_token = self.app.seam_api_key_token(ws, &token).await?;
            Ok(admin::CreateApiKeyResponse {
                api_key: Some(convert::api_key(&key)),
                api_key_token: token,
                seam_api_key_token,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_api_keys(
        &self,
        req: Request<admin::ListApiKeysRequest>,
    ) -> Reply<admin::ListApiKeysResponse> {
        operator(&req)?;
        let r = req.into_inner();
        reply(async {
            let ws = validate::id("workspace_id", &r.workspace_id, Resource::Workspace)?;
            let filter = ["ListApiKeys"];
            let scope = PageScope::workspace(ws, &filter);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let found = self.app.list_api_keys(ws, &page).await?;
            Ok(admin::ListApiKeysResponse {
                api_keys: found.items.iter().map(convert::api_key).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_api_key(
        &self,
        req: Request<admin::RevokeApiKeyRequest>,
    ) -> Reply<admin::RevokeApiKeyResponse> {
        operator(&req)?;
        let r = req.into_inner();
        reply(async {
            let ws = validate::id("workspace_id", &r.workspace_id, Resource::Workspace)?;
            let id = validate::id("api_key_id", &r.api_key_id, Resource::ApiKey)?;
            let key = self.app.revoke_api_key(ws, id).await?;
            Ok(admin::RevokeApiKeyResponse {
                api_key: Some(convert::api_key(&key)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn connect_access_system(
        &self,
        req: Request<admin::ConnectAccessSystemRequest>,
    ) -> Reply<admin::ConnectAccessSystemResponse> {
        operator(&req)?;
        reply(async {
            let (ws, cmd) = req.into_inner().into_command()?;
            let created = self.app.connect_access_system(ws, cmd).await?;
            Ok(admin::ConnectAccessSystemResponse {
                acs_system: Some(convert::access_system(&created)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_access_systems(
        &self,
        req: Request<admin::ListAccessSystemsRequest>,
    ) -> Reply<admin::ListAccessSystemsResponse> {
        operator(&req)?;
        let r = req.into_inner();
        reply(async {
            let ws = validate::id("workspace_id", &r.workspace_id, Resource::Workspace)?;
            let filter = ["AdminListAccessSystems"];
            let scope = PageScope::workspace(ws, &filter);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let found = self.app.list_workspace_access_systems(ws, &page).await?;
            Ok(admin::ListAccessSystemsResponse {
                acs_systems: found.items.iter().map(convert::access_system).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }
}
