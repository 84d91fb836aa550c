//! The Kisi adapter (`kisi`): Kisi's REST API (`https://api.kisi.io`), one Kisi place per
//! Keygate access system. Kisi decides who opens which door by groups: a Kisi group is an
//! access group, its locks (`/group_locks`) are the entrances, and a user gets a group's doors
//! through a `group_basic` role assignment (optionally between `valid_from` and `valid_until`).
//! People open doors with the Kisi app (`mobile_key`) or remotely (`cloud_key`,
//! `POST /locks/{id}/unlock`); this adapter issues no PIN and encodes no card.
//!
//! Settings (`Connection::settings` at discover, `Link::settings` for a stored system):
//! - `endpoint` (optional, default `https://api.kisi.io`): `https://host[:port]`, or `http://`
//!   only for a loopback host (a simulator); no path.
//! - `place_id` (optional): the Kisi place this system is. Without it, discover takes the one
//!   place the API key sees, and refuses when it sees none or several.
//! - `timeout_ms` (optional, default 10000, 100..=120000): the deadline of every request.
//! - `requests_per_second` (optional, default 10): the account's request rate, which every
//!   request keeps to (`vendor::Pacer`); the declared call rate is a fifth of it.
//!
//! Credentials: `api_key` (required), sent as `Authorization: KISI-LOGIN <api_key>` (a header
//! marked sensitive), never logged nor put in an error; `webhook_secret` (optional): the
//! signature key of the Kisi "Event Webhook" integration that posts to Keygate (see
//! [`webhook`]). Anything else, or a malformed value, is refused as
//! `Permanent("invalid_connection_settings: ...")`.
//!
//! References (what makes a repeat converge on the same Kisi objects):
//! - the person: the Kisi user whose e-mail is the holder's (`GET /users?query=<email>`, exact
//!   match, case-insensitive), created as a managed user (`send_emails: false`) when there is
//!   none; a repeat finds the same user by the same address. A holder without an e-mail address
//!   is refused (`holder_email_required`): a Kisi user is an e-mail address.
//! - the access method: an entry `metadata.keygate["<access_method_id>"]` on that user
//!   (`{"groups": [..], "valid_from": .., "valid_until": ..}`), written before any role
//!   assignment; revoke and read-back find the user by it (a listing of the organization's
//!   users, matched on the entry: the trait gives them no holder).
//! - the access: one `group_basic` role assignment per (user, group), found by user + group
//!   before one is made, so a repeat never makes a second. Several access methods of one person
//!   can need the same group: the assignment then spans the union of their windows, and goes only
//!   when the last method that needs it is revoked.
//!
//! Limits: a role assignment carries no reference of its own, so a `group_basic` assignment of
//! the same user and group made outside Keygate is adopted (its window converged, deleted with
//! the last method that needs it). Revoke and read-back list the organization's users to find
//! the entry (one request per 100 users). The user's `metadata` is read, then replaced whole:
//! changes to one Kisi user run one at a time in a process (`users`, keyed by the user), so two
//! methods of one person provisioned at once do not lose one; replicas do not share that lock.
//!
//! Error classes: a connection that could not be opened is `Transient("provider_unreachable:
//! ...")`; `401`/`403` are `invalid_credentials` (`Permanent` at discover, `Transient` on a
//! stored system's calls); `429` (with its `Retry-After`) and `503` are `Transient`; a timeout or
//! another `5xx` after a write was sent is `Ambiguous` (on a read, `Transient`); other `4xx` are
//! `Permanent`, with Kisi's `code`/`message`/`errors`.

use crate::vendor::{MAX_PACING_WAIT, RequestRate, attempt, format_time, parse_time};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keygate_domain::action::{AttemptError, RevokeJob, UnlockJob, unlock_errors};
use keygate_domain::capability::{AccessMethodMode, CapabilityDescriptor, PermissionModel};
use keygate_domain::grant::ProvisionJob;
use keygate_domain::ids::{AccessMethodId, EntranceId};
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
    ProviderError, VendorEvent, WebhookError, WebhookHeaders,
};

pub mod webhook;

/// The credential holding the signature key of Kisi's event webhooks.
pub const WEBHOOK_SECRET: &str = "webhook_secret";

/// The one system type this adapter serves.
pub const SYSTEM_TYPE: &str = "kisi";
pub use crate::vendor::{
    INVALID_CONNECTION_SETTINGS, INVALID_CREDENTIALS, PROVIDER_UNREACHABLE, RATE_LIMITED,
};
/// Kisi's API.
pub const DEFAULT_ENDPOINT: &str = "https://api.kisi.io";

