//! Kisi's event webhooks, inbound: verified with the system's `webhook_secret` and parsed into
//! [`VendorEvent`]s.
//!
//! What Kisi publishes, and what this follows:
//! - An "Event Webhook" integration (Settings → Integrations) posts each event of a place's
//!   stream as JSON to the integration's URL; when a signature key is set, "it will be used to
//!   calculate an HMAC-SHA256 digest of the JSON in the body of the HTTPs request. The digest
//!   is then sent along with the `X-Signature` header" (docs.kisi.io, "Track unlocks using
//!   webhooks": <https://docs.kisi.io/api/how_to_guides/set_up_webhooks/track_unlocks>, and
//!   "Send Kisi events with customizable webhooks":
//!   <https://docs.kisi.io/how_to_guides/integration_guides/workflow_automation/event_webhooks/>).
//! - The payload of an unlock: `uuid`, `actor_type`, `actor_id`, `actor_name`, `object_type`
//!   (`"Lock"`), `object_id` (the lock id), `object_name`, `organization_id`, `place_id`,
//!   `success`, `type` (`"lock.unlock"`), `error_code`, `error_message`, `created_at` (RFC 3339),
//!   the sample on the "Track unlocks" page.
//! - "Webhook endpoints may sometimes receive the same event multiple times ... log the events
//!   you've processed, and then not process the already logged ones" (the "customizable
//!   webhooks" page): Keygate deduplicates by `uuid`.
//!
//! What Kisi does not publish, and is assumed here:
//! - The digest's encoding: hexadecimal (either case), the whole `X-Signature` value.
//! - The scheme has no signed timestamp header, so replays are bounded by the event's own
//!   `created_at`, which is inside the signed body: an event older than [`MAX_AGE`] (or more
//!   than [`MAX_SKEW`] ahead of Keygate's clock) is refused as stale, and the ids of accepted
//!   events are kept longer than that (docs/providers.md), so a replay is either a duplicate or
//!   stale.
//! - A body holds one event object; an array of them is accepted too.
//! - Role assignment changes arrive as `role_assignment.create`, `role_assignment.update` and
//!   `role_assignment.destroy` (Kisi lists "access being shared to a user" among its audit
//!   events, <https://docs.kisi.io/concepts/events/>, without naming the webhook types).
//! - `actor_type` `"User"` names a Kisi user by `actor_id`.

use std::time::Duration;

use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::WEBHOOK_SECRET;
use crate::provider::{Link, VendorEvent, VendorEventKind, WebhookError, WebhookHeaders};

/// The header carrying the body's HMAC-SHA256 digest.
pub const SIGNATURE_HEADER: &str = "x-signature";
/// The type of a door unlocked by a user.
pub const LOCK_UNLOCK: &str = "lock.unlock";
/// The types that say a role assignment (a user's access to a group's doors) changed.
pub const ACCESS_CHANGES: [&str; 3] = [
    "role_assignment.create",
    "role_assignment.update",
    "role_assignment.destroy",
];
/// The oldest event accepted.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How far ahead of Keygate's clock an event may be.
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// The most events one delivery may carry.
pub const MAX_EVENTS: usize = 100;

/// One event as Kisi posts it (the fields Keygate reads).
#[derive(Debug, Deserialize)]
struct KEvent {
    uuid: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    actor_type: Option<String>,
    #[serde(default)]
    actor_id: Option<Value>,
    #[serde(default)]
    object_type: Option<String>,
    #[serde(default)]
    object_id: Option<Value>,
    #[serde(default)]
    success: Option<bool>,
    created_at: String,
}

/// An id Kisi sends as a number (or a string of one).
fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// The lowercase hex HMAC-SHA256 of `body` under `secret`: what Kisi sends as `X-Signature`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks `X-Signature` against `body` under the secret, in constant time.
fn verify(secret: &str, headers: &WebhookHeaders, body: &[u8]) -> Result<(), WebhookError> {
    let given = headers
        .get(SIGNATURE_HEADER)
        .ok_or_else(|| WebhookError::InvalidSignature("no X-Signature header".into()))?;
    let given = unhex(given)
        .ok_or_else(|| WebhookError::InvalidSignature("X-Signature is not a hex digest".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| WebhookError::SecretNotSet("the webhook secret is unusable".into()))?;
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| WebhookError::InvalidSignature("X-Signature does not match the body".into()))
}

