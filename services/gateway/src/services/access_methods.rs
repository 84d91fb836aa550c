//! `keygate.v1.AccessMethodService` and `keygate.v1.ActionAttemptService`: adapters over
//! `keygate_app::methods`.

use keygate_app::App;
use keygate_app::tokens::PageScope;
use keygate_domain::Resource;
use keygate_domain::grant::AccessMethod;
use keygate_domain::ids::WorkspaceId;
use keygate_domain::validate;
use keygate_proto::v1::{self, access_method_service_server::AccessMethodService};
use keygate_wire::parse::IntoCommand as _;
use keygate_wire::parse::filters;
use keygate_wire::{convert, links};
use tonic::Request;

use crate::auth::workspace;
use crate::error::{Reply, reply};

pub struct AccessMethods {
    pub app: App,
}

impl AccessMethods {
    /// The method on the wire, with its Instant Key link and client session token.
    fn wire(&self, ws: WorkspaceId, m: &AccessMethod) -> v1::AccessMethod {
        let mut pb = convert::access_method(m);
        links::fill_method(&self.app.links, ws, &mut pb);
        pb
    }
}

#[tonic::async_trait]
impl AccessMethodService for AccessMethods {
    #[tracing::instrument(skip_all)]
    async fn get_access_method(
        &self,
        req: Request<v1::GetAccessMethodRequest>,
    ) -> Reply<v1::GetAccessMethodResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "access_method_id",
                &req.get_ref().access_method_id,
                Resource::AccessMethod,
            )?;
            let m = self.app.get_access_method(ws, id).await?;
            Ok(v1::GetAccessMethodResponse {
                access_method: Some(self.wire(ws, &m)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_access_methods(
        &self,
        req: Request<v1::ListAccessMethodsRequest>,
    ) -> Reply<v1::ListAccessMethodsResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let parts = [
                "ListAccessMethods",
                r.access_grant_id.as_str(),
                r.user_identity_id.as_str(),
                r.acs_entrance_id.as_str(),
                r.acs_system_id.as_str(),
            ];
            let scope = PageScope::workspace(ws, &parts);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let filter = filters::access_methods(&r)?;
            let found = self.app.list_access_methods(ws, &filter, &page).await?;
            Ok(v1::ListAccessMethodsResponse {
                access_methods: found.items.iter().map(|m| self.wire(ws, m)).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn delete_access_method(
        &self,
        req: Request<v1::DeleteAccessMethodRequest>,
    ) -> Reply<v1::DeleteAccessMethodResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "access_method_id",
                &req.get_ref().access_method_id,
                Resource::AccessMethod,
            )?;
            self.app.delete_access_method(ws, id).await?;
            Ok(v1::DeleteAccessMethodResponse {})
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn encode_access_method(
        &self,
        req: Request<v1::EncodeAccessMethodRequest>,
    ) -> Reply<v1::EncodeAccessMethodResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let a = self.app.encode_access_method(ws, cmd).await?;
            Ok(v1::EncodeAccessMethodResponse {
                action_attempt: Some(convert::action_attempt(&a)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn unlock_door(
        &self,
        req: Request<v1::UnlockDoorRequest>,
    ) -> Reply<v1::UnlockDoorResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let a = self.app.unlock_door(ws, cmd).await?;
            Ok(v1::UnlockDoorResponse {
                action_attempt: Some(convert::action_attempt(&a)),
            })
        })
        .await
    }
}

/// `keygate.v1.ActionAttemptService`: poll asynchronous actions.
pub struct ActionAttempts {
    pub app: App,
}

#[tonic::async_trait]
impl v1::action_attempt_service_server::ActionAttemptService for ActionAttempts {
    #[tracing::instrument(skip_all)]
    async fn get_action_attempt(
        &self,
        req: Request<v1::GetActionAttemptRequest>,
    ) -> Reply<v1::GetActionAttemptResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "action_attempt_id",
                &req.get_ref().action_attempt_id,
                Resource::ActionAttempt,
            )?;
            let a = self.app.get_action_attempt(ws, id).await?;
            Ok(v1::GetActionAttemptResponse {
                action_attempt: Some(convert::action_attempt(&a)),
            })
        })
        .await
    }
}
