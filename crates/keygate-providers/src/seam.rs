//! The Seam adapter (`seam` system type): one access control system (`acs_system`) of a Seam
//! workspace, or the workspace's smart locks ([`locks`], `devices = "locks"`), reached over
//! Seam's HTTP API (`POST <endpoint>/<route>` with a JSON body, as every
//! Seam SDK calls it; reference: <https://docs.seam.co/latest/api>).
//!
//! Settings (`Connection::settings` at discover, `Link::settings` for a stored system):
//! - `endpoint` (optional, default `https://connect.getseam.com`): `https://host[:port]`; plain
//!   `http` only to a loopback host (a local fake or proxy).
//! - `acs_system_id` (optional): which access system of the workspace this Keygate system is.
//!   Without it the workspace must have exactly one (`/acs/systems/list`); otherwise discover
//!   refuses with `invalid_connection_settings: acs_system_id: ...` listing the choices.
//! - `timeout_ms` (optional, default 10000, 100..=120000): the deadline of every request.
//! - `devices` (optional, the one value `locks`): this Keygate system is the workspace's smart
//!   locks instead of an access system (see [`locks`]); refused together with `acs_system_id`.
//! - `connected_account_id` (optional, only with `devices = "locks"`): take the locks of that
//!   connected account only.
//!
//! Credentials: `api_key` (required), sent as `Authorization: Bearer <api_key>`, marked
//! sensitive, never logged nor put in an error. Anything else, or a malformed value, is refused
//! as `Permanent("invalid_connection_settings: ...")`.
//!
//! ## Smart locks
//!
//! With `devices = "locks"` the entrances are the workspace's locks (`/locks/list`, device ids
//! as external ids), PINs are access codes on them (`/access_codes/*`, found again by their
//! `common_code_key`), cloud keys are access grants (`/access_grants/*`, by
//! `access_grant_key`) and a remote unlock is `/locks/unlock_door` with its action attempt
//! polled. The mapping, the PIN rules and the key are in [`locks`]; the errors, the requests,
//! the pagination and the action attempt polling are this module's, shared.
//!
//! ## References (what makes every change idempotent)
//!
//! One Seam **user identity** and one ACS **user** per Keygate access method in the system:
//! - the user identity's `user_identity_key` is `keygate-access-method-<access_method_id>`: the
//!   one client-chosen, unique and searchable key Seam offers on the access-control side
//!   (`/user_identities/get` by `user_identity_key`). Keygate's ids are never written into a
//!   name, an email address or a phone number;
//! - the ACS user is the identity's user in this system (`/acs/users/list` by `acs_system_id`
//!   and `user_identity_id`), created with the holder's name, email and phone and the access
//!   schedule;
//! - the access is the user's access group memberships (systems whose permission model is access
//!   groups) and one credential (`/acs/credentials/create`, `access_method` = the mode) carrying
//!   its entrances (`allowed_acs_entrance_ids`, credential-based systems) and times.
//!
//! Why per access method and not per person: `revoke` and `read_back` are given only the access
//! method id (no holder), so the vendor object must be findable from it alone. A Seam user per
//! person would need the trait to pass the person (see the adapter's report).
//!
//! A repeat finds every object again by that key and creates only what is missing. Revoke deletes
//! the credentials, removes the group memberships and deletes the ACS user (the identity stays:
//! it holds nothing). Revoking what is gone succeeds.
//!
//! ## Capabilities (mapping from the Seam system)
//!
//! - Permission model: access groups for the system types whose access is granted through groups
//!   (Salto KS / Salto site, Salto Space, Brivo, Avigilon Alta, PTI, HID Credential Manager,
//!   Latch, dormakaba Community) when the system lists at least one group; credential based
//!   otherwise (Visionline, Vostio, ...), with entrances set on the credential.
//! - Modes: the union of the entrances' capability flags (`can_unlock_with_card`,
//!   `can_unlock_with_code`, `can_unlock_with_mobile_key`, `can_unlock_with_cloud_key`) where
//!   Seam sends them; for entrances without flags, the default modes of the system type (table in
//!   [`type_profile`]).
//! - Card encoding: required for the system types whose cards are written by an encoder
//!   (Visionline, Vostio, Salto Space, dormakaba); encoders from `/acs/encoders/list`.
//! - PIN codes: Keygate chooses them (`code` on `/acs/credentials/create`), 4 to 8 digits.
//! - Remote unlock: where an entrance can be unlocked with a cloud key
//!   (`/acs/entrances/unlock` with the access method's `cloud_key` credential).
//! - Rate limit: Seam's published limits (docs.seam.co/latest/developer-tools/
//!   rate-limits-and-guardrails) are per device (10 access code creations, 10 updates and 20
//!   deletions per minute; 15 lock and 15 unlock requests per minute) and none is published for
//!   access-control objects or per workspace; over a limit Seam answers 429 and the call is
//!   Transient. Declared conservatively at 5 provider calls per second, burst 10.
//!
//! ## Errors
//!
//! Seam error bodies are `{"error": {"type", "message"}}`. 401/403 → `invalid_credentials`
//! (Permanent at discover, Transient on a stored system's calls); 429 and 503 → Transient; other
//! 5xx and timeouts → Ambiguous on changes, Transient on reads; a connection that could not be
//! opened → Transient `provider_unreachable`; other 4xx → Permanent `<error.type>: <message>`.

pub mod locks;

use crate::vendor::attempt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keygate_domain::action::{AttemptError, EncodeJob, EncodedCard, RevokeJob, UnlockJob};
use keygate_domain::capability::{
    AccessMethodMode, CapabilityDescriptor, PermissionModel, PinCodeGenerator, PinCodeRules,
    ProviderRateLimit,
};
use keygate_domain::grant::ProvisionJob;
use keygate_domain::ids::{AccessMethodId, AccessSystemId, EntranceId};
use keygate_domain::model::{
    AccessSystem, NewAccessGroup, NewAccessSystem, NewEncoder, NewEntrance,
};
use keygate_domain::tracker::{DoorOutcome, ProvisionResult};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::provider::{
    AccessSystemProvider, Connection, Credentials, Directory, HeldCredential, Holder, ProviderError,
};

/// The one system type this adapter serves.
pub const SYSTEM_TYPE: &str = "seam";
pub use crate::vendor::{
    INVALID_CONNECTION_SETTINGS, INVALID_CREDENTIALS, PROVIDER_UNREACHABLE, RATE_LIMITED,
};
pub use locks::access_code_key;
/// Seam's API.
pub const DEFAULT_ENDPOINT: &str = "https://connect.getseam.com";
/// The prefix of the `user_identity_key` of an access method's Seam user identity.
pub const USER_IDENTITY_KEY_PREFIX: &str = "keygate-access-method-";

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
const UNLOCK_TIMEOUT_CAP: Duration = Duration::from_secs(30);
const ENCODE_TIMEOUT: Duration = Duration::from_secs(90);
const POLL_EVERY: Duration = Duration::from_millis(250);
const MAX_PAGES: usize = 200;
const MAX_ITEMS: usize = 10_000;
const MAX_MESSAGE: usize = 300;

/// The declared limit of every Seam system (see "Rate limit" above).
const RATE_LIMIT: ProviderRateLimit = ProviderRateLimit {
    requests_per_second: 5.0,
    burst: 10,
};

/// The key of an access method's Seam user identity.
pub fn user_identity_key(access_method_id: AccessMethodId) -> String {
    format!("{USER_IDENTITY_KEY_PREFIX}{access_method_id}")
}

/// The Seam adapter.
pub struct SeamProvider {
    directory: Arc<dyn Directory>,
    /// One client for proxied (public) endpoints, one that bypasses proxies for loopback ones.
    clients: crate::vendor::HttpClients,
    /// The Seam system id each stored system resolved to, when its settings did not name one.
    resolved: Mutex<HashMap<AccessSystemId, String>>,
}

