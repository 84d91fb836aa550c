//! Webhooks out: the URL rules and SSRF guard shared with `CreateWebhook` (`ssrf`), signing
//! (`sign`), and the dispatcher of the delivery role (`dispatch`), which fans events out to
//! delivery rows and POSTs them on the published retry schedule.

pub mod dispatch;
pub mod sign;
pub mod ssrf;

use std::time::Duration;

use keygate_domain::webhook::{DISABLE_AFTER, MAX_URL_CHARS, RETRY_SCHEDULE};
use rand::RngExt as _;
use reqwest::Url;

pub use dispatch::{Dispatcher, DispatcherConfig, EventRenderer};
pub use ssrf::{AddressClass, NetworkPolicy, SsrfError};

/// Why a webhook URL is not accepted (before any lookup).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_URL_CHARS} characters")]
    TooLong,
    #[error("is not an absolute URL: {0}")]
    Invalid(String),
    #[error("must be an https:// URL")]
    NotHttps,
    #[error("must be an https:// URL (plain http:// is accepted in sandbox workspaces only)")]
    HttpOutsideSandbox,
    #[error("must name a host")]
    NoHost,
    #[error("must not contain a user name or password")]
    Credentials,
}

/// Parses a webhook URL: absolute, `https://` (or `http://` when `allow_http`, for sandbox
/// workspaces), with a host and no credentials, up to 2000 characters.
pub fn parse_url(raw: &str, allow_http: bool) -> Result<Url, UrlError> {
    if raw.is_empty() {
        return Err(UrlError::Empty);
    }
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(UrlError::TooLong);
    }
    let url = Url::parse(raw).map_err(|e| UrlError::Invalid(e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err(UrlError::HttpOutsideSandbox),
        _ => return Err(UrlError::NotHttps),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    Ok(url)
}

/// The retry schedule and disable period, compressed by `scale` (1.0 in production; tests run
/// the whole 27-hour schedule in about a second with 0.00001).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub scale: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { scale: 1.0 }
    }
}

/// Each delay is the published one times a factor uniform in 0.9..1.1.
const JITTER: f64 = 0.1;

impl RetryPolicy {
    /// The delay before the next attempt after `attempts_made` attempts failed, jittered and
    /// scaled; `None` when the schedule is exhausted (the delivery fails for good).
    pub fn delay_after(&self, attempts_made: u32) -> Option<Duration> {
        let base = keygate_domain::webhook::base_delay_after(attempts_made)?;
        let jitter = rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER));
        Some(scaled(base, self.scale * jitter))
    }

    /// How long a webhook may fail without any success before it is disabled.
    pub fn disable_after(&self) -> Duration {
        scaled(DISABLE_AFTER, self.scale)
    }

    /// Attempts in the schedule.
    pub fn max_attempts(&self) -> u32 {
        RETRY_SCHEDULE.len() as u32
    }
}

/// `d` times `factor` (shared with the Instant Key sender's backoff); `d` unchanged when the
/// factor is not a positive number.
pub(crate) fn scaled(d: Duration, factor: f64) -> Duration {
    if factor.is_finite() && factor > 0.0 {
        Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    } else {
        d
    }
}

/// A duration as people say it: "5 days", "2 hours", "4.3 seconds".
pub fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let whole = |n: f64, unit: &str| {
        if (n - 1.0).abs() < f64::EPSILON {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if secs >= 86_400.0 && secs % 86_400.0 == 0.0 {
        whole(secs / 86_400.0, "day")
    } else if secs >= 3600.0 && secs % 3600.0 == 0.0 {
        whole(secs / 3600.0, "hour")
    } else {
        format!("{:.1} seconds", secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_except_in_the_sandbox() {
        assert!(parse_url("https://example.com/hook", false).is_ok());
        assert_eq!(
            parse_url("http://example.com/hook", false),
            Err(UrlError::HttpOutsideSandbox)
        );
        assert!(parse_url("http://example.com/hook", true).is_ok());
        assert_eq!(
            parse_url("ftp://example.com/", true),
            Err(UrlError::NotHttps)
        );
        assert_eq!(parse_url("", true), Err(UrlError::Empty));
        assert!(matches!(
            parse_url("/relative", true),
            Err(UrlError::Invalid(_))
        ));
        assert_eq!(
            parse_url("https://user:pw@example.com/", true),
            Err(UrlError::Credentials)
        );
        let long = format!("https://example.com/{}", "a".repeat(2000));
        assert_eq!(parse_url(&long, true), Err(UrlError::TooLong));
    }

    #[test]
    fn schedule_scales_with_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_after(0), Some(Duration::ZERO));
        for _ in 0..100 {
            let d = p.delay_after(1).expect("second attempt").as_secs_f64();
            assert!((4.5..=5.5).contains(&d), "{d}");
            let d = p.delay_after(7).expect("last attempt").as_secs_f64();
            assert!((32_400.0..=39_600.0).contains(&d), "{d}");
        }
        assert_eq!(p.delay_after(8), None);
        assert_eq!(p.max_attempts(), 8);
        assert_eq!(p.disable_after(), Duration::from_secs(432_000));
        let fast = RetryPolicy { scale: 0.00001 };
        let d = fast.delay_after(7).expect("last").as_secs_f64();
        assert!((0.32..=0.40).contains(&d), "{d}");
        assert!((fast.disable_after().as_secs_f64() - 4.32).abs() < 1e-6);
        assert_eq!(human(p.disable_after()), "5 days");
        assert_eq!(human(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human(fast.disable_after()), "4.3 seconds");
    }
}
