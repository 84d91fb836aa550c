//! The Brivo adapter (`brivo`): the Brivo Access API (`https://api.brivo.com/v1/api`, tokens from
//! `https://auth.brivo.com/oauth/token`), one Brivo site per Keygate access system. Brivo
//! decides who opens which door by groups: a Brivo group is an access group, its permissions
//! (`GET /groups/{id}/access/access-points`) are the entrances, and a user gets a group's doors
//! by membership (`PUT /groups/{groupId}/users/{userId}`). People open doors with a PIN (`code`:
//! Brivo keeps the PIN on the user, `pin`, valid between `effectiveFrom` and `effectiveTo`) or
//! remotely (`cloud_key`, `POST /access-points/{id}/activate`, for access points whose
//! activation is enabled), or with a Brivo Mobile Pass (`mobile_key`: a digital invitation,
//! `POST /users/{id}/credentials/digital-invitations?sendInvitationEmail=true` with the holder's
//! e-mail as `referenceId`, which Brivo e-mails; the pass opens the user's groups' doors). This
//! adapter issues no card: a Brivo card credential is a number printed or encoded at the
//! factory, which a Keygate job does not carry.
//!
//! Settings (`Connection::settings` at discover, `Link::settings` for a stored system):
//! - `endpoint` (optional, default `https://api.brivo.com/v1/api`; the EU instance is
//!   `https://api.eu.brivo.com/v1/api`): `https://host[:port][/path]`, or `http://` only for a
//!   loopback host (a simulator).
//! - `auth_endpoint` (optional, default `https://auth.brivo.com/oauth/token`): the token URL,
//!   same rules.
//! - `site_id` (optional): the Brivo site this system is. Without it, discover takes the one site
//!   the account sees, and refuses when it sees none or several.
//! - `timeout_ms` (optional, default 10000, 100..=120000): the deadline of every request.
//!
//! Credentials (all required): `client_id` and `client_secret` (the application made in Brivo
//! Access, Configuration → Integrations, of type "Password"), `username` and `password` (the
//! administrator whose rights the adapter uses), `api_key` (the Mashery key of
//! developer.brivo.com). Tokens come from the password grant, are kept per account (auth
//! endpoint + client id + username) in the adapter, renewed with the refresh token at 80% of
//! `expires_in` (one renewal at a time per account: concurrent calls wait for it), and on a
//! `401` from the API renewed once and the call repeated once. No secret or token is logged or
//! put in an error; every header carrying one is marked sensitive.
//!
//! References (what makes a repeat converge on the same Brivo objects): one Brivo user per
//! Keygate access method, whose `externalId` is `keygate-<access_method_id>` (Brivo: "guaranteed
//! to be unique within the clients Brivo Access account"), found by
//! `GET /users/{externalId}/external` before one is made; a create refused because the id is
//! taken (an earlier create whose answer was lost) finds the user that took it. The user's
//! groups are converged to the job's (`GET /users/{id}/groups`, then `PUT`/`DELETE` the
//! differences). The method's window is the user's `effectiveFrom`/`effectiveTo` (Brivo applies
//! it to the PIN; for a cloud key Keygate's own unlock checks the grant). Revoke removes the
//! memberships, then deletes the user (and with it the PIN and, as assumed, its mobile pass).
//!
//! Error classes: a connection that could not be opened is `Transient("provider_unreachable:
//! ...")`; `401`/`403` are `invalid_credentials` (`Permanent` at discover, `Transient` on a stored
//! system's calls); the monthly call budget spent (`403 Developer Over Rate`, or a `429` that says
//! so) is `Transient("budget_exhausted: ...")`; `429` (with its `Retry-After`) and `503` are
//! `Transient`; a timeout or another `5xx` after a write was sent is `Ambiguous` (on a read,
//! `Transient`); other `4xx` are `Permanent` (`brivo_refused`), with Brivo's `code`/`message`.

use crate::vendor::{MAX_PACING_WAIT, RequestRate, attempt, format_time, parse_time};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keygate_domain::action::{AttemptError, RevokeJob, UnlockJob, unlock_errors};
use keygate_domain::capability::{
    AccessMethodMode, CapabilityDescriptor, PermissionModel, PinCodeGenerator, PinCodeRules,
};
use keygate_domain::grant::Notice;
use keygate_domain::grant::ProvisionJob;
use keygate_domain::ids::{AccessMethodId, AccessSystemId, EntranceId};
use keygate_domain::model::{AccessSystem, NewAccessGroup, NewAccessSystem, NewEntrance};
use keygate_domain::tracker::{DoorOutcome, ProvisionResult};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::provider::{
    AccessSystemProvider, Connection, Credentials, Directory, HeldCredential, Holder, Link,
    ProviderError,
};

/// The one system type this adapter serves.
pub const SYSTEM_TYPE: &str = "brivo";
pub use crate::vendor::{
    BUDGET_EXHAUSTED, BUDGET_NEARLY_EXHAUSTED, INVALID_CONNECTION_SETTINGS, INVALID_CREDENTIALS,
    PROVIDER_UNREACHABLE, RATE_LIMITED,
};
/// Brivo's API (US instance).
pub const DEFAULT_ENDPOINT: &str = "https://api.brivo.com/v1/api";
/// Brivo's token URL (US instance).
pub const DEFAULT_AUTH_ENDPOINT: &str = "https://auth.brivo.com/oauth/token";

/// Invitations that still stand (a pass pending or redeemed); others are made again.
const LIVE_INVITATIONS: [&str; 2] = ["PENDING", "REDEEMED"];

/// The prefix of the `externalId` of the Brivo user made for an access method.
pub const EXTERNAL_ID_PREFIX: &str = "keygate-";

