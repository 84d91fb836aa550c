//! `keygate.v1.InstantKeyService` and `UserIdentityService.GenerateInstantKey`: links (with a QR
//! code) that open a person's doors from a web page. The link is derived from the key id with the
//! server secret; only its hash is stored ([`keygate_domain::instant_key`]).

use std::sync::Arc;

use keygate_delivery::notify::{Availability, Route};
use keygate_domain::delivery::{Channel, Delivery, NewDelivery, SentVia, Status as DeliveryStatus};
use keygate_domain::ids::{DeliveryId, InstantKeyId, UserIdentityId, WorkspaceId};
use keygate_domain::instant_key::{self, Inactive, InstantKey, Links};
use keygate_domain::model::now;
use keygate_domain::validate::{self, Violations};
use keygate_domain::{Error, ErrorReason, FieldViolation, Resource};
use keygate_proto::v1::{self, instant_key_service_server::InstantKeyService};
use keygate_store::Store;
use tonic::{Request, Response, Status};

use super::page_request;
use crate::auth::principal;
use crate::error::to_status;
use keygate_app::tokens::{PageScope, PageTokens};
use keygate_wire::convert::ts;
use keygate_wire::parse::IntoCommand as _;
use keygate_wire::parse::claim as idempotency;

/// Most deliveries shown on a key (the newest).
const MAX_DELIVERIES_SHOWN: u32 = 100;

pub struct InstantKeys {
    pub app: keygate_app::App,
    pub store: Arc<dyn Store>,
    pub tokens: PageTokens,
    pub links: Links,
    /// Announces commits (events, queued deliveries).
    pub tracker: keygate_app::tracker::Tracker,
    /// Which channels `DeliverInstantKey` accepts, and the bell of this process's sender.
    pub delivery: Availability,
}

/// A delivery on the wire.
pub fn delivery_wire(d: &Delivery) -> v1::Delivery {
    v1::Delivery {
        delivery_id: d.id.to_string(),
        instant_key_id: d.instant_key_id.to_string(),
        channel: match d.channel {
            Channel::Sms => v1::DeliveryChannel::Sms,
            Channel::Email => v1::DeliveryChannel::Email,
        } as i32,
        to: d.to.clone(),
        status: match d.status {
            DeliveryStatus::Pending => v1::DeliveryStatus::Pending,
            DeliveryStatus::Sent => v1::DeliveryStatus::Sent,
            DeliveryStatus::Failed => v1::DeliveryStatus::Failed,
        } as i32,
        attempts: i32::try_from(d.attempts).unwrap_or(i32::MAX),
        last_error: d.last_error.clone().unwrap_or_default(),
        created_at: Some(ts(d.created_at)),
        sent_at: d.sent_at.map(ts),
        sent_to_outbox: d.sent_via == Some(SentVia::Outbox),
    }
}

/// The key on the wire, with its link and QR code address; `deliveries` is left empty (see
/// [`InstantKeys::on_wire`], which fills it).
pub fn wire(links: &Links, k: &InstantKey) -> Result<v1::InstantKey, Error> {
    Ok(v1::InstantKey {
        instant_key_id: k.id.to_string(),
        workspace_id: k.workspace_id.to_string(),
        instant_key_url: links.url(k.id)?,
        user_identity_id: k.user_identity_id.to_string(),
        // The page's client session is the key itself: one per key, whatever device holds it.
        client_session_id: k.id.to_string(),
        access_grant_id: k.access_grant_id.map(|g| g.to_string()).unwrap_or_default(),
        created_at: Some(ts(k.created_at)),
        expires_at: k.expires_at.map(ts),
        max_use_count: i32::try_from(k.max_use_count).unwrap_or(i32::MAX),
        use_count: i32::try_from(k.use_count).unwrap_or(i32::MAX),
        is_revoked: k.revoked_at.is_some(),
        revoked_at: k.revoked_at.map(ts),
        qr_code_url: links.qr_code_url(k.id)?,
        customization: None,
        deliveries: Vec::new(),
    })
}

/// The key a link names, if it is one of this server's links.
fn token_of(url: &str) -> Option<&str> {
    let token = url.rsplit_once("/ik/")?.1;
    instant_key::well_formed(token).then_some(token)
}

