//! The provider contract. Adapters only translate: planning (which groups, which doors, which
//! PIN rules) happened before, from the capability descriptor.

use async_trait::async_trait;
use keygate_domain::action::{AttemptError, EncodeJob, EncodedCard, RevokeJob};
use keygate_domain::grant::ProvisionJob;
use std::collections::BTreeMap;

use keygate_domain::ids::{AccessGroupId, AccessSystemId, EncoderId, EntranceId, UserIdentityId};
use keygate_domain::model::AccessSystem;
use keygate_domain::tracker::ProvisionResult;

/// The person a credential is for, as the provider needs to see them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub user_identity_id: UserIdentityId,
    pub full_name: String,
    pub email_address: Option<String>,
    pub phone_number: Option<String>,
    pub starts_at: time::OffsetDateTime,
    pub ends_at: Option<time::OffsetDateTime>,
}

/// What an access system holds for one of Keygate's access methods, read back to reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldCredential {
    pub entrance_ids: Vec<keygate_domain::ids::EntranceId>,
    pub starts_at: Option<time::OffsetDateTime>,
    pub ends_at: Option<time::OffsetDateTime>,
    /// The PIN, for code credentials.
    pub code: Option<String>,
    /// Whether the credential still has to be written onto a card.
    pub card_encoding_required: bool,
}

/// How a provider call failed. The split decides what the orchestrator may do next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Nothing was applied (connection refused, 429, 503 before processing): retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// The call may or may not have been applied (timeout, 5xx after sending). Only safe to
    /// repeat because every call is idempotent by Keygate's reference id; the repeat doubles as
    /// the read-back.
    #[error("ambiguous: {0}")]
    Ambiguous(String),
    /// Refused for good (invalid, forbidden, unsupported): retrying cannot help.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Secret values an adapter needs to reach an account (an API key, a bearer token), by name.
/// Sealed at rest by `keygate-app`; an adapter sees them only unsealed, for one call. They
/// never print: `Debug` shows the names, never the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials(BTreeMap<String, String>);

impl Credentials {
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self(values)
    }

    /// One value, by name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every value, by name: for sealing.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// What connecting (or syncing) one system says about it: the settings and credentials the
/// caller gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    /// Keygate's id of the system: known when a stored system is synced, and given to a new one
    /// before it is stored (a connector is told which system it serves).
    pub acs_system_id: Option<AccessSystemId>,
    /// The name to show; the system's own when `None`.
    pub name: Option<String>,
    /// The IANA time zone of the site; the system's own (or UTC) when `None`.
    pub time_zone: Option<String>,
    /// Non-secret connection settings, by name (a connector's `address`, ...). Each adapter
    /// documents the settings it reads and refuses unknown or malformed ones as `Permanent`.
    pub settings: BTreeMap<String, String>,
    /// Secret values, by name (a connector's `token`, a vendor's API key).
    pub credentials: Credentials,
}

/// What a stored system's adapter needs beyond the [`AccessSystem`] row to call the account:
/// its settings, its unsealed credentials, and the system's own ids of the entrances, groups
/// and encoders Keygate knows by its ids (removed ones included, so a revoke can still name
/// them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub settings: BTreeMap<String, String>,
    pub credentials: Credentials,
    pub entrances: BTreeMap<EntranceId, String>,
    pub access_groups: BTreeMap<AccessGroupId, String>,
    pub encoders: BTreeMap<EncoderId, String>,
}

impl Link {
    /// The settings and credentials, as a [`Connection`] for a sync.
    pub fn connection(&self, system: &AccessSystem) -> Connection {
        Connection {
            acs_system_id: Some(system.id),
            name: Some(system.name.clone()),
            time_zone: Some(system.time_zone.clone()),
            settings: self.settings.clone(),
            credentials: self.credentials.clone(),
        }
    }
}

/// Where adapters of real systems read a stored system's [`Link`] (implemented by
/// `keygate-app` over the store and the credentials key). A system that was disconnected, or
/// whose credentials cannot be unsealed, is a `Permanent` error naming why.
#[async_trait]
pub trait Directory: Send + Sync {
    async fn link(&self, system: &AccessSystem) -> Result<Link, ProviderError>;
}

/// One access control system, as the orchestrator sees it.
#[async_trait]
pub trait AccessSystemProvider: Send + Sync {
    /// The access system types this adapter serves (`virtual_salto_ks`, `kisi`, ...): what the
    /// [`crate::Registry`] dispatches on.
    fn system_types(&self) -> Vec<String>;

    /// Reads what a system of `system_type` is, to connect it: its capability descriptor (the
    /// adapter's, never a table elsewhere), its entrances, access groups and encoders. A
    /// `Permanent` error means it cannot be connected as asked; `Transient` that it could not
    /// be reached.
    async fn discover(
        &self,
        system_type: &str,
        connection: &Connection,
    ) -> Result<keygate_domain::model::NewAccessSystem, ProviderError>;

    /// Gives `holder` the job's entrances (through its access groups, or on a credential) for the
    /// job's mode. Idempotent by `job.access_method_id` + system: a repeated call returns the
    /// first call's result and creates nothing new.
    async fn provision(
        &self,
        system: &AccessSystem,
        job: &ProvisionJob,
        holder: &Holder,
    ) -> Result<ProvisionResult, ProviderError>;

    /// Takes the job's access away: removes the credential (or the group memberships) made for
    /// `job.access_method_id` in this system. Idempotent: revoking what is gone succeeds.
    async fn revoke(&self, system: &AccessSystem, job: &RevokeJob) -> Result<(), ProviderError>;