/// The request rate the adapter keeps to when the system's settings name none. Brivo publishes
/// no numeric per-second limit (its gateway answers `429`): ten requests a second is an estimate
/// of ours; set `requests_per_second` to the account's real one.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 10.0;
/// The most requests one provider call makes (find the user, write it, list its groups, one
/// write per group): the declared call rate is the request rate divided by this.
pub const REQUESTS_PER_CALL: u32 = 5;
/// The share of the monthly budget spent past which the system shows
/// `budget_nearly_exhausted`. The budget (100,000 calls by default, as Brivo's partners report)
/// is not a rate anyone can pace; spent, it is the error `budget_exhausted`.
pub const BUDGET_WARNING_SHARE: f64 = 0.9;

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
const UNLOCK_TIMEOUT_CAP: Duration = Duration::from_secs(10);
const PAGE_SIZE: usize = 100;
const MAX_PAGES: usize = 500;
/// The most of an error body kept in a message.
const MAX_DETAIL: usize = 300;
/// A token is renewed once this share of its `expires_in` has passed.
const RENEW_AT: f64 = 0.8;
/// When a token answer names no `expires_in`.
const DEFAULT_EXPIRES_IN: u64 = 60;

/// What is cached for one Brivo account.
#[derive(Default)]
struct TokenState {
    access: Option<String>,
    refresh: Option<String>,
    fresh_until: Option<Instant>,
}

type Account = Arc<tokio::sync::Mutex<TokenState>>;

/// The Brivo adapter.
pub struct BrivoProvider {
    directory: Arc<dyn Directory>,
    clients: crate::vendor::HttpClients,
    /// Tokens, by account (a digest of the auth endpoint and the credentials).
    accounts: Mutex<HashMap<u64, Account>>,
    pacer: Arc<crate::vendor::Pacer>,
    /// The monthly budget as the last answer's quota headers told it, by account.
    quotas: Arc<Mutex<HashMap<u64, Quota>>>,
    /// Which account each stored system was last reached through.
    systems: Mutex<HashMap<AccessSystemId, u64>>,
}

/// An account's monthly call budget: allotted, and spent so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Quota {
    allotted: u64,
    current: u64,
}

impl BrivoProvider {
    pub fn new(directory: Arc<dyn Directory>) -> Self {
        Self {
            directory,
            clients: Default::default(),
            accounts: Mutex::new(HashMap::new()),
            pacer: Default::default(),
            quotas: Default::default(),
            systems: Mutex::new(HashMap::new()),
        }
    }

    fn account(&self, settings: &Settings, login: &Login) -> (u64, Account) {
        // The key covers every secret too: new credentials never reuse an old token.
        let mut h = DefaultHasher::new();
        settings.auth_endpoint.hash(&mut h);
        login.client_id.hash(&mut h);
        login.client_secret.hash(&mut h);
        login.username.hash(&mut h);
        login.password.hash(&mut h);
        login.api_key.hash(&mut h);
        let key = h.finish();
        let mut m = match self.accounts.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        (key, m.entry(key).or_default().clone())
    }

    fn api(
        &self,
        settings: &BTreeMap<String, String>,
        credentials: &Credentials,
        at_discover: bool,
    ) -> Result<(Api, Settings), ProviderError> {
        let s = Settings::parse(settings)?;
        let login = Login::parse(credentials)?;
        let (account_key, account) = self.account(&s, &login);
        Ok((
            Api {
                client: self.clients.get(s.loopback)?,
                base: s.endpoint.clone(),
                auth_url: s.auth_endpoint.clone(),
                login,
                account,
                account_key,
                rate: s.rate,
                pacer: self.pacer.clone(),
                quotas: self.quotas.clone(),
                timeout: s.timeout,
                at_discover,
            },
            s,
        ))
    }

    async fn stored(&self, system: &AccessSystem) -> Result<(Api, Link), ProviderError> {
        let link = self.directory.link(system).await?;
        let (api, _) = self.api(&link.settings, &link.credentials, false)?;
        if let Ok(mut m) = self.systems.lock() {
            m.insert(system.id, api.account_key);
        }
        Ok((api, link))
    }
}

/// The parsed settings of a Brivo system.
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    endpoint: String,
    auth_endpoint: String,
    loopback: bool,
    site_id: Option<u64>,
    timeout: Duration,
    rate: RequestRate,
}

use crate::vendor::invalid_setting;

/// An `https://` URL (or `http://` to a loopback host), without credentials, query or fragment.
/// Returns it without a trailing `/`, and whether its host is a loopback one.
fn check_url(name: &str, raw: &str) -> Result<(String, bool), ProviderError> {
    let (_, loopback) = crate::vendor::vendor_url(name, raw, true)?;
    Ok((raw.trim().trim_end_matches('/').to_owned(), loopback))
}

impl Settings {
    fn parse(settings: &BTreeMap<String, String>) -> Result<Self, ProviderError> {
        for name in settings.keys() {
            if !matches!(
                name.as_str(),
                "endpoint" | "auth_endpoint" | "site_id" | "timeout_ms" | "requests_per_second"
            ) {
                return Err(invalid_setting(name, "unknown setting"));
            }
        }
        let (endpoint, api_loopback) = check_url(
            "endpoint",
            settings
                .get("endpoint")
                .map_or(DEFAULT_ENDPOINT, |e| e.trim()),
        )?;
        let (auth_endpoint, auth_loopback) = check_url(
            "auth_endpoint",
            settings
                .get("auth_endpoint")
                .map_or(DEFAULT_AUTH_ENDPOINT, |e| e.trim()),
        )?;
        let site_id = match settings.get("site_id") {
            None => None,
            Some(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid_setting("site_id", "must be a Brivo site id"))?,
            ),
        };
        let timeout = match settings.get("timeout_ms") {
            None => DEFAULT_TIMEOUT,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (100..=120_000).contains(&n) => Duration::from_millis(n),
                _ => {
                    return Err(invalid_setting(
                        "timeout_ms",
                        "must be a whole number of milliseconds in 100..=120000",
                    ));
                }
            },
        };
        let rate = RequestRate::from_setting(
            settings,
            "requests_per_second",
            DEFAULT_REQUESTS_PER_SECOND,
        )?;
        Ok(Self {
            endpoint,
            auth_endpoint,
            loopback: api_loopback && auth_loopback,
            site_id,
            timeout,
            rate,
        })
    }
}

