//! The Instant Key sender of the delivery role, built like the webhook dispatcher: one loop,
//! woken when `DeliverInstantKey` queues a delivery in this process, by a finished attempt, by
//! the next due retry, or by a poll (a delivery queued by a gateway in another process).
//!
//! It leases due deliveries (`claim_key_deliveries`, SKIP LOCKED on PostgreSQL, only of the
//! channels it can send), composes the message from the key at send time (the link is derived
//! from the key id, never stored), sends it, and records the outcome under the lease: sent,
//! a retry after a backoff with full jitter, or failed for good. A sender that dies mid-attempt
//! loses its lease and the delivery is attempted again: delivery is at least once.

use std::sync::Arc;
use std::time::Duration;

use keygate_app::tracker::{Committed, Tracker};
use keygate_domain::Error;
use keygate_domain::delivery::{Channel, DeliveryClaim, Outcome, SentVia};
use keygate_domain::ids::{InstantKeyId, WorkspaceId};
use keygate_domain::instant_key::{Inactive, Links};
use keygate_domain::model::now;
use keygate_store::Store;
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore, watch};
use tracing::Instrument as _;

use super::email::Smtp;
use super::message::{self, Content};
use super::sms::SmsApi;
use super::{Availability, Backoff, ConfigError, NotifyConfig, Route, SendError, redact};
use crate::instant_keys::page;
use crate::leases;
use crate::webhooks::dispatch::MAX_ERROR_CHARS;
use keygate_app::doors;

/// Tuning of the sender.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    pub retry: Backoff,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// How long a claimed delivery is held; longer than any attempt can take.
    pub lease: Duration,
    /// How often to look for work when nothing wakes the loop.
    pub poll: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            retry: Backoff::default(),
            concurrency: 16,
            lease: Duration::from_secs(120),
            poll: Duration::from_secs(1),
        }
    }
}

/// How one channel is sent from this process.
enum Transport {
    Sms(SmsApi),
    Email(Smtp),
    /// Nothing is sent: the delivery is marked sent to the outbox.
    Outbox,
}

struct Inner {
    store: Arc<dyn Store>,
    /// Announces recorded outcomes (their events ring the doorbell).
    tracker: Tracker,
    links: Links,
    sms: Option<Transport>,
    email: Option<Transport>,
    cfg: SenderConfig,
    wake: Arc<Notify>,
    /// Rung when an attempt finishes: a permit is free again.
    done: Notify,
}

/// The sender of one process. Any number may run against one store.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Inner>,
}

impl Sender {
    /// A sender for the channels `availability` offers, with the clients `config` describes.
    pub fn new(
        store: Arc<dyn Store>,
        tracker: Tracker,
        links: Links,
        config: &NotifyConfig,
        availability: &Availability,
        cfg: SenderConfig,
    ) -> Result<Self, ConfigError> {
        let sms = match (availability.sms, &config.sms) {
            (Route::Outbox, _) => Some(Transport::Outbox),
            (Route::Provider, Some(c)) => Some(Transport::Sms(SmsApi::new(c.clone())?)),
            _ => None,
        };
        let email = match (availability.email, &config.email) {
            (Route::Outbox, _) => Some(Transport::Outbox),
            (Route::Provider, Some(c)) => Some(Transport::Email(Smtp::new(c.clone())?)),
            _ => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                tracker,
                links,
                sms,
                email,
                cfg,
                wake: availability.wake.clone(),
                done: Notify::new(),
            }),
        })
    }

    /// Runs until `stop` turns true. Attempts in flight then keep their leases; if this process
    /// exits before recording them, they are attempted again after the lease.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let inner = self.inner;
        let (sms, email) = (inner.sms.is_some(), inner.email.is_some());
        tracing::info!(
            sms = route_name(&inner.sms),
            email = route_name(&inner.email),
            retry_scale = inner.cfg.retry.scale,
            "Instant Key sender started"
        );
        if !(sms || email) {
            return;
        }
        let permits = Arc::new(Semaphore::new(inner.cfg.concurrency.max(1)));
        loop {
            if *stop.borrow() {
                break;
            }
            let free = permits.available_permits();
            if free > 0 {
                match inner
                    .store
                    .claim_key_deliveries(
                        sms,
                        email,
                        u32::try_from(free).unwrap_or(u32::MAX),
                        inner.cfg.lease,
                        now(),
                    )
                    .await
                {
                    Ok(batch) => {
                        leases::spawn_each(&permits, batch, |c| {
                            let inner = inner.clone();
                            async move {
                                inner.attempt(c).await;
                                inner.done.notify_one();
                            }
                        })
                        .await;
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming Instant Key deliveries failed"),
                }
            }
            let wait = leases::wait(
                &permits,
                inner.store.next_key_delivery_due(sms, email),
                inner.cfg.poll,
                "delivery retry",
            )
            .await;
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = inner.done.notified() => {}
                changed = stop.changed() => if changed.is_err() { break },
            }
        }
        tracing::info!("Instant Key sender stopped");
    }
}

fn route_name(t: &Option<Transport>) -> &'static str {
    match t {
        None => "off",
        Some(Transport::Sms(_)) => "sms_api",
        Some(Transport::Email(_)) => "smtp",
        Some(Transport::Outbox) => "outbox",
    }
}

impl Inner {
    fn transport(&self, channel: Channel) -> Option<&Transport> {
        match channel {
            Channel::Sms => self.sms.as_ref(),
            Channel::Email => self.email.as_ref(),
        }
    }