/// The role that lets a user unlock the doors of a group.
pub const GROUP_BASIC: &str = "group_basic";
/// The key of Keygate's entries in a Kisi user's `metadata`.
pub const METADATA_KEY: &str = "keygate";

/// The request rate the adapter keeps to when the system's settings name none. Kisi publishes
/// no numeric limit (it answers `429` with `Retry-After` when one is hit): ten requests a second
/// is an estimate of ours; set `requests_per_second` to the organization's real limit.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 10.0;
/// The most requests one provider call makes (find the user, write it, list its assignments,
/// write one per group): the declared call rate is the request rate divided by this.
pub const REQUESTS_PER_CALL: u32 = 5;

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
const UNLOCK_TIMEOUT_CAP: Duration = Duration::from_secs(10);
/// The longest the lookup of a webhook's actor waits (the vendor's request is open meanwhile).
const WEBHOOK_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
const PAGE_LIMIT: usize = 100;
const MAX_PAGES: usize = 500;
/// The most of an error body kept in a message.
const MAX_DETAIL: usize = 300;

/// The Kisi adapter.
pub struct KisiProvider {
    directory: Arc<dyn Directory>,
    clients: crate::vendor::HttpClients,
    pacer: Arc<crate::vendor::Pacer>,
    /// One writer at a time per Kisi user (its `metadata` is read, changed and written whole).
    users: crate::vendor::KeyedLocks,
}

impl KisiProvider {
    pub fn new(directory: Arc<dyn Directory>) -> Self {
        Self {
            directory,
            clients: Default::default(),
            pacer: Default::default(),
            users: Default::default(),
        }
    }

    fn api(
        &self,
        settings: &BTreeMap<String, String>,
        credentials: &Credentials,
        at_discover: bool,
    ) -> Result<(Api, Settings), ProviderError> {
        let s = Settings::parse(settings)?;
        let (auth, key) = login(credentials)?;
        Ok((
            Api {
                client: self.clients.get(s.loopback)?,
                base: s.endpoint.clone(),
                account: account_of(&s.endpoint, &key),
                auth,
                key,
                timeout: s.timeout,
                rate: s.rate,
                pacer: self.pacer.clone(),
                at_discover,
            },
            s,
        ))
    }

    async fn stored(&self, system: &AccessSystem) -> Result<(Api, Link), ProviderError> {
        let link = self.directory.link(system).await?;
        let (api, _) = self.api(&link.settings, &link.credentials, false)?;
        Ok((api, link))
    }
}

/// The parsed settings of a Kisi system.
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    endpoint: String,
    loopback: bool,
    place_id: Option<u64>,
    timeout: Duration,
    rate: RequestRate,
}

/// The account whose requests are paced together: one organization's key at one endpoint (a
/// hash; the key itself is not kept for this).
fn account_of(endpoint: &str, key: &str) -> u64 {
    crate::vendor::key_of(&[endpoint, key])
}

use crate::vendor::invalid_setting;

impl Settings {
    fn parse(settings: &BTreeMap<String, String>) -> Result<Self, ProviderError> {
        for name in settings.keys() {
            if !matches!(
                name.as_str(),
                "endpoint" | "place_id" | "timeout_ms" | "requests_per_second"
            ) {
                return Err(invalid_setting(name, "unknown setting"));
            }
        }
        let raw = settings
            .get("endpoint")
            .map_or(DEFAULT_ENDPOINT, |e| e.trim());
        let (_, loopback) = crate::vendor::vendor_endpoint(raw)?;
        let place_id = match settings.get("place_id") {
            None => None,
            Some(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid_setting("place_id", "must be a Kisi place id"))?,
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
            endpoint: raw.trim_end_matches('/').to_owned(),
            loopback,
            place_id,
            timeout,
            rate,
        })
    }
}

/// The `Authorization` value of the credentials' `api_key`, marked sensitive, and the key (to
/// scrub it from anything echoed back).
fn login(credentials: &Credentials) -> Result<(HeaderValue, String), ProviderError> {
    for name in credentials.values().keys() {
        if !matches!(name.as_str(), "api_key" | WEBHOOK_SECRET) {
            return Err(invalid_setting(name, "unknown credential"));
        }
    }
    if let Some(secret) = credentials.get(WEBHOOK_SECRET)
        && secret.trim().is_empty()
    {
        return Err(invalid_setting(WEBHOOK_SECRET, "empty"));
    }
    let key = credentials
        .get("api_key")
        .map(str::trim)
        .ok_or_else(|| invalid_setting("api_key", "required"))?;
    let bad = || invalid_setting("api_key", "empty or not a valid header value");
    if key.is_empty() {
        return Err(bad());
    }
    let mut value = HeaderValue::from_str(&format!("KISI-LOGIN {key}")).map_err(|_| bad())?;
    value.set_sensitive(true);
    Ok((value, key.to_owned()))
}

