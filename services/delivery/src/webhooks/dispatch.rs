//! The webhook dispatcher of the delivery role. One loop, woken by the event doorbell, by a
//! finished attempt, by the next due retry, or by a poll:
//!
//! 1. **Fan-out.** For every enabled webhook with events after its cursor, read a batch of the
//!    log after the cursor (`EventLog::list_events`), and in one transaction insert a delivery
//!    row per matching event and move the cursor (`WebhookStore::fan_out_webhook`, a
//!    compare-and-set on the cursor). A crash before the commit leaves the cursor where it was,
//!    so the rows are inserted next time; after it, the cursor has moved, so they are not
//!    inserted again. Two dispatchers racing on one webhook: the second's compare fails and it
//!    writes nothing (and the (webhook, event) primary key would refuse a duplicate anyway). A
//!    webhook further behind than one batch gets its next batch in the next pass, right after.
//! 2. **Attempts.** Lease due deliveries (`claim_workspace_deliveries`, SKIP LOCKED on
//!    PostgreSQL), POST each, and record the outcome under the lease. A worker that dies
//!    mid-attempt loses its lease and the delivery is attempted again: delivery is at least
//!    once, and receivers drop duplicates by `webhook-id`.
//!
//! Workspaces take turns: the free attempt slots are dealt one at a time to each workspace with
//! due deliveries (`due_delivery_workspaces`), and no workspace holds more than
//! `per_workspace` of them, so one tenant's backlog (or its slow receiver) cannot delay
//! another's deliveries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate_app::tracker::{Committed, Tracker};
use keygate_domain::events::{Event, EventFilter};
use keygate_domain::ids::{EventId, WebhookId, WorkspaceId};
use keygate_domain::model::now;
use keygate_domain::webhook::{ATTEMPT_TIMEOUT, AttemptOutcome, ClaimedDelivery, wants};
use keygate_store::{EventLog, Store, WebhookCursor, WebhookStore};
use reqwest::Url;
use tokio::sync::{Notify, Semaphore, watch};
use tracing::Instrument as _;

use super::ssrf::{self, NetworkPolicy};
use super::{RetryPolicy, human, sign};
use crate::leases;

/// Turns an event into the JSON body of its delivery: `keygate_wire::events::EventJson` (the
/// `Event` message with its cursor), or a stand-in in tests.
pub trait EventRenderer: Send + Sync {
    /// The body; `webhook_id` is the webhook the event is about (`webhook.disabled`).
    fn render(&self, event: &Event, webhook_id: Option<WebhookId>) -> Result<String, String>;
}

impl EventRenderer for keygate_wire::events::EventJson {
    fn render(&self, event: &Event, webhook_id: Option<WebhookId>) -> Result<String, String> {
        keygate_wire::events::EventJson::render(self, event, webhook_id)
    }
}

/// Tuning of the dispatcher.
#[derive(Clone, Debug)]
pub struct DispatcherConfig {
    /// The published schedule, compressed for tests by `KEYGATE_WEBHOOK_RETRY_SCALE`.
    pub retry: RetryPolicy,
    /// What the SSRF guard lets through, checked again before every attempt.
    pub network: NetworkPolicy,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// Attempts of one workspace in flight at once (at most `concurrency`).
    pub per_workspace: usize,
    /// How long a claimed delivery is held; longer than the attempt timeout.
    pub lease: Duration,
    /// How often to look for work when nothing wakes the loop.
    pub poll: Duration,
    /// How long the endpoint has to answer.
    pub timeout: Duration,
    /// Events read per fan-out step.
    pub fan_out_batch: u32,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            network: NetworkPolicy::default(),
            concurrency: 32,
            per_workspace: 8,
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(1),
            timeout: ATTEMPT_TIMEOUT,
            fan_out_batch: 500,
        }
    }
}

/// Webhooks looked at per fan-out pass.
const FAN_OUT_WEBHOOKS: u32 = 256;
/// Workspaces with due deliveries looked at per claim.
const DUE_WORKSPACES: u32 = 256;
/// Longest error text kept on a delivery row (webhooks and Instant Key deliveries).
pub(crate) const MAX_ERROR_CHARS: usize = 500;

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("HTTP {0}")]
    Status(u16),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
    #[error("refused by the SSRF guard: {0}")]
    Refused(#[from] ssrf::SsrfError),
    #[error("stored URL does not parse: {0}")]
    Url(#[from] url::ParseError),
    #[error("the event could not be rendered: {0}")]
    Render(String),
    #[error("cannot sign: {0}")]
    Sign(#[from] sign::SignError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl AttemptError {
    fn status_code(&self) -> Option<u16> {
        match self {
            Self::Status(c) => Some(*c),
            _ => None,
        }
    }
}

struct Inner {
    /// Webhooks, their cursors and deliveries.
    store: Arc<dyn WebhookStore>,
    /// The events a webhook is behind on, read by cursor.
    events: Arc<dyn EventLog>,
    /// Wakes the dispatcher (its doorbell) and announces recorded outcomes.
    tracker: Tracker,
    renderer: Arc<dyn EventRenderer>,
    cfg: DispatcherConfig,
    /// Rung when an attempt finishes: a permit is free again.
    done: Notify,
    /// Attempts in flight per workspace.
    busy: Mutex<HashMap<WorkspaceId, usize>>,
}

/// One attempt's place in its workspace's in-flight count; dropping it frees the place.
struct Busy {
    inner: Arc<Inner>,
    workspace: WorkspaceId,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.inner.busy.lock()
            && let Some(n) = busy.get_mut(&self.workspace)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                busy.remove(&self.workspace);
            }
        }
    }
}

