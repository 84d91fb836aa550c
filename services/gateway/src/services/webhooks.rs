//! `keygate.v1.WebhookService`, and the JSON body of a webhook delivery (the `Event` message
//! with its proto field names), which the delivery role's dispatcher sends.

use std::sync::Arc;

use keygate_delivery::webhooks::{self as hooks, NetworkPolicy, sign};
use keygate_domain::ids::WebhookId;
use keygate_domain::model::{WorkspaceType, now};
use keygate_domain::validate::{self, Violations};
use keygate_domain::webhook::{NewWebhook, Webhook};
use keygate_domain::{Error, FieldViolation, Resource};
use keygate_proto::v1::{self, webhook_service_server::WebhookService};
use keygate_store::Store;
use tonic::{Request, Response, Status};

use super::page_request;
use crate::auth::principal;
use crate::error::to_status;
use keygate_app::tokens::{PageScope, PageTokens};
use keygate_wire::convert;
use keygate_wire::parse::claim as idempotency;

pub struct Webhooks {
    pub store: Arc<dyn Store>,
    pub tokens: PageTokens,
    /// What the SSRF guard lets through at create (the dispatcher checks again at send time).
    pub network: NetworkPolicy,
}

/// Domain → wire. The secret is never part of it.
pub fn webhook(w: &Webhook) -> v1::Webhook {
    v1::Webhook {
        webhook_id: w.id.to_string(),
        workspace_id: w.workspace_id.to_string(),
        url: w.url.clone(),
        event_types: w.event_types.clone(),
        is_enabled: w.is_enabled,
        disabled_reason: w.disabled_reason.clone().unwrap_or_default(),
        created_at: Some(convert::ts(w.created_at)),
        last_delivery_at: w.last_delivery_at.map(convert::ts),
        consecutive_failures: i32::try_from(w.consecutive_failures).unwrap_or(i32::MAX),
    }
}

/// How long `CreateWebhook` waits for the URL's host to resolve.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn url_violation(description: impl Into<String>) -> Error {
    Error::InvalidArgument {
        violations: vec![FieldViolation::new("url", description)],
    }
}

impl Webhooks {
    /// The URL rules of the proto, then the SSRF guard (which resolves the host).
    async fn checked_url(&self, ws_type: WorkspaceType, raw: &str) -> Result<String, Error> {
        let url = hooks::parse_url(raw, ws_type == WorkspaceType::Sandbox)
            .map_err(|e| url_violation(e.to_string()))?;
        tokio::time::timeout(RESOLVE_TIMEOUT, hooks::ssrf::check_url(&url, self.network))
            .await
            .map_err(|_| url_violation("is refused: its host did not resolve within 10 s"))?
            .map_err(|e| url_violation(format!("is refused: {e}")))?;
        Ok(url.to_string())
    }

    async fn first(
        &self,
        ws: keygate_domain::ids::WorkspaceId,
        id: &str,
    ) -> Result<v1::CreateWebhookResponse, Error> {
        let id: WebhookId = id.parse().map_err(|_| Error::Internal {
            message: "stored webhook id".into(),
        })?;
        let w = self.store.get_webhook(ws, id).await?;
        let secret = self.store.webhook_secret(ws, id).await?;
        Ok(v1::CreateWebhookResponse {
            webhook: Some(webhook(&w)),
            secret,
        })
    }
}

#[tonic::async_trait]
impl WebhookService for Webhooks {
    #[tracing::instrument(skip_all, fields(webhook_id))]
    async fn create_webhook(
        &self,
        req: Request<v1::CreateWebhookRequest>,
    ) -> Result<Response<v1::CreateWebhookResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&r.request_id)).flatten();
        v.finish().map_err(to_status)?;
        // The body hash leaves out the request_id itself. A replay returns the first webhook
        // (and its secret) before re-validating: the URL may not resolve the same any more.
        let body = v1::CreateWebhookRequest {
            request_id: String::new(),
            ..r.clone()
        };
        let idem = idempotency("CreateWebhook", request_id, &body);
        if let Some(idem) = &idem
            && let Some(first) = self.store.replay(ws, idem).await.map_err(to_status)?
        {
            return self
                .first(ws, &first)
                .await
                .map(Response::new)
                .map_err(to_status);
        }
        let workspace = self.store.get_workspace(ws).await.map_err(to_status)?;
        let event_types = keygate_domain::webhook::event_types(&r.event_types);
        let url = self.checked_url(workspace.workspace_type, &r.url).await;
        let (url, event_types) = match (url, event_types) {
            (Ok(u), Ok(t)) => (u, t),
            (
                Err(Error::InvalidArgument { mut violations }),
                Err(Error::InvalidArgument { violations: more }),
            ) => {
                violations.extend(more);
                return Err(to_status(Error::InvalidArgument { violations }));
            }
            (Err(e), _) | (_, Err(e)) => return Err(to_status(e)),
        };
        let new = NewWebhook {
            id: WebhookId::new(),
            url,
            event_types,
            secret: sign::new_secret(),
            created_at: now(),
        };
        let (w, secret) = self
            .store
            .create_webhook(ws, &new, idem.as_ref())
            .await
            .map_err(to_status)?;
        tracing::Span::current().record("webhook_id", tracing::field::display(w.id));
        Ok(Response::new(v1::CreateWebhookResponse {
            webhook: Some(webhook(&w)),
            secret,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_webhook(
        &self,
        req: Request<v1::GetWebhookRequest>,
    ) -> Result<Response<v1::GetWebhookResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: WebhookId =
            validate::id("webhook_id", &req.get_ref().webhook_id, Resource::Webhook)
                .map_err(to_status)?;
        let w = self.store.get_webhook(ws, id).await.map_err(to_status)?;
        Ok(Response::new(v1::GetWebhookResponse {
            webhook: Some(webhook(&w)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_webhooks(
        &self,
        req: Request<v1::ListWebhooksRequest>,
    ) -> Result<Response<v1::ListWebhooksResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let parts = ["ListWebhooks"];
        let scope = PageScope::workspace(ws, &parts);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let found = self
            .store
            .list_webhooks(ws, &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::ListWebhooksResponse {
            webhooks: found.items.iter().map(webhook).collect(),
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_webhook(
        &self,
        req: Request<v1::DeleteWebhookRequest>,
    ) -> Result<Response<v1::DeleteWebhookResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: WebhookId =
            validate::id("webhook_id", &req.get_ref().webhook_id, Resource::Webhook)
                .map_err(to_status)?;
        self.store.delete_webhook(ws, id).await.map_err(to_status)?;
        Ok(Response::new(v1::DeleteWebhookResponse {}))
    }
}
