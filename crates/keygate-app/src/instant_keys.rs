//! Instant Keys: a link (and its QR code) to a page that lists a person's doors and unlocks
//! them. Only the hash of a link's token is stored; the link is derived from the key id.

use std::sync::Arc;

use keygate_domain::Error;
use keygate_domain::delivery::Channel;
use keygate_domain::delivery::{Delivery, NewDelivery};
use keygate_domain::ids::{DeliveryId, InstantKeyId, UserIdentityId, WorkspaceId};
use keygate_domain::instant_key::{self, Inactive, InstantKey};
use keygate_domain::model::now;
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::{ErrorReason, Resource};
use keygate_store::{GrantFilter, Idempotency};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::App;
use crate::tracker::Committed;

/// Most devices one key may be claimed by.
pub const MAX_USE_COUNT: i32 = 10;
/// Furthest `expires_at` a caller may ask for.
pub const MAX_LIFETIME: time::Duration = time::Duration::days(365);

/// Where deliveries of one channel go on this server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// No sender: `DeliverInstantKey` answers CAPABILITY_NOT_SUPPORTED.
    Off,
    /// The configured SMS API or SMTP server.
    Provider,
    /// The outbox: nothing leaves the machine.
    Outbox,
}

/// Which channels this server sends, as `DeliverInstantKey` must know it, and the bell that wakes this
/// process's sender when a delivery is queued (a sender in another process polls).
#[derive(Clone, Debug)]
pub struct Availability {
    pub sms: Route,
    pub email: Route,
    pub wake: Arc<Notify>,
}

impl Default for Availability {
    /// No channel at all.
    fn default() -> Self {
        Self {
            sms: Route::Off,
            email: Route::Off,
            wake: Arc::new(Notify::new()),
        }
    }
}

impl Availability {
    pub fn route(&self, channel: Channel) -> Route {
        match channel {
            Channel::Sms => self.sms,
            Channel::Email => self.email,
        }
    }
}

/// A validated `GenerateInstantKey`.
#[derive(Clone, Debug)]
pub struct GenerateKey {
    pub idem: Option<Idempotency>,
    pub user_identity_id: UserIdentityId,
    /// 1 to [`MAX_USE_COUNT`].
    pub max_use_count: u32,
    /// `None`: when the person's last access ends, at most a default lifetime away.
    pub expires_at: Option<OffsetDateTime>,
}

impl App {
    /// Makes a new Instant Key for a person, or returns the first one on a replay. Returns the
    /// key and its link.
    pub async fn generate_instant_key(
        &self,
        ws: WorkspaceId,
        cmd: GenerateKey,
    ) -> Result<(KeyView, String), Error> {
        let GenerateKey {
            idem,
            user_identity_id: user,
            max_use_count,
            expires_at,
        } = cmd;
        let at = now();
        self.store.get_user_identity(ws, user).await?;
        let expires_at = match expires_at {
            Some(t) => t,
            None => self.last_access_ends(ws, user, at).await?,
        };
        let key = InstantKey {
            id: InstantKeyId::new(),
            workspace_id: ws,
            user_identity_id: user,
            access_grant_id: None,
            created_at: at,
            expires_at: Some(expires_at),
            max_use_count,
            use_count: 0,
            revoked_at: None,
        };
        let (url, token_sha256) = self.links.mint(key.id)?;
        let (created, events) = self
            .store
            .create_instant_key(ws, &key, &token_sha256, idem.as_ref())
            .await?;
        self.tracker
            .committed(Committed::new(ws).events(&events))
            .await;
        let url = if created.id == key.id {
            url
        } else {
            self.links.url(created.id)?
        };
        Ok((self.key_view(ws, created).await?, url))
    }

    /// When the person's last access ends: the latest `ends_at` of their grants, at most
    /// [`instant_key::DEFAULT_LIFETIME`] away (open-ended access gets that).
    async fn last_access_ends(
        &self,
        ws: WorkspaceId,
        user: UserIdentityId,
        at: OffsetDateTime,
    ) -> Result<OffsetDateTime, Error> {
        let cap = at + instant_key::DEFAULT_LIFETIME;
        let grants = self
            .store
            .list_access_grants(
                ws,
                &GrantFilter {
                    user_identity_id: Some(user),
                    ..Default::default()
                },
                &PageRequest {
                    after: None,
                    limit: 500,
                },
            )
            .await?;
        let mut last = None;
        for g in grants.items {
            match g.ends_at {
                None => return Ok(cap),
                Some(e) if e > at => last = Some(last.map_or(e, |l: OffsetDateTime| l.max(e))),
                Some(_) => {}
            }
        }
        Ok(last.map_or(cap, |l| l.min(cap)))
    }
}

/// Most deliveries shown on a key (the newest).
pub const MAX_DELIVERIES_SHOWN: u32 = 100;

/// Which key `GetInstantKey` names.
#[derive(Clone, Debug)]
pub enum KeyLookup {
    Id(InstantKeyId),
    /// One of this server's links (of this workspace).
    Url(String),
}

/// A validated `DeliverInstantKey`.
#[derive(Clone, Debug)]
pub struct DeliverKey {
    pub idem: Option<Idempotency>,
    pub instant_key_id: InstantKeyId,
    pub channel: Channel,
    /// `None`: the person's phone number or email address.
    pub to: Option<String>,
}

/// A key as shown: the record and its deliveries (newest first, at most
/// [`MAX_DELIVERIES_SHOWN`]).
#[derive(Clone, Debug)]
pub struct KeyView {
    pub key: InstantKey,
    pub deliveries: Vec<Delivery>,
}

