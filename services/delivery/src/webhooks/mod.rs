//! Webhooks out: signing (`sign`) and the dispatcher of the delivery role (`dispatch`), which
//! fans events out to delivery rows and POSTs them on the published retry schedule. The URL
//! rules and the SSRF guard are `keygate-app`'s (`keygate_app::webhooks`, `keygate_app::ssrf`),
//! shared with `CreateWebhook`; the dispatcher checks the guard again before every attempt.

pub mod dispatch;
pub mod sign;

pub use keygate_app::ssrf;

use std::time::Duration;

use keygate_domain::webhook::{DISABLE_AFTER, RETRY_SCHEDULE};
use rand::RngExt as _;

pub use dispatch::{Dispatcher, DispatcherConfig, EventRenderer};
pub use ssrf::{AddressClass, NetworkPolicy, SsrfError};

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