/// How many deliveries each workspace may claim now: `free` slots dealt one at a time to each
/// workspace in turn (in the order of `due`, the longest-waiting first), none getting more than
/// it has due or more than `per_workspace` minus what it has in flight (`busy`).
fn shares(
    due: &[(WorkspaceId, u32)],
    busy: &HashMap<WorkspaceId, usize>,
    per_workspace: usize,
    free: usize,
) -> Vec<(WorkspaceId, u32)> {
    let room: Vec<usize> = due
        .iter()
        .map(|(ws, n)| {
            let left = per_workspace.saturating_sub(busy.get(ws).copied().unwrap_or(0));
            left.min(*n as usize)
        })
        .collect();
    let mut given = vec![0usize; due.len()];
    let mut left = free;
    while left > 0 {
        let mut dealt = false;
        for (g, r) in given.iter_mut().zip(&room) {
            if left == 0 {
                break;
            }
            if *g < *r {
                *g += 1;
                left -= 1;
                dealt = true;
            }
        }
        if !dealt {
            break;
        }
    }
    due.iter()
        .zip(given)
        .filter(|(_, g)| *g > 0)
        .map(|((ws, _), g)| (*ws, u32::try_from(g).unwrap_or(u32::MAX)))
        .collect()
}

/// The dispatcher of one process. Any number may run against one store.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        tracker: Tracker,
        renderer: Arc<dyn EventRenderer>,
        cfg: DispatcherConfig,
    ) -> Self {
        // reqwest is built without a crypto provider: the process uses ring, once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            inner: Arc::new(Inner {
                events: store.clone(),
                store,
                tracker,
                renderer,
                cfg,
                done: Notify::new(),
                busy: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Runs until `stop` turns true. Attempts in flight then keep their leases; if this process
    /// exits before recording them, they are attempted again after the lease.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let inner = self.inner;
        tracing::info!(
            retry_scale = inner.cfg.retry.scale,
            allow_loopback = inner.cfg.network.allow_loopback,
            allow_private_networks = inner.cfg.network.allow_private_networks,
            "webhook dispatcher started"
        );
        let permits = Arc::new(Semaphore::new(inner.cfg.concurrency.max(1)));
        let mut rings = inner.tracker.doorbell().subscribe();
        // Fan-out runs when events were rung or a poll passed, not on every finished attempt.
        let mut rung = true;
        let mut last_fan_out = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            // A pass fans out one batch per webhook; webhooks further behind get the next pass,
            // right after this round's claims (so one webhook's deep log cannot hold up the
            // others' fan-out, nor the attempts).
            let mut behind = false;
            if rung || last_fan_out.elapsed() >= inner.cfg.poll {
                rung = false;
                last_fan_out = Instant::now();
                match inner
                    .fan_out()
                    .instrument(tracing::debug_span!("webhook_fan_out"))
                    .await
                {
                    Ok(more) => behind = more,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook fan-out failed; retrying on the next pass")
                    }
                }
            }
            let free = permits.available_permits();
            if free > 0 {
                inner.claim_in_turns(&permits, free).await;
            }
            if behind {
                rung = true;
                tokio::task::yield_now().await;
                continue;
            }
            let wait = leases::wait(
                &permits,
                inner.store.next_delivery_due(),
                inner.cfg.poll,
                "webhook retry",
            )
            .await;
            tokio::select! {
                _ = rings.recv() => {
                    // One pass serves every ring that arrived meanwhile.
                    while rings.try_recv().is_ok() {}
                    rung = true;
                }
                _ = tokio::time::sleep(wait) => {}
                _ = inner.done.notified() => {}
                changed = stop.changed() => if changed.is_err() { break },
            }
        }
        tracing::info!("webhook dispatcher stopped");
    }
}