    async fn attempt(&self, c: DeliveryClaim) {
        let masked = c.channel.mask(&c.to);
        let span = tracing::info_span!(
            "instant_key_delivery",
            workspace_id = %c.workspace_id,
            delivery_id = %c.delivery_id,
            instant_key_id = %c.instant_key_id,
            channel = c.channel.as_str(),
            to = %masked,
            attempt = c.attempts,
        );
        if let Some(parent) = &c.trace_context {
            keygate_telemetry::propagation::set_parent_from_traceparent(&span, parent);
        }
        async {
            let result = if c.attempts > self.cfg.retry.max_attempts {
                // Leases that ran out (a sender died mid-attempt) used up the budget.
                Err(SendError::Permanent(format!(
                    "gave up after {} attempts",
                    self.cfg.retry.max_attempts
                )))
            } else {
                self.deliver(&c).await
            };
            let outcome = self.outcome(&c, result);
            match &outcome {
                Outcome::Sent(via) => tracing::info!(via = via.as_str(), "Instant Key link sent"),
                Outcome::Retry { error, .. } => tracing::info!(
                    error = %redact(error, &c.to, &masked),
                    "Instant Key delivery attempt failed; will retry"
                ),
                Outcome::Failed { error } => tracing::warn!(
                    error = %redact(error, &c.to, &masked),
                    "Instant Key delivery failed for good"
                ),
            }
            match self.store.record_key_delivery(&c, &outcome, now()).await {
                Ok(Some(events)) => {
                    for e in &events {
                        self.tracker
                            .committed(
                                Committed::new(e.workspace_id).events(std::slice::from_ref(e)),
                            )
                            .await;
                    }
                }
                Ok(None) => tracing::debug!("lease lost; outcome dropped"),
                Err(e) => tracing::warn!(
                    error = %e,
                    "recording the delivery attempt failed; it is retried after the lease"
                ),
            }
        }
        .instrument(span)
        .await
    }

    fn outcome(&self, c: &DeliveryClaim, result: Result<SentVia, SendError>) -> Outcome {
        let clip = |s: String| -> String { s.chars().take(MAX_ERROR_CHARS).collect() };
        match result {
            Ok(via) => Outcome::Sent(via),
            Err(SendError::Permanent(e)) => Outcome::Failed { error: clip(e) },
            Err(SendError::Transient(e)) => match self.cfg.retry.delay_after(c.attempts) {
                Some(d) => Outcome::Retry {
                    at: now() + d,
                    error: clip(e),
                },
                None => Outcome::Failed {
                    error: clip(format!("{e} (gave up after {} attempts)", c.attempts)),
                },
            },
        }
    }

    /// One attempt: the message composed now, then handed to the channel's provider.
    async fn deliver(&self, c: &DeliveryClaim) -> Result<SentVia, SendError> {
        let transport = self.transport(c.channel).ok_or_else(|| {
            SendError::Transient(format!(
                "this sender cannot send {} (claimed by mistake)",
                c.channel.as_str()
            ))
        })?;
        let content = compose(
            &*self.store,
            &self.links,
            c.workspace_id,
            c.instant_key_id,
            now(),
        )
        .await?;
        match transport {
            Transport::Outbox => Ok(SentVia::Outbox),
            Transport::Sms(api) => api
                .send(&c.to, &message::sms(&content))
                .await
                .map(|()| SentVia::SmsApi),
            Transport::Email(smtp) => smtp
                .send(&c.to, &message::email(&content))
                .await
                .map(|()| SentVia::Smtp),
        }
    }
}

/// What the message about key `key` says at `at`: its link, its workspace's name, its person and
/// the window it works in. A key that was revoked or expired meanwhile is not sent (permanent);
/// store trouble is transient.
pub async fn compose(
    store: &dyn Store,
    links: &Links,
    ws: WorkspaceId,
    key: InstantKeyId,
    at: OffsetDateTime,
) -> Result<Content, SendError> {
    let transient = |e: Error| SendError::Transient(format!("reading the key failed: {e}"));
    let k = match store.get_instant_key(ws, key).await {
        Ok(k) => k,
        Err(Error::NotFound { .. }) => {
            return Err(SendError::Permanent(
                "the Instant Key no longer exists".into(),
            ));
        }
        Err(e) => return Err(transient(e)),
    };
    match k.check(at, true) {
        Err(Inactive::Revoked) => {
            return Err(SendError::Permanent(
                "the Instant Key was revoked before its link was sent".into(),
            ));
        }
        Err(Inactive::Expired) => {
            return Err(SendError::Permanent(
                "the Instant Key expired before its link was sent".into(),
            ));
        }
        _ => {}
    }
    let link = links.url(k.id).map_err(transient)?;
    let workspace = store.get_workspace(ws).await.map_err(transient)?;
    let person = match store.get_user_identity(ws, k.user_identity_id).await {
        Ok(u) => u.full_name,
        Err(Error::NotFound { .. }) => String::new(),
        Err(e) => return Err(transient(e)),
    };
    let doors = doors::doors(store, ws, k.user_identity_id, k.access_grant_id)
        .await
        .map_err(transient)?;
    let zone = doors
        .first()
        .map(|d| d.system.time_zone.as_str())
        .unwrap_or("UTC");
    let starts = doors.iter().map(|d| d.starts_at).min();
    let window = match (starts.filter(|s| *s > at), k.expires_at) {
        (Some(s), Some(e)) => format!(
            "from {} until {}",
            page::local_time(s, zone),
            page::local_time(e, zone)
        ),
        (None, Some(e)) => format!("until {}", page::local_time(e, zone)),
        (Some(s), None) => format!("from {}", page::local_time(s, zone)),
        (None, None) => String::new(),
    };
    Ok(Content {
        sender: message::sender_name(&workspace.name),
        person,
        link,
        window,
    })
}
