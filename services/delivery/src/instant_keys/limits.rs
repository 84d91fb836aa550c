//! Rate limits of the pages, applied before anything is read from the store: each request takes
//! a token from its client's bucket (the peer address, as the HTTP port resolved it) and from
//! its key's bucket (the link token, or the `client_session_token` of the unlock API). Views
//! (the page, its QR codes, a claim) and unlocks have limits of their own. A refused request is
//! answered 429 with `Retry-After`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keygate_domain::rate::Buckets;
use sha2::{Digest as _, Sha256};

/// The client of a request, as the HTTP port resolved it (the peer address, or a trusted
/// proxy's `X-Forwarded-For`). Without it only the per-key limits apply. Defined in the
/// application layer so every HTTP surface reads the same extension.
pub use keygate_app::throttle::ClientAddr;

/// The limits, in requests per minute (all of a minute's may come at once); 0 turns one off.
#[derive(Clone, Copy, Debug)]
pub struct LimitSettings {
    pub views_per_key: u32,
    pub views_per_client: u32,
    pub unlocks_per_key: u32,
    pub unlocks_per_client: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            views_per_key: 60,
            views_per_client: 300,
            unlocks_per_key: 12,
            unlocks_per_client: 60,
        }
    }
}

/// Most keys or clients remembered per limit (see [`Buckets`]).
const MAX_TRACKED: usize = 100_000;

/// The buckets of every limit of the pages.
#[derive(Debug)]
pub struct Limits {
    views_per_key: Option<Buckets<[u8; 32]>>,
    views_per_client: Option<Buckets<IpAddr>>,
    unlocks_per_key: Option<Buckets<[u8; 32]>>,
    unlocks_per_client: Option<Buckets<IpAddr>>,
}

fn buckets<K: Eq + std::hash::Hash>(per_minute: u32) -> Option<Buckets<K>> {
    (per_minute > 0).then(|| Buckets::new(f64::from(per_minute) / 60.0, per_minute, MAX_TRACKED))
}

impl Limits {
    pub fn new(s: LimitSettings) -> Self {
        Self {
            views_per_key: buckets(s.views_per_key),
            views_per_client: buckets(s.views_per_client),
            unlocks_per_key: buckets(s.unlocks_per_key),
            unlocks_per_client: buckets(s.unlocks_per_client),
        }
    }

    /// Takes a token for a request of `kind` by `client` with `key`, or says how long to wait.
    /// The client's limit is checked first, so made-up keys from one client stop there.
    fn take(&self, kind: Kind, client: Option<IpAddr>, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let (per_key, per_client) = match kind {
            Kind::View => (&self.views_per_key, &self.views_per_client),
            Kind::Unlock => (&self.unlocks_per_key, &self.unlocks_per_client),
        };
        if let (Some(b), Some(ip)) = (per_client, client) {
            b.take(ip, now)?;
        }
        if let Some(b) = per_key {
            // Keys are caller input of any length: the buckets hold their SHA-256.
            b.take(Sha256::digest(key.as_bytes()).into(), now)?;
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(LimitSettings::default())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    View,
    Unlock,
}

/// What a request of the pages is, and the key it names: `None` for a path that is not one of
/// the pages (left to the router's 404).
fn classify<'a>(
    method: &Method,
    path: &'a str,
    bearer: Option<&'a str>,
) -> Option<(Kind, &'a str)> {
    let rest = path.strip_prefix("/ik/")?;
    if rest == "api/v1/unlock" {
        return Some((Kind::Unlock, bearer.unwrap_or("")));
    }
    let (token, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let kind = if *method == Method::POST && tail == "unlock" {
        Kind::Unlock
    } else {
        Kind::View
    };
    Some((kind, token))
}

/// The middleware of the pages' router.
pub async fn limit(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
    if let Some((kind, key)) = classify(req.method(), req.uri().path(), bearer)
        && let Err(wait) = limits.take(kind, client, key)
    {
        tracing::info!(?kind, client = ?client, "Instant Key page rate limited");
        return too_many(req.uri().path().starts_with("/ik/api/"), wait);
    }
    next.run(req).await
}

/// 429 with `Retry-After` (whole seconds, at least 1), as JSON for the API and as a page
/// otherwise.
fn too_many(api: bool, wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = if api {
        super::api_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    } else {
        super::Refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many tries",
            "Wait a moment, then try again.",
        )
        .into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart() {
        let t = "a".repeat(43);
        let page = format!("/ik/{t}");
        assert_eq!(
            classify(&Method::GET, &page, None),
            Some((Kind::View, t.as_str()))
        );
        assert_eq!(
            classify(&Method::POST, &format!("{page}/claim"), None),
            Some((Kind::View, t.as_str()))
        );
        assert_eq!(
            classify(&Method::GET, &format!("{page}/qr.svg"), None),
            Some((Kind::View, t.as_str()))
        );
        assert_eq!(
            classify(&Method::POST, &format!("{page}/unlock"), None),
            Some((Kind::Unlock, t.as_str()))
        );
        assert_eq!(
            classify(&Method::POST, "/ik/api/v1/unlock", Some("kcs1.x")),
            Some((Kind::Unlock, "kcs1.x"))
        );
        assert_eq!(classify(&Method::GET, "/readyz", None), None);
    }

    #[test]
    fn a_client_and_a_key_have_limits_of_their_own() {
        let l = Limits::new(LimitSettings {
            views_per_key: 2,
            views_per_client: 3,
            unlocks_per_key: 1,
            unlocks_per_client: 0,
        });
        let a = Some(IpAddr::from([192, 0, 2, 1]));
        let b = Some(IpAddr::from([192, 0, 2, 2]));
        assert!(l.take(Kind::View, a, "k1").is_ok());
        assert!(l.take(Kind::View, a, "k1").is_ok());
        assert!(l.take(Kind::View, b, "k1").is_err(), "k1 is spent");
        assert!(l.take(Kind::View, a, "k2").is_ok());
        let wait = l.take(Kind::View, a, "k3").expect_err("client a is spent");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20));
        // Unlocks are counted apart from views; 0 turns the per-client limit off.
        assert!(l.take(Kind::Unlock, a, "k1").is_ok());
        assert!(l.take(Kind::Unlock, a, "k1").is_err());
        assert!(l.take(Kind::Unlock, a, "k4").is_ok());
    }
}