/// The credentials of a Brivo account.
#[derive(Clone)]
struct Login {
    client_id: String,
    client_secret: String,
    username: String,
    password: String,
    api_key: String,
}

const CREDENTIAL_NAMES: [&str; 5] = [
    "client_id",
    "client_secret",
    "username",
    "password",
    "api_key",
];

impl Login {
    fn parse(credentials: &Credentials) -> Result<Self, ProviderError> {
        for name in credentials.values().keys() {
            if !CREDENTIAL_NAMES.contains(&name.as_str()) {
                return Err(invalid_setting(name, "unknown credential"));
            }
        }
        let get = |name: &str| -> Result<String, ProviderError> {
            let v = credentials
                .get(name)
                .map(str::trim)
                .ok_or_else(|| invalid_setting(name, "required"))?;
            if v.is_empty() || HeaderValue::from_str(v).is_err() {
                return Err(invalid_setting(name, "empty or not a valid header value"));
            }
            Ok(v.to_owned())
        };
        Ok(Self {
            client_id: get("client_id")?,
            client_secret: get("client_secret")?,
            username: get("username")?,
            password: get("password")?,
            api_key: get("api_key")?,
        })
    }
}

/// Whether a request changes something (a lost answer may have been applied) or only reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Change,
}

/// One account's API: the client, the endpoints, the login and its cached token.
struct Api {
    client: reqwest::Client,
    base: String,
    auth_url: String,
    login: Login,
    account: Account,
    /// The account's request rate, kept by `pacer` before every API request, and where the
    /// answers' quota headers are kept.
    account_key: u64,
    rate: RequestRate,
    pacer: Arc<crate::vendor::Pacer>,
    quotas: Arc<Mutex<HashMap<u64, Quota>>>,
    timeout: Duration,
    /// At discover, credentials and reachability are what the person connecting must fix.
    at_discover: bool,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

fn sensitive(v: &str) -> Result<HeaderValue, ProviderError> {
    let mut h = HeaderValue::from_str(v).map_err(|_| {
        ProviderError::Permanent(format!(
            "{INVALID_CONNECTION_SETTINGS}: a credential is not a valid header value"
        ))
    })?;
    h.set_sensitive(true);
    Ok(h)
}

impl Api {
    /// A token that was fresh when asked for: the cached one, or a renewed one.
    async fn token(&self) -> Result<String, ProviderError> {
        let mut st = self.account.lock().await;
        if let (Some(a), Some(t)) = (&st.access, st.fresh_until)
            && Instant::now() < t
        {
            return Ok(a.clone());
        }
        self.renew(&mut st).await
    }

    /// After a `401` with `used`: a token renewed since then, or a renewal now.
    async fn token_after_401(&self, used: &str) -> Result<String, ProviderError> {
        let mut st = self.account.lock().await;
        if let (Some(a), Some(t)) = (&st.access, st.fresh_until)
            && a != used
            && Instant::now() < t
        {
            return Ok(a.clone());
        }
        st.access = None;
        self.renew(&mut st).await
    }

    /// Renews with the refresh token when there is one, else (or when it is refused) with the
    /// password grant. Holds the account's lock: one renewal at a time.
    async fn renew(&self, st: &mut TokenState) -> Result<String, ProviderError> {
        let mut answer = None;
        if let Some(r) = st.refresh.take() {
            match self
                .grant(&[("grant_type", "refresh_token"), ("refresh_token", &r)])
                .await
            {
                Ok(a) => answer = Some(a),
                // A refresh token refused (expired, used): the password grant decides.
                Err(ProviderError::Permanent(m) | ProviderError::Transient(m))
                    if m.starts_with(INVALID_CREDENTIALS) => {}
                Err(e) => return Err(e),
            }
        }
        let a = match answer {
            Some(a) => a,
            None => {
                let (u, p) = (self.login.username.clone(), self.login.password.clone());
                self.grant(&[
                    ("grant_type", "password"),
                    ("username", &u),
                    ("password", &p),
                ])
                .await?
            }
        };
        let lifetime = a.expires_in.unwrap_or(DEFAULT_EXPIRES_IN).max(1) as f64;
        st.fresh_until = Some(Instant::now() + Duration::from_secs_f64(lifetime * RENEW_AT));
        st.refresh = a.refresh_token;
        st.access = Some(a.access_token.clone());
        tracing::debug!("renewed the Brivo access token");
        Ok(a.access_token)
    }

