//! `keygate.v1.InstantKeyService` and `UserIdentityService.GenerateInstantKey`: adapters over
//! `keygate_app::instant_keys` (links, with a QR code, that open a person's doors from a web
//! page; only the hash of a link's token is stored).

use keygate_app::App;
use keygate_app::tokens::PageScope;
use keygate_domain::Resource;
use keygate_domain::validate;
use keygate_proto::v1::{self, instant_key_service_server::InstantKeyService};
use keygate_wire::convert::{delivery_wire, key_view};
use keygate_wire::parse::IntoCommand as _;
use tonic::Request;

use crate::auth::workspace;
use crate::error::{Reply, reply};

pub struct InstantKeys {
    pub app: App,
}

impl InstantKeys {
    /// `GenerateInstantKey`, served through `UserIdentityService`.
    pub async fn generate(
        &self,
        req: Request<v1::GenerateInstantKeyRequest>,
    ) -> Reply<v1::GenerateInstantKeyResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let (view, url) = self.app.generate_instant_key(ws, cmd).await?;
            Ok(v1::GenerateInstantKeyResponse {
                instant_key: Some(key_view(&self.app.links, &view)?),
                qr_code_svg: keygate_wire::qr::svg(&url)?,
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl InstantKeyService for InstantKeys {
    #[tracing::instrument(skip_all)]
    async fn get_instant_key(
        &self,
        req: Request<v1::GetInstantKeyRequest>,
    ) -> Reply<v1::GetInstantKeyResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let lookup = req.into_inner().into_command()?;
            let view = self.app.get_instant_key(ws, lookup).await?;
            Ok(v1::GetInstantKeyResponse {
                instant_key: Some(key_view(&self.app.links, &view)?),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_instant_keys(
        &self,
        req: Request<v1::ListInstantKeysRequest>,
    ) -> Reply<v1::ListInstantKeysResponse> {
        let ws = workspace(&req)?;
        let r = req.into_inner();
        reply(async {
            let parts = ["ListInstantKeys", r.user_identity_id.as_str()];
            let scope = PageScope::workspace(ws, &parts);
            let page = self.app.page_request(&scope, r.page_size, &r.page_token)?;
            let user = validate::optional_id(
                "user_identity_id",
                &r.user_identity_id,
                Resource::UserIdentity,
            )?;
            let found = self.app.list_instant_keys(ws, user, &page).await?;
            Ok(v1::ListInstantKeysResponse {
                instant_keys: found
                    .items
                    .iter()
                    .map(|v| key_view(&self.app.links, v))
                    .collect::<Result<_, _>>()?,
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_instant_key(
        &self,
        req: Request<v1::RevokeInstantKeyRequest>,
    ) -> Reply<v1::RevokeInstantKeyResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id(
                "instant_key_id",
                &req.get_ref().instant_key_id,
                Resource::InstantKey,
            )?;
            let view = self.app.revoke_instant_key(ws, id).await?;
            Ok(v1::RevokeInstantKeyResponse {
                instant_key: Some(key_view(&self.app.links, &view)?),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn deliver_instant_key(
        &self,
        req: Request<v1::DeliverInstantKeyRequest>,
    ) -> Reply<v1::DeliverInstantKeyResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let d = self.app.deliver_instant_key(ws, cmd).await?;
            Ok(v1::DeliverInstantKeyResponse {
                delivery: Some(delivery_wire(&d)),
            })
        })
        .await
    }
}
