//! `keygate.v1.AccessMethodService`: the state of each way in, per door. The PIN `code` is
//! returned here, to the owning workspace only; it never appears in events or logs.

use std::sync::Arc;

use keygate_domain::Resource;
use keygate_domain::action::{ActionAttempt, ActionType, AttemptStatus, EncodeJob, JobWork};
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::ids::{AccessMethodId, ActionAttemptId, EncoderId};
use keygate_domain::model::now;
use keygate_domain::{Error, ErrorReason};
use tokio::sync::Notify;

use super::user_identities::idempotency;
use keygate_domain::validate;
use keygate_proto::v1::{self, access_method_service_server::AccessMethodService};
use keygate_store::{MethodFilter, Store};
use tonic::{Request, Response, Status};

use super::page_request;
use crate::auth::principal;
use crate::convert;
use crate::error::to_status;
use crate::read_cache;
use crate::tokens::{PageScope, PageTokens};

pub struct AccessMethods {
    pub store: Arc<dyn Store>,
    pub tokens: PageTokens,
    pub wake_orchestrator: Arc<Notify>,
    pub cache: Arc<dyn keygate_cache::Cache>,
    pub doorbell: keygate_cache::bus::Doorbell,
    /// Instant Key links and client session tokens of mobile keys.
    pub links: keygate_domain::instant_key::Links,
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
        let key = read_cache::method_key(ws, &id.to_string());
        let store = self.store.clone();
        let m = read_cache::read_through(&self.cache, &key, async move {
            Ok(convert::access_method(
                &store.get_access_method(ws, id).await?,
            ))
        })
        .await
        .map_err(to_status)?;
        let mut m = m;
        crate::links::fill_method(&self.links, ws, &mut m);
        Ok(Response::new(v1::GetAccessMethodResponse {
            access_method: Some(m),
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
            access_methods: found
                .items
                .iter()
                .map(|m| {
                    let mut pb = convert::access_method(m);
                    crate::links::fill_method(&self.links, ws, &mut pb);
                    pb
                })
                .collect(),
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_access_method(
        &self,
        req: Request<v1::DeleteAccessMethodRequest>,
    ) -> Result<Response<v1::DeleteAccessMethodResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: AccessMethodId = validate::id(
            "access_method_id",
            &req.get_ref().access_method_id,
            Resource::AccessMethod,
        )
        .map_err(to_status)?;
        let events = self
            .store
            .delete_access_method(ws, id, now())
            .await
            .map_err(to_status)?;
        let mut keys = vec![read_cache::method_key(ws, &id.to_string())];
        keys.extend(
            events
                .iter()
                .filter_map(|e| e.access_grant_id)
                .map(|g| read_cache::grant_key(ws, &g.to_string())),
        );
        keygate_cache::evict(&*self.cache, &keys).await;
        if let Some(last) = events.last() {
            self.doorbell.ring(ws.to_string(), last.seq);
        }
        self.wake_orchestrator.notify_one();
        Ok(Response::new(v1::DeleteAccessMethodResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn encode_access_method(
        &self,
        req: Request<v1::EncodeAccessMethodRequest>,
    ) -> Result<Response<v1::EncodeAccessMethodResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let request_id = validate::request_id(&r.request_id).map_err(|v| {
            to_status(Error::InvalidArgument {
                violations: vec![v],
            })
        })?;
        let id: AccessMethodId = validate::id(
            "access_method_id",
            &r.access_method_id,
            Resource::AccessMethod,
        )
        .map_err(to_status)?;
        let encoder_id: EncoderId =
            validate::id("acs_encoder_id", &r.acs_encoder_id, Resource::Encoder)
                .map_err(to_status)?;
        // A replay returns the first attempt, even though the card may no longer be waiting.
        let body = v1::EncodeAccessMethodRequest {
            request_id: String::new(),
            ..r.clone()
        };
        let idem = idempotency("EncodeAccessMethod", request_id.clone(), &body);
        if let Some(idem) = &idem
            && let Some(first) = self.store.replay(ws, idem).await.map_err(to_status)?
        {
            let first: ActionAttemptId = first.parse().map_err(|_| {
                to_status(Error::Internal {
                    message: "stored attempt id".into(),
                })
            })?;
            let a = self
                .store
                .get_action_attempt(ws, first)
                .await
                .map_err(to_status)?;
            return Ok(Response::new(v1::EncodeAccessMethodResponse {
                action_attempt: Some(convert::action_attempt(&a)),
            }));
        }
        let method = self
            .store
            .get_access_method(ws, id)
            .await
            .map_err(to_status)?;
        let encoder = self
            .store
            .get_encoder(ws, encoder_id)
            .await
            .map_err(to_status)?;
        if method.mode != AccessMethodMode::Card || !method.is_ready_for_encoding {
            return Err(to_status(Error::FailedPrecondition {
                reason: ErrorReason::NotReadyForEncoding,
                message: "this access method is not a card ready for encoding (wait for access_method.card_encoding_required)".into(),
            }));
        }
        if !method
            .doors
            .iter()
            .any(|d| d.acs_system_id == encoder.acs_system_id)
        {
            return Err(to_status(Error::invalid(
                "acs_encoder_id",
                "the encoder belongs to another access system than this card",
            )));
        }
        let attempt = ActionAttempt {
            id: ActionAttemptId::new(),
            workspace_id: ws,
            action_type: ActionType::EncodeCredential,
            status: AttemptStatus::Pending,
            access_method_id: Some(id),
            acs_encoder_id: Some(encoder_id),
            acs_entrance_id: None,
            result: None,
            error: None,
            created_at: now(),
            completed_at: None,
        };
        let job = EncodeJob {
            action_attempt_id: attempt.id,
            access_method_id: id,
            acs_system_id: encoder.acs_system_id,
            acs_encoder_id: encoder_id,
        };
        let stored = self
            .store
            .create_action_attempt(ws, &attempt, &JobWork::Encode(job), idem.as_ref())
            .await
            .map_err(to_status)?;
        self.wake_orchestrator.notify_one();
        Ok(Response::new(v1::EncodeAccessMethodResponse {
            action_attempt: Some(convert::action_attempt(&stored)),
        }))
    }
}

/// `keygate.v1.ActionAttemptService`: poll asynchronous actions.
pub struct ActionAttempts {
    pub store: Arc<dyn Store>,
}

#[tonic::async_trait]
impl v1::action_attempt_service_server::ActionAttemptService for ActionAttempts {
    #[tracing::instrument(skip_all)]
    async fn get_action_attempt(
        &self,
        req: Request<v1::GetActionAttemptRequest>,
    ) -> Result<Response<v1::GetActionAttemptResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: ActionAttemptId = validate::id(
            "action_attempt_id",
            &req.get_ref().action_attempt_id,
            Resource::ActionAttempt,
        )
        .map_err(to_status)?;
        let a = self
            .store
            .get_action_attempt(ws, id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::GetActionAttemptResponse {
            action_attempt: Some(convert::action_attempt(&a)),
        }))
    }
}
