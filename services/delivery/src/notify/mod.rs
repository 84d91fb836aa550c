//! Instant Key links out by SMS and email (`InstantKeyService.DeliverInstantKey`).
//!
//! - [`sms`]: an HTTP SMS API (Twilio-style form POST with basic auth) over reqwest.
//! - [`email`]: SMTP over lettre (STARTTLS, implicit TLS, or plain only when the URL says so).
//! - [`message`]: the text of both. The link is derived from the key id at send time, never stored.
//! - [`sender`]: the delivery role's loop: leases due deliveries, sends, records every attempt,
//!   retries transient failures with exponential backoff and full jitter, and appends
//!   `instant_key.delivered` or `instant_key.delivery_failed`.
//! - [`outbox`]: the embedded default. Nothing is sent; deliveries are marked sent to the outbox,
//!   which `keygate deliveries list` and `GET /outbox` show.

pub mod email;
pub mod message;
pub mod outbox;
pub mod sender;
pub mod sms;

use std::sync::Arc;
use std::time::Duration;

pub use keygate_app::instant_keys::{Availability, Route};
use rand::RngExt as _;
use tokio::sync::Notify;

pub use sender::{Sender, SenderConfig};

use crate::webhooks::scaled;

/// Why the delivery settings are refused at start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("KEYGATE_SMS_API_URL is not a URL: {0}")]
    SmsUrl(String),
    #[error(
        "KEYGATE_SMS_API_URL must be https:// (plain http:// is accepted for loopback addresses only)"
    )]
    SmsUrlNotHttps,
    #[error("KEYGATE_SMS_FROM is required with KEYGATE_SMS_API_URL")]
    SmsFrom,
    #[error("KEYGATE_SMS_ACCOUNT_SID and KEYGATE_SMS_AUTH_TOKEN go together: set both or neither")]
    SmsAuth,
    #[error("KEYGATE_SMTP_URL: {0}")]
    SmtpUrl(String),
    #[error("KEYGATE_EMAIL_FROM is required with KEYGATE_SMTP_URL")]
    EmailFromMissing,
    #[error("KEYGATE_EMAIL_FROM is not an email address (like Keygate <keys@example.com>): {0}")]
    EmailFrom(String),
    #[error("KEYGATE_DELIVERY_RETRY_SCALE must be a positive number, not {0}")]
    RetryScale(String),
    #[error("cannot build the {0} client: {1}")]
    Client(&'static str, String),
}

/// The raw settings (flags and `KEYGATE_*` variables; see docs/delivery.md).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub sms_api_url: String,
    pub sms_account_sid: String,
    pub sms_auth_token: String,
    pub sms_from: String,
    pub smtp_url: String,
    pub email_from: String,
    /// `KEYGATE_DELIVERY_OUTBOX`; `None` means: on when no sender is configured and the store is
    /// the embedded SQLite file.
    pub outbox: Option<bool>,
    /// Whether the store is the embedded SQLite file (no `KEYGATE_DATABASE_URL`).
    pub embedded: bool,
    /// `KEYGATE_DELIVERY_RETRY_SCALE`.
    pub retry_scale: f64,
}

/// The HTTP SMS API.
#[derive(Clone)]
pub struct SmsConfig {
    pub api_url: reqwest::Url,
    /// Basic auth (account SID, auth token), when set.
    pub auth: Option<(String, String)>,
    pub from: String,
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field("host", &self.api_url.host_str())
            .field("auth", &self.auth.as_ref().map(|_| ".."))
            .finish()
    }
}

/// The SMTP server and the sender address.
#[derive(Clone, Debug)]
pub struct EmailConfig {
    pub smtp: email::SmtpUrl,
    pub from: lettre::message::Mailbox,
}

/// Everything the delivery settings say, checked.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    pub sms: Option<SmsConfig>,
    pub email: Option<EmailConfig>,
    /// Nothing is sent: every delivery goes to the outbox.
    pub outbox: bool,
    pub retry: Backoff,
}

impl NotifyConfig {
    pub fn from_settings(s: &Settings) -> Result<Self, ConfigError> {
        if !(s.retry_scale.is_finite() && s.retry_scale > 0.0) {
            return Err(ConfigError::RetryScale(s.retry_scale.to_string()));
        }
        let sms = if s.sms_api_url.trim().is_empty() {
            None
        } else {
            Some(sms::config(s)?)
        };
        let email = if s.smtp_url.trim().is_empty() {
            None
        } else {
            let smtp = email::parse_smtp_url(s.smtp_url.trim())?;
            if s.email_from.trim().is_empty() {
                return Err(ConfigError::EmailFromMissing);
            }
            let from =
                s.email_from
                    .trim()
                    .parse()
                    .map_err(|e: lettre::address::AddressError| {
                        ConfigError::EmailFrom(e.to_string())
                    })?;
            Some(EmailConfig { smtp, from })
        };
        let outbox = s
            .outbox
            .unwrap_or(sms.is_none() && email.is_none() && s.embedded);
        Ok(Self {
            sms,
            email,
            outbox,
            retry: Backoff {
                scale: s.retry_scale,
                ..Backoff::default()
            },
        })
    }

    /// What the gateway may accept, per channel.
    pub fn availability(&self) -> Availability {
        let route = |configured: bool| {
            if self.outbox {
                Route::Outbox
            } else if configured {
                Route::Provider
            } else {
                Route::Off
            }
        };
        Availability {
            sms: route(self.sms.is_some()),
            email: route(self.email.is_some()),
            wake: Arc::new(Notify::new()),
        }
    }
}