/// The key a link names, if it is one of this server's links.
fn token_of(url: &str) -> Option<&str> {
    let token = url.rsplit_once("/ik/")?.1;
    instant_key::well_formed(token).then_some(token)
}

impl App {
    pub async fn get_instant_key(
        &self,
        ws: WorkspaceId,
        lookup: KeyLookup,
    ) -> Result<KeyView, Error> {
        let key = match lookup {
            KeyLookup::Id(id) => self.store.get_instant_key(ws, id).await?,
            KeyLookup::Url(url) => {
                let not_found = || Error::not_found(Resource::InstantKey, "(link)");
                match token_of(&url) {
                    None => return Err(not_found()),
                    Some(token) => self
                        .store
                        .find_instant_key(&instant_key::token_hash(token))
                        .await
                        .and_then(|k| k.filter(|k| k.workspace_id == ws).ok_or_else(not_found))?,
                }
            }
        };
        self.key_view(ws, key).await
    }

    /// Keys, of one person when `user` is given (`NOT_FOUND` if that person is not here).
    pub async fn list_instant_keys(
        &self,
        ws: WorkspaceId,
        user: Option<UserIdentityId>,
        page: &PageRequest,
    ) -> Result<Page<KeyView>, Error> {
        if let Some(user) = user {
            self.store.get_user_identity(ws, user).await?;
        }
        let found = self.store.list_instant_keys(ws, user, page).await?;
        Ok(Page {
            items: self.key_views(ws, found.items).await?,
            next_after: found.next_after,
        })
    }

    /// Revokes a key: its link stops opening the page at once.
    pub async fn revoke_instant_key(
        &self,
        ws: WorkspaceId,
        id: InstantKeyId,
    ) -> Result<KeyView, Error> {
        let (key, events) = self.store.revoke_instant_key(ws, id, now()).await?;
        self.tracker
            .committed(Committed::new(ws).events(&events))
            .await;
        self.key_view(ws, key).await
    }

    /// Queues the link of a key for sending by SMS or email. A replay returns the first
    /// delivery before checking the key again (it may have been revoked since).
    pub async fn deliver_instant_key(
        &self,
        ws: WorkspaceId,
        cmd: DeliverKey,
    ) -> Result<Delivery, Error> {
        let DeliverKey {
            idem,
            instant_key_id: id,
            channel,
            to,
        } = cmd;
        if let Some(idem) = &idem
            && let Some(first) = self.store.replay(ws, idem).await?
        {
            let first: DeliveryId = first.parse().map_err(|_| Error::Internal {
                message: format!("stored delivery id {first:?} does not parse"),
            })?;
            return self.store.get_key_delivery(ws, first).await;
        }
        let key = self.store.get_instant_key(ws, id).await?;
        let at = now();
        let inactive = |what: &str| Error::FailedPrecondition {
            reason: ErrorReason::ResourceInactive,
            message: format!("the Instant Key {what}: its link cannot be sent"),
        };
        match key.check(at, true) {
            Err(Inactive::Revoked) => return Err(inactive("was revoked")),
            Err(Inactive::Expired) => return Err(inactive("has expired")),
            // A key claimed by every device it may be is still sent: its holder may ask again.
            Err(Inactive::Exhausted) | Ok(()) => {}
        }
        if self.instant_key_delivery.route(channel) == Route::Off {
            let setting = match channel {
                Channel::Sms => "an SMS sender (KEYGATE_SMS_API_URL)",
                Channel::Email => "an email sender (KEYGATE_SMTP_URL)",
            };
            return Err(Error::FailedPrecondition {
                reason: ErrorReason::CapabilityNotSupported,
                message: format!("this server has no {setting} configured, and no outbox"),
            });
        }
        let to = match to {
            Some(to) => to,
            None => {
                let person = self
                    .store
                    .get_user_identity(ws, key.user_identity_id)
                    .await?;
                let (address, field) = match channel {
                    Channel::Sms => (person.phone_number, "phone_number"),
                    Channel::Email => (person.email_address, "email_address"),
                };
                address.filter(|a| !a.trim().is_empty()).ok_or_else(|| {
                    Error::invalid(
                        "to",
                        format!("is empty and the user identity has no {field}; give one"),
                    )
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
            .await?;
        self.tracker
            .committed(Committed::new(ws).deliveries())
            .await;
        tracing::info!(
            instant_key_id = %d.instant_key_id,
            delivery_id = %d.id,
            channel = channel.as_str(),
            to = %channel.mask(&d.to),
            "Instant Key delivery queued"
        );
        Ok(d)
    }

    async fn key_view(&self, ws: WorkspaceId, key: InstantKey) -> Result<KeyView, Error> {
        self.key_views(ws, vec![key])
            .await?
            .pop()
            .ok_or_else(|| Error::Internal {
                message: "a key went missing on its way to the wire".into(),
            })
    }

    /// Keys with their deliveries, read in one query.
    async fn key_views(
        &self,
        ws: WorkspaceId,
        keys: Vec<InstantKey>,
    ) -> Result<Vec<KeyView>, Error> {
        let ids: Vec<InstantKeyId> = keys.iter().map(|k| k.id).collect();
        let deliveries = self
            .store
            .key_deliveries(ws, &ids, MAX_DELIVERIES_SHOWN)
            .await?;
        Ok(keys
            .into_iter()
            .map(|key| KeyView {
                deliveries: deliveries
                    .iter()
                    .filter(|d| d.instant_key_id == key.id)
                    .cloned()
                    .collect(),
                key,
            })
            .collect())
    }
}
