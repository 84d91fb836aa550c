//! `keygate.admin.v1.WorkspaceService`: the operator API (admin token only).

use std::sync::Arc;

use keygate_app::workspaces::{new_workspace, sandbox_systems};
use keygate_cache::Cache;
use keygate_domain::ids::{ApiKeyId, WorkspaceId};
use keygate_domain::model::{ApiKey, WorkspaceType, now};
use keygate_domain::validate::{self, Violations};
use keygate_domain::{Error, ErrorReason, FieldViolation, Resource};
use keygate_proto::admin::{self, workspace_service_server::WorkspaceService};
use keygate_providers::sandbox;
use keygate_store::Store;
use tonic::{Request, Response, Status};

use super::page_request;
use crate::auth::{Principal, api_key_cache_key, principal};
use crate::error::to_status;
use keygate_app::tokens::{PageScope, PageTokens, mint_api_key};
use keygate_wire::convert;

pub struct Workspaces {
    pub store: Arc<dyn Store>,
    pub cache: Arc<dyn Cache>,
    pub tokens: PageTokens,
}

fn operator<T>(req: &Request<T>) -> Result<(), Status> {
    match principal(req).map_err(to_status)? {
        Principal::Operator => Ok(()),
        _ => Err(to_status(Error::Unauthenticated {
            reason: ErrorReason::InvalidAdminToken,
            message: "the operator API needs the admin token".into(),
        })),
    }
}

fn time_zone(raw: &str) -> Result<Option<String>, FieldViolation> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let ok = s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
        && !s.starts_with('/');
    if ok {
        Ok(Some(s.to_owned()))
    } else {
        Err(FieldViolation::new(
            "time_zone",
            "must be an IANA time zone like Europe/Madrid",
        ))
    }
}