/// The retry budget of a delivery: `max_attempts` attempts; after the n-th failed one the next
/// waits a random time between 0 and `base · 2^(n−1)` ("full jitter"), times `scale`. With the
/// defaults the waits are at most 20 s, 40 s, 80 s, 160 s and 320 s: six attempts within about
/// ten minutes. Tests compress it with `KEYGATE_DELIVERY_RETRY_SCALE`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max_attempts: u32,
    pub scale: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(20),
            max_attempts: 6,
            scale: 1.0,
        }
    }
}

impl Backoff {
    /// The longest wait after `attempts_made` failed attempts; `None` when none is left.
    pub fn ceiling(&self, attempts_made: u32) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let doublings = attempts_made.saturating_sub(1).min(30);
        Some(scaled(
            self.base.saturating_mul(1u32 << doublings),
            self.scale,
        ))
    }

    /// The wait before the next attempt after `attempts_made` failed: uniform in
    /// `0..=ceiling`; `None` when the budget is spent (the delivery fails).
    pub fn delay_after(&self, attempts_made: u32) -> Option<Duration> {
        let ceiling = self.ceiling(attempts_made)?;
        Some(ceiling.mul_f64(rand::rng().random_range(0.0..=1.0)))
    }

    /// The longest time all retries can take (the sum of the ceilings).
    pub fn budget(&self) -> Duration {
        (1..self.max_attempts).filter_map(|n| self.ceiling(n)).sum()
    }
}

/// Why one attempt failed, and whether trying again may help.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// Network trouble, a timeout, HTTP 429 or 5xx, an SMTP 4xx: retried.
    #[error("{0}")]
    Transient(String),
    /// HTTP 4xx, SMTP 5xx, a revoked key: failed for good.
    #[error("{0}")]
    Permanent(String),
}

/// `text` with every occurrence of `secret` replaced by `mask`, for logs (a provider's error
/// may quote the phone number or address it refused).
pub fn redact(text: &str, secret: &str, mask: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            retry_scale: 1.0,
            ..Settings::default()
        }
    }

    #[test]
    fn the_budget_is_six_attempts_within_about_ten_minutes() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(1), Some(Duration::from_secs(20)));
        assert_eq!(b.ceiling(5), Some(Duration::from_secs(320)));
        assert_eq!(b.ceiling(6), None);
        assert_eq!(b.budget(), Duration::from_secs(620));
        for _ in 0..100 {
            let d = b.delay_after(3).expect("attempt 4");
            assert!(d <= Duration::from_secs(80), "{d:?}");
        }
        let fast = Backoff { scale: 0.001, ..b };
        assert!(fast.budget() < Duration::from_secs(1));
    }

    #[test]
    fn the_outbox_is_the_embedded_default_only() {
        let embedded = NotifyConfig::from_settings(&Settings {
            embedded: true,
            ..settings()
        })
        .expect("embedded");
        assert!(embedded.outbox);
        assert_eq!(embedded.availability().sms, Route::Outbox);
        let postgres = NotifyConfig::from_settings(&settings()).expect("postgres");
        assert!(!postgres.outbox);
        assert_eq!(postgres.availability().email, Route::Off);
        let sms_only = NotifyConfig::from_settings(&Settings {
            embedded: true,
            sms_api_url: "https://sms.example.com/Messages.json".into(),
            sms_from: "+15555550100".into(),
            ..settings()
        })
        .expect("sms");
        assert!(!sms_only.outbox);
        let a = sms_only.availability();
        assert_eq!((a.sms, a.email), (Route::Provider, Route::Off));
        let forced = NotifyConfig::from_settings(&Settings {
            outbox: Some(true),
            sms_api_url: "https://sms.example.com/Messages.json".into(),
            sms_from: "+15555550100".into(),
            ..settings()
        })
        .expect("forced");
        assert_eq!(forced.availability().sms, Route::Outbox);
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |s: Settings| NotifyConfig::from_settings(&s).err();
        assert_eq!(
            bad(Settings {
                retry_scale: 0.0,
                ..settings()
            }),
            Some(ConfigError::RetryScale("0".into()))
        );
        assert_eq!(
            bad(Settings {
                sms_api_url: "http://sms.example.com/send".into(),
                sms_from: "+15555550100".into(),
                ..settings()
            }),
            Some(ConfigError::SmsUrlNotHttps)
        );
        assert_eq!(
            bad(Settings {
                sms_api_url: "https://sms.example.com/send".into(),
                ..settings()
            }),
            Some(ConfigError::SmsFrom)
        );
        assert_eq!(
            bad(Settings {
                sms_api_url: "https://sms.example.com/send".into(),
                sms_from: "+15555550100".into(),
                sms_account_sid: "AC1".into(),
                ..settings()
            }),
            Some(ConfigError::SmsAuth)
        );
        assert_eq!(
            bad(Settings {
                smtp_url: "smtp://mail.example.com".into(),
                ..settings()
            }),
            Some(ConfigError::EmailFromMissing)
        );
        assert!(matches!(
            bad(Settings {
                smtp_url: "smtp://mail.example.com".into(),
                email_from: "not an address".into(),
                ..settings()
            }),
            Some(ConfigError::EmailFrom(_))
        ));
    }

    #[test]
    fn redaction_hides_the_recipient() {
        assert_eq!(
            redact(
                "21211: +15555551000 is not valid",
                "+15555551000",
                "+1•••000"
            ),
            "21211: +1•••000 is not valid"
        );
        assert_eq!(redact("x", "", "y"), "x");
    }
}