/// Whether a request changes something (a lost answer may have been applied) or only reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Change,
}

/// One organization's API: the client, the endpoint, the login.
struct Api {
    client: reqwest::Client,
    base: String,
    auth: HeaderValue,
    key: String,
    timeout: Duration,
    /// The account's request rate, kept by `pacer` before every request.
    account: u64,
    rate: RequestRate,
    pacer: Arc<crate::vendor::Pacer>,
    /// At discover, credentials and reachability are what the person connecting must fix.
    at_discover: bool,
}

/// A successful answer: its headers and body.
struct Answer {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Api {
    /// Sends one request and classifies a failure. `404` comes back as `Ok(None)` for the
    /// caller to decide.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        deadline: Duration,
    ) -> Result<Option<Answer>, ProviderError> {
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
        if let Err(wait) = self
            .pacer
            .pace(self.account, self.rate, MAX_PACING_WAIT)
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
            .request(method, url)
            .timeout(deadline)
            .header(reqwest::header::AUTHORIZATION, self.auth.clone())
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
        let bytes = match resp.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return Err(self.transport_error(&what, &e, kind, deadline)),
        };
        if status.is_success() {
            return Ok(Some(Answer {
                headers,
                body: bytes,
            }));
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        tracing::debug!(request = %what, status = status.as_u16(), "Kisi refused a request");
        Err(self.status_error(&what, status, &headers, &bytes, kind))
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
            // Nothing was sent: the orchestrator waits without spending attempts.
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
        match code {
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
                    .throttled(self.account, Duration::from_secs(after.unwrap_or(1)));
                ProviderError::Transient(match after {
                    Some(s) => format!("{RATE_LIMITED}: {said} (retry after {s} s)"),
                    None => format!("{RATE_LIMITED}: {said}"),
                })
            }
            // Not processed: nothing applied.
            503 => ProviderError::Transient(said),
            500..=599 if kind == Kind::Change => ProviderError::Ambiguous(said),
            500..=599 => ProviderError::Transient(said),
            _ => ProviderError::Permanent(format!("kisi_refused: {said}")),
        }
    }

    /// The key never leaves in a message, even if something echoed it.
    fn scrub(&self, s: &str) -> String {
        if self.key.is_empty() {
            s.to_owned()
        } else {
            s.replace(&self.key, "<redacted>")
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Option<(T, HeaderMap)>, ProviderError> {
        let Some(a) = self
            .send(Method::GET, path, query, None, self.timeout)
            .await?
        else {
            return Ok(None);
        };
        let v = decode(&format!("GET {path}"), &a.body, Kind::Read)?;
        Ok(Some((v, a.headers)))
    }

    /// Every item of a listing, page by page (`limit`/`offset`, `X-Collection-Range`).
    async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<T>, ProviderError> {
        let mut all: Vec<T> = Vec::new();
        for _ in 0..MAX_PAGES {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("limit", PAGE_LIMIT.to_string()));
            q.push(("offset", all.len().to_string()));
            let Some((items, headers)) = self.get::<Vec<T>>(path, &q).await? else {
                return Err(ProviderError::Permanent(format!(
                    "kisi_refused: GET {path}: HTTP 404"
                )));
            };
            let n = items.len();
            let offset = all.len();
            all.extend(items);
            match headers
                .get("x-collection-range")
                .and_then(|v| v.to_str().ok())
                .and_then(collection_range)
            {
                // `start-end/total`: more when the page ends before the total.
                Some((Some((_, end)), total)) if end + 1 < total && n > 0 => {}
                Some(_) => return Ok(all),
                // No range: a short page is the last.
                None if n < PAGE_LIMIT || n == 0 => return Ok(all),
                None => {}
            }
            if all.len() == offset {
                return Ok(all);
            }
        }
        Err(ProviderError::Permanent(format!(
            "GET {path}: more than {MAX_PAGES} pages"
        )))
    }

    /// A write that answers an object.
    async fn write(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Option<Value>, ProviderError> {
        let what = format!("{method} {path}");
        let Some(a) = self
            .send(method, path, &[], Some(body), self.timeout)
            .await?
        else {
            return Ok(None);
        };
        if a.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(Value::Null));
        }
        decode(&what, &a.body, Kind::Change).map(Some)
    }

    /// Deletes; what is already gone (`404`) is deleted.
    async fn delete(&self, path: &str) -> Result<(), ProviderError> {
        self.send(Method::DELETE, path, &[], None, self.timeout)
            .await
            .map(|_| ())
    }
}

