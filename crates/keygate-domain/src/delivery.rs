//! Deliveries of Instant Key links by SMS or email (`InstantKeyService.DeliverInstantKey`): the
//! model the store keeps and the delivery role's sender works through. What is kept is the
//! recipient, the status and the attempts; never the link or the message (the sender derives both
//! from the key id when it sends, and `keygate deliveries list` when it prints).

use time::OffsetDateTime;

use crate::FieldViolation;
use crate::ids::{DeliveryId, InstantKeyId, WorkspaceId};
use crate::validate;

/// How a link is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Sms,
    Email,
}

impl Channel {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sms" => Some(Self::Sms),
            "email" => Some(Self::Email),
            _ => None,
        }
    }

    /// Checks a recipient given for this channel: an E.164 number for SMS, an email address for
    /// email. `Ok(None)` when `raw` is empty (the user identity's address is used then).
    pub fn recipient(self, field: &str, raw: &str) -> Result<Option<String>, FieldViolation> {
        match self {
            Self::Sms => validate::phone_e164(field, raw),
            Self::Email => validate::email(field, raw),
        }
    }

    /// The recipient with most of it hidden, for logs and listings.
    pub fn mask(self, to: &str) -> String {
        match self {
            Self::Sms => mask_phone(to),
            Self::Email => mask_email(to),
        }
    }
}

/// Where a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Queued, being sent, or waiting for a retry.
    Pending,
    /// Accepted by the provider (or put in the outbox). Final.
    Sent,
    /// Refused for good, or out of retries. Final.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "sent" => Some(Self::Sent),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// What accepted a sent delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentVia {
    /// The HTTP SMS API.
    SmsApi,
    /// The SMTP server.
    Smtp,
    /// This server's outbox: nothing left the machine (embedded default, or
    /// `KEYGATE_DELIVERY_OUTBOX=true`).
    Outbox,
}

impl SentVia {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SmsApi => "sms_api",
            Self::Smtp => "smtp",
            Self::Outbox => "outbox",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sms_api" => Some(Self::SmsApi),
            "smtp" => Some(Self::Smtp),
            "outbox" => Some(Self::Outbox),
            _ => None,
        }
    }
}

/// A delivery as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub workspace_id: WorkspaceId,
    pub instant_key_id: InstantKeyId,
    pub channel: Channel,
    /// The phone number (E.164) or email address.
    pub to: String,
    pub status: Status,
    /// Attempts started so far (0 while queued).
    pub attempts: u32,
    /// The last failure, with the provider's message; `None` when none.
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    /// When it was accepted; `None` unless sent.
    pub sent_at: Option<OffsetDateTime>,
    /// What accepted it; `None` unless sent.
    pub sent_via: Option<SentVia>,
}

/// What `DeliverInstantKey` records: a pending delivery, due at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub instant_key_id: InstantKeyId,
    pub channel: Channel,
    pub to: String,
    pub created_at: OffsetDateTime,
}

/// A delivery whose lease this sender holds: what one attempt needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryClaim {
    pub workspace_id: WorkspaceId,
    pub delivery_id: DeliveryId,
    pub instant_key_id: InstantKeyId,
    pub channel: Channel,
    pub to: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// The lease of this claim; recording the outcome checks it (fencing).
    pub lease_token: String,
    /// The W3C `traceparent` of the call that queued it, when traces are exported.
    pub trace_context: Option<String>,
}

/// The outcome of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted: the delivery is sent (`instant_key.delivered`).
    Sent(SentVia),
    /// A transient failure: try again at `at`.
    Retry { at: OffsetDateTime, error: String },
    /// Refused for good or out of retries (`instant_key.delivery_failed`).
    Failed { error: String },
}

/// `+15555551000` → `+1•••••••000`: the country code and the last three digits.
pub fn mask_phone(to: &str) -> String {
    let chars: Vec<char> = to.chars().collect();
    if chars.len() <= 6 {
        return "•".repeat(chars.len().max(3));
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}{}{tail}", "•".repeat(chars.len() - 5))
}

/// `jane.doe@example.com` → `j•••@example.com`: the first letter and the domain.
pub fn mask_email(to: &str) -> String {
    match to.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "•••".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_checked_per_channel() {
        assert_eq!(
            Channel::Sms.recipient("to", "+15555551000"),
            Ok(Some("+15555551000".into()))
        );
        assert!(Channel::Sms.recipient("to", "jane@example.com").is_err());
        assert!(Channel::Email.recipient("to", "+15555551000").is_err());
        assert_eq!(Channel::Email.recipient("to", ""), Ok(None));
    }

    #[test]
    fn masks_hide_most_of_the_address() {
        assert_eq!(mask_phone("+15555551000"), "+1•••••••000");
        assert!(!mask_phone("+15555551000").contains("5555551"));
        assert_eq!(mask_email("jane.doe@example.com"), "j•••@example.com");
        assert_eq!(mask_phone("+12"), "•••");
        assert_eq!(Channel::Email.mask("nobody"), "•••");
    }

    #[test]
    fn stored_forms_round_trip() {
        for c in [Channel::Sms, Channel::Email] {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        for s in [Status::Pending, Status::Sent, Status::Failed] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        for v in [SentVia::SmsApi, SentVia::Smtp, SentVia::Outbox] {
            assert_eq!(SentVia::parse(v.as_str()), Some(v));
        }
    }
}