/// Verifies one delivery and parses its events. Refused as a whole: a delivery without the
/// system's secret configured, unsigned or signed otherwise, with an event outside the
/// accepted window, or that does not parse.
pub fn parse(
    link: &Link,
    headers: &WebhookHeaders,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Vec<VendorEvent>, WebhookError> {
    let secret = link
        .credentials
        .get(WEBHOOK_SECRET)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            WebhookError::SecretNotSet(
                "connect the system with the credential `webhook_secret` (the signature key of Kisi's Event Webhook integration)".into(),
            )
        })?;
    verify(secret, headers, body)?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| WebhookError::InvalidPayload(format!("the body is not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => {
            return Err(WebhookError::InvalidPayload(
                "the body is neither an event object nor an array of them".into(),
            ));
        }
    };
    if items.len() > MAX_EVENTS {
        return Err(WebhookError::InvalidPayload(format!(
            "at most {MAX_EVENTS} events per delivery"
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let e: KEvent = serde_json::from_value(item)
            .map_err(|e| WebhookError::InvalidPayload(format!("an event does not parse: {e}")))?;
        let uuid = e.uuid.trim();
        if uuid.is_empty() || uuid.len() > 128 {
            return Err(WebhookError::InvalidPayload(
                "an event's uuid is empty or longer than 128 characters".into(),
            ));
        }
        let at = OffsetDateTime::parse(e.created_at.trim(), &Rfc3339).map_err(|_| {
            WebhookError::InvalidPayload(format!("event {uuid}: created_at is not RFC 3339"))
        })?;
        if at < now - MAX_AGE {
            return Err(WebhookError::Stale(format!(
                "event {uuid} happened at {}, more than {} h ago",
                e.created_at.trim(),
                MAX_AGE.as_secs() / 3600
            )));
        }
        if at > now + MAX_SKEW {
            return Err(WebhookError::Stale(format!(
                "event {uuid} is dated {}, ahead of this server's clock",
                e.created_at.trim()
            )));
        }
        let kind = match e.event_type.as_str() {
            LOCK_UNLOCK if e.success.unwrap_or(true) => {
                let lock = (e.object_type.as_deref().is_none_or(|t| t == "Lock"))
                    .then(|| id_of(e.object_id.as_ref()))
                    .flatten()
                    .ok_or_else(|| {
                        WebhookError::InvalidPayload(format!(
                            "event {uuid}: a lock.unlock without a Lock object_id"
                        ))
                    })?;
                let actor = (e.actor_type.as_deref() == Some("User"))
                    .then(|| id_of(e.actor_id.as_ref()))
                    .flatten();
                VendorEventKind::Unlocked {
                    entrance: lock,
                    actor,
                }
            }
            t if ACCESS_CHANGES.contains(&t) => VendorEventKind::AccessChanged,
            t => VendorEventKind::Ignored {
                event_type: t.chars().take(64).collect(),
            },
        };
        out.push(VendorEvent {
            vendor_event_id: uuid.to_owned(),
            occurred_at: at,
            kind,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Credentials;
    use serde_json::json;
    use std::collections::BTreeMap;

    const SECRET: &str = "kisi-signature-key";

    fn link(secret: Option<&str>) -> Link {
        let mut c = BTreeMap::from([("api_key".to_owned(), "k".to_owned())]);
        if let Some(s) = secret {
            c.insert(WEBHOOK_SECRET.to_owned(), s.to_owned());
        }
        Link {
            credentials: Credentials::new(c),
            ..Link::default()
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-12-05T12:00:00Z", &Rfc3339).expect("time")
    }

    fn unlock(uuid: &str, at: &str) -> Vec<u8> {
        json!({
            "uuid": uuid, "actor_type": "User", "actor_id": 42, "actor_name": "Jane",
            "object_type": "Lock", "object_id": 7, "object_name": "Front Door",
            "organization_id": 1, "place_id": 2, "success": true, "type": "lock.unlock",
            "error_code": null, "error_message": null, "created_at": at,
        })
        .to_string()
        .into_bytes()
    }

    fn signed(body: &[u8], secret: &str) -> WebhookHeaders {
        BTreeMap::from([(SIGNATURE_HEADER.to_owned(), sign(secret, body))])
    }

    #[test]
    fn a_signed_unlock_parses() {
        let body = unlock(
            "d7cf0237-a492-4e5d-b20c-f58fc3ef4eff",
            "2026-12-05T11:59:00Z",
        );
        let got = parse(&link(Some(SECRET)), &signed(&body, SECRET), &body, now()).expect("ok");
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].vendor_event_id,
            "d7cf0237-a492-4e5d-b20c-f58fc3ef4eff"
        );
        assert_eq!(
            got[0].kind,
            VendorEventKind::Unlocked {
                entrance: "7".into(),
                actor: Some("42".into())
            }
        );
        // Upper-case hex is the same digest.
        let upper = BTreeMap::from([(
            SIGNATURE_HEADER.to_owned(),
            sign(SECRET, &body).to_uppercase(),
        )]);
        assert!(parse(&link(Some(SECRET)), &upper, &body, now()).is_ok());
    }

    #[test]
    fn bad_signatures_are_refused() {
        let body = unlock("u1", "2026-12-05T11:59:00Z");
        let l = link(Some(SECRET));
        let reason =
            |h: &WebhookHeaders, b: &[u8]| parse(&l, h, b, now()).expect_err("refused").reason();
        assert_eq!(reason(&BTreeMap::new(), &body), "invalid_signature");
        assert_eq!(
            reason(&signed(&body, "another key"), &body),
            "invalid_signature"
        );
        let bad_hex = BTreeMap::from([(SIGNATURE_HEADER.to_owned(), "zz".to_owned())]);
        assert_eq!(reason(&bad_hex, &body), "invalid_signature");
        // The body changed after signing.
        let other = unlock("u2", "2026-12-05T11:59:00Z");
        assert_eq!(reason(&signed(&body, SECRET), &other), "invalid_signature");
        // No secret at connect: nothing is accepted, even a "signature" over the empty key.
        let e = parse(&link(None), &signed(&body, ""), &body, now()).expect_err("no secret");
        assert_eq!(e.reason(), "webhook_secret_not_set");
    }

    #[test]
    fn stale_and_future_events_are_refused() {
        let l = link(Some(SECRET));
        for at in ["2026-12-04T11:00:00Z", "2026-12-05T12:10:00Z"] {
            let body = unlock("u1", at);
            let e = parse(&l, &signed(&body, SECRET), &body, now()).expect_err(at);
            assert_eq!(e.reason(), "stale_webhook", "{at}");
        }
    }

    #[test]
    fn kinds_and_malformed_payloads() {
        let l = link(Some(SECRET));
        let body = json!([
            {"uuid": "a", "type": "role_assignment.create", "object_type": "RoleAssignment", "object_id": 9, "created_at": "2026-12-05T11:00:00Z"},
            {"uuid": "b", "type": "lock.unlock", "success": false, "object_type": "Lock", "object_id": 7, "created_at": "2026-12-05T11:00:00Z"},
            {"uuid": "c", "type": "lock.unlock", "actor_type": "Login", "actor_id": 5, "object_type": "Lock", "object_id": "7", "created_at": "2026-12-05T11:00:00Z"},
        ])
        .to_string()
        .into_bytes();
        let got = parse(&l, &signed(&body, SECRET), &body, now()).expect("ok");
        assert_eq!(got[0].kind, VendorEventKind::AccessChanged);
        assert_eq!(
            got[1].kind,
            VendorEventKind::Ignored {
                event_type: "lock.unlock".into()
            }
        );
        assert_eq!(
            got[2].kind,
            VendorEventKind::Unlocked {
                entrance: "7".into(),
                actor: None
            }
        );
        for bad in [
            b"not json".to_vec(),
            b"42".to_vec(),
            json!({"type": "lock.unlock", "created_at": "2026-12-05T11:00:00Z"})
                .to_string()
                .into_bytes(),
            json!({"uuid": "x", "type": "lock.unlock", "created_at": "yesterday"})
                .to_string()
                .into_bytes(),
            json!({"uuid": "x", "type": "lock.unlock", "created_at": "2026-12-05T11:00:00Z"})
                .to_string()
                .into_bytes(),
        ] {
            let e = parse(&l, &signed(&bad, SECRET), &bad, now()).expect_err("malformed");
            assert_eq!(e.reason(), "invalid_payload");
        }
    }
}