    /// Reads back what this system holds for `access_method_id` in it: `None` when nothing.
    /// The reconciler compares it with the record, since systems can say one thing and do another.
    async fn read_back(
        &self,
        system: &AccessSystem,
        access_method_id: keygate_domain::ids::AccessMethodId,
    ) -> Result<Option<HeldCredential>, ProviderError>;

    /// Unlocks one entrance now, remotely. Typed failures (`remote_unlock_not_supported`,
    /// `lock_not_online`, ...); an unlock is interactive, so it is not retried behind the
    /// person's back.
    async fn unlock(
        &self,
        system: &AccessSystem,
        job: &keygate_domain::action::UnlockJob,
    ) -> Result<(), AttemptError> {
        let _ = job;
        Err(AttemptError {
            error_type: "remote_unlock_not_supported".into(),
            message: format!("{} cannot unlock remotely", system.system_type),
        })
    }

    /// What the adapter has learnt of `system`'s account outside any one call's outcome, to show
    /// as the system's warnings (a monthly budget nearly spent, say). The orchestrator reads it
    /// after every call; the warnings it returned before and no longer returns are cleared.
    fn warnings(&self, system: &AccessSystem) -> Vec<keygate_domain::grant::Notice> {
        let _ = system;
        Vec::new()
    }

    /// Verifies and parses one inbound webhook delivery of a stored system (its `link`: the
    /// settings and unsealed credentials hold the webhook secret given at connect). Pure: no
    /// call leaves the process, so an unverified request never makes Keygate call anyone.
    /// The default: this adapter takes no webhooks.
    fn parse_webhook(
        &self,
        link: &Link,
        headers: &WebhookHeaders,
        body: &[u8],
        now: time::OffsetDateTime,
    ) -> Result<Vec<VendorEvent>, WebhookError> {
        let _ = (link, headers, body, now);
        Err(WebhookError::NotSupported(
            "this access system type sends no webhooks Keygate takes".into(),
        ))
    }

    /// The access methods whose credential the system's `actor` (from a verified
    /// [`VendorEventKind::Unlocked`]) holds on `system`: Keygate's references the adapter left
    /// on the system when it provisioned them. Empty when the actor is not one of Keygate's.
    async fn webhook_actor_methods(
        &self,
        system: &AccessSystem,
        actor: &str,
    ) -> Result<Vec<keygate_domain::ids::AccessMethodId>, ProviderError> {
        let _ = (system, actor);
        Ok(Vec::new())
    }

    /// Writes the credential of a card method onto a card in `job.acs_encoder_id`. Encoder
    /// faults come back typed (`encoder_not_online`, `incompatible_card_format`, ...); an
    /// encoding is interactive, so it is not retried behind the person's back.
    async fn encode(
        &self,
        system: &AccessSystem,
        job: &EncodeJob,
    ) -> Result<EncodedCard, AttemptError> {
        let _ = job;
        Err(AttemptError {
            error_type: "credential_cannot_be_reissued".into(),
            message: format!("{} cannot encode cards", system.system_type),
        })
    }
}

/// The request headers of an inbound vendor webhook, names lowercased (the HTTP adapter builds
/// it; adapters look names up in lowercase).
pub type WebhookHeaders = BTreeMap<String, String>;

/// One event an access system reported through its webhook, verified and parsed by its adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorEvent {
    /// The vendor's own id of the event: what deliveries of the same event share, so a
    /// duplicate is recognised.
    pub vendor_event_id: String,
    /// When it happened, as the vendor says.
    pub occurred_at: time::OffsetDateTime,
    pub kind: VendorEventKind,
}

/// What a vendor event says, in Keygate's terms (ids are still the vendor's own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VendorEventKind {
    /// Someone opened an entrance (`entrance`: the system's id of it, as in [`Link::entrances`])
    /// with their credential; `actor` is the system's id of whoever did it, resolved to access
    /// methods through [`AccessSystemProvider::webhook_actor_methods`].
    Unlocked {
        entrance: String,
        actor: Option<String>,
    },
    /// An access right changed on the system (a role assignment made or deleted, a credential
    /// issued or withdrawn): a change Keygate pushed may have landed.
    AccessChanged,
    /// Anything else (a failed unlock, an event type Keygate does not act on): recorded as seen,
    /// nothing else.
    Ignored { event_type: String },
}

/// Why an inbound webhook was refused. The reasons are stable, machine-readable strings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// This adapter's systems send no webhooks Keygate takes.
    #[error("webhooks_not_supported: {0}")]
    NotSupported(String),
    /// The system was connected without a webhook secret: nothing can be verified, so nothing
    /// is accepted.
    #[error("webhook_secret_not_set: {0}")]
    SecretNotSet(String),
    /// The signature is missing or does not match the body under the system's secret.
    #[error("invalid_signature: {0}")]
    InvalidSignature(String),
    /// Signed, but too old (or too far in the future) to be accepted: a replay.
    #[error("stale_webhook: {0}")]
    Stale(String),
    /// Signed, but not a payload the adapter understands.
    #[error("invalid_payload: {0}")]
    InvalidPayload(String),
}

impl WebhookError {
    /// The machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotSupported(_) => "webhooks_not_supported",
            Self::SecretNotSet(_) => "webhook_secret_not_set",
            Self::InvalidSignature(_) => "invalid_signature",
            Self::Stale(_) => "stale_webhook",
            Self::InvalidPayload(_) => "invalid_payload",
        }
    }
}
