//! What every adapter of a real system shares: the rule for URL settings (an `https://` URL;
//! plain `http` only to a loopback host, for simulators and fakes; refusals are
//! `invalid_connection_settings: <name>: ...`), the HTTP clients of the vendor adapters, times on
//! the wire, how a call's failure becomes an action attempt's typed error, and the pacing of one
//! account's HTTP requests to the vendor's request rate ([`Pacer`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use keygate_domain::action::AttemptError;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use crate::ProviderError;

/// The reasons a provider error's message begins with (`reason: ...`), which the use cases and
/// the orchestrator act on: one list for every adapter.
/// A setting (or credential) the adapter does not accept; at discover: `INVALID_ARGUMENT`.
pub const INVALID_CONNECTION_SETTINGS: &str = "invalid_connection_settings";
/// The vendor refused the credentials (401/403); the system shows it.
pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
/// The vendor could not be reached at all; jobs wait without spending attempts.
pub const PROVIDER_UNREACHABLE: &str = "provider_unreachable";
/// The vendor's call budget is spent; jobs wait without spending attempts.
pub const BUDGET_EXHAUSTED: &str = "budget_exhausted";
/// A warning: the vendor's call budget is nearly spent (the system shows it; nothing waits yet).
pub const BUDGET_NEARLY_EXHAUSTED: &str = "budget_nearly_exhausted";
/// The vendor's rate limit (429), with its `retry after N s` when it gave one.
pub const RATE_LIMITED: &str = "rate_limited";

/// A refused setting, named, its value never shown.
pub fn invalid_setting(name: &str, why: &str) -> ProviderError {
    ProviderError::Permanent(format!("{INVALID_CONNECTION_SETTINGS}: {name}: {why}"))
}

/// Checks `raw` (trimmed) as a vendor endpoint and returns it parsed, with whether its host is
/// loopback.
pub fn vendor_endpoint(raw: &str) -> Result<(Url, bool), ProviderError> {
    vendor_url("endpoint", raw, false)
}

/// Checks the setting `name` as an `https://` URL (plain `http` only to a loopback host), without
/// credentials, query or fragment, and without a path unless `with_path` (a vendor whose API
/// base or token URL has one). Returns it parsed, with whether its host is loopback.
pub fn vendor_url(name: &str, raw: &str, with_path: bool) -> Result<(Url, bool), ProviderError> {
    let url = Url::parse(raw.trim()).map_err(|_| invalid_setting(name, "not a URL"))?;
    let host = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid_setting(name, "no host"))?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(invalid_setting(
                name,
                "plain http is allowed only to a loopback host; use https",
            ));
        }
        _ => return Err(invalid_setting(name, "the scheme must be https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid_setting(name, "must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid_setting(
            name,
            "must not carry a query or a fragment",
        ));
    }
    if !with_path && !matches!(url.path(), "" | "/") {
        return Err(invalid_setting(
            name,
            "must be scheme://host[:port], without a path",
        ));
    }
    Ok((url, loopback))
}

/// How long a vendor adapter waits for a TCP + TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A vendor adapter's HTTP clients (one through the system's proxy settings, one that never uses a
/// proxy, for loopback endpoints), each made on first use and shared by every call so connections
/// are reused: reqwest on rustls with ring, the process's one TLS stack; redirects refused (an
/// API answers where it is; a redirect is a misconfigured endpoint).
#[derive(Default)]
pub struct HttpClients {
    proxied: OnceLock<Result<reqwest::Client, String>>,
    direct: OnceLock<Result<reqwest::Client, String>>,
}

impl HttpClients {
    pub fn get(&self, loopback: bool) -> Result<reqwest::Client, ProviderError> {
        let cell = if loopback {
            &self.direct
        } else {
            &self.proxied
        };
        cell.get_or_init(|| {
            // reqwest is built without a crypto provider: the process uses ring, once.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut b = reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("Keygate/", env!("CARGO_PKG_VERSION")));
            if loopback {
                b = b.no_proxy();
            }
            b.build()
                .map_err(|e| format!("the HTTP client could not be built: {e}"))
        })
        .clone()
        .map_err(ProviderError::Permanent)
    }
}

/// A vendor's request rate, in HTTP requests (not provider calls): at most `per_second` on
/// average and `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestRate {
    pub per_second: f64,
    pub burst: u32,
}