impl Inner {
    /// Claims up to `free` due deliveries, the workspaces taking turns (see [`shares`]), and
    /// starts them.
    async fn claim_in_turns(self: &Arc<Self>, permits: &Arc<Semaphore>, free: usize) {
        let due = match self
            .store
            .due_delivery_workspaces(now(), DUE_WORKSPACES)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reading the due webhook deliveries failed");
                return;
            }
        };
        let per_workspace = self.cfg.per_workspace.clamp(1, self.cfg.concurrency.max(1));
        let dealt = match self.busy.lock() {
            Ok(busy) => shares(&due, &busy, per_workspace, free),
            Err(_) => return,
        };
        for (ws, n) in dealt {
            let batch = match self
                .store
                .claim_workspace_deliveries(ws, n, self.cfg.lease, now())
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, workspace_id = %ws, "claiming webhook deliveries failed");
                    continue;
                }
            };
            if let Ok(mut busy) = self.busy.lock() {
                *busy.entry(ws).or_insert(0) += batch.len();
            }
            leases::spawn_each(permits, batch, |d| {
                let inner = self.clone();
                let held = Busy {
                    inner: self.clone(),
                    workspace: d.workspace_id,
                };
                async move {
                    inner.attempt(d).await;
                    drop(held);
                    inner.done.notify_one();
                }
            })
            .await;
        }
    }

    /// Moves every webhook behind its workspace's log by one batch of events, inserting a
    /// delivery row per matching event. Returns whether some webhook is still behind after it
    /// (its batch was full): the caller runs another pass soon.
    async fn fan_out(&self) -> Result<bool, keygate_domain::Error> {
        let batch = self.cfg.fan_out_batch.max(1);
        let mut more = false;
        for c in self.store.webhooks_behind(FAN_OUT_WEBHOOKS).await? {
            let events = self
                .events
                .list_events(c.workspace_id, &EventFilter::default(), c.cursor_seq, batch)
                .await?;
            let Some(last) = events.last() else { continue };
            let to = last.seq;
            let rows = matching(&c, &events);
            if !self.store.fan_out_webhook(&c, to, &rows, now()).await? {
                continue; // Another dispatcher moved it, or it was disabled or deleted.
            }
            tracing::debug!(webhook_id = %c.webhook_id, deliveries = rows.len(), cursor = to, "fanned out");
            if (events.len() as u32) >= batch {
                more = true;
            }
        }
        Ok(more)
    }

    async fn attempt(&self, d: ClaimedDelivery) {
        let span = tracing::info_span!(
            "webhook_attempt",
            workspace_id = %d.workspace_id,
            webhook_id = %d.webhook_id,
            event_id = %d.event_id,
            event_type = %d.event.event_type,
            attempt = d.attempts,
        );
        async {
            let result = self.send(&d).await;
            let outcome = self.outcome(&d, &result);
            keygate_telemetry::metrics::webhook_delivery(match (&result, outcome.retry_at) {
                (Ok(_), _) => "delivered",
                (Err(_), Some(_)) => "retry",
                (Err(_), None) => "failed",
            });
            match &result {
                Ok(code) => tracing::info!(status = code, "webhook delivered"),
                Err(e) if outcome.retry_at.is_some() => {
                    tracing::info!(error = %e, "webhook attempt failed; will retry")
                }
                Err(e) => tracing::warn!(error = %e, "webhook delivery failed for good"),
            }
            match self
                .store
                .record_delivery_attempt(&d, &outcome, now())
                .await
            {
                Ok(Some(events)) => {
                    for e in &events {
                        tracing::warn!(reason = %outcome.disabled_reason, "webhook disabled");
                        self.tracker
                            .committed(
                                Committed::new(e.workspace_id).events(std::slice::from_ref(e)),
                            )
                            .await;
                    }
                }
                Ok(None) => tracing::debug!("lease lost or webhook deleted; outcome dropped"),
                Err(e) => tracing::warn!(error = %e, "recording the attempt failed; it is retried after the lease"),
            }
        }
        .instrument(span)
        .await
    }

    fn outcome(&self, d: &ClaimedDelivery, result: &Result<u16, AttemptError>) -> AttemptOutcome {
        let disable_after = self.cfg.retry.disable_after();
        let disable_after_t =
            time::Duration::try_from(disable_after).unwrap_or(time::Duration::MAX);
        match result {
            Ok(code) => AttemptOutcome {
                succeeded: true,
                status_code: Some(*code),
                error: None,
                retry_at: None,
                disable_after: disable_after_t,
                disabled_reason: String::new(),
            },
            Err(e) => {
                let error: String = e.to_string().chars().take(MAX_ERROR_CHARS).collect();
                AttemptOutcome {
                    succeeded: false,
                    status_code: e.status_code(),
                    retry_at: self
                        .cfg
                        .retry
                        .delay_after(d.attempts)
                        .map(|delay| now() + delay),
                    disable_after: disable_after_t,
                    disabled_reason: format!(
                        "no successful delivery for {}; last error: {error}",
                        human(disable_after)
                    ),
                    error: Some(error),
                }
            }
        }
    }

    /// One POST. `Ok` with the 2xx status; anything else is an error to retry.
    async fn send(&self, d: &ClaimedDelivery) -> Result<u16, AttemptError> {
        let url = Url::parse(&d.url)?;
        // Again at send time: the name may resolve elsewhere than when the webhook was created.
        let dest = tokio::time::timeout(self.cfg.timeout, ssrf::check_url(&url, self.cfg.network))
            .await
            .map_err(|_| AttemptError::Timeout(self.cfg.timeout))??;
        let body = self
            .renderer
            .render(&d.event, d.event_webhook_id)
            .map_err(AttemptError::Render)?;
        let msg_id = d.event_id.to_string();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = sign::signature(&d.secret, &msg_id, timestamp, &body)?;
        let mut builder = reqwest::Client::builder()
            .timeout(self.cfg.timeout)
            .connect_timeout(self.cfg.timeout)
            // A redirect could lead anywhere, past the guard: a 3xx is a failed attempt.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would make its own lookup: connect to the checked address directly.
            .no_proxy()
            .user_agent(concat!("Keygate-Webhooks/", env!("CARGO_PKG_VERSION")));
        if let Some(domain) = &dest.domain {
            // Pin the connection to the address the guard checked.
            builder = builder.resolve(domain, dest.addr);
        }
        let client = builder
            .build()
            .map_err(|e| AttemptError::Client(chain(&e)))?;
        // The receiver can continue the trace of the attempt (W3C `traceparent`).
        let mut trace = reqwest::header::HeaderMap::new();
        keygate_telemetry::propagation::inject(&mut trace);
        let sent = client
            .post(url)
            .headers(trace)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .instrument(tracing::debug_span!("webhook_post", addr = %dest.addr))
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Ok(resp.status().as_u16()),
            Ok(resp) => Err(AttemptError::Status(resp.status().as_u16())),
            Err(e) if e.is_timeout() => Err(AttemptError::Timeout(self.cfg.timeout)),
            Err(e) => Err(AttemptError::Transport(chain(&e))),
        }
    }
}