impl SeamProvider {
    pub fn new(directory: Arc<dyn Directory>) -> Self {
        Self {
            directory,
            clients: Default::default(),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    fn target(
        &self,
        settings: &BTreeMap<String, String>,
        credentials: &Credentials,
    ) -> Result<(Target, Scope), ProviderError> {
        let s = Settings::parse(settings)?;
        let api_key = bearer(credentials)?;
        let client = self.clients.get(s.loopback)?;
        Ok((
            Target {
                client,
                base: s.endpoint,
                api_key,
                timeout: s.timeout,
            },
            s.scope,
        ))
    }

    /// The target of a stored system and what it is: an access system (with its Seam id) or
    /// the workspace's locks.
    async fn stored(&self, system: &AccessSystem) -> Result<Stored, ProviderError> {
        let link = self.directory.link(system).await?;
        let (t, scope) = self.target(&link.settings, &link.credentials)?;
        let acs = match scope {
            Scope::Locks { .. } => return Ok(Stored::Locks(t, link)),
            Scope::Acs(Some(id)) => id,
            Scope::Acs(None) => {
                let cached = self
                    .resolved
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&system.id).cloned());
                match cached {
                    Some(id) => id,
                    None => {
                        let id = only_system(&t, false).await?.id;
                        if let Ok(mut m) = self.resolved.lock() {
                            m.insert(system.id, id.clone());
                        }
                        id
                    }
                }
            }
        };
        Ok(Stored::Acs(t, acs, link))
    }
}

/// A stored system as its calls need it.
enum Stored {
    /// An access control system: its Seam `acs_system_id`.
    Acs(Target, String, crate::provider::Link),
    /// The workspace's smart locks ([`locks`]).
    Locks(Target, crate::provider::Link),
}

/// What one Keygate system of type `seam` is in its Seam workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    /// An access control system (`acs_system_id`, or the workspace's only one).
    Acs(Option<String>),
    /// The workspace's smart locks (`devices = "locks"`), optionally of one connected account.
    Locks {
        connected_account_id: Option<String>,
    },
}

/// Makes the access method's Seam user identity (`user_identity_key`, the holder's name):
/// its id, or `None` when Seam says the key is taken (a concurrent repeat made it meanwhile;
/// the caller finds it again).
async fn create_identity(
    t: &Target,
    method: AccessMethodId,
    holder: &Holder,
) -> Result<Option<String>, ProviderError> {
    let route = "/user_identities/create";
    let body = json!({
        "user_identity_key": user_identity_key(method),
        "full_name": holder.full_name,
    });
    match t.post(route, &body).await {
        Ok(v) => v
            .get("user_identity")
            .and_then(|u| str_of(u, "user_identity_id"))
            .map(|id| Some(id.to_owned()))
            .ok_or_else(|| {
                ProviderError::Ambiguous(format!("{route}: no user_identity in the answer"))
            }),
        Err(Failure::Status {
            status: 400 | 409,
            error_type: Some(ty),
            ..
        }) if ty.contains("taken") || ty.contains("exists") => Ok(None),
        Err(f) => Err(provider_error(route, &f, Kind::Change)),
    }
}

/// A key Seam said was taken, with no identity found under it yet.
fn identity_key_taken() -> ProviderError {
    ProviderError::Transient(
        "/user_identities/create: the key is taken but no identity has it yet".into(),
    )
}

/// The parsed settings.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    endpoint: String,
    loopback: bool,
    scope: Scope,
    timeout: Duration,
}

impl Settings {
    fn parse(settings: &BTreeMap<String, String>) -> Result<Self, ProviderError> {
        let invalid = |name: &str, why: &str| {
            ProviderError::Permanent(format!("{INVALID_CONNECTION_SETTINGS}: {name}: {why}"))
        };
        for name in settings.keys() {
            if !matches!(
                name.as_str(),
                "endpoint" | "acs_system_id" | "timeout_ms" | "devices" | "connected_account_id"
            ) {
                return Err(invalid(name, "unknown setting"));
            }
        }
        let raw = settings
            .get("endpoint")
            .map(|e| e.trim())
            .unwrap_or(DEFAULT_ENDPOINT);
        let (url, loopback) = crate::vendor::vendor_endpoint(raw)?;
        let id_setting = |name: &str| match settings.get(name).map(|s| s.trim()) {
            None => Ok(None),
            Some("") => Err(invalid(name, "empty")),
            Some(id) if id.len() > 200 || id.chars().any(char::is_control) => {
                Err(invalid(name, "not a Seam id"))
            }
            Some(id) => Ok(Some(id.to_owned())),
        };
        let acs_system_id = id_setting("acs_system_id")?;
        let connected_account_id = id_setting("connected_account_id")?;
        let scope = match settings.get("devices").map(|s| s.trim()) {
            None if connected_account_id.is_some() => {
                return Err(invalid(
                    "connected_account_id",
                    "only with devices = \"locks\"",
                ));
            }
            None => Scope::Acs(acs_system_id),
            Some("locks") if acs_system_id.is_some() => {
                return Err(invalid(
                    "devices",
                    "either devices = \"locks\" or acs_system_id, not both",
                ));
            }
            Some("locks") => Scope::Locks {
                connected_account_id,
            },
            Some(_) => return Err(invalid("devices", "the only value is \"locks\"")),
        };
        let timeout = match settings.get("timeout_ms") {
            None => DEFAULT_TIMEOUT,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (100..=120_000).contains(&n) => Duration::from_millis(n),
                _ => {
                    return Err(invalid(
                        "timeout_ms",
                        "must be a whole number of milliseconds in 100..=120000",
                    ));
                }
            },
        };
        Ok(Self {
            endpoint: url.as_str().trim_end_matches('/').to_owned(),
            loopback,
            scope,
            timeout,
        })
    }
}

/// The `Authorization` value of the credentials' `api_key`, marked sensitive.
fn bearer(credentials: &Credentials) -> Result<reqwest::header::HeaderValue, ProviderError> {
    for name in credentials.values().keys() {
        if name != "api_key" {
            return Err(ProviderError::Permanent(format!(
                "{INVALID_CONNECTION_SETTINGS}: {name}: unknown credential"
            )));
        }
    }
    let key = credentials.get("api_key").map(str::trim).ok_or_else(|| {
        ProviderError::Permanent(format!("{INVALID_CONNECTION_SETTINGS}: api_key: required"))
    })?;
    let bad = || {
        ProviderError::Permanent(format!(
            "{INVALID_CONNECTION_SETTINGS}: api_key: empty or not a valid header value"
        ))
    };
    if key.is_empty() {
        return Err(bad());
    }
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| bad())?;
    value.set_sensitive(true);
    Ok(value)
}

/// Whether a call changes something (a lost answer may have been applied) or only reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Change,
}

/// How one request failed, before it is given a class.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    /// The connection could not be opened: nothing was sent.
    Unreachable(String),
    /// Sent (or being sent), no answer in time.
    TimedOut,
    /// Seam answered with an error status.
    Status {
        status: u16,
        error_type: Option<String>,
        message: String,
    },
    /// A 2xx whose body is not the JSON Seam sends.
    Garbled(String),
}

impl Failure {
    fn is_not_found(&self) -> bool {
        matches!(self, Failure::Status { status: 404, .. })
    }

