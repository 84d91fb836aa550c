//! Inbound vendor webhooks: an access system's own events, posted by its vendor to
//! `/hooks/{acs_system_id}` on the HTTP port. The request names only the system, so it is found
//! by id in whatever workspace holds it; its adapter verifies the delivery with the secret given
//! at connect (nothing unverified gets further, and no vendor is called before the signature
//! holds). Each vendor event is recorded once (by the vendor's id, per system: vendors deliver
//! at least once), in one transaction with what it causes:
//! - an unlock by a person whose credential Keygate issued: `access_method.used`, attributed to
//!   the access method (and so its grant and person) that holds the door on the system;
//! - a change of access on the system (a role assignment made or deleted): the system's queued
//!   provisions and revocations that are waiting for a retry (their answer was lost or
//!   ambiguous) are made due now, and the orchestrator is woken. The retry is the read-back
//!   that would have run anyway (every call is idempotent by Keygate's reference), still under
//!   the job's fencing token and the system's rate limit (a provision still waits while the
//!   system's circuit breaker is open): the webhook moves the confirmation earlier and adds no
//!   provider call to any decision.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use keygate_domain::applied;
use keygate_domain::events::Event;
use keygate_domain::grant::{AccessMethod, DoorState};
use keygate_domain::ids::{AccessMethodId, AccessSystemId, EntranceId, WorkspaceId};
use keygate_domain::model::{AccessSystem, now};
use keygate_providers::{
    AccessSystemProvider, ProviderError, VendorEvent, VendorEventKind, WebhookError, WebhookHeaders,
};
use keygate_store::VendorEventRecord;

use crate::App;
use crate::tracker::Committed;

/// How long the ids of received vendor events are kept: longer than any adapter accepts an
/// event (Kisi: 24 h), so a replayed delivery is either a duplicate or refused as stale.
pub const SEEN_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The largest body a vendor webhook may have (the HTTP adapter enforces it before reading).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// One delivery, as the HTTP adapter read it.
#[derive(Clone, Debug)]
pub struct InboundWebhook {
    pub acs_system_id: AccessSystemId,
    /// Header names lowercased.
    pub headers: WebhookHeaders,
    pub body: Vec<u8>,
}

/// What a delivery did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// Vendor events in the delivery.
    pub received: usize,
    /// Of those, ones the system had delivered before (nothing written for them).
    pub duplicates: usize,
    /// Keygate events appended.
    pub events: Vec<Event>,
    /// Queued retries made due now.
    pub retries_hastened: u64,
}

/// Why a delivery was refused. `reason()` is the machine-readable string the HTTP adapter
/// answers with.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// No such access system, a disconnected one, or one whose type has no adapter here:
    /// `404`, whichever it is (a probe learns nothing).
    #[error("access_system_not_found: no connected access system {0} takes webhooks here")]
    NotFound(AccessSystemId),
    /// The adapter refused the delivery (unsupported, no secret configured, bad signature,
    /// stale, malformed).
    #[error(transparent)]
    Refused(#[from] WebhookError),
    /// Something this delivery needs could not be reached (the vendor, to attribute an
    /// unlock; the credentials): nothing of it that was not recorded is lost, the vendor's
    /// retry is processed.
    #[error("provider_unreachable: {0}")]
    Unavailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] keygate_domain::Error),
}

impl HookError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "access_system_not_found",
            Self::Refused(e) => e.reason(),
            Self::Unavailable(_) => "provider_unreachable",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// The access method an unlock is attributed to, among the actor's on the system: one that
/// holds `entrance` of `system`, preferring one whose door is granted, then a mobile key (what
/// a person unlocks with in the vendor's app), then the oldest.
pub fn attribute(
    methods: &[AccessMethod],
    system: AccessSystemId,
    entrance: EntranceId,
) -> Option<&AccessMethod> {
    methods
        .iter()
        .filter_map(|m| {
            let door = m
                .doors
                .iter()
                .find(|d| d.acs_system_id == system && d.entrance_id == entrance)?;
            Some((m, door.state))
        })
        .min_by_key(|(m, state)| {
            (
                *state != DoorState::Granted,
                m.mode != keygate_domain::capability::AccessMethodMode::MobileKey,
                m.id.to_string(),
            )
        })
        .map(|(m, _)| m)
}

