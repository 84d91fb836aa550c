//! `keygate.v1.WebhookService`: an adapter over `keygate_app::webhooks`.

use keygate_app::App;
use keygate_app::tokens::PageScope;
use keygate_domain::Resource;
use keygate_domain::validate;
use keygate_proto::v1::{self, webhook_service_server::WebhookService};
use keygate_wire::convert;
use keygate_wire::parse::IntoCommand as _;
use tonic::Request;

use crate::auth::workspace;
use crate::error::{Reply, reply};

pub struct Webhooks {
    pub app: App,
}

#[tonic::async_trait]
impl WebhookService for Webhooks {
    #[tracing::instrument(skip_all, fields(webhook_id))]
    async fn create_webhook(
        &self,
        req: Request<v1::CreateWebhookRequest>,
    ) -> Reply<v1::CreateWebhookResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let (w, secret) = self.app.create_webhook(ws, cmd).await?;
            tracing::Span::current().record("webhook_id", tracing::field::display(w.id));
            Ok(v1::CreateWebhookResponse {
                webhook: Some(convert::webhook(&w)),
                secret,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn get_webhook(
        &self,
        req: Request<v1::GetWebhookRequest>,
    ) -> Reply<v1::GetWebhookResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id("webhook_id", &req.get_ref().webhook_id, Resource::Webhook)?;
            let w = self.app.get_webhook(ws, id).await?;
            Ok(v1::GetWebhookResponse {
                webhook: Some(convert::webhook(&w)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_webhooks(
        &self,
        req: Request<v1::ListWebhooksRequest>,
    ) -> Reply<v1::ListWebhooksResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let parts = ["ListWebhooks"];
            let scope = PageScope::workspace(ws, &parts);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let found = self.app.list_webhooks(ws, &page).await?;
            Ok(v1::ListWebhooksResponse {
                webhooks: found.items.iter().map(convert::webhook).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(webhook_id = %req.get_ref().webhook_id))]
    async fn update_webhook(
        &self,
        req: Request<v1::UpdateWebhookRequest>,
    ) -> Reply<v1::UpdateWebhookResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let w = self.app.update_webhook(ws, cmd).await?;
            Ok(v1::UpdateWebhookResponse {
                webhook: Some(convert::webhook(&w)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn delete_webhook(
        &self,
        req: Request<v1::DeleteWebhookRequest>,
    ) -> Reply<v1::DeleteWebhookResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id("webhook_id", &req.get_ref().webhook_id, Resource::Webhook)?;
            self.app.delete_webhook(ws, id).await?;
            Ok(v1::DeleteWebhookResponse {})
        })
        .await
    }
}