    fn describe(&self) -> String {
        match self {
            Failure::Unreachable(m) => m.clone(),
            Failure::TimedOut => "no answer within the timeout".to_owned(),
            Failure::Status {
                status,
                error_type,
                message,
            } => match error_type {
                Some(t) if message.is_empty() => format!("{t} (HTTP {status})"),
                Some(t) => format!("{t}: {message} (HTTP {status})"),
                None => format!("HTTP {status}"),
            },
            Failure::Garbled(m) => m.clone(),
        }
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(MAX_MESSAGE).collect();
    out.push('…');
    out
}

/// The class of a failed call on a stored system.
fn provider_error(route: &str, f: &Failure, kind: Kind) -> ProviderError {
    let what = f.describe();
    match f {
        Failure::Unreachable(_) => {
            ProviderError::Transient(format!("{PROVIDER_UNREACHABLE}: {route}: {what}"))
        }
        Failure::TimedOut | Failure::Garbled(_) => match kind {
            Kind::Read => ProviderError::Transient(format!("{route}: {what}")),
            Kind::Change => ProviderError::Ambiguous(format!("{route}: {what}")),
        },
        Failure::Status {
            status,
            error_type,
            message,
        } => match *status {
            401 | 403 => {
                ProviderError::Transient(format!("{INVALID_CREDENTIALS}: {route}: {what}"))
            }
            429 => ProviderError::Transient(format!("{RATE_LIMITED}: {route}: {what}")),
            503 => ProviderError::Transient(format!("{route}: {what}")),
            408 | 500..=599 => match kind {
                Kind::Read => ProviderError::Transient(format!("{route}: {what}")),
                Kind::Change => ProviderError::Ambiguous(format!("{route}: {what}")),
            },
            _ => {
                let reason = error_type
                    .clone()
                    .unwrap_or_else(|| "provider_refused".to_owned());
                ProviderError::Permanent(format!("{reason}: {route}: {} (HTTP {status})", message))
            }
        },
    }
}

/// At discover, credentials and reachability are what the person connecting must fix.
fn discover_error(route: &str, f: &Failure) -> ProviderError {
    match f {
        Failure::Status {
            status: 401 | 403, ..
        } => ProviderError::Permanent(format!("{INVALID_CREDENTIALS}: {route}: {}", f.describe())),
        Failure::Unreachable(_) | Failure::TimedOut => {
            ProviderError::Transient(format!("{PROVIDER_UNREACHABLE}: {route}: {}", f.describe()))
        }
        _ => provider_error(route, f, Kind::Read),
    }
}

/// One Seam workspace, as called by one system.
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    base: String,
    api_key: reqwest::header::HeaderValue,
    timeout: Duration,
}

impl Target {
    /// `POST <endpoint><route>` with `body`, within `deadline`.
    async fn post_within(
        &self,
        route: &'static str,
        body: &Value,
        deadline: Duration,
    ) -> Result<Value, Failure> {
        tracing::Span::current().record("route", route);
        let sent = self
            .client
            .post(format!("{}{route}", self.base))
            .header(reqwest::header::AUTHORIZATION, self.api_key.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(deadline)
            .json(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                tracing::debug!(route, "seam: connection failed");
                return Err(Failure::Unreachable(format!(
                    "could not connect to {}",
                    self.base
                )));
            }
            Err(e) if e.is_timeout() => return Err(Failure::TimedOut),
            Err(e) => {
                return Err(Failure::Garbled(format!(
                    "the request failed: {}",
                    clip(&e.without_url().to_string())
                )));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(clip);
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) if e.is_timeout() => return Err(Failure::TimedOut),
            Err(_) => return Err(Failure::Garbled("the answer was cut off".to_owned())),
        };
        if (200..300).contains(&status) {
            return serde_json::from_str(&text)
                .map_err(|_| Failure::Garbled(format!("HTTP {status} without a JSON body")));
        }
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        let failure = Failure::Status {
            status,
            error_type: error
                .and_then(|e| e.get("type"))
                .and_then(Value::as_str)
                .map(clip),
            message: {
                let m = error
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .map(clip)
                    .unwrap_or_default();
                match retry_after {
                    Some(r) if status == 429 => format!("{m} (retry after {r})"),
                    _ => m,
                }
            },
        };
        tracing::debug!(route, status, "seam call failed");
        Err(failure)
    }

    async fn post(&self, route: &'static str, body: &Value) -> Result<Value, Failure> {
        self.post_within(route, body, self.timeout).await
    }

