//! `keygate.v1.AccessMethodService`: the state of each way in, per door. The PIN `code` is
//! returned here, to the owning workspace only; it never appears in events or logs.

use std::sync::Arc;

use keygate_domain::Resource;
use keygate_domain::ids::AccessMethodId;
use keygate_domain::validate;
use keygate_proto::v1::{self, access_method_service_server::AccessMethodService};
use keygate_store::{MethodFilter, Store};
use tonic::{Request, Response, Status};

use super::page_request;
use crate::auth::principal;
use crate::convert;
use crate::error::to_status;
use crate::tokens::{PageScope, PageTokens};

pub struct AccessMethods {
    pub store: Arc<dyn Store>,
    pub tokens: PageTokens,
}

#[tonic::async_trait]
impl AccessMethodService for AccessMethods {
    #[tracing::instrument(skip_all)]
    async fn get_access_method(
        &self,
        req: Request<v1::GetAccessMethodRequest>,
    ) -> Result<Response<v1::GetAccessMethodResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: AccessMethodId = validate::id(
            "access_method_id",
            &req.get_ref().access_method_id,
            Resource::AccessMethod,
        )
        .map_err(to_status)?;
        let m = self
            .store
            .get_access_method(ws, id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::GetAccessMethodResponse {
            access_method: Some(convert::access_method(&m)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_access_methods(
        &self,
        req: Request<v1::ListAccessMethodsRequest>,
    ) -> Result<Response<v1::ListAccessMethodsResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let parts = [
            "ListAccessMethods",
            r.access_grant_id.as_str(),
            r.user_identity_id.as_str(),
            r.acs_entrance_id.as_str(),
            r.acs_system_id.as_str(),
        ];
        let scope = PageScope::workspace(ws, &parts);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let filter = MethodFilter {
            access_grant_id: validate::optional_id(
                "access_grant_id",
                &r.access_grant_id,
                Resource::AccessGrant,
            )
            .map_err(to_status)?,
            user_identity_id: validate::optional_id(
                "user_identity_id",
                &r.user_identity_id,
                Resource::UserIdentity,
            )
            .map_err(to_status)?,
            acs_entrance_id: validate::optional_id(
                "acs_entrance_id",
                &r.acs_entrance_id,
                Resource::Entrance,
            )
            .map_err(to_status)?,
            acs_system_id: validate::optional_id(
                "acs_system_id",
                &r.acs_system_id,
                Resource::AccessSystem,
            )
            .map_err(to_status)?,
        };
        let found = self
            .store
            .list_access_methods(ws, &filter, &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::ListAccessMethodsResponse {
            access_methods: found.items.iter().map(convert::access_method).collect(),
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }
}