impl RequestRate {
    /// The setting `name` (requests a second, `0.1..=1000`) or `default`. The burst is half a
    /// second's worth (at least one), so requests that arrive bunched by the network still fit
    /// the vendor's own bucket of the same rate.
    pub fn from_setting(
        settings: &std::collections::BTreeMap<String, String>,
        name: &str,
        default: f64,
    ) -> Result<Self, ProviderError> {
        let per_second = match settings.get(name) {
            None => default,
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| (0.1..=1000.0).contains(n))
                .ok_or_else(|| {
                    invalid_setting(name, "must be a number of requests a second in 0.1..=1000")
                })?,
        };
        // Truncation is intended: half a second's worth, rounded down, at least one.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let burst = ((per_second / 2.0).floor() as u32).max(1);
        Ok(Self { per_second, burst })
    }

    /// The rate in provider calls that keeps calls of up to `requests_per_call` requests within
    /// this rate: what the adapter declares to the orchestrator.
    pub fn calls(&self, requests_per_call: u32) -> keygate_domain::capability::ProviderRateLimit {
        let per_call = f64::from(requests_per_call.max(1));
        keygate_domain::capability::ProviderRateLimit {
            requests_per_second: self.per_second / per_call,
            burst: (self.burst / requests_per_call.max(1)).max(1),
        }
    }
}

/// The longest a request waits for its turn ([`Pacer::pace`]); a later turn is not taken and the
/// call answers `rate_limited` (nothing sent), so a job waits outside its lease's hot path.
pub const MAX_PACING_WAIT: Duration = Duration::from_secs(5);

/// Paces each vendor account's HTTP requests to its [`RequestRate`] (a GCRA per account, in this
/// process): a request waits for its turn instead of meeting the vendor's `429`. The
/// orchestrator's own limit is in provider calls, and a call makes several requests; this is the
/// bound on the requests themselves, for every path (jobs, syncs, unlocks, encodings). Turns are
/// handed out in order of arrival. Replicas pace separately: a `429` that still happens is
/// `rate_limited` and waits its `Retry-After` without spending an attempt.
#[derive(Default)]
pub struct Pacer {
    accounts: Mutex<HashMap<u64, Paced>>,
}

/// One account's pacing: the theoretical arrival time of its next request, and the share of its
/// declared rate it is paced at (below 1 after the vendor answered `429`).
#[derive(Clone, Copy, Debug)]
struct Paced {
    tat: tokio::time::Instant,
    share: f64,
    calm_since: tokio::time::Instant,
}

/// How long an account goes without a `429` before its pace steps back up (×1.5, up to the
/// declared rate).
const RECOVERY_STEP: Duration = Duration::from_secs(5);
/// The least share of the declared rate a run of `429`s brings an account down to.
const MIN_SHARE: f64 = 0.02;

