//! Webhooks: endpoints a workspace's events are POSTed to, and the published retry schedule.
//! The transport (signing, the SSRF guard, HTTP) lives in `keygate-delivery`; this is the model.

use std::time::Duration;

use time::OffsetDateTime;

use crate::ids::{EventId, WebhookId, WorkspaceId};
use crate::{Error, FieldViolation, events};

/// A webhook as stored, without its signing secret (which only `CreateWebhook` returns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub id: WebhookId,
    pub workspace_id: WorkspaceId,
    pub url: String,
    /// Dotted event types; empty means every type, including types added later.
    pub event_types: Vec<String>,
    pub is_enabled: bool,
    /// Why it was disabled; `None` while enabled.
    pub disabled_reason: Option<String>,
    pub created_at: OffsetDateTime,
    /// When the last delivery attempt was made, successful or not.
    pub last_delivery_at: Option<OffsetDateTime>,
    pub last_success_at: Option<OffsetDateTime>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
}

impl Webhook {
    /// Whether events of `event_type` are sent to this webhook.
    pub fn wants(&self, event_type: &str) -> bool {
        wants(&self.event_types, event_type)
    }
}

/// Whether a webhook subscribed to `types` (empty = all) wants `event_type`.
pub fn wants(types: &[String], event_type: &str) -> bool {
    types.is_empty() || types.iter().any(|t| t == event_type)
}

/// What `CreateWebhook` stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhook {
    pub id: WebhookId,
    pub url: String,
    pub event_types: Vec<String>,
    /// `whsec_` + base64 of 32 random bytes. Stored as is: it is needed to sign every delivery.
    pub secret: String,
    pub created_at: OffsetDateTime,
    /// Most webhooks its workspace may have, this one included; 0: no cap. The store checks it
    /// in the create transaction, so concurrent creates cannot pass it together.
    pub workspace_cap: u32,
}

/// The published retry schedule (`webhooks.proto`): the delay before each attempt, measured
/// from the failure of the one before. Attempt 1 is immediate; after attempt 8 fails the
/// delivery is failed for good. About 27.6 hours in all.
pub const RETRY_SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// A webhook whose deliveries have all failed for this long (since the first failure after its
/// last success) is disabled.
pub const DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);

/// How long the endpoint has to answer an attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest accepted URL, in characters.
pub const MAX_URL_CHARS: usize = 2000;

/// The base delay before the next attempt after `attempts_made` attempts failed (no jitter,
/// no scaling), or `None` when the schedule is exhausted.
pub fn base_delay_after(attempts_made: u32) -> Option<Duration> {
    RETRY_SCHEDULE.get(attempts_made as usize).copied()
}

/// Checks `event_types` of a create: every entry a known type, duplicates dropped, order kept.
pub fn event_types(raw: &[String]) -> Result<Vec<String>, Error> {
    let mut violations = Vec::new();
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, t) in raw.iter().enumerate() {
        if events::by_name(t).is_none() {
            violations.push(FieldViolation::new(
                format!("event_types[{i}]"),
                format!(
                    "unknown event type {:?}",
                    t.chars().take(100).collect::<String>()
                ),
            ));
        } else if !out.contains(t) {
            out.push(t.clone());
        }
    }
    if violations.is_empty() {
        Ok(out)
    } else {
        Err(Error::InvalidArgument { violations })
    }
}

/// A delivery whose lease this worker holds: everything needed to make one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub workspace_id: WorkspaceId,
    pub webhook_id: WebhookId,
    pub event_seq: i64,
    pub event_id: EventId,
    /// The lease of this claim; recording the outcome checks it (fencing).
    pub lease_token: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub url: String,
    pub secret: String,
    /// The event, as the log has it.
    pub event: events::Event,
    /// The webhook an event is about (`webhook.disabled`).
    pub event_webhook_id: Option<WebhookId>,
}

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// 2xx within the timeout.
    pub succeeded: bool,
    /// The HTTP status, when the endpoint answered.
    pub status_code: Option<u16>,
    /// What went wrong (`HTTP 500`, `timed out after 15s`, `connection refused`, ...).
    pub error: Option<String>,
    /// When to try again; `None` when this was the last attempt of the schedule.
    pub retry_at: Option<OffsetDateTime>,
    /// Disable the webhook when it has had no success for this long.
    pub disable_after: time::Duration,
    /// The `disabled_reason` to set if this attempt disables it.
    pub disabled_reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_the_published_one() {
        let total: Duration = RETRY_SCHEDULE.iter().sum();
        // "about 27 hours in all", and at least 24 hours after the event.
        assert!(total >= Duration::from_secs(24 * 3600));
        assert_eq!(total, Duration::from_secs(27 * 3600 + 35 * 60 + 5));
        assert_eq!(base_delay_after(0), Some(Duration::ZERO));
        assert_eq!(base_delay_after(1), Some(Duration::from_secs(5)));
        assert_eq!(base_delay_after(7), Some(Duration::from_secs(36_000)));
        assert_eq!(base_delay_after(8), None);
    }

    #[test]
    fn event_types_are_checked_and_deduplicated() {
        let ok = event_types(&[
            "access_grant.created".into(),
            "webhook.disabled".into(),
            "access_grant.created".into(),
        ])
        .expect("valid");
        assert_eq!(ok, vec!["access_grant.created", "webhook.disabled"]);
        let Err(Error::InvalidArgument { violations }) =
            event_types(&["access_grant.created".into(), "nope.nope".into()])
        else {
            panic!("unknown type accepted");
        };
        assert_eq!(violations[0].field, "event_types[1]");
        assert!(wants(&[], "anything"));
        assert!(!wants(&["a.b".into()], "c.d"));
    }
}