/// `(Some((start, end)) or None for "*", total)` of an `X-Collection-Range` value.
fn collection_range(v: &str) -> Option<(Option<(usize, usize)>, usize)> {
    let (range, total) = v.trim().split_once('/')?;
    let total = total.trim().parse().ok()?;
    if range.trim() == "*" {
        return Some((None, total));
    }
    let (start, end) = range.split_once('-')?;
    Some((
        Some((start.trim().parse().ok()?, end.trim().parse().ok()?)),
        total,
    ))
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8], kind: Kind) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        let m = format!("{what}: Kisi's answer does not parse: {e}");
        match kind {
            // The write went through; what it made is not known.
            Kind::Change => ProviderError::Ambiguous(m),
            Kind::Read => ProviderError::Transient(m),
        }
    })
}

/// What an error body says: `code` and `message`/`error`, or `errors`, else its start.
fn detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let out = match serde_json::from_str::<Value>(&text) {
        Ok(v) => {
            let code = v.get("code").and_then(Value::as_str);
            let message = v
                .get("message")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str);
            let errors = v.get("errors").filter(|e| !e.is_null());
            match (code, message, errors) {
                (_, _, Some(e)) => format!("errors {e}"),
                (Some(c), Some(m), None) => format!("{c}: {m}"),
                (None, Some(m), None) => m.to_owned(),
                (Some(c), None, None) => c.to_owned(),
                (None, None, None) => text.trim().to_owned(),
            }
        }
        Err(_) => text.trim().to_owned(),
    };
    out.chars().take(MAX_DETAIL).collect()
}

#[derive(Clone, Debug, Deserialize)]
struct KPlace {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tz_time_zone: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct KLock {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    place_id: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
struct KGroup {
    id: u64,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct KGroupLock {
    #[serde(default)]
    group_id: Option<u64>,
    lock_id: u64,
}

#[derive(Clone, Debug, Deserialize)]
struct KUser {
    id: u64,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
struct KRole {
    id: u64,
    #[serde(default)]
    group_id: Option<u64>,
    #[serde(default)]
    role_id: Option<String>,
    #[serde(default)]
    valid_from: Option<String>,
    #[serde(default)]
    valid_until: Option<String>,
}

/// What one access method asked of one user: kept in the user's `metadata`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
struct MethodEntry {
    groups: Vec<u64>,
    valid_from: String,
    #[serde(default)]
    valid_until: Option<String>,
}

impl MethodEntry {
    fn window(&self) -> Window {
        Window {
            from: parse_time(Some(&self.valid_from)),
            until: parse_time(self.valid_until.as_deref()),
        }
    }
}

/// A validity window; `None` is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    from: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
}

impl Window {
    /// The smallest window that covers both.
    fn union(self, o: Window) -> Window {
        Window {
            from: match (self.from, o.from) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            },
            until: match (self.until, o.until) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            },
        }
    }

    fn covers(self, o: Window) -> bool {
        let from = match (self.from, o.from) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a <= b,
        };
        let until = match (self.until, o.until) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a >= b,
        };
        from && until
    }

    fn of(r: &KRole) -> Window {
        Window {
            from: parse_time(r.valid_from.as_deref()),
            until: parse_time(r.valid_until.as_deref()),
        }
    }
}

fn format_opt(t: Option<OffsetDateTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(format_time(t)))
}