impl Pacer {
    /// Waits until `account` may send one more request at `rate` (times the share it is paced
    /// at since its last `429`). Gives up (and takes no turn) when the turn would come later
    /// than `within`, with how long it would have taken.
    pub async fn pace(
        &self,
        account: u64,
        rate: RequestRate,
        within: Duration,
    ) -> Result<(), Duration> {
        let wait = {
            let now = tokio::time::Instant::now();
            let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
            if accounts.len() > 10_000 {
                accounts.retain(|_, a| a.tat > now || a.share < 1.0);
            }
            let a = accounts.entry(account).or_insert(Paced {
                tat: now,
                share: 1.0,
                calm_since: now,
            });
            if a.share < 1.0 && now.duration_since(a.calm_since) >= RECOVERY_STEP {
                a.share = (a.share * 1.5).min(1.0);
                a.calm_since = now;
            }
            let per_second = rate.per_second * a.share;
            let burst = if a.share < 1.0 { 1 } else { rate.burst };
            let interval = Duration::from_secs_f64(1.0 / per_second);
            let tolerance = interval * burst.saturating_sub(1);
            let tat = a.tat.max(now);
            let allowed_at = tat.checked_sub(tolerance).unwrap_or(now).max(now);
            let wait = allowed_at.saturating_duration_since(now);
            if wait > within {
                return Err(wait);
            }
            a.tat = tat + interval;
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// The vendor answered `429` (its limit is lower than declared, or other clients share the
    /// account): the account's next turn comes no sooner than `retry_after`, and its pace halves
    /// (stepping back up after [`RECOVERY_STEP`]s without one), so the calls of this process stop
    /// spending the vendor's requests on refusals.
    pub fn throttled(&self, account: u64, retry_after: Duration) {
        let now = tokio::time::Instant::now();
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let a = accounts.entry(account).or_insert(Paced {
            tat: now,
            share: 1.0,
            calm_since: now,
        });
        // One halving per burst of refusals: those answered together count once.
        if now.duration_since(a.calm_since) >= Duration::from_millis(500) || a.share >= 1.0 {
            a.share = (a.share * 0.5).max(MIN_SHARE);
        }
        a.calm_since = now;
        a.tat = a.tat.max(now + retry_after.min(Duration::from_secs(60)));
    }
}

/// One async lock per key (a hash), for read-modify-write sequences on one vendor record that
/// concurrent calls of this process must not interleave (two methods of one person written into
/// the same user's record at once would lose one). Other replicas are not excluded: a lost
/// write there shows in the reconciler's read-back and is re-issued.
#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<u64, std::sync::Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for `key`'s lock; it is released when the guard drops.
    pub async fn lock(&self, key: u64) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            if locks.len() > 1_024 {
                locks.retain(|_, w| w.strong_count() > 0);
            }
            match locks.get(&key).and_then(std::sync::Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = std::sync::Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key, std::sync::Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }
}

/// A key for [`Pacer`] and [`KeyedLocks`]: a hash of the parts (secrets among them are not kept).
pub fn key_of(parts: &[&str]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// A failed HTTP call in words: what failed and its innermost cause.
pub fn reqwest_failure(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
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
        Some(c) => format!("{what}: {c}"),
        None => what.to_owned(),
    }
}

/// An RFC 3339 time as vendors send it; `None` when absent or malformed.
pub fn parse_time(s: Option<&str>) -> Option<OffsetDateTime> {
    s.and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

/// A time as vendors take it: RFC 3339, UTC, whole seconds.
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// An action attempt's typed error.
pub fn attempt(error_type: &str, message: impl Into<String>) -> AttemptError {
    AttemptError {
        error_type: error_type.into(),
        message: message.into(),
    }
}

/// The reasons a transient failure names that an action attempt keeps as its type.
const TRANSIENT_TYPES: [&str; 2] = [INVALID_CREDENTIALS, BUDGET_EXHAUSTED];

/// The typed error of an unlock or encoding that failed before or around the vendor's answer: a
/// refusal's reason (`reason: ...`, else `provider_refused`), a transient failure's known reason
/// (else `provider_unreachable`), and `ambiguous_type` when the call may have been applied.
pub fn attempt_from(e: ProviderError, ambiguous_type: &str) -> AttemptError {
    let reason = |m: &str| -> Option<String> {
        m.split_once(':')
            .map(|(h, _)| h)
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .map(str::to_owned)
    };
    match e {
        ProviderError::Permanent(m) => {
            let t = reason(&m).unwrap_or_else(|| "provider_refused".to_owned());
            attempt(&t, m)
        }
        ProviderError::Transient(m) => {
            let t = reason(&m)
                .filter(|r| TRANSIENT_TYPES.contains(&r.as_str()))
                .unwrap_or_else(|| PROVIDER_UNREACHABLE.to_owned());
            attempt(&t, m)
        }
        ProviderError::Ambiguous(m) => attempt(ambiguous_type, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for ok in [
            "https://api.kisi.io",
            "https://connect.getseam.com/",
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            assert!(vendor_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "not a url",
            "http://example.com",
            "ftp://127.0.0.1",
            "https://user:pw@example.com",
            "https://example.com/v1",
            "https://example.com/?q=1",
        ] {
            let e = vendor_endpoint(bad).expect_err(bad);
            assert!(
                e.to_string()
                    .contains("invalid_connection_settings: endpoint"),
                "{e}"
            );
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_429_holds_the_account_back_and_halves_its_pace() {
        let pacer = Pacer::default();
        let rate = RequestRate {
            per_second: 100.0,
            burst: 1,
        };
        let within = Duration::from_secs(2);
        pacer.pace(1, rate, within).await.expect("first turn");
        pacer.throttled(1, Duration::from_millis(200));
        let t = std::time::Instant::now();
        pacer.pace(1, rate, within).await.expect("after the retry");
        assert!(
            t.elapsed() >= Duration::from_millis(180),
            "{:?}",
            t.elapsed()
        );
        // Half the pace now: 50 a second, 20 ms apart.
        let t = std::time::Instant::now();
        pacer.pace(1, rate, within).await.expect("next");
        assert!(
            t.elapsed() >= Duration::from_millis(15),
            "{:?}",
            t.elapsed()
        );
        // Another account is not held back, and a turn too far away is not taken.
        let t = std::time::Instant::now();
        pacer.pace(2, rate, within).await.expect("other account");
        assert!(t.elapsed() < Duration::from_millis(15));
        pacer.throttled(3, Duration::from_secs(30));
        assert!(pacer.pace(3, rate, within).await.is_err());
    }
}
