//! Keygate's application layer: every use case, called by every surface.
//!
//! A use case takes the caller's workspace and a typed command (parsed once, by the adapter,
//! into the types of this crate and `keygate-domain`), runs the rules, writes through the store
//! in one transaction, hands the commit to the [`tracker::Tracker`], and returns domain types
//! or the one domain [`keygate_domain::Error`]. gRPC (`services/gateway`), and later the
//! HTTP/JSON API and the console, are adapters over it: they parse, call and reply.
//!
//! This crate depends on no transport: no tonic, axum or hyper in its tree.

pub mod acs_users;
pub mod auth;
pub mod connections;
pub mod doors;
pub mod event_tail;
pub mod events;
pub mod grants;
pub mod idempotency;
pub mod identities;
pub mod instant_keys;
pub mod methods;
pub mod overload;
pub mod reads;
pub mod sessions;
pub mod simulated;
pub mod ssrf;
pub mod systems;
pub mod throttle;
pub mod tokens;
pub mod tracker;
pub mod unlock;
pub mod vendor_hooks;
pub mod webhooks;
pub mod workspaces;

use std::sync::Arc;

use keygate_domain::Error;
use keygate_domain::instant_key::Links;
use keygate_domain::page::{PageRequest, page_size};
use keygate_store::Store;

use crate::ssrf::NetworkPolicy;
use crate::tokens::{PageScope, PageTokens};
use crate::tracker::Tracker;

/// Everything a use case needs from the process: the store of record, the tracker (with the
/// cached reads it evicts, `tracker.reads()`), Instant Key links, page token sealing, the
/// Instant Key channels and the webhook network policy.
#[derive(Clone)]
pub struct App {
    pub store: Arc<dyn Store>,
    pub tracker: Tracker,
    /// Instant Key links (from the public URL of the HTTP port and the server secret).
    pub links: Links,
    /// Page token sealing; its key (shared by every replica, kept in the store) is set once
    /// the store answers.
    pub tokens: PageTokens,
    /// Which channels `DeliverInstantKey` accepts (a sender, the outbox, or neither).
    pub instant_key_delivery: instant_keys::Availability,
    /// What the SSRF guard lets through besides public addresses, at `CreateWebhook` (the
    /// webhook dispatcher checks again at send time with the same policy).
    pub webhook_network: NetworkPolicy,
    /// How long a remote unlock may wait to be sent, from the request: past it, it is never
    /// sent (`unlock::DEFAULT_DEADLINE` unless configured).
    pub unlock_deadline: std::time::Duration,
    /// Per-workspace caps of the use cases.
    pub limits: Limits,
    /// The adapter of each access system type: connecting a system discovers it through here
    /// (the orchestrator holds the same registry for its calls).
    pub providers: keygate_providers::Registry,
    /// The keys that seal connected systems' credentials (none unless configured).
    pub credentials: connections::CredentialSeal,
    /// The vendor simulators this process runs, which sandbox workspaces may connect (none
    /// unless the binary starts some).
    pub simulators: simulated::SimulatedVendors,
}

/// Per-workspace caps the use cases enforce (docs/limits.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Webhooks one workspace may have; 0: no cap.
    pub webhooks_per_workspace: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            webhooks_per_workspace: 20,
        }
    }
}

impl App {
    /// An application over `store` with the default settings (unlock deadline, limits, no
    /// Instant Key channels, the default webhook network policy); set the public fields to
    /// change them.
    pub fn new(
        store: Arc<dyn Store>,
        tracker: Tracker,
        links: Links,
        tokens: PageTokens,
        providers: keygate_providers::Registry,
    ) -> Self {
        Self {
            store,
            tracker,
            links,
            tokens,
            instant_key_delivery: Default::default(),
            webhook_network: Default::default(),
            unlock_deadline: unlock::DEFAULT_DEADLINE,
            limits: Limits::default(),
            providers,
            credentials: Default::default(),
            simulators: Default::default(),
        }
    }

    /// Validates `page_size` and opens `page_token` for this scope.
    pub fn page_request(
        &self,
        scope: &PageScope<'_>,
        size: i32,
        token: &str,
    ) -> Result<PageRequest, Error> {
        Ok(PageRequest {
            limit: page_size(size)?,
            after: self.tokens.open(scope, token)?,
        })
    }
}