impl App {
    /// Receives one vendor webhook delivery (see the module docs). Unknown, disconnected or
    /// adapter-less systems are `NotFound`; a delivery the adapter refuses writes nothing.
    #[tracing::instrument(name = "vendor_webhook", skip_all, fields(acs_system_id = %hook.acs_system_id, workspace_id, received, duplicates, recorded))]
    pub async fn receive_vendor_webhook(&self, hook: InboundWebhook) -> Result<Receipt, HookError> {
        let id = hook.acs_system_id;
        let ws = self
            .store
            .access_system_workspace(id)
            .await?
            .ok_or(HookError::NotFound(id))?;
        tracing::Span::current().record("workspace_id", ws.to_string());
        let system = match self.store.get_access_system(ws, id).await {
            Ok(s) if s.health.disconnected_at.is_none() => s,
            Ok(_) | Err(keygate_domain::Error::NotFound { .. }) => {
                return Err(HookError::NotFound(id));
            }
            Err(e) => return Err(e.into()),
        };
        let adapter = self
            .providers
            .get(&system.system_type)
            .cloned()
            .ok_or(HookError::NotFound(id))?;
        let link = self.directory().link(&system).await.map_err(|e| match e {
            ProviderError::Permanent(m)
                if m.starts_with(keygate_providers::registry::ACCOUNT_DISCONNECTED) =>
            {
                HookError::NotFound(id)
            }
            e => HookError::Unavailable(format!("the system's credentials: {e}")),
        })?;
        let at = now();
        let vendor_events = adapter.parse_webhook(&link, &hook.headers, &hook.body, at)?;
        let mut receipt = Receipt {
            received: vendor_events.len(),
            ..Receipt::default()
        };
        let ids: Vec<String> = vendor_events
            .iter()
            .map(|e| e.vendor_event_id.clone())
            .collect();
        let mut seen: HashSet<String> = self
            .store
            .seen_vendor_events(ws, id, &ids)
            .await?
            .into_iter()
            .collect();
        let by_external: HashMap<&str, EntranceId> = link
            .entrances
            .iter()
            .map(|(e, ext)| (ext.as_str(), *e))
            .collect();
        let mut actors: BTreeMap<String, Vec<AccessMethod>> = BTreeMap::new();
        let mut outcome = Ok(());
        for e in &vendor_events {
            // Seen before, or twice in this delivery.
            if !seen.insert(e.vendor_event_id.clone()) {
                receipt.duplicates += 1;
                continue;
            }
            let recorded = match self
                .consequences(ws, &system, &*adapter, &by_external, &mut actors, e)
                .await
            {
                Ok(record) => self
                    .store
                    .record_vendor_event(ws, id, &record, now())
                    .await
                    .map_err(HookError::from),
                Err(e) => Err(e),
            };
            match recorded {
                Ok(Some(r)) => {
                    receipt.retries_hastened += r.retries_hastened;
                    receipt.events.extend(r.events);
                }
                Ok(None) => receipt.duplicates += 1,
                Err(e) => {
                    // What was recorded stays (and is announced); the vendor's retry of the
                    // delivery finds those events seen and goes on from here.
                    outcome = Err(e);
                    break;
                }
            }
        }
        let mut committed = Committed::new(ws).events(&receipt.events);
        if receipt.retries_hastened > 0 {
            committed = committed.jobs();
        }
        self.tracker.committed(committed).await;
        outcome?;
        let span = tracing::Span::current();
        span.record("received", receipt.received);
        span.record("duplicates", receipt.duplicates);
        span.record("recorded", receipt.events.len());
        Ok(receipt)
    }

    /// What one new vendor event writes.
    async fn consequences(
        &self,
        ws: WorkspaceId,
        system: &AccessSystem,
        adapter: &dyn AccessSystemProvider,
        by_external: &HashMap<&str, EntranceId>,
        actors: &mut BTreeMap<String, Vec<AccessMethod>>,
        e: &VendorEvent,
    ) -> Result<VendorEventRecord, HookError> {
        let mut record = VendorEventRecord {
            vendor_event_id: e.vendor_event_id.clone(),
            events: Vec::new(),
            hasten_retries: false,
            forget_before: now() - SEEN_RETENTION,
        };
        match &e.kind {
            VendorEventKind::Unlocked { entrance, actor } => {
                let Some(entrance_id) = by_external.get(entrance.as_str()).copied() else {
                    tracing::info!(lock = %entrance, "an unlock of a door Keygate does not know; recorded as seen");
                    return Ok(record);
                };
                let Some(actor) = actor else {
                    return Ok(record);
                };
                if !actors.contains_key(actor) {
                    let methods = self.actor_methods(ws, system, adapter, actor).await?;
                    actors.insert(actor.clone(), methods);
                }
                let methods = actors.get(actor).map(Vec::as_slice).unwrap_or_default();
                match attribute(methods, system.id, entrance_id) {
                    Some(m) => record.events.push(applied::access_method_used(
                        m,
                        system.id,
                        entrance_id,
                        e.occurred_at,
                    )),
                    None => tracing::info!(
                        "an unlock by someone who holds no Keygate access method to the door; recorded as seen"
                    ),
                }
            }
            VendorEventKind::AccessChanged => record.hasten_retries = true,
            VendorEventKind::Ignored { event_type } => {
                tracing::debug!(%event_type, "a vendor event Keygate does not act on");
            }
        }
        Ok(record)
    }

    /// The workspace's access methods the adapter says the system's `actor` holds.
    async fn actor_methods(
        &self,
        ws: WorkspaceId,
        system: &AccessSystem,
        adapter: &dyn AccessSystemProvider,
        actor: &str,
    ) -> Result<Vec<AccessMethod>, HookError> {
        let ids: Vec<AccessMethodId> = adapter
            .webhook_actor_methods(system, actor)
            .await
            .map_err(|e| HookError::Unavailable(format!("who unlocked: {e}")))?;
        let mut out = Vec::new();
        for mid in ids {
            match self.store.get_access_method(ws, mid).await {
                Ok(m) => out.push(m),
                // Another workspace's, or deleted: not this workspace's to attribute.
                Err(keygate_domain::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}