#[tonic::async_trait]
impl WorkspaceService for Workspaces {
    #[tracing::instrument(skip_all)]
    async fn create_workspace(
        &self,
        req: Request<admin::CreateWorkspaceRequest>,
    ) -> Result<Response<admin::CreateWorkspaceResponse>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let name = v.check(validate::name("name", &r.name));
        let kind = match admin::WorkspaceType::try_from(r.workspace_type) {
            Ok(admin::WorkspaceType::Sandbox) => Some(WorkspaceType::Sandbox),
            Ok(admin::WorkspaceType::Production) => Some(WorkspaceType::Production),
            _ => v.check(Err(FieldViolation::new(
                "workspace_type",
                "must be WORKSPACE_TYPE_SANDBOX or WORKSPACE_TYPE_PRODUCTION",
            ))),
        };
        let key_name = if r.api_key_name.trim().is_empty() {
            Some("default".to_owned())
        } else {
            v.check(validate::name("api_key_name", &r.api_key_name))
        };
        v.finish().map_err(to_status)?;
        let (Some(name), Some(kind), Some(key_name)) = (name, kind, key_name) else {
            return Err(to_status(Error::Internal {
                message: "validated fields missing".into(),
            }));
        };
        let (ws, key, token) = new_workspace(name, kind, key_name);
        let systems = if kind == WorkspaceType::Sandbox {
            sandbox_systems()
        } else {
            Vec::new()
        };
        self.store
            .create_workspace(&ws, &key, &systems)
            .await
            .map_err(to_status)?;
        tracing::info!(workspace_id = %ws.id, workspace_type = kind.as_str(), "workspace created");
        Ok(Response::new(admin::CreateWorkspaceResponse {
            workspace: Some(convert::workspace(&ws)),
            api_key: Some(convert::api_key(&key)),
            api_key_token: token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_workspaces(
        &self,
        req: Request<admin::ListWorkspacesRequest>,
    ) -> Result<Response<admin::ListWorkspacesResponse>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        let filter = ["ListWorkspaces"];
        let scope = PageScope::operator(&filter);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let found = self.store.list_workspaces(&page).await.map_err(to_status)?;
        Ok(Response::new(admin::ListWorkspacesResponse {
            workspaces: found.items.iter().map(convert::workspace).collect(),
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_api_key(
        &self,
        req: Request<admin::CreateApiKeyRequest>,
    ) -> Result<Response<admin::CreateApiKeyResponse>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        let ws: WorkspaceId = validate::id("workspace_id", &r.workspace_id, Resource::Workspace)
            .map_err(to_status)?;
        let name = validate::name("name", &r.name).map_err(|v| {
            to_status(Error::InvalidArgument {
                violations: vec![v],
            })
        })?;
        let minted = mint_api_key();
        let key = ApiKey {
            id: minted.id,
            workspace_id: ws,
            name,
            secret_sha256: minted.secret_sha256,
            created_at: now(),
            revoked_at: None,
        };
        self.store.create_api_key(&key).await.map_err(to_status)?;
        Ok(Response::new(admin::CreateApiKeyResponse {
            api_key: Some(convert::api_key(&key)),
            api_key_token: minted.token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_api_keys(
        &self,
        req: Request<admin::ListApiKeysRequest>,
    ) -> Result<Response<admin::ListApiKeysResponse>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        let ws: WorkspaceId = validate::id("workspace_id", &r.workspace_id, Resource::Workspace)
            .map_err(to_status)?;
        let filter = ["ListApiKeys"];
        let scope = PageScope::workspace(ws, &filter);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let found = self
            .store
            .list_api_keys(ws, &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(admin::ListApiKeysResponse {
            api_keys: found.items.iter().map(convert::api_key).collect(),
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_api_key(
        &self,
        req: Request<admin::RevokeApiKeyRequest>,
    ) -> Result<Response<admin::RevokeApiKeyResponse>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        let ws: WorkspaceId = validate::id("workspace_id", &r.workspace_id, Resource::Workspace)
            .map_err(to_status)?;
        let id: ApiKeyId =
            validate::id("api_key_id", &r.api_key_id, Resource::ApiKey).map_err(to_status)?;
        let key = self
            .store
            .revoke_api_key(ws, id, now())
            .await
            .map_err(to_status)?;
        // The store is the record; the cache entry goes so no replica keeps trusting the key.
        if let Err(e) = self.cache.delete(&api_key_cache_key(id)).await {
            tracing::warn!(error = %e, api_key_id = %id, "could not evict revoked key from cache; it expires within a minute");
        }
        Ok(Response::new(admin::RevokeApiKeyResponse {
            api_key: Some(convert::api_key(&key)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn connect_access_system(
        &self,
        req: Request<admin::ConnectAccessSystemRequest>,
    ) -> Result<Response<admin::ConnectAccessSystemResponse>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        let ws: WorkspaceId = validate::id("workspace_id", &r.workspace_id, Resource::Workspace)
            .map_err(to_status)?;
        let mut v = Violations::default();
        let name = v.check(validate::optional_name("name", &r.name)).flatten();
        let tz = v.check(time_zone(&r.time_zone)).flatten();
        if r.system_type.trim().is_empty() {
            v.check::<()>(Err(FieldViolation::new("system_type", "is required")));
        }
        v.finish().map_err(to_status)?;
        let system = sandbox::new_system(
            r.system_type.trim(),
            name.as_deref(),
            Some(tz.as_deref().unwrap_or("UTC")),
        )
        .ok_or_else(|| {
            to_status(Error::FailedPrecondition {
                reason: ErrorReason::UnknownAccessSystemType,
                message: format!(
                    "unknown system_type {:?}; known types: {}",
                    r.system_type,
                    sandbox::SANDBOX_SYSTEM_TYPES.join(", ")
                ),
            })
        })?;
        let created = self
            .store
            .connect_access_system(ws, &system)
            .await
            .map_err(to_status)?;
        Ok(Response::new(admin::ConnectAccessSystemResponse {
            acs_system: Some(convert::access_system(&created)),
        }))
    }
}