/// Keygate's entries in a user's metadata, by access method id.
fn entries(user: &KUser) -> BTreeMap<String, MethodEntry> {
    user.metadata
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| {
                    serde_json::from_value::<MethodEntry>(v.clone())
                        .ok()
                        .map(|e| (k.clone(), e))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The user's metadata with Keygate's entries replaced by `entries` (the rest kept).
fn with_entries(user_metadata: Option<&Value>, entries: &BTreeMap<String, MethodEntry>) -> Value {
    let mut m = match user_metadata {
        Some(Value::Object(o)) => o.clone(),
        _ => serde_json::Map::new(),
    };
    if entries.is_empty() {
        m.remove(METADATA_KEY);
    } else {
        m.insert(METADATA_KEY.to_owned(), json!(entries));
    }
    Value::Object(m)
}

fn external_id(kind: &str, id: &str) -> Result<u64, ProviderError> {
    id.parse::<u64>().map_err(|_| {
        ProviderError::Permanent(format!("{kind}_not_synced: {id:?} is not a Kisi {kind} id"))
    })
}

/// The capability descriptor of a Kisi place whose requests are kept to `rate`.
pub fn capabilities(rate: RequestRate) -> CapabilityDescriptor {
    CapabilityDescriptor {
        permission_model: PermissionModel::AccessGroups,
        supported_modes: vec![AccessMethodMode::MobileKey, AccessMethodMode::CloudKey],
        pin_code_rules: None,
        is_card_encoding_required: false,
        can_remote_unlock: true,
        can_issue_mobile_keys: true,
        can_assign_entrances_directly: false,
        can_schedule_credentials: true,
        rate_limit: rate.calls(REQUESTS_PER_CALL),
    }
}

impl Api {
    /// The user whose e-mail is `email` (exactly, ignoring case).
    async fn user_by_email(&self, email: &str) -> Result<Option<KUser>, ProviderError> {
        let users: Vec<KUser> = self.list("/users", &[("query", email.to_owned())]).await?;
        Ok(users.into_iter().find(|u| {
            u.email
                .as_deref()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case(email))
        }))
    }

    /// The user of `email`, made (a managed user, with `metadata`) when there is none; `true`
    /// when made here. A create refused because the address is taken (an earlier create whose
    /// answer was lost, or a race) finds the user that took it.
    async fn ensure_user(
        &self,
        email: &str,
        name: &str,
        metadata: &Value,
    ) -> Result<(KUser, bool), ProviderError> {
        if let Some(u) = self.user_by_email(email).await? {
            return Ok((u, false));
        }
        let body = json!({ "user": {
            "name": name,
            "email": email,
            "send_emails": false,
            "confirm": true,
            "metadata": metadata,
        }});
        match self.write(Method::POST, "/users", &body).await {
            Ok(Some(made)) => {
                let user: KUser = serde_json::from_value(made).map_err(|e| {
                    ProviderError::Ambiguous(format!(
                        "POST /users: Kisi's answer does not parse: {e}"
                    ))
                })?;
                Ok((user, true))
            }
            Ok(None) => Err(ProviderError::Permanent(
                "kisi_refused: POST /users: HTTP 404".into(),
            )),
            Err(ProviderError::Permanent(m)) => match self.user_by_email(email).await? {
                Some(u) => Ok((u, false)),
                None => Err(ProviderError::Permanent(m)),
            },
            Err(e) => Err(e),
        }
    }

    /// The user holding `method`'s entry, and the entry.
    async fn user_by_method(
        &self,
        method: AccessMethodId,
    ) -> Result<Option<(KUser, MethodEntry)>, ProviderError> {
        let key = method.to_string();
        let users: Vec<KUser> = self.list("/users", &[]).await?;
        Ok(users.into_iter().find_map(|u| {
            let e = entries(&u).remove(&key)?;
            Some((u, e))
        }))
    }

    /// The user's `group_basic` assignments, by group.
    async fn assignments(&self, user_id: u64) -> Result<HashMap<u64, Vec<KRole>>, ProviderError> {
        let roles: Vec<KRole> = self
            .list("/role_assignments", &[("user_id", user_id.to_string())])
            .await?;
        let mut by_group: HashMap<u64, Vec<KRole>> = HashMap::new();
        for r in roles {
            if let (Some(g), Some(GROUP_BASIC)) = (r.group_id, r.role_id.as_deref()) {
                by_group.entry(g).or_default().push(r);
            }
        }
        Ok(by_group)
    }

    /// Makes the user's `group_basic` assignment of `group` what `entries` need: none when no
    /// entry names the group, else one spanning their windows (found before one is made).
    async fn converge_group(
        &self,
        user_id: u64,
        group: u64,
        entries: &BTreeMap<String, MethodEntry>,
        existing: &[KRole],
    ) -> Result<(), ProviderError> {
        let wanted = entries
            .values()
            .filter(|e| e.groups.contains(&group))
            .map(MethodEntry::window)
            .reduce(Window::union);
        let Some(w) = wanted else {
            for r in existing {
                self.delete(&format!("/role_assignments/{}", r.id)).await?;
            }
            return Ok(());
        };
        match existing.first() {
            None => {
                let body = json!({ "role_assignment": {
                    "user_id": user_id,
                    "group_id": group,
                    "role_id": GROUP_BASIC,
                    "valid_from": format_opt(w.from),
                    "valid_until": format_opt(w.until),
                    "notify": false,
                }});
                self.write(Method::POST, "/role_assignments", &body)
                    .await?
                    .ok_or_else(|| {
                        ProviderError::Permanent(
                            "kisi_refused: POST /role_assignments: HTTP 404".into(),
                        )
                    })?;
            }
            Some(r) if Window::of(r) != w => {
                let path = format!("/role_assignments/{}", r.id);
                let body = json!({ "role_assignment": {
                    "valid_from": format_opt(w.from),
                    "valid_until": format_opt(w.until),
                }});
                if self.write(Method::PATCH, &path, &body).await?.is_none() {
                    // Deleted under us: the repeat makes it again.
                    return Err(ProviderError::Transient(format!(
                        "PATCH {path}: the role assignment is gone"
                    )));
                }
            }
            Some(_) => {}
        }
        Ok(())
    }

    async fn set_entries(
        &self,
        user: &KUser,
        entries: &BTreeMap<String, MethodEntry>,
    ) -> Result<(), ProviderError> {
        let path = format!("/users/{}", user.id);
        let body = json!({ "user": { "metadata": with_entries(user.metadata.as_ref(), entries) } });
        match self.write(Method::PATCH, &path, &body).await? {
            Some(_) => Ok(()),
            None => Err(ProviderError::Transient(format!(
                "PATCH {path}: the user is gone"
            ))),
        }
    }

    /// The lock ids of a group.
    async fn group_locks(&self, group: u64) -> Result<Vec<u64>, ProviderError> {
        let gls: Vec<KGroupLock> = self
            .list("/group_locks", &[("group_id", group.to_string())])
            .await?;
        Ok(gls
            .into_iter()
            .filter(|gl| gl.group_id.is_none_or(|g| g == group))
            .map(|gl| gl.lock_id)
            .collect())
    }
}

/// An unlock's or encoding's typed error from a failure before the answer.
fn from_provider_error(e: ProviderError) -> AttemptError {
    crate::vendor::attempt_from(e, unlock_errors::NOT_CONFIRMED)
}

#[async_trait]
impl AccessSystemProvider for KisiProvider {
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
                "{system_type:?} is not served by the Kisi adapter"
            )));
        }
        if let Some(id) = connection.acs_system_id {
            tracing::Span::current().record("acs_system_id", id.to_string());
        }
        let (api, settings) = self.api(&connection.settings, &connection.credentials, true)?;

        let places: Vec<KPlace> = api.list("/places", &[]).await?;
        let place = match settings.place_id {
            Some(id) => places.into_iter().find(|p| p.id == id).ok_or_else(|| {
                invalid_setting("place_id", &format!("the API key sees no Kisi place {id}"))
            })?,
            None => match <[KPlace; 1]>::try_from(places) {
                Ok([p]) => p,
                Err(v) if v.is_empty() => {
                    return Err(invalid_setting(
                        "place_id",
                        "the API key sees no Kisi place",
                    ));
                }
                Err(v) => {
                    return Err(invalid_setting(
                        "place_id",
                        &format!("required: the API key sees {} Kisi places", v.len()),
                    ));
                }
            },
        };

        let locks: Vec<KLock> = api
            .list("/locks", &[("place_id", place.id.to_string())])
            .await?;
        let mut seen = HashSet::new();
        let mut entrances = Vec::new();
        for l in locks
            .into_iter()
            .filter(|l| l.place_id.is_none_or(|p| p == place.id))
        {
            if !seen.insert(l.id) {
                return Err(ProviderError::Permanent(format!(
                    "Kisi listed lock {} twice",
                    l.id
                )));
            }
            entrances.push(NewEntrance {
                external_id: l.id.to_string(),
                display_name: l.name.unwrap_or_else(|| format!("Lock {}", l.id)),
                can_unlock_with_card: false,
                can_unlock_with_code: false,
                can_unlock_with_mobile_key: true,
                can_unlock_with_cloud_key: true,
                can_belong_to_reservation: false,
            });
        }
        let index: HashMap<String, usize> = entrances
            .iter()
            .enumerate()
            .map(|(i, e)| (e.external_id.clone(), i))
            .collect();

        let groups: Vec<KGroup> = api.list("/groups", &[]).await?;
        let mut access_groups = Vec::new();
        let mut seen = HashSet::new();
        for g in groups {
            if !seen.insert(g.id) {
                return Err(ProviderError::Permanent(format!(
                    "Kisi listed group {} twice",
                    g.id
                )));
            }
            let mut entrance_indexes = Vec::new();
            let mut elsewhere = 0;
            for lock in api.group_locks(g.id).await? {
                match index.get(&lock.to_string()) {
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
                    "a Kisi group also opens locks of other places; they are not this system's"
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
                .or_else(|| place.name.clone().map(|n| format!("{n} (Kisi)")))
                .unwrap_or_else(|| format!("Kisi place {}", place.id)),
            external_type: "kisi_place".to_owned(),
            system_type: SYSTEM_TYPE.to_owned(),
            is_virtual: false,
            time_zone: connection
                .time_zone
                .clone()
                .filter(|z| !z.trim().is_empty())
                .or(place.tz_time_zone.filter(|z| !z.trim().is_empty()))
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
        if !matches!(
            job.mode,
            AccessMethodMode::MobileKey | AccessMethodMode::CloudKey
        ) {
            return Err(ProviderError::Permanent(format!(
                "mode_not_supported: Kisi issues no {:?}",
                job.mode
            )));
        }
        let mut groups = Vec::new();
        for id in &job.access_group_ids {
            let ext = link.access_groups.get(id).ok_or_else(|| {
                ProviderError::Permanent(format!("access_group_not_synced: access group {id}"))
            })?;
            groups.push(external_id("access_group", ext)?);
        }
        if groups.is_empty() {
            return Err(ProviderError::Permanent(
                "access_group_required: Kisi grants doors only through groups".into(),
            ));
        }
        groups.sort_unstable();
        groups.dedup();
        let email = holder
            .email_address
            .as_deref()
            .map(str::trim)
            .filter(|e| e.contains('@'))
            .ok_or_else(|| {
                ProviderError::Permanent(
                    "holder_email_required: a Kisi user is an e-mail address".into(),
                )
            })?;
        let entry = MethodEntry {
            groups: groups.clone(),
            valid_from: format_time(holder.starts_at),
            valid_until: holder.ends_at.map(format_time),
        };
        let key = job.access_method_id.to_string();
        let _writing = self
            .users
            .lock(crate::vendor::key_of(&[
                &api.base,
                &api.key,
                &email.to_lowercase(),
            ]))
            .await;

        // The user, with the method's entry written first: a repeat (or a revoke) finds it.
        let name = if holder.full_name.trim().is_empty() {
            email
        } else {
            holder.full_name.trim()
        };
        let (user, created) = api
            .ensure_user(
                email,
                name,
                &with_entries(None, &BTreeMap::from([(key.clone(), entry.clone())])),
            )
            .await?;
        let mut all = entries(&user);
        if !created {
            let before = all.insert(key.clone(), entry.clone());
            if before.as_ref() != Some(&entry) {
                api.set_entries(&user, &all).await?;
            }
        }
        // Groups an earlier version of this method named, and no longer does, converge too.
        let previous: BTreeSet<u64> = entries(&user)
            .get(&key)
            .map(|e| e.groups.iter().copied().collect())
            .unwrap_or_default();
        all.insert(key, entry);
        let existing = api.assignments(user.id).await?;
        let affected: BTreeSet<u64> = groups.iter().copied().chain(previous).collect();
        for g in affected {
            let have = existing.get(&g).map(Vec::as_slice).unwrap_or_default();
            api.converge_group(user.id, g, &all, have).await?;
        }
        Ok(ProvisionResult {
            doors: job
                .entrance_ids
                .iter()
                .map(|e| (*e, DoorOutcome::Granted))
                .collect(),
            code: None,
            card_encoding_required: false,
            client_session_token: None,
        })
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, access_method_id = %job.access_method_id, request))]
    async fn revoke(&self, system: &AccessSystem, job: &RevokeJob) -> Result<(), ProviderError> {
        let (api, _) = self.stored(system).await?;
        let Some((found, _)) = api.user_by_method(job.access_method_id).await? else {
            return Ok(());
        };
        // Under the user's lock, read it again: a provision of another of its methods may have
        // written it since the listing.
        let email = found.email.clone().unwrap_or_default();
        let _writing = self
            .users
            .lock(crate::vendor::key_of(&[
                &api.base,
                &api.key,
                &email.trim().to_lowercase(),
            ]))
            .await;
        let user = match api.user_by_email(email.trim()).await? {
            Some(u) if u.id == found.id => u,
            _ => found,
        };
        let Some(entry) = entries(&user).remove(&job.access_method_id.to_string()) else {
            return Ok(());
        };
        let mut rest = entries(&user);
        rest.remove(&job.access_method_id.to_string());
        // Access first, the entry last: until the entry goes, a repeat still finds the user.
        let existing = api.assignments(user.id).await?;
        for g in &entry.groups {
            let have = existing.get(g).map(Vec::as_slice).unwrap_or_default();
            api.converge_group(user.id, *g, &rest, have).await?;
        }
        api.set_entries(&user, &rest).await
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, %access_method_id, request))]
    async fn read_back(
        &self,
        system: &AccessSystem,
        access_method_id: AccessMethodId,
    ) -> Result<Option<HeldCredential>, ProviderError> {
        let (api, link) = self.stored(system).await?;
        let Some((user, entry)) = api.user_by_method(access_method_id).await? else {
            return Ok(None);
        };
        let by_external: HashMap<&str, EntranceId> = link
            .entrances
            .iter()
            .map(|(id, ext)| (ext.as_str(), *id))
            .collect();
        let existing = api.assignments(user.id).await?;
        let own = entry.window();
        let mut drift = None;
        let mut locks = BTreeSet::new();
        for g in &entry.groups {
            let Some(r) = existing.get(g).and_then(|v| v.first()) else {
                continue;
            };
            // The assignment can span other methods' windows too: the method holds its own
            // window while the assignment covers it; otherwise the assignment's shows.
            let w = Window::of(r);
            if !w.covers(own) {
                drift.get_or_insert(w);
            }
            locks.extend(api.group_locks(*g).await?);
        }
        let mut entrance_ids = Vec::new();
        for lock in &locks {
            match by_external.get(lock.to_string().as_str()) {
                Some(id) => entrance_ids.push(*id),
                None => tracing::warn!(
                    lock,
                    "the access opens a lock Keygate does not know; ignored"
                ),
            }
        }
        let w = drift.unwrap_or(own);
        Ok(Some(HeldCredential {
            entrance_ids,
            starts_at: w.from,
            ends_at: w.until,
            code: None,
            card_encoding_required: false,
        }))
    }

    fn parse_webhook(
        &self,
        link: &Link,
        headers: &WebhookHeaders,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Vec<VendorEvent>, WebhookError> {
        webhook::parse(link, headers, body, now)
    }

    /// The Kisi user's Keygate entries (`metadata.keygate`, written at provision): one per
    /// access method it holds. A user Kisi no longer has holds none.
    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, request))]
    async fn webhook_actor_methods(
        &self,
        system: &AccessSystem,
        actor: &str,
    ) -> Result<Vec<AccessMethodId>, ProviderError> {
        let Ok(user_id) = actor.parse::<u64>() else {
            return Ok(Vec::new());
        };
        let (mut api, _) = self.stored(system).await?;
        // Asked while the vendor's webhook request waits: never longer than this.
        api.timeout = api.timeout.min(WEBHOOK_LOOKUP_TIMEOUT);
        let Some((user, _)) = api.get::<KUser>(&format!("/users/{user_id}"), &[]).await? else {
            return Ok(Vec::new());
        };
        Ok(entries(&user)
            .keys()
            .filter_map(|k| k.parse().ok())
            .collect())
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
        let Some(lock) = link.entrances.get(&job.acs_entrance_id) else {
            return Err(attempt(
                "entrance_not_synced",
                format!("entrance {} has no Kisi lock id", job.acs_entrance_id),
            ));
        };
        let lock = external_id("entrance", lock).map_err(from_provider_error)?;
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
        let path = format!("/locks/{lock}/unlock");
        let body = json!({ "lock": { "proximity_proof": null } });
        match api
            .send(Method::POST, &path, &[], Some(&body), deadline)
            .await
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(attempt(
                "entrance_not_found",
                format!("POST {path}: Kisi has no such lock for this API key"),
            )),
            Err(ProviderError::Permanent(m)) if m.contains("offline") => {
                Err(attempt("lock_not_online", m))
            }
            Err(ProviderError::Permanent(m)) if m.starts_with("kisi_refused") => {
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
        assert_eq!(ok.timeout, DEFAULT_TIMEOUT);
        assert!(Settings::parse(&settings(&[("endpoint", "http://127.0.0.1:9/")])).is_ok());
        assert!(Settings::parse(&settings(&[("endpoint", "http://localhost:9")])).is_ok());
        for (bad, name) in [
            (settings(&[("endpoint", "http://api.kisi.io")]), "endpoint"),
            (settings(&[("endpoint", "ftp://127.0.0.1")]), "endpoint"),
            (settings(&[("endpoint", "https://x/v1")]), "endpoint"),
            (settings(&[("endpoint", "https://u:p@x")]), "endpoint"),
            (settings(&[("place_id", "HQ")]), "place_id"),
            (settings(&[("place_id", "0")]), "place_id"),
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
    fn collection_ranges_parse() {
        assert_eq!(collection_range("0-9/42"), Some((Some((0, 9)), 42)));
        assert_eq!(collection_range("*/0"), Some((None, 0)));
        assert_eq!(collection_range("junk"), None);
    }

    #[test]
    fn error_bodies_are_summarised() {
        assert_eq!(
            detail(br#"{"code":"000404","message":"Not found"}"#),
            "000404: Not found"
        );
        assert_eq!(
            detail(br#"{"errors":{"email":["is invalid"]}}"#),
            r#"errors {"email":["is invalid"]}"#
        );
        assert_eq!(detail(b"oops"), "oops");
    }

    #[test]
    fn windows_union_and_cover() {
        let t = |s: &str| parse_time(Some(s));
        let a = Window {
            from: t("2026-01-01T00:00:00Z"),
            until: t("2026-01-02T00:00:00Z"),
        };
        let b = Window {
            from: t("2026-01-01T12:00:00Z"),
            until: None,
        };
        let u = a.union(b);
        assert_eq!(u.from, a.from);
        assert_eq!(u.until, None);
        assert!(u.covers(a) && u.covers(b));
        assert!(!a.covers(b));
    }
}