    /// Every item of a paginated listing (`limit` / `page_cursor`, answered with
    /// `pagination.has_next_page` and `pagination.next_page_cursor`).
    async fn list_all(
        &self,
        route: &'static str,
        key: &str,
        body: Value,
    ) -> Result<Vec<Value>, Failure> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen = BTreeSet::new();
        for _ in 0..MAX_PAGES {
            let mut b = body.clone();
            if let (Some(c), Some(o)) = (&cursor, b.as_object_mut()) {
                o.insert("page_cursor".to_owned(), Value::String(c.clone()));
            }
            let r = self.post(route, &b).await?;
            let items = r
                .get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| Failure::Garbled(format!("{route}: no `{key}` in the answer")))?;
            all.extend(items.iter().cloned());
            if all.len() > MAX_ITEMS {
                return Err(Failure::Garbled(format!(
                    "{route}: more than {MAX_ITEMS} items"
                )));
            }
            let p = r.get("pagination");
            let more = p
                .and_then(|p| p.get("has_next_page"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let next = p
                .and_then(|p| p.get("next_page_cursor"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            match next {
                Some(n) if more && !n.is_empty() => {
                    if !seen.insert(n.clone()) {
                        return Err(Failure::Garbled(format!("{route}: a page cursor repeats")));
                    }
                    cursor = Some(n);
                }
                _ => return Ok(all),
            }
        }
        Err(Failure::Garbled(format!(
            "{route}: more than {MAX_PAGES} pages"
        )))
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn flag(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}

/// A time as Seam takes it: RFC 3339, UTC, to the nanosecond (compared with the holder's as is).
fn ts(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn parse_ts(v: Option<&Value>) -> Option<OffsetDateTime> {
    crate::vendor::parse_time(v.and_then(Value::as_str))
}

/// A Seam access system, as discover and the stored calls need it.
#[derive(Clone, Debug)]
struct SeamSystem {
    id: String,
    name: String,
    external_type: String,
}

fn system_of(v: &Value) -> Option<SeamSystem> {
    Some(SeamSystem {
        id: str_of(v, "acs_system_id")?.to_owned(),
        name: str_of(v, "name").unwrap_or("Seam access system").to_owned(),
        external_type: str_of(v, "external_type")
            .or_else(|| str_of(v, "system_type"))
            .unwrap_or("unknown")
            .to_owned(),
    })
}

/// The workspace's only access system: without `acs_system_id` there must be exactly one.
async fn only_system(t: &Target, at_discover: bool) -> Result<SeamSystem, ProviderError> {
    let route = "/acs/systems/list";
    let listed = t
        .list_all(route, "acs_systems", json!({}))
        .await
        .map_err(|f| {
            if at_discover {
                discover_error(route, &f)
            } else {
                provider_error(route, &f, Kind::Read)
            }
        })?;
    let systems: Vec<SeamSystem> = listed.iter().filter_map(system_of).collect();
    match systems.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ProviderError::Permanent(format!(
            "{INVALID_CONNECTION_SETTINGS}: acs_system_id: the Seam workspace has no access system"
        ))),
        many => Err(ProviderError::Permanent(format!(
            "{INVALID_CONNECTION_SETTINGS}: acs_system_id: required: the Seam workspace has {} access systems ({})",
            many.len(),
            many.iter()
                .map(|s| format!("{} {:?}", s.id, s.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// What Keygate assumes of a Seam system type where the API does not say it per entrance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeProfile {
    /// Access is granted through access groups (when the system has any).
    pub access_groups: bool,
    /// The modes an entrance takes when Seam sends no capability flags for it.
    pub default_modes: Vec<AccessMethodMode>,
    /// Cards must be written by an encoder.
    pub card_encoding: bool,
}

/// The profile of a Seam `external_type` (`acs_system.external_type`).
pub fn type_profile(external_type: &str) -> TypeProfile {
    use AccessMethodMode::{Card, Code, MobileKey};
    let (access_groups, default_modes, card_encoding) = match external_type {
        "salto_ks_site" | "salto_site" => (true, vec![Code, MobileKey], false),
        "salto_space_system" => (true, vec![Card, MobileKey], true),
        "brivo_account" | "alta_org" | "avigilon_alta_org" | "pti_site" | "latch_building" => {
            (true, vec![Code, MobileKey], false)
        }
        "hid_credential_manager_organization" => (true, vec![MobileKey], false),
        "dormakaba_community_site" => (true, vec![Card, Code, MobileKey], true),
        "visionline_system" | "assa_abloy_vostio" | "assa_abloy_vostio_credential_service" => {
            (false, vec![Card, MobileKey], true)
        }
        "dormakaba_ambiance_site" | "hotek_site" => (false, vec![Card], true),
        _ => (false, vec![Code], false),
    };
    TypeProfile {
        access_groups,
        default_modes,
        card_encoding,
    }
}

const ALL_MODES: [AccessMethodMode; 4] = [
    AccessMethodMode::Card,
    AccessMethodMode::Code,
    AccessMethodMode::MobileKey,
    AccessMethodMode::CloudKey,
];

/// The modes a Seam entrance takes: its flags where Seam sends them, else the type's defaults.
fn entrance_modes(e: &Value, profile: &TypeProfile) -> Vec<AccessMethodMode> {
    let flags = [
        ("can_unlock_with_card", AccessMethodMode::Card),
        ("can_unlock_with_code", AccessMethodMode::Code),
        ("can_unlock_with_mobile_key", AccessMethodMode::MobileKey),
        ("can_unlock_with_cloud_key", AccessMethodMode::CloudKey),
    ];
    if flags.iter().all(|(k, _)| flag(e, k).is_none()) {
        return profile.default_modes.clone();
    }
    flags
        .iter()
        .filter(|(k, _)| flag(e, k) == Some(true))
        .map(|(_, m)| *m)
        .collect()
}

fn access_method_of(mode: AccessMethodMode) -> &'static str {
    match mode {
        AccessMethodMode::Card => "card",
        AccessMethodMode::Code => "code",
        AccessMethodMode::MobileKey => "mobile_key",
        AccessMethodMode::CloudKey => "cloud_key",
    }
}

/// The capability descriptor of a Seam system from its type, its entrances' modes and whether
/// it has access groups.
pub fn capabilities(
    external_type: &str,
    entrance_modes: &[Vec<AccessMethodMode>],
    has_groups: bool,
) -> CapabilityDescriptor {
    let profile = type_profile(external_type);
    let supported_modes: Vec<AccessMethodMode> = ALL_MODES
        .into_iter()
        .filter(|m| entrance_modes.iter().any(|e| e.contains(m)))
        .collect();
    let supported_modes = if supported_modes.is_empty() {
        profile.default_modes.clone()
    } else {
        supported_modes
    };
    let by_groups = profile.access_groups && has_groups;
    let codes = supported_modes.contains(&AccessMethodMode::Code);
    CapabilityDescriptor {
        permission_model: if by_groups {
            PermissionModel::AccessGroups
        } else {
            PermissionModel::CredentialBased
        },
        pin_code_rules: codes.then_some(PinCodeRules {
            generator: PinCodeGenerator::Keygate,
            min_length: 4,
            max_length: 8,
            can_request_code: true,
            is_code_per_entrance: false,
        }),
        is_card_encoding_required: profile.card_encoding
            && supported_modes.contains(&AccessMethodMode::Card),
        can_remote_unlock: supported_modes.contains(&AccessMethodMode::CloudKey),
        can_issue_mobile_keys: supported_modes.contains(&AccessMethodMode::MobileKey),
        can_assign_entrances_directly: !by_groups,
        can_schedule_credentials: true,
        rate_limit: RATE_LIMIT,
        supported_modes,
    }
}

/// The Seam objects of one access method in one system, as found by its key.
#[derive(Debug, Default)]
struct Held {
    user_identity_id: Option<String>,
    user: Option<Value>,
}

impl Held {
    fn user_id(&self) -> Option<&str> {
        self.user.as_ref().and_then(|u| str_of(u, "acs_user_id"))
    }
}

/// Finds the Seam user identity and ACS user of an access method.
async fn find_held(t: &Target, acs: &str, method: AccessMethodId) -> Result<Held, ProviderError> {
    let route = "/user_identities/get";
    let identity = match t
        .post(
            route,
            &json!({ "user_identity_key": user_identity_key(method) }),
        )
        .await
    {
        Ok(v) => v,
        Err(f) if f.is_not_found() => return Ok(Held::default()),
        Err(f) => return Err(provider_error(route, &f, Kind::Read)),
    };
    let Some(id) = identity
        .get("user_identity")
        .and_then(|u| str_of(u, "user_identity_id"))
        .map(str::to_owned)
    else {
        return Err(ProviderError::Transient(format!(
            "{route}: no user_identity in the answer"
        )));
    };
    let route = "/acs/users/list";
    let users = t
        .list_all(
            route,
            "acs_users",
            json!({ "acs_system_id": acs, "user_identity_id": id }),
        )
        .await
        .map_err(|f| provider_error(route, &f, Kind::Read))?;
    // Seam filters by both; keep only exact matches in case a filter is ignored.
    let user = users.into_iter().find(|u| {
        str_of(u, "acs_system_id") == Some(acs) && str_of(u, "user_identity_id") == Some(&id)
    });
    Ok(Held {
        user_identity_id: Some(id),
        user,
    })
}

async fn credentials_of(t: &Target, acs_user_id: &str) -> Result<Vec<Value>, ProviderError> {
    let route = "/acs/credentials/list";
    let all = t
        .list_all(
            route,
            "acs_credentials",
            json!({ "acs_user_id": acs_user_id }),
        )
        .await
        .map_err(|f| provider_error(route, &f, Kind::Read))?;
    Ok(all
        .into_iter()
        .filter(|c| str_of(c, "acs_user_id").is_none_or(|u| u == acs_user_id))
        .collect())
}

async fn groups_of(t: &Target, acs_user_id: &str) -> Result<Vec<String>, ProviderError> {
    let route = "/acs/access_groups/list";
    let all = t
        .list_all(
            route,
            "acs_access_groups",
            json!({ "acs_user_id": acs_user_id }),
        )
        .await
        .map_err(|f| provider_error(route, &f, Kind::Read))?;
    Ok(all
        .iter()
        .filter_map(|g| str_of(g, "acs_access_group_id").map(str::to_owned))
        .collect())
}

async fn group_entrances(
    t: &Target,
    group: &str,
    map: impl Fn(&'static str, &Failure) -> ProviderError,
) -> Result<Vec<String>, ProviderError> {
    let route = "/acs/access_groups/list_accessible_entrances";
    let all = t
        .list_all(
            route,
            "acs_entrances",
            json!({ "acs_access_group_id": group }),
        )
        .await
        .map_err(|f| map(route, &f))?;
    Ok(all
        .iter()
        .filter_map(|e| str_of(e, "acs_entrance_id").map(str::to_owned))
        .collect())
}

async fn credential_entrances(t: &Target, credential: &str) -> Result<Vec<String>, ProviderError> {
    let route = "/acs/entrances/list";
    let all = t
        .list_all(
            route,
            "acs_entrances",
            json!({ "acs_credential_id": credential }),
        )
        .await
        .map_err(|f| provider_error(route, &f, Kind::Read))?;
    Ok(all
        .iter()
        .filter_map(|e| str_of(e, "acs_entrance_id").map(str::to_owned))
        .collect())
}

/// `Ok` for a change that succeeded or found its object already gone.
fn gone_is_fine(route: &str, r: Result<Value, Failure>) -> Result<(), ProviderError> {
    match r {
        Ok(_) => Ok(()),
        Err(f) if f.is_not_found() => Ok(()),
        Err(f) => Err(provider_error(route, &f, Kind::Change)),
    }
}

fn schedule(holder: &Holder) -> Value {
    match holder.ends_at {
        Some(end) => json!({ "starts_at": ts(holder.starts_at), "ends_at": ts(end) }),
        None => json!({ "starts_at": ts(holder.starts_at) }),
    }
}

fn same_schedule(user: &Value, holder: &Holder) -> bool {
    let s = user.get("access_schedule");
    parse_ts(s.and_then(|s| s.get("starts_at"))) == Some(holder.starts_at)
        && parse_ts(s.and_then(|s| s.get("ends_at"))) == holder.ends_at
}

/// The typed error of a failed unlock or encoding call.
fn attempt_failure(route: &str, f: &Failure, fallback: &str, unknown: &str) -> AttemptError {
    let message = format!("{route}: {}", f.describe());
    match f {
        Failure::Status {
            status: 401 | 403, ..
        } => attempt(INVALID_CREDENTIALS, message),
        Failure::Status {
            status: 400..=499,
            error_type,
            ..
        } if !matches!(
            f,
            Failure::Status {
                status: 408 | 429,
                ..
            }
        ) =>
        {
            attempt(error_type.as_deref().unwrap_or(fallback), message)
        }
        Failure::Unreachable(_)
        | Failure::Status {
            status: 429 | 503, ..
        } => attempt(PROVIDER_UNREACHABLE, message),
        _ => attempt(unknown, message),
    }
}

/// Polls `/action_attempts/get` until the attempt is `success` or `error`, or `until` passes.
async fn settle(
    t: &Target,
    mut attempt_v: Value,
    until: tokio::time::Instant,
    unknown: &str,
) -> Result<Value, AttemptError> {
    let route = "/action_attempts/get";
    loop {
        let a = attempt_v
            .get("action_attempt")
            .unwrap_or(&attempt_v)
            .clone();
        match str_of(&a, "status") {
            Some("success") => return Ok(a.get("result").cloned().unwrap_or(Value::Null)),
            Some("error") => {
                let e = a.get("error");
                return Err(attempt(
                    e.and_then(|e| str_of(e, "type")).unwrap_or(unknown),
                    clip(e.and_then(|e| str_of(e, "message")).unwrap_or("")),
                ));
            }
            _ => {}
        }
        let Some(id) = str_of(&a, "action_attempt_id").map(str::to_owned) else {
            return Err(attempt(unknown, "Seam returned no action attempt id"));
        };
        let now = tokio::time::Instant::now();
        if now + POLL_EVERY >= until {
            return Err(attempt(
                unknown,
                format!("action attempt {id} still pending at the deadline"),
            ));
        }
        tokio::time::sleep(POLL_EVERY).await;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        attempt_v = t
            .post_within(
                route,
                &json!({ "action_attempt_id": id }),
                left.min(t.timeout),
            )
            .await
            .map_err(|f| attempt(unknown, format!("{route}: {}", f.describe())))?;
    }
}

/// When an unlock must be settled by: its deadline, capped; refused when it has none or it
/// passed.
fn unlock_deadline(job: &UnlockJob) -> Result<tokio::time::Instant, AttemptError> {
    use keygate_domain::action::unlock_errors;
    let until = match job.expires_at {
        Some(expires_at) => {
            let left = Duration::try_from(expires_at - OffsetDateTime::now_utc())
                .unwrap_or(Duration::ZERO);
            if left.is_zero() {
                return Err(attempt(
                    unlock_errors::EXPIRED,
                    "the unlock's deadline passed before it was sent",
                ));
            }
            left.min(UNLOCK_TIMEOUT_CAP)
        }
        None => {
            return Err(attempt(
                unlock_errors::EXPIRED,
                "an unlock without a deadline is never sent",
            ));
        }
    };
    let until = tokio::time::Instant::now() + until;
    Ok(until)
}

/// An unlock's or encoding's typed error from a failure before the answer.
fn from_provider_error(e: ProviderError) -> AttemptError {
    crate::vendor::attempt_from(e, PROVIDER_UNREACHABLE)
}

#[async_trait]
impl AccessSystemProvider for SeamProvider {
    fn system_types(&self) -> Vec<String> {
        vec![SYSTEM_TYPE.to_owned()]
    }

    #[tracing::instrument(skip_all, fields(system_type = %system_type, acs_system_id, seam_acs_system_id, route))]
    async fn discover(
        &self,
        system_type: &str,
        connection: &Connection,
    ) -> Result<NewAccessSystem, ProviderError> {
        if system_type != SYSTEM_TYPE {
            return Err(ProviderError::Permanent(format!(
                "{system_type:?} is not served by the Seam adapter"
            )));
        }
        if let Some(id) = connection.acs_system_id {
            tracing::Span::current().record("acs_system_id", id.to_string());
        }
        let (t, scope) = self.target(&connection.settings, &connection.credentials)?;
        let configured = match scope {
            Scope::Locks {
                connected_account_id,
            } => return locks::discover(&t, connection, connected_account_id.as_deref()).await,
            Scope::Acs(configured) => configured,
        };
        let system = match configured {
            Some(id) => {
                let route = "/acs/systems/get";
                let r = t
                    .post(route, &json!({ "acs_system_id": id }))
                    .await
                    .map_err(|f| match f {
                        Failure::Status {
                            status: 400 | 404, ..
                        } => ProviderError::Permanent(format!(
                            "{INVALID_CONNECTION_SETTINGS}: acs_system_id: {id} is not an access system of this Seam workspace"
                        )),
                        f => discover_error(route, &f),
                    })?;
                r.get("acs_system").and_then(system_of).ok_or_else(|| {
                    ProviderError::Transient(format!("{route}: no acs_system in the answer"))
                })?
            }
            None => only_system(&t, true).await?,
        };
        tracing::Span::current().record("seam_acs_system_id", system.id.as_str());
        let profile = type_profile(&system.external_type);

        let route = "/acs/entrances/list";
        let listed = t
            .list_all(
                route,
                "acs_entrances",
                json!({ "acs_system_id": system.id }),
            )
            .await
            .map_err(|f| discover_error(route, &f))?;
        let mut seen = BTreeSet::new();
        let mut raw_entrances = Vec::new();
        for e in listed {
            let Some(id) = str_of(&e, "acs_entrance_id").map(str::to_owned) else {
                return Err(ProviderError::Permanent(format!(
                    "{route}: an entrance without an id"
                )));
            };
            if str_of(&e, "acs_system_id").is_some_and(|s| s != system.id) {
                continue;
            }
            if !seen.insert(id.clone()) {
                return Err(ProviderError::Permanent(format!(
                    "{route}: entrance {id} listed twice"
                )));
            }
            raw_entrances.push((id, e));
        }
        let modes: Vec<Vec<AccessMethodMode>> = raw_entrances
            .iter()
            .map(|(_, e)| entrance_modes(e, &profile))
            .collect();

        let mut groups = Vec::new();
        if profile.access_groups {
            let route = "/acs/access_groups/list";
            let listed = t
                .list_all(
                    route,
                    "acs_access_groups",
                    json!({ "acs_system_id": system.id }),
                )
                .await
                .map_err(|f| discover_error(route, &f))?;
            for g in listed {
                let Some(id) = str_of(&g, "acs_access_group_id").map(str::to_owned) else {
                    continue;
                };
                if str_of(&g, "acs_system_id").is_some_and(|s| s != system.id) {
                    continue;
                }
                let doors = group_entrances(&t, &id, discover_error).await?;
                let name = str_of(&g, "name")
                    .or_else(|| str_of(&g, "display_name"))
                    .unwrap_or(&id)
                    .to_owned();
                groups.push((id, name, doors));
            }
        }
        let capabilities = capabilities(&system.external_type, &modes, !groups.is_empty());
        let caps = &capabilities;
        let entrances: Vec<NewEntrance> = raw_entrances
            .iter()
            .zip(&modes)
            .map(|((id, e), m)| NewEntrance {
                external_id: id.clone(),
                display_name: str_of(e, "display_name").unwrap_or(id).to_owned(),
                can_unlock_with_card: m.contains(&AccessMethodMode::Card)
                    && caps.supports(AccessMethodMode::Card),
                can_unlock_with_code: m.contains(&AccessMethodMode::Code)
                    && caps.supports(AccessMethodMode::Code),
                can_unlock_with_mobile_key: m.contains(&AccessMethodMode::MobileKey)
                    && caps.supports(AccessMethodMode::MobileKey),
                can_unlock_with_cloud_key: m.contains(&AccessMethodMode::CloudKey)
                    && caps.can_remote_unlock,
                can_belong_to_reservation: flag(e, "can_belong_to_reservation").unwrap_or(false),
            })
            .collect();
        let index: HashMap<&str, usize> = entrances
            .iter()
            .enumerate()
            .map(|(i, e)| (e.external_id.as_str(), i))
            .collect();
        let access_groups: Vec<NewAccessGroup> = if capabilities.permission_model
            == PermissionModel::AccessGroups
        {
            groups
                    .into_iter()
                    .map(|(id, name, doors)| {
                        let mut entrance_indexes = Vec::new();
                        for d in doors {
                            match index.get(d.as_str()) {
                                Some(i) if !entrance_indexes.contains(i) => {
                                    entrance_indexes.push(*i)
                                }
                                Some(_) => {}
                                None => tracing::warn!(
                                    group = %id,
                                    entrance = %d,
                                    "an access group opens an entrance the system's listing lacks; dropped"
                                ),
                            }
                        }
                        NewAccessGroup {
                            external_id: id,
                            display_name: name,
                            entrance_indexes,
                        }
                    })
                    .collect()
        } else {
            Vec::new()
        };

        let encoders = if capabilities.is_card_encoding_required {
            let route = "/acs/encoders/list";
            let listed = t
                .list_all(
                    route,
                    "acs_encoders",
                    json!({ "acs_system_ids": [system.id] }),
                )
                .await
                .map_err(|f| discover_error(route, &f))?;
            listed
                .iter()
                .filter_map(|e| {
                    let id = str_of(e, "acs_encoder_id")?.to_owned();
                    Some(NewEncoder {
                        display_name: str_of(e, "display_name").unwrap_or(&id).to_owned(),
                        is_online: e
                            .get("errors")
                            .and_then(Value::as_array)
                            .is_none_or(Vec::is_empty),
                        external_id: id,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };

        Ok(NewAccessSystem {
            name: connection
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| system.name.clone()),
            external_type: system.external_type.clone(),
            system_type: SYSTEM_TYPE.to_owned(),
            is_virtual: false,
            time_zone: connection
                .time_zone
                .clone()
                .filter(|z| !z.trim().is_empty())
                .unwrap_or_else(|| "UTC".to_owned()),
            capabilities,
            entrances,
            access_groups,
            encoders,
        })
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, access_method_id = %job.access_method_id, route))]
    async fn provision(
        &self,
        system: &AccessSystem,
        job: &ProvisionJob,
        holder: &Holder,
    ) -> Result<ProvisionResult, ProviderError> {
        let (t, acs, link) = match self.stored(system).await? {
            Stored::Acs(t, acs, link) => (t, acs, link),
            Stored::Locks(t, link) => return locks::provision(&t, &link, job, holder).await,
        };
        let by_groups = system.capabilities.permission_model == PermissionModel::AccessGroups;
        let entrances = job
            .entrance_ids
            .iter()
            .map(|id| {
                link.entrances.get(id).cloned().ok_or_else(|| {
                    ProviderError::Permanent(format!("entrance_not_synced: entrance {id}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let groups = job
            .access_group_ids
            .iter()
            .map(|id| {
                link.access_groups.get(id).cloned().ok_or_else(|| {
                    ProviderError::Permanent(format!("access_group_not_synced: access group {id}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if job.mode == AccessMethodMode::Code && job.requested_code.is_none() {
            return Err(ProviderError::Permanent(
                "code_required: Seam programs the PIN Keygate chooses; the job has none".into(),
            ));
        }

        // 1. The access method's user identity, by its key.
        let mut held = find_held(&t, &acs, job.access_method_id).await?;
        let identity = match held.user_identity_id.clone() {
            Some(id) => id,
            None => match create_identity(&t, job.access_method_id, holder).await? {
                Some(id) => id,
                // Made meanwhile (a concurrent repeat): find it again.
                None => {
                    held = find_held(&t, &acs, job.access_method_id).await?;
                    held.user_identity_id
                        .clone()
                        .ok_or_else(identity_key_taken)?
                }
            },
        };

        // 2. Its ACS user in this system, with the holder's schedule.
        let user_id = match (&held.user, held.user_id()) {
            (Some(user), Some(id)) => {
                if !same_schedule(user, holder) {
                    let route = "/acs/users/update";
                    t.post(
                        route,
                        &json!({ "acs_user_id": id, "access_schedule": schedule(holder) }),
                    )
                    .await
                    .map_err(|f| provider_error(route, &f, Kind::Change))?;
                }
                id.to_owned()
            }
            _ => {
                let route = "/acs/users/create";
                let mut body = json!({
                    "acs_system_id": acs,
                    "user_identity_id": identity,
                    "full_name": holder.full_name,
                    "access_schedule": schedule(holder),
                });
                if let Some(o) = body.as_object_mut() {
                    if let Some(e) = &holder.email_address {
                        o.insert("email_address".into(), Value::String(e.clone()));
                    }
                    if let Some(p) = &holder.phone_number {
                        o.insert("phone_number".into(), Value::String(p.clone()));
                    }
                }
                let r = t
                    .post(route, &body)
                    .await
                    .map_err(|f| provider_error(route, &f, Kind::Change))?;
                r.get("acs_user")
                    .and_then(|u| str_of(u, "acs_user_id"))
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ProviderError::Ambiguous(format!("{route}: no acs_user in the answer"))
                    })?
            }
        };

        // 3. Group memberships (access-group systems): add the job's, drop Keygate's others.
        if by_groups {
            let current: BTreeSet<String> = groups_of(&t, &user_id).await?.into_iter().collect();
            let known: BTreeSet<&String> = link.access_groups.values().collect();
            for g in current
                .iter()
                .filter(|g| !groups.contains(g) && known.contains(g))
            {
                let route = "/acs/users/remove_from_access_group";
                gone_is_fine(
                    route,
                    t.post(
                        route,
                        &json!({ "acs_user_id": user_id, "acs_access_group_id": g }),
                    )
                    .await,
                )?;
            }
            for g in groups.iter().filter(|g| !current.contains(*g)) {
                let route = "/acs/users/add_to_access_group";
                t.post(
                    route,
                    &json!({ "acs_user_id": user_id, "acs_access_group_id": g }),
                )
                .await
                .map_err(|f| provider_error(route, &f, Kind::Change))?;
            }
        }

        // 4. The credential of the mode: kept when it is what the job asks, else made anew.
        let method = access_method_of(job.mode);
        let mut existing = None;
        for c in credentials_of(&t, &user_id).await? {
            let matches = str_of(&c, "access_method") == Some(method)
                && (job.mode != AccessMethodMode::Code
                    || str_of(&c, "code") == job.requested_code.as_deref())
                && parse_ts(c.get("starts_at")).is_none_or(|s| s == holder.starts_at)
                && parse_ts(c.get("ends_at")) == holder.ends_at;
            let doors_match = by_groups || {
                let id = str_of(&c, "acs_credential_id").unwrap_or_default();
                let mut have = credential_entrances(&t, id).await?;
                have.sort();
                let mut want = entrances.clone();
                want.sort();
                have == want
            };
            if matches && doors_match && existing.is_none() {
                existing = Some(c);
            } else if let Some(id) = str_of(&c, "acs_credential_id") {
                // A credential of this method that no longer matches the job: replace it.
                let route = "/acs/credentials/delete";
                gone_is_fine(
                    route,
                    t.post(route, &json!({ "acs_credential_id": id })).await,
                )?;
            }
        }
        let credential = match existing {
            Some(c) => c,
            None => {
                let route = "/acs/credentials/create";
                let mut body = json!({
                    "acs_user_id": user_id,
                    "access_method": method,
                    "starts_at": ts(holder.starts_at),
                });
                if let Some(o) = body.as_object_mut() {
                    if let Some(end) = holder.ends_at {
                        o.insert("ends_at".into(), Value::String(ts(end)));
                    }
                    if !by_groups {
                        o.insert("allowed_acs_entrance_ids".into(), json!(entrances));
                    }
                    if job.mode == AccessMethodMode::Code
                        && let Some(code) = &job.requested_code
                    {
                        o.insert("code".into(), Value::String(code.clone()));
                    }
                }
                let r = t
                    .post(route, &body)
                    .await
                    .map_err(|f| provider_error(route, &f, Kind::Change))?;
                r.get("acs_credential").cloned().ok_or_else(|| {
                    ProviderError::Ambiguous(format!("{route}: no acs_credential in the answer"))
                })?
            }
        };
        let code = (job.mode == AccessMethodMode::Code)
            .then(|| {
                str_of(&credential, "code")
                    .map(str::to_owned)
                    .or_else(|| job.requested_code.clone())
            })
            .flatten();
        Ok(ProvisionResult {
            doors: job
                .entrance_ids
                .iter()
                .map(|e| (*e, DoorOutcome::Granted))
                .collect(),
            code,
            card_encoding_required: job.mode == AccessMethodMode::Card
                && system.capabilities.is_card_encoding_required,
            client_session_token: None,
        })
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, access_method_id = %job.access_method_id, route))]
    async fn revoke(&self, system: &AccessSystem, job: &RevokeJob) -> Result<(), ProviderError> {
        let (t, acs) = match self.stored(system).await? {
            Stored::Acs(t, acs, _) => (t, acs),
            Stored::Locks(t, link) => return locks::revoke(&t, &link, job).await,
        };
        let held = find_held(&t, &acs, job.access_method_id).await?;
        let Some(user_id) = held.user_id().map(str::to_owned) else {
            return Ok(());
        };
        for c in credentials_of(&t, &user_id).await? {
            if let Some(id) = str_of(&c, "acs_credential_id") {
                let route = "/acs/credentials/delete";
                gone_is_fine(
                    route,
                    t.post(route, &json!({ "acs_credential_id": id })).await,
                )?;
            }
        }
        if system.capabilities.permission_model == PermissionModel::AccessGroups {
            for g in groups_of(&t, &user_id).await? {
                let route = "/acs/users/remove_from_access_group";
                gone_is_fine(
                    route,
                    t.post(
                        route,
                        &json!({ "acs_user_id": user_id, "acs_access_group_id": g }),
                    )
                    .await,
                )?;
            }
        }
        let route = "/acs/users/delete";
        gone_is_fine(
            route,
            t.post(route, &json!({ "acs_user_id": user_id })).await,
        )
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, %access_method_id, route))]
    async fn read_back(
        &self,
        system: &AccessSystem,
        access_method_id: AccessMethodId,
    ) -> Result<Option<HeldCredential>, ProviderError> {
        let (t, acs, link) = match self.stored(system).await? {
            Stored::Acs(t, acs, link) => (t, acs, link),
            Stored::Locks(t, link) => return locks::read_back(&t, &link, access_method_id).await,
        };
        let held = find_held(&t, &acs, access_method_id).await?;
        let (Some(user), Some(user_id)) = (held.user.as_ref(), held.user_id()) else {
            return Ok(None);
        };
        let Some(credential) = credentials_of(&t, user_id).await?.into_iter().next() else {
            return Ok(None);
        };
        let mut external = BTreeSet::new();
        if system.capabilities.permission_model == PermissionModel::AccessGroups {
            for g in groups_of(&t, user_id).await? {
                external.extend(
                    group_entrances(&t, &g, |r, f| provider_error(r, f, Kind::Read)).await?,
                );
            }
        } else if let Some(id) = str_of(&credential, "acs_credential_id") {
            external.extend(credential_entrances(&t, id).await?);
        }
        let by_external: HashMap<&str, EntranceId> = link
            .entrances
            .iter()
            .map(|(id, ext)| (ext.as_str(), *id))
            .collect();
        let mut entrance_ids = Vec::new();
        for ext in &external {
            match by_external.get(ext.as_str()) {
                Some(id) => entrance_ids.push(*id),
                None => tracing::warn!(
                    entrance = %ext,
                    "the credential opens an entrance Keygate does not know; ignored"
                ),
            }
        }
        let schedule = user.get("access_schedule");
        let is_card = str_of(&credential, "access_method") == Some("card");
        Ok(Some(HeldCredential {
            entrance_ids,
            starts_at: parse_ts(credential.get("starts_at"))
                .or_else(|| parse_ts(schedule.and_then(|s| s.get("starts_at")))),
            ends_at: parse_ts(credential.get("ends_at"))
                .or_else(|| parse_ts(schedule.and_then(|s| s.get("ends_at")))),
            code: str_of(&credential, "code").map(str::to_owned),
            card_encoding_required: is_card
                && system.capabilities.is_card_encoding_required
                && !flag(&credential, "is_issued").unwrap_or(false),
        }))
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, acs_entrance_id = %job.acs_entrance_id, route))]
    async fn unlock(&self, system: &AccessSystem, job: &UnlockJob) -> Result<(), AttemptError> {
        use keygate_domain::action::unlock_errors;
        if !system.capabilities.can_remote_unlock {
            return Err(attempt(
                unlock_errors::NOT_SUPPORTED,
                "this Seam access system has no entrance that unlocks with a cloud key",
            ));
        }
        let until = unlock_deadline(job)?;
        let (t, acs, link) = match self.stored(system).await.map_err(from_provider_error)? {
            Stored::Acs(t, acs, link) => (t, acs, link),
            Stored::Locks(t, link) => return locks::unlock(&t, &link, job, until).await,
        };
        let Some(entrance) = link.entrances.get(&job.acs_entrance_id).cloned() else {
            return Err(attempt(
                "entrance_not_synced",
                format!("entrance {} has no Seam id", job.acs_entrance_id),
            ));
        };
        // Seam unlocks an entrance with a person's cloud_key credential.
        let Some(method) = job.access_method_id else {
            return Err(attempt(
                unlock_errors::NOT_SUPPORTED,
                "Seam unlocks an entrance only with a person's cloud key (no access method given)",
            ));
        };
        let held = find_held(&t, &acs, method)
            .await
            .map_err(from_provider_error)?;
        let credential = match held.user_id() {
            Some(u) => credentials_of(&t, u)
                .await
                .map_err(from_provider_error)?
                .into_iter()
                .find(|c| str_of(c, "access_method") == Some("cloud_key")),
            None => None,
        };
        let Some(credential) = credential
            .as_ref()
            .and_then(|c| str_of(c, "acs_credential_id"))
            .map(str::to_owned)
        else {
            return Err(attempt(
                unlock_errors::NOT_SUPPORTED,
                "the access method has no cloud key in this Seam system",
            ));
        };
        let route = "/acs/entrances/unlock";
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let r = t
            .post_within(
                route,
                &json!({ "acs_entrance_id": entrance, "acs_credential_id": credential }),
                left.min(t.timeout),
            )
            .await
            .map_err(|f| {
                attempt_failure(route, &f, "unlock_failed", unlock_errors::NOT_CONFIRMED)
            })?;
        settle(&t, r, until, unlock_errors::NOT_CONFIRMED)
            .await
            .map(|_| ())
    }

    #[tracing::instrument(skip_all, fields(acs_system_id = %system.id, acs_encoder_id = %job.acs_encoder_id, route))]
    async fn encode(
        &self,
        system: &AccessSystem,
        job: &EncodeJob,
    ) -> Result<EncodedCard, AttemptError> {
        if !system.capabilities.is_card_encoding_required {
            return Err(attempt(
                "credential_cannot_be_reissued",
                "this Seam access system does not encode cards",
            ));
        }
        let until = tokio::time::Instant::now() + ENCODE_TIMEOUT;
        let (t, acs, link) = match self.stored(system).await.map_err(from_provider_error)? {
            Stored::Acs(t, acs, link) => (t, acs, link),
            Stored::Locks(..) => {
                return Err(attempt(
                    "credential_cannot_be_reissued",
                    "Seam locks take no cards",
                ));
            }
        };
        let Some(encoder) = link.encoders.get(&job.acs_encoder_id).cloned() else {
            return Err(attempt(
                "encoder_not_online",
                format!("encoder {} has no Seam id", job.acs_encoder_id),
            ));
        };
        let held = find_held(&t, &acs, job.access_method_id)
            .await
            .map_err(from_provider_error)?;
        let credential = match held.user_id() {
            Some(u) => credentials_of(&t, u)
                .await
                .map_err(from_provider_error)?
                .into_iter()
                .find(|c| str_of(c, "access_method") == Some("card")),
            None => None,
        };
        let Some(credential_id) = credential
            .as_ref()
            .and_then(|c| str_of(c, "acs_credential_id"))
            .map(str::to_owned)
        else {
            return Err(attempt(
                "no_credential_on_encoder",
                "the Seam system holds no card credential for this access method yet",
            ));
        };
        let route = "/acs/encoders/encode_credential";
        let r = t
            .post_within(
                route,
                &json!({ "acs_encoder_id": encoder, "acs_credential_id": credential_id }),
                t.timeout,
            )
            .await
            .map_err(|f| {
                attempt_failure(
                    route,
                    &f,
                    "credential_cannot_be_reissued",
                    "encoder_communication_timeout",
                )
            })?;
        let result = settle(&t, r, until, "encoder_communication_timeout").await?;
        Ok(EncodedCard {
            acs_credential_id: str_of(&result, "acs_credential_id")
                .map(str::to_owned)
                .unwrap_or(credential_id),
            card_number: str_of(&result, "card_number")
                .or_else(|| credential.as_ref().and_then(|c| str_of(c, "card_number")))
                .unwrap_or_default()
                .to_owned(),
        })
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
        let ok = Settings::parse(&settings(&[])).map(|s| (s.endpoint, s.timeout, s.loopback));
        assert_eq!(
            ok,
            Ok((DEFAULT_ENDPOINT.to_owned(), DEFAULT_TIMEOUT, false)),
            "the defaults"
        );
        for good in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:9",
            "https://seam.example.com",
        ] {
            assert!(
                Settings::parse(&settings(&[("endpoint", good)])).is_ok(),
                "{good}"
            );
        }
        for (bad, name) in [
            (
                settings(&[("endpoint", "http://seam.example.com")]),
                "endpoint",
            ),
            (settings(&[("endpoint", "ftp://127.0.0.1")]), "endpoint"),
            (
                settings(&[("endpoint", "https://x.example/api")]),
                "endpoint",
            ),
            (
                settings(&[("endpoint", "https://u:p@x.example")]),
                "endpoint",
            ),
            (settings(&[("endpoint", "not a url")]), "endpoint"),
            (settings(&[("timeout_ms", "5")]), "timeout_ms"),
            (settings(&[("timeout_ms", "soon")]), "timeout_ms"),
            (settings(&[("acs_system_id", " ")]), "acs_system_id"),
            (settings(&[("colour", "red")]), "colour"),
            (
                settings(&[("devices", "locks"), ("acs_system_id", "a")]),
                "devices",
            ),
            (settings(&[("devices", "doors")]), "devices"),
            (
                settings(&[("connected_account_id", "ca")]),
                "connected_account_id",
            ),
            (
                settings(&[("devices", "locks"), ("connected_account_id", "")]),
                "connected_account_id",
            ),
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
    fn devices_locks_is_a_scope_of_its_own() {
        let scope = |pairs: &[(&str, &str)]| Settings::parse(&settings(pairs)).map(|s| s.scope);
        assert_eq!(scope(&[]), Ok(Scope::Acs(None)));
        assert_eq!(
            scope(&[("acs_system_id", "a")]),
            Ok(Scope::Acs(Some("a".into())))
        );
        assert_eq!(
            scope(&[("devices", " locks ")]),
            Ok(Scope::Locks {
                connected_account_id: None
            })
        );
        assert_eq!(
            scope(&[("devices", "locks"), ("connected_account_id", "ca1")]),
            Ok(Scope::Locks {
                connected_account_id: Some("ca1".into())
            })
        );
    }

    #[test]
    fn the_api_key_is_required_and_sensitive() {
        let none = Credentials::default();
        assert!(
            matches!(bearer(&none), Err(ProviderError::Permanent(m)) if m.contains("api_key: required"))
        );
        let other = Credentials::new(BTreeMap::from([("token".to_owned(), "x".to_owned())]));
        assert!(
            matches!(bearer(&other), Err(ProviderError::Permanent(m)) if m.contains("token: unknown credential"))
        );
        let good = Credentials::new(BTreeMap::from([(
            "api_key".to_owned(),
            "seam_abc".to_owned(),
        )]));
        let v = bearer(&good).unwrap_or_else(|e| panic!("{e}"));
        assert!(v.is_sensitive());
        assert_eq!(v.to_str().ok(), Some("Bearer seam_abc"));
    }

    fn status(status: u16, ty: Option<&str>) -> Failure {
        Failure::Status {
            status,
            error_type: ty.map(str::to_owned),
            message: "m".into(),
        }
    }

    #[test]
    fn statuses_map_to_classes() {
        use ProviderError::*;
        let class = |e: ProviderError| match e {
            Transient(m) => ("transient", m),
            Ambiguous(m) => ("ambiguous", m),
            Permanent(m) => ("permanent", m),
        };
        let r = "/x";
        assert_eq!(
            class(provider_error(
                r,
                &status(401, Some("unauthorized")),
                Kind::Change
            ))
            .0,
            "transient"
        );
        assert!(
            class(provider_error(r, &status(401, None), Kind::Read))
                .1
                .starts_with("invalid_credentials: ")
        );
        assert!(
            class(discover_error(r, &status(403, None)))
                .1
                .starts_with("invalid_credentials: ")
        );
        assert_eq!(class(discover_error(r, &status(403, None))).0, "permanent");
        assert_eq!(
            class(provider_error(r, &status(429, None), Kind::Change)).0,
            "transient"
        );
        assert_eq!(
            class(provider_error(r, &status(503, None), Kind::Change)).0,
            "transient"
        );
        assert_eq!(
            class(provider_error(r, &status(500, None), Kind::Change)).0,
            "ambiguous"
        );
        assert_eq!(
            class(provider_error(r, &status(502, None), Kind::Read)).0,
            "transient"
        );
        assert_eq!(
            class(provider_error(r, &Failure::TimedOut, Kind::Change)).0,
            "ambiguous"
        );
        assert_eq!(
            class(provider_error(r, &Failure::TimedOut, Kind::Read)).0,
            "transient"
        );
        let (c, m) = class(provider_error(
            r,
            &status(400, Some("invalid_input")),
            Kind::Change,
        ));
        assert_eq!(c, "permanent");
        assert!(m.starts_with("invalid_input: "), "{m}");
        let (c, m) = class(provider_error(
            r,
            &Failure::Unreachable("refused".into()),
            Kind::Change,
        ));
        assert_eq!(c, "transient");
        assert!(m.starts_with("provider_unreachable: "), "{m}");
        assert!(
            discover_error(r, &Failure::TimedOut)
                .to_string()
                .contains("provider_unreachable: ")
        );
    }

    #[test]
    fn capabilities_follow_the_type_and_the_entrance_flags() {
        use AccessMethodMode::*;
        let salto = capabilities("salto_ks_site", &[vec![Code, MobileKey]], true);
        assert_eq!(salto.permission_model, PermissionModel::AccessGroups);
        assert!(salto.pin_code_rules.is_some());
        assert!(!salto.can_remote_unlock);
        let no_groups = capabilities("salto_ks_site", &[vec![Code]], false);
        assert_eq!(no_groups.permission_model, PermissionModel::CredentialBased);
        let visionline = capabilities("visionline_system", &[vec![Card, MobileKey]], false);
        assert!(visionline.is_card_encoding_required);
        assert!(visionline.pin_code_rules.is_none());
        let cloud = capabilities("salto_space_system", &[vec![Card, CloudKey]], true);
        assert!(cloud.can_remote_unlock);
        assert!(cloud.supports(CloudKey));
        let flags = json!({ "can_unlock_with_code": true, "can_unlock_with_card": false });
        assert_eq!(
            entrance_modes(&flags, &type_profile("visionline_system")),
            [Code]
        );
        let none = json!({});
        assert_eq!(
            entrance_modes(&none, &type_profile("visionline_system")),
            [Card, MobileKey]
        );
    }
}
