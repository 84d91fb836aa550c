//! `keygate.v1.AccessSystemService`: read-only views of connected systems.

use std::sync::Arc;

use keygate_domain::Resource;
use keygate_domain::ids::{AccessSystemId, EntranceId};
use keygate_domain::validate;
use keygate_proto::v1::{self, access_system_service_server::AccessSystemService};
use keygate_store::Store;
use tonic::{Request, Response, Status};

use super::page_request;
use crate::auth::principal;
use crate::error::to_status;
use keygate_app::tokens::{PageScope, PageTokens};
use keygate_wire::convert;

pub struct AccessSystems {
    pub store: Arc<dyn Store>,
    pub tokens: PageTokens,
}

#[tonic::async_trait]
impl AccessSystemService for AccessSystems {
    #[tracing::instrument(skip_all)]
    async fn list_access_systems(
        &self,
        req: Request<v1::ListAccessSystemsRequest>,
    ) -> Result<Response<v1::ListAccessSystemsResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let filter = ["ListAccessSystems", r.external_type.as_str()];
        let scope = PageScope::workspace(ws, &filter);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let external_type = Some(r.external_type.as_str()).filter(|t| !t.is_empty());
        let found = self
            .store
            .list_access_systems(ws, external_type, &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::ListAccessSystemsResponse {
            acs_systems: found.items.iter().map(convert::access_system).collect(),
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_access_system(
        &self,
        req: Request<v1::GetAccessSystemRequest>,
    ) -> Result<Response<v1::GetAccessSystemResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: AccessSystemId = validate::id(
            "acs_system_id",
            &req.get_ref().acs_system_id,
            Resource::AccessSystem,
        )
        .map_err(to_status)?;
        let s = self
            .store
            .get_access_system(ws, id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::GetAccessSystemResponse {
            acs_system: Some(convert::access_system(&s)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_entrances(
        &self,
        req: Request<v1::ListEntrancesRequest>,
    ) -> Result<Response<v1::ListEntrancesResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let filter = ["ListEntrances", r.acs_system_id.as_str()];
        let scope = PageScope::workspace(ws, &filter);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let system =
            validate::optional_id("acs_system_id", &r.acs_system_id, Resource::AccessSystem)
                .map_err(to_status)?;
        let found = self
            .store
            .list_entrances(ws, system, &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::ListEntrancesResponse {
            acs_entrances: found.items.iter().map(convert::entrance).collect(),
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_entrance(
        &self,
        req: Request<v1::GetEntranceRequest>,
    ) -> Result<Response<v1::GetEntranceResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: EntranceId = validate::id(
            "acs_entrance_id",
            &req.get_ref().acs_entrance_id,
            Resource::Entrance,
        )
        .map_err(to_status)?;
        let e = self.store.get_entrance(ws, id).await.map_err(to_status)?;
        Ok(Response::new(v1::GetEntranceResponse {
            acs_entrance: Some(convert::entrance(&e)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_access_groups(
        &self,
        req: Request<v1::ListAccessGroupsRequest>,
    ) -> Result<Response<v1::ListAccessGroupsResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let filter = ["ListAccessGroups", r.acs_system_id.as_str()];
        let scope = PageScope::workspace(ws, &filter);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let system =
            validate::optional_id("acs_system_id", &r.acs_system_id, Resource::AccessSystem)
                .map_err(to_status)?;
        let found = self
            .store
            .list_access_groups(ws, system, &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::ListAccessGroupsResponse {
            acs_access_groups: found.items.iter().map(convert::access_group).collect(),
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_encoders(
        &self,
        req: Request<v1::ListEncodersRequest>,
    ) -> Result<Response<v1::ListEncodersResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let filter = ["ListEncoders", r.acs_system_id.as_str()];
        let scope = PageScope::workspace(ws, &filter);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let system =
            validate::optional_id("acs_system_id", &r.acs_system_id, Resource::AccessSystem)
                .map_err(to_status)?;
        let found = self
            .store
            .list_encoders(ws, system, &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::ListEncodersResponse {
            acs_encoders: found.items.iter().map(convert::encoder).collect(),
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }
}