/// The deliveries a batch of events makes for one webhook.
fn matching(c: &WebhookCursor, events: &[Event]) -> Vec<(i64, EventId)> {
    events
        .iter()
        .filter(|e| wants(&c.event_types, &e.event_type))
        .map(|e| (e.seq, e.id))
        .collect()
}

/// An error and its innermost cause ("connection failed: Connection refused (os error 111)").
pub(crate) fn chain(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut cause = std::error::Error::source(e);
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    match last {
        Some(l) => format!("{what}: {l}"),
        None => format!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use keygate_domain::ids::WorkspaceId;

    use super::*;

    fn event(seq: i64, t: &str) -> Event {
        Event {
            seq,
            workspace_id: WorkspaceId::new(),
            id: EventId::new(),
            event_type: t.into(),
            description: String::new(),
            occurred_at: now(),
            created_at: now(),
            access_grant_id: None,
            access_method_id: None,
            acs_system_id: None,
            acs_entrance_id: None,
            user_identity_id: None,
            instant_key_id: None,
            action_attempt_id: None,
        }
    }

    #[test]
    fn workspaces_take_turns_within_their_caps() {
        let (a, b, c) = (WorkspaceId::new(), WorkspaceId::new(), WorkspaceId::new());
        let none = HashMap::new();
        // A has a deep backlog and waits longest; B and C have a little each.
        let due = [(a, 500), (b, 2), (c, 1)];
        assert_eq!(shares(&due, &none, 8, 6), vec![(a, 3), (b, 2), (c, 1)]);
        assert_eq!(
            shares(&due, &none, 8, 32),
            vec![(a, 8), (b, 2), (c, 1)],
            "A never holds more than its cap, even with slots to spare"
        );
        assert_eq!(shares(&due, &none, 8, 1), vec![(a, 1)]);
        let busy = HashMap::from([(a, 8)]);
        assert_eq!(
            shares(&due, &busy, 8, 32),
            vec![(b, 2), (c, 1)],
            "A is at its cap: B and C still get their turn"
        );
        assert!(shares(&due, &none, 8, 0).is_empty());
    }

    #[test]
    fn only_subscribed_types_make_deliveries() {
        let events = [
            event(1, "access_grant.created"),
            event(2, "access_method.issued"),
            event(3, "webhook.disabled"),
        ];
        let mut c = WebhookCursor {
            workspace_id: WorkspaceId::new(),
            webhook_id: WebhookId::new(),
            cursor_seq: 0,
            event_types: vec![],
        };
        assert_eq!(matching(&c, &events).len(), 3);
        c.event_types = vec!["access_method.issued".into()];
        let rows = matching(&c, &events);
        assert_eq!(rows, vec![(2, events[1].id)]);
    }
}