    /// `POST <auth_endpoint>` with the client's basic auth and a form body.
    async fn grant(&self, form: &[(&str, &str)]) -> Result<TokenAnswer, ProviderError> {
        let what = "POST <auth_endpoint>";
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().copied())
            .finish();
        let resp = self
            .client
            .post(&self.auth_url)
            .timeout(self.timeout)
            .basic_auth(&self.login.client_id, Some(&self.login.client_secret))
            .header("api-key", sensitive(&self.login.api_key)?)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            // A token request changes nothing Keygate cares about: never ambiguous.
            Err(e) => return Err(self.transport_error(what, &e, Kind::Read, self.timeout)),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = match resp.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return Err(self.transport_error(what, &e, Kind::Read, self.timeout)),
        };
        if status.is_success() {
            return serde_json::from_slice::<TokenAnswer>(&bytes).map_err(|_| {
                ProviderError::Transient(format!("{what}: Brivo's token answer does not parse"))
            });
        }
        match status.as_u16() {
            // Brivo answers a bad client or login with 401 (`invalid_grant`, "Bad credentials").
            400 | 401 | 403 => {
                let said = format!(
                    "{what}: HTTP {}: {}",
                    status.as_u16(),
                    self.scrub(&detail(&bytes))
                );
                Err(if self.at_discover {
                    ProviderError::Permanent(format!("{INVALID_CREDENTIALS}: {said}"))
                } else {
                    ProviderError::Transient(format!("{INVALID_CREDENTIALS}: {said}"))
                })
            }
            _ => Err(self.status_error(what, status, &headers, &bytes, Kind::Read)),
        }
    }

    /// Sends one API request (renewing the token once on a `401`) and classifies a failure.
    /// `404` comes back as `Ok(None)` for the caller to decide.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        deadline: Duration,
    ) -> Result<Option<Vec<u8>>, ProviderError> {
        let kind = if method == Method::GET {
            Kind::Read
        } else {
            Kind::Change
        };
        let what = format!("{method} {path}");
        tracing::Span::current().record("request", what.as_str());
        let mut url = Url::parse(&format!("{}{path}", self.base)).map_err(|_| {
            ProviderError::Permanent(format!("{INVALID_CONNECTION_SETTINGS}: endpoint: {what}"))
        })?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut token = self.token().await?;
        let mut renewed = false;
        loop {
            if let Err(wait) = self
                .pacer
                .pace(self.account_key, self.rate, MAX_PACING_WAIT)
                .await
            {
                // Nothing was sent: the orchestrator waits and spends no attempt.
                return Err(ProviderError::Transient(format!(
                    "{RATE_LIMITED}: {what}: the account's request rate is spent (retry after {} s)",
                    wait.as_secs().max(1)
                )));
            }
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .timeout(deadline)
                .header("api-key", sensitive(&self.login.api_key)?)
                .header(
                    reqwest::header::AUTHORIZATION,
                    sensitive(&format!("bearer {token}"))?,
                )
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return Err(self.transport_error(&what, &e, kind, deadline)),
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            self.note_quota(&headers);
            let bytes = match resp.bytes().await {
                Ok(b) => b.to_vec(),
                Err(e) => return Err(self.transport_error(&what, &e, kind, deadline)),
            };
            if status.is_success() {
                return Ok(Some(bytes));
            }
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if status == StatusCode::UNAUTHORIZED && !renewed {
                // The token expired or was revoked: nothing was applied. Renew once, repeat once.
                renewed = true;
                token = self.token_after_401(&token).await?;
                continue;
            }
            tracing::debug!(request = %what, status = status.as_u16(), "Brivo refused a request");
            return Err(self.status_error(&what, status, &headers, &bytes, kind));
        }
    }

    /// Keeps what Mashery's quota headers (`X-Plan-Quota-Allotted`, `X-Plan-Quota-Current`) say
    /// of the account's monthly budget, when the answer carries them.
    fn note_quota(&self, headers: &HeaderMap) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(allotted), Some(current)) = (
            number("x-plan-quota-allotted"),
            number("x-plan-quota-current"),
        ) && allotted > 0
            && let Ok(mut m) = self.quotas.lock()
        {
            m.insert(self.account_key, Quota { allotted, current });
        }
    }

    fn transport_error(
        &self,
        what: &str,
        e: &reqwest::Error,
        kind: Kind,
        deadline: Duration,
    ) -> ProviderError {
        let cause = self.scrub(&crate::vendor::reqwest_failure(e));
        if e.is_connect() {
            return ProviderError::Transient(format!("{PROVIDER_UNREACHABLE}: {what}: {cause}"));
        }
        let why = if e.is_timeout() {
            format!("no answer within {} ms", deadline.as_millis())
        } else {
            cause
        };
        match kind {
            Kind::Change => ProviderError::Ambiguous(format!("{what}: {why}")),
            Kind::Read if self.at_discover => {
                ProviderError::Transient(format!("{PROVIDER_UNREACHABLE}: {what}: {why}"))
            }
            Kind::Read => ProviderError::Transient(format!("{what}: {why}")),
        }
    }

    fn status_error(
        &self,
        what: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        kind: Kind,
    ) -> ProviderError {
        let detail = self.scrub(&detail(body));
        let code = status.as_u16();
        let said = if detail.is_empty() {
            format!("{what}: HTTP {code}")
        } else {
            format!("{what}: HTTP {code}: {detail}")
        };
        let gateway = headers
            .get("x-error-detail-header")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let text = format!("{} {gateway}", String::from_utf8_lossy(body)).to_ascii_lowercase();
        let budget = text.contains("over rate") || text.contains("quota");
        match code {
            403 | 429 if budget => ProviderError::Transient(format!("{BUDGET_EXHAUSTED}: {said}")),
            403 if text.contains("over qps") => {
                self.pacer
                    .throttled(self.account_key, Duration::from_secs(1));
                ProviderError::Transient(format!("{RATE_LIMITED}: {said}"))
            }
            401 | 403 if self.at_discover => {
                ProviderError::Permanent(format!("{INVALID_CREDENTIALS}: {said}"))
            }
            401 | 403 => ProviderError::Transient(format!("{INVALID_CREDENTIALS}: {said}")),
            429 => {
                let after = headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                self.pacer
                    .throttled(self.account_key, Duration::from_secs(after.unwrap_or(1)));
                ProviderError::Transient(match after {
                    Some(s) => format!("{RATE_LIMITED}: {said} (retry after {s} s)"),
                    None => format!("{RATE_LIMITED}: {said}"),
                })
            }
            503 => ProviderError::Transient(said),
            500..=599 if kind == Kind::Change => ProviderError::Ambiguous(said),
            500..=599 => ProviderError::Transient(said),
            _ => ProviderError::Permanent(format!("brivo_refused: {said}")),
        }
    }

    /// No secret leaves in a message, even if something echoed it.
    fn scrub(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for secret in [
            &self.login.client_secret,
            &self.login.password,
            &self.login.api_key,
        ] {
            if !secret.is_empty() {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
        out
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Option<T>, ProviderError> {
        let Some(body) = self
            .send(Method::GET, path, query, None, self.timeout)
            .await?
        else {
            return Ok(None);
        };
        decode(&format!("GET {path}"), &body, Kind::Read).map(Some)
    }

    /// Every item of a listing, page by page (`offset`/`pageSize`, the total in `count`).
    async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ProviderError> {
        let mut all: Vec<T> = Vec::new();
        for _ in 0..MAX_PAGES {
            let q = [
                ("offset", all.len().to_string()),
                ("pageSize", PAGE_SIZE.to_string()),
            ];
            let Some(page) = self.get::<Page<T>>(path, &q).await? else {
                return Err(ProviderError::Permanent(format!(
                    "brivo_refused: GET {path}: HTTP 404"
                )));
            };
            let n = page.data.len();
            all.extend(page.data);
            let more = match page.count {
                Some(total) => all.len() < total,
                None => n >= PAGE_SIZE,
            };
            if n == 0 || !more {
                return Ok(all);
            }
        }
        Err(ProviderError::Permanent(format!(
            "GET {path}: more than {MAX_PAGES} pages"
        )))
    }

    /// A write; its answer body (empty for a `204`), `None` for a `404`.
    async fn write(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Vec<u8>>, ProviderError> {
        self.send(method, path, &[], body, self.timeout).await
    }
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
    #[serde(default)]
    count: Option<usize>,
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8], kind: Kind) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        let m = format!("{what}: Brivo's answer does not parse: {e}");
        match kind {
            Kind::Change => ProviderError::Ambiguous(m),
            Kind::Read => ProviderError::Transient(m),
        }
    })
}