impl InstantKeys {
    /// Keys on the wire with their deliveries (newest first, at most [`MAX_DELIVERIES_SHOWN`]
    /// each), read in one query.
    async fn on_wire(
        &self,
        ws: WorkspaceId,
        keys: &[InstantKey],
    ) -> Result<Vec<v1::InstantKey>, Error> {
        let ids: Vec<InstantKeyId> = keys.iter().map(|k| k.id).collect();
        let deliveries = self
            .store
            .key_deliveries(ws, &ids, MAX_DELIVERIES_SHOWN)
            .await?;
        keys.iter()
            .map(|k| {
                let mut w = wire(&self.links, k)?;
                w.deliveries = deliveries
                    .iter()
                    .filter(|d| d.instant_key_id == k.id)
                    .map(delivery_wire)
                    .collect();
                Ok(w)
            })
            .collect()
    }

    async fn one_on_wire(
        &self,
        ws: WorkspaceId,
        key: &InstantKey,
    ) -> Result<v1::InstantKey, Error> {
        self.on_wire(ws, std::slice::from_ref(key))
            .await?
            .pop()
            .ok_or_else(|| Error::Internal {
                message: "a key went missing on its way to the wire".into(),
            })
    }

    /// `GenerateInstantKey`, served through `UserIdentityService`.
    pub async fn generate(
        &self,
        req: Request<v1::GenerateInstantKeyRequest>,
    ) -> Result<Response<v1::GenerateInstantKeyResponse>, Status> {
        let ws = crate::auth::workspace(&req)?;
        crate::error::reply(async {
            let cmd = req.into_inner().into_command()?;
            let (created, url) = self.app.generate_instant_key(ws, cmd).await?;
            Ok(v1::GenerateInstantKeyResponse {
                instant_key: Some(self.one_on_wire(ws, &created).await?),
                qr_code_svg: keygate_delivery::qr::svg(&url)?,
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
    ) -> Result<Response<v1::GetInstantKeyResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let key = match &req.get_ref().lookup {
            Some(v1::get_instant_key_request::Lookup::InstantKeyId(id)) => {
                let id: InstantKeyId =
                    validate::id("instant_key_id", id, Resource::InstantKey).map_err(to_status)?;
                self.store.get_instant_key(ws, id).await
            }
            Some(v1::get_instant_key_request::Lookup::InstantKeyUrl(url)) => {
                let not_found = || Error::not_found(Resource::InstantKey, "(link)");
                match token_of(url) {
                    None => Err(not_found()),
                    Some(token) => self
                        .store
                        .find_instant_key(&instant_key::token_hash(token))
                        .await
                        .and_then(|k| k.filter(|k| k.workspace_id == ws).ok_or_else(not_found)),
                }
            }
            None => Err(Error::invalid(
                "instant_key_id",
                "give instant_key_id or instant_key_url",
            )),
        }
        .map_err(to_status)?;
        Ok(Response::new(v1::GetInstantKeyResponse {
            instant_key: Some(self.one_on_wire(ws, &key).await.map_err(to_status)?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_instant_keys(
        &self,
        req: Request<v1::ListInstantKeysRequest>,
    ) -> Result<Response<v1::ListInstantKeysResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let parts = ["ListInstantKeys", r.user_identity_id.as_str()];
        let scope = PageScope::workspace(ws, &parts);
        let page =
            page_request(&self.tokens, &scope, r.page_size, &r.page_token).map_err(to_status)?;
        let user: Option<UserIdentityId> = validate::optional_id(
            "user_identity_id",
            &r.user_identity_id,
            Resource::UserIdentity,
        )
        .map_err(to_status)?;
        if let Some(user) = user {
            self.store
                .get_user_identity(ws, user)
                .await
                .map_err(to_status)?;
        }
        let found = self
            .store
            .list_instant_keys(ws, user, &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::ListInstantKeysResponse {
            instant_keys: self.on_wire(ws, &found.items).await.map_err(to_status)?,
            next_page_token: self
                .tokens
                .seal(&scope, found.next_after)
                .map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_instant_key(
        &self,
        req: Request<v1::RevokeInstantKeyRequest>,
    ) -> Result<Response<v1::RevokeInstantKeyResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: InstantKeyId = validate::id(
            "instant_key_id",
            &req.get_ref().instant_key_id,
            Resource::InstantKey,
        )
        .map_err(to_status)?;
        let (key, events) = self
            .store
            .revoke_instant_key(ws, id, now())
            .await
            .map_err(to_status)?;
        self.tracker
            .committed(keygate_app::tracker::Committed::new(ws).events(&events))
            .await;
        Ok(Response::new(v1::RevokeInstantKeyResponse {
            instant_key: Some(self.one_on_wire(ws, &key).await.map_err(to_status)?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn deliver_instant_key(
        &self,
        req: Request<v1::DeliverInstantKeyRequest>,
    ) -> Result<Response<v1::DeliverInstantKeyResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let request_id = v.check(validate::request_id(&r.request_id)).flatten();
        let channel = match v1::DeliveryChannel::try_from(r.channel) {
            Ok(v1::DeliveryChannel::Sms) => Some(Channel::Sms),
            Ok(v1::DeliveryChannel::Email) => Some(Channel::Email),
            _ => {
                v.check::<()>(Err(FieldViolation::new(
                    "channel",
                    "must be DELIVERY_CHANNEL_SMS or DELIVERY_CHANNEL_EMAIL",
                )));
                None
            }
        };
        let to = channel.and_then(|c| v.check(c.recipient("to", &r.to)).flatten());
        v.finish().map_err(to_status)?;
        let Some(channel) = channel else {
            return Err(to_status(Error::invalid("channel", "is required")));
        };
        let id: InstantKeyId =
            validate::id("instant_key_id", &r.instant_key_id, Resource::InstantKey)
                .map_err(to_status)?;
        // The body hash leaves out the request_id itself. A replay returns the first delivery
        // before checking the key again: it may have been revoked since.
        let body = v1::DeliverInstantKeyRequest {
            request_id: String::new(),
            ..r
        };
        let idem = idempotency("DeliverInstantKey", request_id, &body);
        if let Some(idem) = &idem
            && let Some(first) = self.store.replay(ws, idem).await.map_err(to_status)?
        {
            let first: DeliveryId = first.parse().map_err(|_| {
                to_status(Error::Internal {
                    message: format!("stored delivery id {first:?} does not parse"),
                })
            })?;
            let d = self
                .store
                .get_key_delivery(ws, first)
                .await
                .map_err(to_status)?;
            return Ok(Response::new(v1::DeliverInstantKeyResponse {
                delivery: Some(delivery_wire(&d)),
            }));
        }
        let key = self
            .store
            .get_instant_key(ws, id)
            .await
            .map_err(to_status)?;
        let at = now();
        let inactive = |what: &str| {
            to_status(Error::FailedPrecondition {
                reason: ErrorReason::ResourceInactive,
                message: format!("the Instant Key {what}: its link cannot be sent"),
            })
        };
        match key.check(at, true) {
            Err(Inactive::Revoked) => return Err(inactive("was revoked")),
            Err(Inactive::Expired) => return Err(inactive("has expired")),
            // A key claimed by every device it may be is still sent: its holder may ask again.
            Err(Inactive::Exhausted) | Ok(()) => {}
        }
        if self.delivery.route(channel) == Route::Off {
            let setting = match channel {
                Channel::Sms => "an SMS sender (KEYGATE_SMS_API_URL)",
                Channel::Email => "an email sender (KEYGATE_SMTP_URL)",
            };
            return Err(to_status(Error::FailedPrecondition {
                reason: ErrorReason::CapabilityNotSupported,
                message: format!("this server has no {setting} configured, and no outbox"),
            }));
        }
        let to = match to {
            Some(to) => to,
            None => {
                let person = self
                    .store
                    .get_user_identity(ws, key.user_identity_id)
                    .await
                    .map_err(to_status)?;
                let (address, field) = match channel {
                    Channel::Sms => (person.phone_number, "phone_number"),
                    Channel::Email => (person.email_address, "email_address"),
                };
                address.filter(|a| !a.trim().is_empty()).ok_or_else(|| {
                    to_status(Error::invalid(
                        "to",
                        format!("is empty and the user identity has no {field}; give one"),
                    ))
                })?
            }
        };
        let new = NewDelivery {
            id: DeliveryId::new(),
            instant_key_id: key.id,
            channel,
            to,
            created_at: at,
        };
        let d = self
            .store
            .create_key_delivery(ws, &new, idem.as_ref())
            .await
            .map_err(to_status)?;
        self.tracker
            .committed(keygate_app::tracker::Committed::new(ws).deliveries())
            .await;
        tracing::info!(
            instant_key_id = %d.instant_key_id,
            delivery_id = %d.id,
            channel = channel.as_str(),
            to = %channel.mask(&d.to),
            "Instant Key delivery queued"
        );
        Ok(Response::new(v1::DeliverInstantKeyResponse {
            delivery: Some(delivery_wire(&d)),
        }))
    }
}
