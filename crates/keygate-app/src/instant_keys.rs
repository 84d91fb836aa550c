//! Instant Keys: a link (and its QR code) to a page that lists a person's doors and unlocks
//! them. Only the hash of a link's token is stored; the link is derived from the key id.

use std::sync::Arc;

use keygate_domain::Error;
use keygate_domain::action::UnlockJob;
use keygate_domain::delivery::Channel;
use keygate_domain::delivery::{Delivery, NewDelivery};
use keygate_domain::ids::{
    AccessGrantId, ActionAttemptId, DeliveryId, EntranceId, InstantKeyId, UserIdentityId,
    WorkspaceId,
};
use keygate_domain::instant_key::{self, Inactive, InstantKey};
use keygate_domain::model::now;
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::{ErrorReason, Resource};
use keygate_store::{GrantFilter, Idempotency};
use rand::RngExt as _;
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

impl App {
    /// The key of a link's token: `None` for a malformed or unknown token. Only the token's
    /// hash is looked up.
    async fn key_of_token(&self, token: &str) -> Result<Option<InstantKey>, Error> {
        if !instant_key::well_formed(token) {
            return Ok(None);
        }
        self.store
            .find_instant_key(&instant_key::token_hash(token))
            .await
    }

    pub async fn get_instant_key(
        &self,
        ws: WorkspaceId,
        lookup: KeyLookup,
    ) -> Result<KeyView, Error> {
        let key = match lookup {
            KeyLookup::Id(id) => self.store.get_instant_key(ws, id).await?,
            KeyLookup::Url(url) => {
                let token = url.rsplit_once("/ik/").map_or("", |(_, t)| t);
                self.key_of_token(token)
                    .await?
                    .filter(|k| k.workspace_id == ws)
                    .ok_or_else(|| Error::not_found(Resource::InstantKey, "(link)"))?
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

/// Why the page behind a link (or a mobile key's unlock) is refused, with nothing sent to any
/// access system.
#[derive(Debug)]
pub enum Refused {
    /// A malformed or unknown link, or a door that is not one of the person's.
    NotFound,
    /// Revoked, expired, or claimed by as many devices as it may be.
    Inactive(Inactive),
    /// The door cannot be unlocked remotely, or access to it is not current.
    CannotUnlockNow,
    /// The store failed.
    Failed(Error),
}

impl From<Error> for Refused {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}

/// A link viewed on a device, with nothing written: what the page may show.
#[derive(Clone, Debug)]
pub struct Viewed {
    pub key: InstantKey,
    /// Whether the device that presented its secret already holds one of the key's claims;
    /// `false` for a device without a secret (a link previewer, or a phone on its first visit).
    pub claimed: bool,
}

/// A link claimed for a device.
#[derive(Clone, Debug)]
pub struct Opened {
    pub key: InstantKey,
    /// The secret of a device seen for the first time, for the adapter to remember it by
    /// (the pages keep it in a cookie); only its SHA-256 is stored.
    pub new_device: Option<String>,
}

impl App {
    /// Checks the key of a link for `device` (the secret the device presented, if any) without
    /// writing anything: opening a link (`GET`/`HEAD`, as link previewers and mail scanners do)
    /// never claims it. Refused when the key is revoked or expired, or when it is claimed by
    /// as many devices as it may be and this device holds none of the claims.
    pub async fn view_instant_key(
        &self,
        token: &str,
        device: Option<&str>,
    ) -> Result<Viewed, Refused> {
        let key = self.key_of_token(token).await?.ok_or(Refused::NotFound)?;
        let claimed = match device {
            Some(d) => {
                self.store
                    .has_claim(key.workspace_id, key.id, &instant_key::token_hash(d))
                    .await?
            }
            None => false,
        };
        key.check(now(), claimed).map_err(Refused::Inactive)?;
        Ok(Viewed { key, claimed })
    }

    /// Checks the key of a link and claims it for `device` (the secret the device presented, if
    /// any; a new one is made otherwise): the explicit action of a device that uses the key
    /// (the page's "Use this key on this phone", or its first unlock). A device that already
    /// holds a claim keeps it; a new claim beyond `max_use_count` is refused as exhausted.
    pub async fn claim_instant_key(
        &self,
        token: &str,
        device: Option<&str>,
    ) -> Result<Opened, Refused> {
        let key = self.key_of_token(token).await?.ok_or(Refused::NotFound)?;
        let (device, fresh) = match device {
            Some(d) => (d.to_owned(), false),
            None => {
                let raw: [u8; 32] = rand::rng().random();
                (
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw),
                    true,
                )
            }
        };
        let device_sha256 = instant_key::token_hash(&device);
        let claimed = !fresh
            && self
                .store
                .has_claim(key.workspace_id, key.id, &device_sha256)
                .await?;
        key.check(now(), claimed).map_err(Refused::Inactive)?;
        if !claimed
            && !self
                .store
                .claim_instant_key(key.workspace_id, key.id, &device_sha256, now())
                .await?
        {
            return Err(Refused::Inactive(Inactive::Exhausted));
        }
        Ok(Opened {
            key,
            new_device: fresh.then_some(device),
        })
    }

    /// The key of a link while it works (not revoked, not expired), without claiming it: what
    /// may show the link's QR code.
    pub async fn working_key_of_link(&self, token: &str) -> Result<InstantKey, Refused> {
        let key = self.key_of_token(token).await?.ok_or(Refused::NotFound)?;
        key.check(now(), true).map_err(Refused::Inactive)?;
        Ok(key)
    }

    /// Queues an unlock of one of `user`'s doors (of grant `grant` only, when given) through its
    /// access system; returns the action attempt the orchestrator completes.
    pub async fn request_unlock(
        &self,
        ws: WorkspaceId,
        user: UserIdentityId,
        grant: Option<AccessGrantId>,
        entrance: EntranceId,
        instant_key_id: Option<InstantKeyId>,
    ) -> Result<ActionAttemptId, Refused> {
        let doors = self.person_doors(ws, user, grant).await?;
        let door = doors
            .iter()
            .find(|d| d.entrance_id == entrance)
            .ok_or(Refused::NotFound)?;
        if !door.remote || !door.active(now()) {
            return Err(Refused::CannotUnlockNow);
        }
        let job = UnlockJob {
            action_attempt_id: ActionAttemptId::new(),
            acs_system_id: door.system.id,
            acs_entrance_id: door.entrance_id,
            user_identity_id: Some(user),
            instant_key_id,
            access_grant_id: Some(door.access_grant_id),
            access_method_id: Some(door.access_method_id),
            expires_at: Some(self.unlock_expires_at()),
        };
        let attempt = self.queue_unlock(ws, job, None).await?;
        Ok(attempt.id)
    }
}