/// What an error body says: `message`, `error_description`, or `error`; else its start.
fn detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let out = match serde_json::from_str::<Value>(&text) {
        Ok(v) => ["message", "error_description", "error"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
            .map_or_else(|| text.trim().to_owned(), str::to_owned),
        Err(_) => text.trim().to_owned(),
    };
    out.chars().take(MAX_DETAIL).collect()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BSite {
    id: u64,
    #[serde(default)]
    site_name: Option<String>,
    #[serde(default)]
    time_zone: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BAccessPoint {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    site_id: Option<u64>,
    #[serde(default)]
    activation_enabled: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
struct BGroup {
    id: u64,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BPermission {
    access_point: BRef,
}

#[derive(Clone, Debug, Deserialize)]
struct BInvitation {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct BRef {
    id: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BUser {
    id: u64,
    #[serde(default)]
    pin: Option<String>,
    #[serde(default)]
    effective_from: Option<String>,
    #[serde(default)]
    effective_to: Option<String>,
}

fn external_id(kind: &str, id: &str) -> Result<u64, ProviderError> {
    id.parse::<u64>().map_err(|_| {
        ProviderError::Permanent(format!(
            "{kind}_not_synced: {id:?} is not a Brivo {kind} id"
        ))
    })
}

/// The `externalId` of the Brivo user of an access method.
pub fn user_external_id(method: AccessMethodId) -> String {
    format!("{EXTERNAL_ID_PREFIX}{method}")
}

/// `(first, last)`: Brivo requires both.
fn names(full: &str) -> (String, String) {
    let full = full.trim();
    match full.rsplit_once(char::is_whitespace) {
        Some((first, last)) if !first.trim().is_empty() => {
            (first.trim().to_owned(), last.trim().to_owned())
        }
        _ if !full.is_empty() => (full.to_owned(), "(Keygate)".to_owned()),
        _ => ("Keygate".to_owned(), "User".to_owned()),
    }
}

/// The capability descriptor of a Brivo site whose requests are kept to `rate`.
pub fn capabilities(rate: RequestRate) -> CapabilityDescriptor {
    CapabilityDescriptor {
        permission_model: PermissionModel::AccessGroups,
        supported_modes: vec![
            AccessMethodMode::Code,
            AccessMethodMode::MobileKey,
            AccessMethodMode::CloudKey,
        ],
        pin_code_rules: Some(PinCodeRules {
            generator: PinCodeGenerator::Keygate,
            min_length: 4,
            max_length: 8,
            can_request_code: true,
            is_code_per_entrance: false,
        }),
        is_card_encoding_required: false,
        can_remote_unlock: true,
        can_issue_mobile_keys: true,
        can_assign_entrances_directly: false,
        can_schedule_credentials: true,
        rate_limit: rate.calls(REQUESTS_PER_CALL),
    }
}

impl Api {
    async fn user_by_external(&self, ext: &str) -> Result<Option<BUser>, ProviderError> {
        let path = format!("/users/{}/external", encode_path(ext));
        self.get(&path, &[]).await
    }

    /// The user of `ext`, made when there is none, with `body`'s PIN and window.
    async fn ensure_user(&self, ext: &str, body: &Value) -> Result<BUser, ProviderError> {
        if let Some(u) = self.user_by_external(ext).await? {
            let want_pin = body.get("pin").and_then(Value::as_str);
            let want_from = body.get("effectiveFrom").and_then(Value::as_str);
            let want_to = body.get("effectiveTo").and_then(Value::as_str);
            let same = u.pin.as_deref() == want_pin
                && parse_time(u.effective_from.as_deref()) == parse_time(want_from)
                && parse_time(u.effective_to.as_deref()) == parse_time(want_to);
            if same {
                return Ok(u);
            }
            let path = format!("/users/{}", u.id);
            let Some(made) = self.write(Method::PUT, &path, Some(body)).await? else {
                return Err(ProviderError::Transient(format!(
                    "PUT {path}: the user is gone"
                )));
            };
            return decode(&format!("PUT {path}"), &made, Kind::Change);
        }
        match self.write(Method::POST, "/users", Some(body)).await {
            Ok(Some(made)) => decode("POST /users", &made, Kind::Change),
            Ok(None) => Err(ProviderError::Permanent(
                "brivo_refused: POST /users: HTTP 404".into(),
            )),
            // The external id taken: an earlier create whose answer was lost.
            Err(ProviderError::Permanent(m)) => match self.user_by_external(ext).await? {
                Some(u) => Ok(u),
                None => Err(ProviderError::Permanent(m)),
            },
            Err(e) => Err(e),
        }
    }

    /// A Brivo Mobile Pass invitation for the user, e-mailed to `email`, unless one stands.
    async fn ensure_invitation(&self, user: u64, email: &str) -> Result<(), ProviderError> {
        let path = format!("/users/{user}/credentials/digital-invitations");
        let invitations: Vec<BInvitation> = self.list(&path).await?;
        if invitations.iter().any(|i| {
            i.status
                .as_deref()
                .is_some_and(|s| LIVE_INVITATIONS.iter().any(|l| s.eq_ignore_ascii_case(l)))
        }) {
            return Ok(());
        }
        let body = json!({ "referenceId": email });
        match self
            .send(
                Method::POST,
                &path,
                &[("sendInvitationEmail", "true".to_owned())],
                Some(&body),
                self.timeout,
            )
            .await
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(ProviderError::Transient(format!(
                "POST {path}: the user is gone"
            ))),
            // "There is already a pending invitation": what was wanted.
            Err(ProviderError::Permanent(m)) if m.contains("HTTP 409") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn user_groups(&self, user: u64) -> Result<BTreeSet<u64>, ProviderError> {
        let path = format!("/users/{user}/groups");
        let page: Page<BGroup> = self
            .get(&path, &[])
            .await?
            .ok_or_else(|| ProviderError::Transient(format!("GET {path}: the user is gone")))?;
        Ok(page.data.into_iter().map(|g| g.id).collect())
    }

    /// The access point ids of a group's permissions.
    async fn group_access_points(&self, group: u64) -> Result<Vec<u64>, ProviderError> {
        let perms: Vec<BPermission> = self
            .list(&format!("/groups/{group}/access/access-points"))
            .await?;
        Ok(perms.into_iter().map(|p| p.access_point.id).collect())
    }
}

/// A path segment, percent-encoded.
fn encode_path(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// An unlock's or encoding's typed error from a failure before the answer.
fn from_provider_error(e: ProviderError) -> AttemptError {
    crate::vendor::attempt_from(e, unlock_errors::NOT_CONFIRMED)
}

#[async_trait]
impl AccessSystemProvider for BrivoProvider {
    fn warnings(&self, system: &AccessSystem) -> Vec<Notice> {
        let account = self
            .systems
            .lock()
            .ok()
            .and_then(|m| m.get(&system.id).copied());
        let quota = account.and_then(|a| self.quotas.lock().ok()?.get(&a).copied());
        match quota {
            // Exact for any budget below 2^52 calls a month.
            #[allow(clippy::cast_precision_loss)]
            Some(q) if q.current as f64 >= q.allotted as f64 * BUDGET_WARNING_SHARE => {
                vec![Notice::new(
                    BUDGET_NEARLY_EXHAUSTED,
                    format!(
                        "{} of this month's {} Brivo API calls are spent; at the limit, changes wait until the budget renews",
                        q.current, q.allotted
                    ),
                    OffsetDateTime::now_utc(),
                )]
            }
            _ => Vec::new(),
        }
    }

    fn system_types(&self) -> Vec<String> {
        vec![SYSTEM_TYPE.to_owned()]
    }

    #[tracing::instrument(skip_all, fields(system_type = %system_type, acs_system_id, request))]
    async fn discover(
        &self,
        system_type: &str,
        connection: &Connection,
    ) -> Result<NewAccessSystem, ProviderError> {
        if system_type != SYSTEM_TYPE {
            return Err(ProviderError::Permanent(format!(
                "{system_type:?} is not served by the Brivo adapter"
            )));
        }
        if let Some(id) = connection.acs_system_id {
            tracing::Span::current().record("acs_system_id", id.to_string());
        }
        let (api, settings) = self.api(&connection.settings, &connection.credentials, true)?;

        let sites: Vec<BSite> = api.list("/sites").await?;
        let site = match settings.site_id {
            Some(id) => sites.into_iter().find(|s| s.id == id).ok_or_else(|| {
                invalid_setting("site_id", &format!("the account sees no Brivo site {id}"))
            })?,
            None => match <[BSite; 1]>::try_from(sites) {
                Ok([s]) => s,
                Err(v) if v.is_empty() => {
                    return Err(invalid_setting("site_id", "the account sees no Brivo site"));
                }
                Err(v) => {
                    return Err(invalid_setting(
                        "site_id",
                        &format!("required: the account sees {} Brivo sites", v.len()),
                    ));
                }
            },
        };

        let aps: Vec<BAccessPoint> = api
            .list(&format!("/sites/{}/access-points", site.id))
            .await?;
        let mut seen = HashSet::new();
        let mut entrances = Vec::new();
        for a in aps
            .into_iter()
            .filter(|a| a.site_id.is_none_or(|s| s == site.id))
        {
            if !seen.insert(a.id) {
                return Err(ProviderError::Permanent(format!(
                    "Brivo listed access point {} twice",
                    a.id
                )));
            }
            entrances.push(NewEntrance {
                external_id: a.id.to_string(),
                display_name: a.name.unwrap_or_else(|| format!("Access point {}", a.id)),
                can_unlock_with_card: false,
                can_unlock_with_code: true,
                can_unlock_with_mobile_key: true,
                can_unlock_with_cloud_key: a.activation_enabled.unwrap_or(false),
                can_belong_to_reservation: false,
            });
        }
        let index: HashMap<String, usize> = entrances
            .iter()
            .enumerate()
            .map(|(i, e)| (e.external_id.clone(), i))
            .collect();

        let groups: Vec<BGroup> = api.list("/groups").await?;
        let mut access_groups = Vec::new();
        let mut seen = HashSet::new();
        for g in groups {
            if !seen.insert(g.id) {
                return Err(ProviderError::Permanent(format!(
                    "Brivo listed group {} twice",
                    g.id
                )));
            }
            let mut entrance_indexes = Vec::new();
            let mut elsewhere = 0;
            for ap in api.group_access_points(g.id).await? {
                match index.get(&ap.to_string()) {
                    Some(i) if !entrance_indexes.contains(i) => entrance_indexes.push(*i),
                    Some(_) => {}
                    None => elsewhere += 1,
                }
            }
            if entrance_indexes.is_empty() {
                continue;
            }
            if elsewhere > 0 {
                tracing::warn!(
                    group = g.id,
                    elsewhere,
                    "a Brivo group also opens access points of other sites; they are not this system's"
                );
            }
            access_groups.push(NewAccessGroup {
                external_id: g.id.to_string(),
                display_name: g.name.unwrap_or_else(|| format!("Group {}", g.id)),
                entrance_indexes,
            });
        }

        Ok(NewAccessSystem {
            name: connection
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .or_else(|| site.site_name.clone().map(|n| format!("{n} (Brivo)")))
                .unwrap_or_else(|| format!("Brivo site {}", site.id)),
            external_type: "brivo_site".to_owned(),
            system_type: SYSTEM_TYPE.to_owned(),
            is_virtual: false,
            time_zone: connection
                .time_zone
                .clone()
                .filter(|z| !z.trim().is_empty())
                .or(site.time_zone.filter(|z| !z.trim().is_empty()))
                .unwrap_or_else(|| "UTC".to_owned()),
            capabilities: capabilities(settings.rate),
            entrances,
            access_groups,
            encoders: Vec::new(),
        })
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, access_method_id = %job.access_method_id, request))]
    async fn provision(
        &self,
        system: &AccessSystem,
        job: &ProvisionJob,
        holder: &Holder,
    ) -> Result<ProvisionResult, ProviderError> {
        let (api, link) = self.stored(system).await?;
        if job.mode == AccessMethodMode::Card {
            return Err(ProviderError::Permanent(format!(
                "mode_not_supported: this Brivo adapter issues no {:?}",
                job.mode
            )));
        }
        let mut groups = BTreeSet::new();
        for id in &job.access_group_ids {
            let ext = link.access_groups.get(id).ok_or_else(|| {
                ProviderError::Permanent(format!("access_group_not_synced: access group {id}"))
            })?;
            groups.insert(external_id("access_group", ext)?);
        }
        if groups.is_empty() {
            return Err(ProviderError::Permanent(
                "access_group_required: Brivo grants doors only through groups".into(),
            ));
        }
        let pin = match job.mode {
            AccessMethodMode::Code => {
                let code = job
                    .requested_code
                    .as_deref()
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| {
                        ProviderError::Permanent(
                            "code_required: Keygate chooses Brivo PINs; the job has none".into(),
                        )
                    })?;
                if !(4..=8).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ProviderError::Permanent(
                        "invalid_code: a Brivo PIN is 4 to 8 digits".into(),
                    ));
                }
                Some(code.to_owned())
            }
            _ => None,
        };
        let email = holder
            .email_address
            .as_deref()
            .map(str::trim)
            .filter(|e| e.contains('@'));
        if job.mode == AccessMethodMode::MobileKey && email.is_none() {
            return Err(ProviderError::Permanent(
                "holder_email_required: a Brivo Mobile Pass is sent by e-mail".into(),
            ));
        }
        let ext = user_external_id(job.access_method_id);
        let (first, last) = names(&holder.full_name);
        let mut body = json!({
            "firstName": first,
            "lastName": last,
            "externalId": ext,
            "effectiveFrom": format_time(holder.starts_at),
        });
        if let Some(to) = holder.ends_at {
            body["effectiveTo"] = json!(format_time(to));
        }
        if let Some(p) = &pin {
            body["pin"] = json!(p);
        }
        if let Some(e) = email {
            body["emails"] = json!([{ "address": e, "type": "Work" }]);
        }

        let user = api.ensure_user(&ext, &body).await?;
        let have = api.user_groups(user.id).await?;
        for g in groups.difference(&have) {
            let path = format!("/groups/{g}/users/{}", user.id);
            if api.write(Method::PUT, &path, None).await?.is_none() {
                return Err(ProviderError::Permanent(format!(
                    "access_group_not_found: PUT {path}: Brivo has no such group or user"
                )));
            }
        }
        for g in have.difference(&groups) {
            api.write(
                Method::DELETE,
                &format!("/groups/{g}/users/{}", user.id),
                None,
            )
            .await?;
        }
        // The pass last: when it is redeemed, the doors are there.
        if let (AccessMethodMode::MobileKey, Some(e)) = (job.mode, email) {
            api.ensure_invitation(user.id, e).await?;
        }
        Ok(ProvisionResult {
            doors: job
                .entrance_ids
                .iter()
                .map(|e| (*e, DoorOutcome::Granted))
                .collect(),
            code: user.pin.filter(|_| pin.is_some()),
            card_encoding_required: false,
            client_session_token: None,
        })
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, access_method_id = %job.access_method_id, request))]
    async fn revoke(&self, system: &AccessSystem, job: &RevokeJob) -> Result<(), ProviderError> {
        let (api, _) = self.stored(system).await?;
        let ext = user_external_id(job.access_method_id);
        let Some(user) = api.user_by_external(&ext).await? else {
            return Ok(());
        };
        // Access first, the user (and its PIN) last: until it goes, a repeat still finds it.
        let have = match api.user_groups(user.id).await {
            Ok(h) => h,
            Err(ProviderError::Transient(m)) if m.ends_with("the user is gone") => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for g in have {
            api.write(
                Method::DELETE,
                &format!("/groups/{g}/users/{}", user.id),
                None,
            )
            .await?;
        }
        api.write(Method::DELETE, &format!("/users/{}", user.id), None)
            .await
            .map(|_| ())
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, %access_method_id, request))]
    async fn read_back(
        &self,
        system: &AccessSystem,
        access_method_id: AccessMethodId,
    ) -> Result<Option<HeldCredential>, ProviderError> {
        let (api, link) = self.stored(system).await?;
        let Some(user) = api
            .user_by_external(&user_external_id(access_method_id))
            .await?
        else {
            return Ok(None);
        };
        let by_external: HashMap<&str, EntranceId> = link
            .entrances
            .iter()
            .map(|(id, ext)| (ext.as_str(), *id))
            .collect();
        let mut aps = BTreeSet::new();
        for g in api.user_groups(user.id).await? {
            aps.extend(api.group_access_points(g).await?);
        }
        let mut entrance_ids = Vec::new();
        for ap in &aps {
            match by_external.get(ap.to_string().as_str()) {
                Some(id) => entrance_ids.push(*id),
                None => tracing::warn!(
                    access_point = ap,
                    "the access opens an access point Keygate does not know; ignored"
                ),
            }
        }
        Ok(Some(HeldCredential {
            entrance_ids,
            starts_at: parse_time(user.effective_from.as_deref()),
            ends_at: parse_time(user.effective_to.as_deref()),
            code: user.pin,
            card_encoding_required: false,
        }))
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, acs_entrance_id = %job.acs_entrance_id, request))]
    async fn unlock(&self, system: &AccessSystem, job: &UnlockJob) -> Result<(), AttemptError> {
        if !system.capabilities.can_remote_unlock {
            return Err(attempt(
                unlock_errors::NOT_SUPPORTED,
                "this access system cannot unlock remotely",
            ));
        }
        let (api, link) = self.stored(system).await.map_err(from_provider_error)?;
        let Some(ap) = link.entrances.get(&job.acs_entrance_id) else {
            return Err(attempt(
                "entrance_not_synced",
                format!(
                    "entrance {} has no Brivo access point id",
                    job.acs_entrance_id
                ),
            ));
        };
        let ap = external_id("entrance", ap).map_err(from_provider_error)?;
        let mut deadline = api.timeout.min(UNLOCK_TIMEOUT_CAP);
        if let Some(expires_at) = job.expires_at {
            let left = Duration::try_from(expires_at - OffsetDateTime::now_utc())
                .unwrap_or(Duration::ZERO);
            if left.is_zero() {
                return Err(attempt(
                    unlock_errors::EXPIRED,
                    "the unlock's deadline passed before it was sent",
                ));
            }
            deadline = deadline.min(left);
        }
        let path = format!("/access-points/{ap}/activate");
        match api.send(Method::POST, &path, &[], None, deadline).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(attempt(
                "entrance_not_found",
                format!("POST {path}: Brivo has no such access point for this account"),
            )),
            Err(ProviderError::Permanent(m)) if m.contains("HTTP 412") => {
                Err(attempt("lock_not_online", m))
            }
            Err(ProviderError::Permanent(m)) if m.starts_with("brivo_refused") => {
                Err(attempt("unlock_failed", m))
            }
            Err(e) => Err(from_provider_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn settings_are_checked() {
        let ok = Settings::parse(&settings(&[])).expect("defaults");
        assert_eq!(ok.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(ok.auth_endpoint, DEFAULT_AUTH_ENDPOINT);
        assert_eq!(ok.timeout, DEFAULT_TIMEOUT);
        assert!(!ok.loopback);
        let local = Settings::parse(&settings(&[
            ("endpoint", "http://127.0.0.1:9/v1/api/"),
            ("auth_endpoint", "http://localhost:9/oauth/token"),
        ]))
        .expect("loopback");
        assert_eq!(local.endpoint, "http://127.0.0.1:9/v1/api");
        assert!(local.loopback);
        for (bad, name) in [
            (
                settings(&[("endpoint", "http://api.brivo.com/v1/api")]),
                "endpoint",
            ),
            (settings(&[("endpoint", "ftp://127.0.0.1")]), "endpoint"),
            (
                settings(&[("endpoint", "https://u:p@x/v1/api")]),
                "endpoint",
            ),
            (
                settings(&[("endpoint", "https://x/v1/api?x=1")]),
                "endpoint",
            ),
            (
                settings(&[("auth_endpoint", "http://auth.brivo.com/oauth/token")]),
                "auth_endpoint",
            ),
            (settings(&[("site_id", "HQ")]), "site_id"),
            (settings(&[("site_id", "0")]), "site_id"),
            (settings(&[("timeout_ms", "5")]), "timeout_ms"),
            (settings(&[("colour", "red")]), "colour"),
        ] {
            match Settings::parse(&bad) {
                Err(ProviderError::Permanent(m)) => assert!(
                    m.starts_with(&format!("{INVALID_CONNECTION_SETTINGS}: {name}")),
                    "{m}"
                ),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn error_bodies_are_summarised() {
        assert_eq!(
            detail(br#"{"code":404,"message":"User not found"}"#),
            "User not found"
        );
        assert_eq!(
            detail(br#"{"error":"invalid_grant","error_description":"Bad credentials"}"#),
            "Bad credentials"
        );
        assert_eq!(
            detail(b"<h1>Developer Inactive</h1>"),
            "<h1>Developer Inactive</h1>"
        );
    }

    #[test]
    fn names_split_in_two() {
        assert_eq!(
            names("Ada King Lovelace"),
            ("Ada King".into(), "Lovelace".into())
        );
        assert_eq!(names("Cher"), ("Cher".into(), "(Keygate)".into()));
        assert_eq!(names("  "), ("Keygate".into(), "User".into()));
    }
}
