//! A simulator of the Kisi REST API (`https://api.kisi.io`), for the `kisi` adapter's tests.
//!
//! What it follows, and where Kisi publishes it:
//! - Authentication: every request carries `Authorization: KISI-LOGIN <api_key>`; anything else
//!   is `401`. (docs.kisi.io, "Assign access rights" and "Unlock locks":
//!   <https://docs.kisi.io/api/how_to_guides/manage_access_rights/assign_access_rights>,
//!   <https://docs.kisi.io/platform/cloud_unlocks/unlock_setup>; the official JavaScript client
//!   `kisi-inc/client-js`, `src/index.js`, `setLoginSecret`.)
//! - Resources and their fields: places, locks, groups, group locks (the locks a group opens),
//!   users (with a free `metadata` object), role assignments (`role_id` `group_basic` gives a
//!   user the doors of a group, optionally between `valid_from` and `valid_until`). (docs.kisi.io
//!   "Fetch all groups associated to a user":
//!   <https://docs.kisi.io/platform/apis/how_to_guides/fetch_groups>; "Add or remove users":
//!   <https://help.kisi.io/platform/apis/how_to_guides/manage_users/add_remove_users>; "Remove
//!   access rights": <https://docs.kisi.io/platform/apis/how_to_guides/manage_access_rights/remove_access_rights>;
//!   the field lists of Airbyte's Kisi source, `airbytehq/airbyte`,
//!   `airbyte-integrations/connectors/source-kisi/manifest.yaml`; the Apiary reference
//!   <https://api.getkisi.com/docs/api> lists "GroupLocks Collection".)
//! - Endpoints: `GET /places`, `GET /locks?place_id=`, `POST /locks/{id}/unlock` (answers
//!   `{"message": "Unlocked!"}`), `GET /groups`, `GET /group_locks?group_id=`,
//!   `GET /users?query=<email>`, `POST /users` (`{"user": {...}}`), `PATCH /users/{id}`,
//!   `GET /role_assignments?user_id=`, `POST /role_assignments` (`{"role_assignment": {...}}`),
//!   `PATCH`/`DELETE /role_assignments/{id}`.
//! - Paging: `limit`/`offset` query parameters, the range in the `X-Collection-Range` header
//!   (`0-9/42`, or `*/0` when the page is empty), as `kisi-inc/client-js` reads it
//!   (`addPaginationResponseInterceptor`) and Airbyte's manifest pages (`OffsetIncrement`).
//! - Error bodies: `{"code": "...", "message": "..."}`, and `{"errors": {field: [..]}}` for a
//!   validation failure (`422`); `kisi-inc/client-js` `handleError` reads `code` and
//!   `error`/`errors`.
//!
//! What it assumes where Kisi publishes nothing found: the numeric rate limit (configurable
//! here, [`RateLimit`]; over it a `429` with `Retry-After` in seconds), that a second
//! `group_basic` assignment of the same user to the same group is refused with `422`, that an
//! e-mail address is unique among an organization's users, and that `PATCH /users/{id}`
//! replaces `metadata`.
//!
//! The permission model: every API key belongs to one organization and sees only that
//! organization's places, locks, groups, users and role assignments; another's are `404`.
//!
//! Event webhooks ([`KisiSimulator::set_webhook`]): as Kisi's "Event Webhook" integration, the
//! simulator POSTs each event as JSON to the configured URL, with `X-Signature`: the
//! HMAC-SHA256 digest of the body under the integration's signature key (docs.kisi.io, "Track
//! unlocks using webhooks":
//! <https://docs.kisi.io/api/how_to_guides/set_up_webhooks/track_unlocks>, whose sample payload
//! is the shape of [`KisiSimulator::unlock_event`]; "Send Kisi events with customizable
//! webhooks":
//! <https://docs.kisi.io/how_to_guides/integration_guides/workflow_automation/event_webhooks/>,
//! which warns that an endpoint may receive the same event more than once). Events: `lock.unlock`
//! when a user unlocks a door ([`KisiSimulator::unlock_by_user`]) or the API unlocks one (the
//! actor then is the API key's user, id `0`, in no user list), and `role_assignment.create` /
//! `role_assignment.destroy` when the API makes or deletes a role assignment. Assumed where Kisi
//! publishes nothing: the digest is lowercase hex; the role assignment event types' names; a
//! delivery is one event object. Faults: every event delivered twice
//! ([`KisiSimulator::set_duplicate_webhooks`]), or a delivery signed with the wrong key
//! ([`KisiSimulator::deliver_signed_with`]).
//!
//! Fault injection ([`KisiSimulator::inject`]): the next write request (anything but `GET`),
//! or with [`KisiSimulator::inject_any`] the next request, answers slowly, `503` before
//! applying, `500` after applying, or a refusal, as told.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The API key of the seeded organization.
pub const API_KEY: &str = "kisi-sim-org-one-8c1f2a7d";
/// The API key of a second organization, with its own place and lock.
pub const OTHER_ORG_API_KEY: &str = "kisi-sim-org-two-3b9e40c6";
/// The role that lets a user unlock the doors of a group.
pub const GROUP_BASIC: &str = "group_basic";
/// The page size when a listing names no `limit`.
pub const DEFAULT_LIMIT: usize = 10;

/// A token bucket per organization: `requests_per_second`, at most `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
}

/// What the next (write) request does instead of its ordinary answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Waits `delay`, then applies and answers normally (`apply`: applied even if the client
    /// has given up by then) or answers `504` without applying anything.
    Slow { delay: Duration, apply: bool },
    /// `503` before applying anything.
    Unavailable,
    /// Applies the request, then answers `500`.
    ErrorAfterApplying,
    /// Refuses with this status (`422`, `403`, ...) without applying anything.
    Refuse(u16),
}

#[derive(Clone, Debug, Serialize)]
pub struct Place {
    pub id: u64,
    pub organization_id: u64,
    pub name: String,
    pub time_zone: String,
    pub tz_time_zone: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Lock {
    pub id: u64,
    pub place_id: u64,
    pub name: String,
    pub online: bool,
    pub configured: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub id: u64,
    pub organization_id: u64,
    pub place_id: Option<u64>,
    pub name: String,
    pub description: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupLock {
    pub id: u64,
    pub group_id: u64,
    pub lock_id: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct User {
    pub id: u64,
    pub organization_id: u64,
    pub name: String,
    pub email: String,
    pub confirmed: bool,
    pub metadata: Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct RoleAssignment {
    pub id: u64,
    pub organization_id: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub role_id: String,
    pub user_id: u64,
    pub group_id: u64,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
}

/// The ids the seed made.
#[derive(Clone, Debug)]
pub struct Seed {
    pub organization_id: u64,
    pub place_id: u64,
    pub lock_ids: Vec<u64>,
    /// "Staff" (the first two locks) and "Everyone" (all four).
    pub group_ids: Vec<u64>,
    pub other_place_id: u64,
    pub other_lock_id: u64,
}

struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, u64>,
    places: Vec<Place>,
    locks: Vec<Lock>,
    groups: Vec<Group>,
    group_locks: Vec<GroupLock>,
    users: Vec<User>,
    role_assignments: Vec<RoleAssignment>,
    unlocks: Vec<u64>,
    next_id: u64,
    /// `(any method, fault)`: `false` waits for a write request.
    faults: VecDeque<(bool, Fault)>,
    rate_limit: Option<RateLimit>,
    buckets: HashMap<u64, Bucket>,
    max_page: usize,
    requests: Vec<String>,
    throttled: usize,
    webhook: Option<WebhookTarget>,
    /// `(event uuid, answer status or 0 when the post failed)`, in order.
    webhook_deliveries: Vec<(String, u16)>,
}

/// Where the event webhooks go.
#[derive(Clone, Debug)]
struct WebhookTarget {
    url: String,
    secret: Option<String>,
    duplicate: bool,
}

impl Inner {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn place_org(&self, place_id: u64) -> Option<u64> {
        self.places
            .iter()
            .find(|p| p.id == place_id)
            .map(|p| p.organization_id)
    }

    fn lock_org(&self, lock_id: u64) -> Option<u64> {
        let lock = self.locks.iter().find(|l| l.id == lock_id)?;
        self.place_org(lock.place_id)
    }

    /// `Some(seconds to wait)` when `org` is over the rate limit.
    fn throttle(&mut self, org: u64) -> Option<u64> {
        let limit = self.rate_limit?;
        let now = Instant::now();
        let b = self.buckets.entry(org).or_insert(Bucket {
            limit,
            tokens: f64::from(limit.burst),
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.limit.requests_per_second).min(f64::from(b.limit.burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            self.throttled += 1;
            let wait = (1.0 - b.tokens) / b.limit.requests_per_second;
            Some(wait.ceil().max(1.0) as u64)
        }
    }
}

/// The simulator: cheap to clone, every clone the same state.
#[derive(Clone)]
pub struct KisiSimulator {
    inner: Arc<Mutex<Inner>>,
    seed: Arc<Seed>,
}

impl Default for KisiSimulator {
    fn default() -> Self {
        Self::new()
    }
}

/// The organization a request's API key belongs to.
#[derive(Clone, Copy, Debug)]
struct Org(u64);

impl KisiSimulator {
    /// A simulator with the seed: one organization with one place ("HQ", Europe/Berlin), four
    /// locks and two groups; a second organization with one place and one lock.
    pub fn new() -> Self {
        let mut s = Inner {
            max_page: 100,
            ..Inner::default()
        };
        let org = s.id();
        s.keys.insert(API_KEY.to_owned(), org);
        let place_id = s.id();
        s.places.push(Place {
            id: place_id,
            organization_id: org,
            name: "HQ".into(),
            time_zone: "Berlin".into(),
            tz_time_zone: "Europe/Berlin".into(),
        });
        let mut lock_ids = Vec::new();
        for name in ["Front Door", "Back Door", "Server Room", "Roof"] {
            let id = s.id();
            s.locks.push(Lock {
                id,
                place_id,
                name: name.into(),
                online: true,
                configured: true,
            });
            lock_ids.push(id);
        }
        let mut group_ids = Vec::new();
        for (name, locks) in [("Staff", &lock_ids[..2]), ("Everyone", &lock_ids[..])] {
            let id = s.id();
            s.groups.push(Group {
                id,
                organization_id: org,
                place_id: Some(place_id),
                name: name.into(),
                description: format!("{name} of HQ"),
            });
            for lock_id in locks {
                let gl = s.id();
                s.group_locks.push(GroupLock {
                    id: gl,
                    group_id: id,
                    lock_id: *lock_id,
                });
            }
            group_ids.push(id);
        }
        let other = s.id();
        s.keys.insert(OTHER_ORG_API_KEY.to_owned(), other);
        let other_place_id = s.id();
        s.places.push(Place {
            id: other_place_id,
            organization_id: other,
            name: "Elsewhere".into(),
            time_zone: "UTC".into(),
            tz_time_zone: "Etc/UTC".into(),
        });
        let other_lock_id = s.id();
        s.locks.push(Lock {
            id: other_lock_id,
            place_id: other_place_id,
            name: "Their Door".into(),
            online: true,
            configured: true,
        });
        Self {
            inner: Arc::new(Mutex::new(s)),
            seed: Arc::new(Seed {
                organization_id: org,
                place_id,
                lock_ids,
                group_ids,
                other_place_id,
                other_lock_id,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    pub fn seed(&self) -> &Seed {
        &self.seed
    }

    /// The API, without its listener.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/places", get(list_places))
            .route("/locks", get(list_locks))
            .route("/locks/{id}/unlock", post(unlock))
            .route("/groups", get(list_groups))
            .route("/group_locks", get(list_group_locks))
            .route("/users", get(list_users).post(create_user))
            .route("/users/{id}", patch(update_user).get(get_user))
            .route(
                "/role_assignments",
                get(list_role_assignments).post(create_role_assignment),
            )
            .route(
                "/role_assignments/{id}",
                patch(update_role_assignment).delete(delete_role_assignment),
            )
            .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "No such route") })
            .layer(middleware::from_fn_with_state(self.clone(), gate))
            .with_state(self.clone())
    }

    /// Serves the API on 127.0.0.1 (an ephemeral port) until the runtime ends.
    pub async fn serve(&self) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "the Kisi simulator stopped");
            }
        });
        Ok(addr)
    }

    /// The next write request (not `GET`) meets `fault`. Faults queue in order.
    pub fn inject(&self, fault: Fault) {
        self.with(|s| s.faults.push_back((false, fault)));
    }

    /// The next request, whatever its method, meets `fault`.
    pub fn inject_any(&self, fault: Fault) {
        self.with(|s| s.faults.push_back((true, fault)));
    }

    /// Limits each organization's requests (`None`: no limit, the default).
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.with(|s| {
            s.rate_limit = limit;
            s.buckets.clear();
        });
    }

    /// The largest page a listing answers, whatever `limit` asks (default 100).
    pub fn set_max_page_size(&self, n: usize) {
        self.with(|s| s.max_page = n.max(1));
    }

    /// Adds a lock to a place (for paging).
    pub fn add_lock(&self, place_id: u64, name: &str) -> u64 {
        self.with(|s| {
            let id = s.id();
            s.locks.push(Lock {
                id,
                place_id,
                name: name.into(),
                online: true,
                configured: true,
            });
            id
        })
    }

    /// Adds a user to the seeded organization (as if made in Kisi's dashboard).
    pub fn add_user(&self, name: &str, email: &str) -> u64 {
        let org = self.seed.organization_id;
        self.with(|s| {
            let id = s.id();
            s.users.push(User {
                id,
                organization_id: org,
                name: name.into(),
                email: email.into(),
                confirmed: true,
                metadata: Value::Null,
            });
            id
        })
    }

    pub fn users(&self) -> Vec<User> {
        self.with(|s| s.users.clone())
    }

    pub fn role_assignments(&self) -> Vec<RoleAssignment> {
        self.with(|s| s.role_assignments.clone())
    }

    /// The locks unlocked, in order.
    pub fn unlocks(&self) -> Vec<u64> {
        self.with(|s| s.unlocks.clone())
    }

    /// Every request that passed authentication, as `"GET /locks"`.
    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone())
    }

    /// Posts every event to `url` (`http://host:port/path`), signed with `secret` when given
    /// (as a Kisi Event Webhook integration with a signature key); `None` stops the webhooks.
    pub fn set_webhook(&self, url: Option<&str>, secret: Option<&str>) {
        self.with(|s| {
            s.webhook = url.map(|u| WebhookTarget {
                url: u.to_owned(),
                secret: secret.map(str::to_owned),
                duplicate: false,
            });
        });
    }

    /// Delivers every event twice (as Kisi may).
    pub fn set_duplicate_webhooks(&self, on: bool) {
        self.with(|s| {
            if let Some(w) = s.webhook.as_mut() {
                w.duplicate = on;
            }
        });
    }

    /// The webhook deliveries made: `(event uuid, HTTP status, 0 when the post failed)`.
    pub fn webhook_deliveries(&self) -> Vec<(String, u16)> {
        self.with(|s| s.webhook_deliveries.clone())
    }

    /// A `lock.unlock` event of `user_id` opening `lock_id` now, as Kisi's webhook sends it.
    pub fn unlock_event(&self, user_id: u64, lock_id: u64) -> Value {
        self.with(|s| {
            let user = s.users.iter().find(|u| u.id == user_id).cloned();
            let lock = s.locks.iter().find(|l| l.id == lock_id).cloned();
            let n = s.id();
            json!({
                "uuid": event_uuid(n),
                "actor_type": "User",
                "actor_id": user_id,
                "actor_name": user.map(|u| u.name).unwrap_or_default(),
                "object_type": "Lock",
                "object_id": lock_id,
                "object_name": lock.as_ref().map(|l| l.name.clone()).unwrap_or_default(),
                "organization_id": self.seed.organization_id,
                "place_id": lock.map(|l| l.place_id),
                "success": true,
                "type": "lock.unlock",
                "error_code": null,
                "error_message": null,
                "created_at": now_rfc3339(),
            })
        })
    }

    /// A user opens a door in the Kisi app: the unlock is recorded and its event delivered
    /// (twice with [`Self::set_duplicate_webhooks`]). Returns the event and the statuses.
    pub async fn unlock_by_user(&self, user_id: u64, lock_id: u64) -> (Value, Vec<u16>) {
        self.with(|s| s.unlocks.push(lock_id));
        let event = self.unlock_event(user_id, lock_id);
        let statuses = self.send_event(&event).await;
        (event, statuses)
    }

    /// Delivers `event` once, signed as configured. `0` when it could not be posted.
    pub async fn deliver(&self, event: &Value) -> u16 {
        let Some(target) = self.with(|s| s.webhook.clone()) else {
            return 0;
        };
        let body = event.to_string();
        let signature = target.secret.as_deref().map(|k| sign(k, body.as_bytes()));
        self.post(&target.url, event, &body, signature.as_deref())
            .await
    }

    /// Delivers `event` once with `signature` as its `X-Signature` (a forged or corrupted one).
    pub async fn deliver_signed_with(&self, event: &Value, signature: &str) -> u16 {
        let Some(target) = self.with(|s| s.webhook.clone()) else {
            return 0;
        };
        self.post(&target.url, event, &event.to_string(), Some(signature))
            .await
    }

    async fn send_event(&self, event: &Value) -> Vec<u16> {
        let Some(target) = self.with(|s| s.webhook.clone()) else {
            return Vec::new();
        };
        let times = if target.duplicate { 2 } else { 1 };
        let mut out = Vec::new();
        for _ in 0..times {
            out.push(self.deliver(event).await);
        }
        out
    }

    async fn post(&self, url: &str, event: &Value, body: &str, signature: Option<&str>) -> u16 {
        let status = post_json(url, body, signature).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the Kisi simulator's webhook could not be posted");
            0
        });
        let uuid = event["uuid"].as_str().unwrap_or_default().to_owned();
        self.with(|s| s.webhook_deliveries.push((uuid, status)));
        status
    }

    /// A role assignment event, delivered in the background when webhooks are on.
    fn assignment_event(&self, event_type: &str, a: &RoleAssignment) {
        if self.with(|s| s.webhook.is_none()) {
            return;
        }
        let n = self.with(Inner::id);
        let event = json!({
            "uuid": event_uuid(n),
            "actor_type": "User",
            "actor_id": 0,
            "actor_name": "API",
            "object_type": "RoleAssignment",
            "object_id": a.id,
            "object_name": a.role_id,
            "organization_id": a.organization_id,
            "place_id": null,
            "success": true,
            "type": event_type,
            "error_code": null,
            "error_message": null,
            "created_at": now_rfc3339(),
        });
        let sim = self.clone();
        tokio::spawn(async move {
            sim.send_event(&event).await;
        });
    }

    /// How many requests were answered `429`.
    pub fn throttled(&self) -> usize {
        self.with(|s| s.throttled)
    }
}

/// A UUID-shaped id of event number `n`.
fn event_uuid(n: u64) -> String {
    format!("5e1f0000-0000-4000-8000-{n:012x}")
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The lowercase hex HMAC-SHA256 of `body` under `key`: Kisi's `X-Signature`.
pub fn sign(key: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit as _, Mac as _};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// POSTs `body` as JSON to `url` (`http://host:port/path`, HTTP/1.1, one connection) and
/// returns the answer's status.
async fn post_json(url: &str, body: &str, signature: Option<&str>) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nUser-Agent: Kisi-Webhooks-Simulator\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(sig) = signature {
        req.push_str(&format!("X-Signature: {sig}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| format!("{url}: no answer within 30 s"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let head = String::from_utf8_lossy(&answer);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP answer"))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

fn invalid(field: &str, message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "errors": { field: [message] } })),
    )
        .into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "Record not found")
}

/// Authentication, the rate limit, the request log and the scripted faults.
async fn gate(State(sim): State<KisiSimulator>, mut req: Request, next: Next) -> Response {
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("KISI-LOGIN "))
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    let Some(org) = sim.with(|s| s.keys.get(&key).copied()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "You need to sign in or sign up before continuing.",
        );
    };
    if let Some(wait) = sim.with(|s| s.throttle(org)) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "Rate limit exceeded",
        );
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let write = req.method() != Method::GET;
    let line = format!("{} {}", req.method(), req.uri().path());
    let fault = sim.with(|s| {
        s.requests.push(line);
        let i = s.faults.iter().position(|(any, _)| *any || write)?;
        s.faults.remove(i).map(|(_, f)| f)
    });
    req.extensions_mut().insert(Org(org));
    match fault {
        None => next.run(req).await,
        Some(Fault::Slow { delay, apply }) => {
            if apply {
                // Applied even when the client has gone away by then, as a server would.
                let late = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    next.run(req).await
                });
                late.await.unwrap_or_else(|_| {
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal_server_error",
                        "Something went wrong",
                    )
                })
            } else {
                tokio::time::sleep(delay).await;
                error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway_timeout",
                    "The request timed out",
                )
            }
        }
        Some(Fault::Unavailable) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service temporarily unavailable",
        ),
        Some(Fault::ErrorAfterApplying) => {
            let _applied = next.run(req).await;
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                "Something went wrong",
            )
        }
        Some(Fault::Refuse(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            if status == StatusCode::UNPROCESSABLE_ENTITY {
                invalid("base", "is invalid")
            } else {
                error(status, "refused", "The request was refused")
            }
        }
    }
}

type Params = Query<HashMap<String, String>>;

/// A validation failure: answered `422` with `{"errors": {field: [message]}}`.
struct Invalid {
    field: String,
    message: &'static str,
}

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        invalid(&self.field, self.message)
    }
}

fn param_u64(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, Invalid> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| Invalid {
            field: name.to_owned(),
            message: "is not a number",
        }),
    }
}

/// One page of `items` by `limit`/`offset`, its range in `X-Collection-Range`.
fn page<T: Serialize>(sim: &KisiSimulator, items: Vec<T>, q: &HashMap<String, String>) -> Response {
    let max = sim.with(|s| s.max_page);
    let limit = match param_u64(q, "limit") {
        Ok(l) => l.map_or(DEFAULT_LIMIT, |l| l as usize).clamp(1, max),
        Err(r) => return r.into_response(),
    };
    let offset = match param_u64(q, "offset") {
        Ok(o) => o.unwrap_or(0) as usize,
        Err(r) => return r.into_response(),
    };
    let total = items.len();
    let slice: Vec<T> = items.into_iter().skip(offset).take(limit).collect();
    let range = if slice.is_empty() {
        format!("*/{total}")
    } else {
        format!("{}-{}/{}", offset, offset + slice.len() - 1, total)
    };
    let mut r = Json(slice).into_response();
    if let Ok(v) = HeaderValue::from_str(&range) {
        r.headers_mut().insert("x-collection-range", v);
    }
    r
}

async fn list_places(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Query(q): Params,
) -> Response {
    let items: Vec<Place> = sim.with(|s| {
        s.places
            .iter()
            .filter(|p| p.organization_id == org)
            .cloned()
            .collect()
    });
    page(&sim, items, &q)
}

async fn list_locks(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Query(q): Params,
) -> Response {
    let place = match param_u64(&q, "place_id") {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let items: Vec<Lock> = sim.with(|s| {
        s.locks
            .iter()
            .filter(|l| s.place_org(l.place_id) == Some(org))
            .filter(|l| place.is_none_or(|p| l.place_id == p))
            .cloned()
            .collect()
    });
    page(&sim, items, &q)
}

async fn unlock(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Path(id): Path<u64>,
) -> Response {
    sim.with(|s| {
        if s.lock_org(id) != Some(org) {
            return Some(not_found());
        }
        if s.locks.iter().any(|l| l.id == id && !l.online) {
            return Some(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "lock_offline",
                "The lock is offline",
            ));
        }
        s.unlocks.push(id);
        None
    })
    .unwrap_or_else(|| {
        // Kisi records the unlock as an event of the API key's user (no user of the
        // organization's list here): a `lock.unlock` webhook that names no holder.
        if sim.with(|s| s.webhook.is_some()) {
            let event = sim.unlock_event(0, id);
            let sim = sim.clone();
            tokio::spawn(async move {
                sim.send_event(&event).await;
            });
        }
        Json(json!({ "message": "Unlocked!" })).into_response()
    })
}

async fn list_groups(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Query(q): Params,
) -> Response {
    let place = match param_u64(&q, "place_id") {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let items: Vec<Value> = sim.with(|s| {
        s.groups
            .iter()
            .filter(|g| g.organization_id == org)
            .filter(|g| place.is_none_or(|p| g.place_id == Some(p)))
            .map(|g| {
                let locks_count = s.group_locks.iter().filter(|x| x.group_id == g.id).count();
                let mut v = json!(g);
                v["locks_count"] = json!(locks_count);
                v
            })
            .collect()
    });
    page(&sim, items, &q)
}

async fn list_group_locks(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Query(q): Params,
) -> Response {
    let group = match param_u64(&q, "group_id") {
        Ok(g) => g,
        Err(r) => return r.into_response(),
    };
    let items: Vec<Value> = sim.with(|s| {
        s.group_locks
            .iter()
            .filter(|gl| group.is_none_or(|g| gl.group_id == g))
            .filter(|gl| {
                s.groups
                    .iter()
                    .any(|g| g.id == gl.group_id && g.organization_id == org)
            })
            .map(|gl| {
                let mut v = json!(gl);
                if let Some(l) = s.locks.iter().find(|l| l.id == gl.lock_id) {
                    v["lock"] = json!({ "id": l.id, "name": l.name, "place_id": l.place_id });
                }
                v
            })
            .collect()
    });
    page(&sim, items, &q)
}

async fn list_users(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Query(q): Params,
) -> Response {
    let query = q.get("query").map(|s| s.to_lowercase());
    let items: Vec<User> = sim.with(|s| {
        s.users
            .iter()
            .filter(|u| u.organization_id == org)
            .filter(|u| {
                query.as_deref().is_none_or(|t| {
                    u.email.to_lowercase().contains(t) || u.name.to_lowercase().contains(t)
                })
            })
            .cloned()
            .collect()
    });
    page(&sim, items, &q)
}

async fn get_user(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Path(id): Path<u64>,
) -> Response {
    sim.with(|s| {
        match s
            .users
            .iter()
            .find(|u| u.id == id && u.organization_id == org)
        {
            Some(u) => Json(u.clone()).into_response(),
            None => not_found(),
        }
    })
}

async fn create_user(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Json(body): Json<Value>,
) -> Response {
    let u = &body["user"];
    let Some(email) = u["email"]
        .as_str()
        .map(str::trim)
        .filter(|e| e.contains('@'))
    else {
        return invalid("email", "is invalid");
    };
    let name = u["name"].as_str().unwrap_or(email).to_owned();
    let metadata = u.get("metadata").cloned().unwrap_or(Value::Null);
    if !(metadata.is_null() || metadata.is_object()) {
        return invalid("metadata", "must be an object");
    }
    sim.with(|s| {
        if s.users
            .iter()
            .any(|x| x.organization_id == org && x.email.eq_ignore_ascii_case(email))
        {
            return invalid("email", "has already been taken");
        }
        let id = s.id();
        let user = User {
            id,
            organization_id: org,
            name,
            email: email.to_owned(),
            confirmed: u["confirm"].as_bool().unwrap_or(false),
            metadata,
        };
        s.users.push(user.clone());
        Json(user).into_response()
    })
}

async fn update_user(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Path(id): Path<u64>,
    Json(body): Json<Value>,
) -> Response {
    let u = &body["user"];
    sim.with(|s| {
        let Some(user) = s
            .users
            .iter_mut()
            .find(|x| x.id == id && x.organization_id == org)
        else {
            return not_found();
        };
        if let Some(name) = u["name"].as_str() {
            user.name = name.to_owned();
        }
        if let Some(m) = u.get("metadata") {
            if !(m.is_null() || m.is_object()) {
                return invalid("metadata", "must be an object");
            }
            user.metadata = m.clone();
        }
        Json(user.clone()).into_response()
    })
}

async fn list_role_assignments(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Query(q): Params,
) -> Response {
    let (user, group) = match (param_u64(&q, "user_id"), param_u64(&q, "group_id")) {
        (Ok(u), Ok(g)) => (u, g),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let items: Vec<Value> = sim.with(|s| {
        s.role_assignments
            .iter()
            .filter(|r| r.organization_id == org)
            .filter(|r| user.is_none_or(|u| r.user_id == u))
            .filter(|r| group.is_none_or(|g| r.group_id == g))
            .map(|r| {
                let mut v = json!(r);
                if let Some(g) = s.groups.iter().find(|g| g.id == r.group_id) {
                    v["group"] = json!({ "id": g.id, "name": g.name });
                }
                v
            })
            .collect()
    });
    page(&sim, items, &q)
}

/// A `valid_from`/`valid_until` value: absent or null is `None`; else RFC 3339.
fn instant(v: &Value, field: &str) -> Result<Option<String>, Invalid> {
    let bad = || Invalid {
        field: field.to_owned(),
        message: "is not a valid date and time",
    };
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => OffsetDateTime::parse(s, &Rfc3339)
            .map(|_| Some(s.clone()))
            .map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

async fn create_role_assignment(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Json(body): Json<Value>,
) -> Response {
    let r = &body["role_assignment"];
    let (Some(user_id), Some(group_id)) = (r["user_id"].as_u64(), r["group_id"].as_u64()) else {
        return invalid("user_id", "and group_id are required");
    };
    let role_id = r["role_id"].as_str().unwrap_or_default().to_owned();
    if !matches!(role_id.as_str(), GROUP_BASIC | "group_manager") {
        return invalid("role_id", "is not included in the list");
    }
    let (valid_from, valid_until) = match (instant(r, "valid_from"), instant(r, "valid_until")) {
        (Ok(f), Ok(u)) => (f, u),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    sim.with(|s| {
        if !s
            .users
            .iter()
            .any(|u| u.id == user_id && u.organization_id == org)
        {
            return Err(Box::new(invalid("user_id", "does not exist")));
        }
        if !s
            .groups
            .iter()
            .any(|g| g.id == group_id && g.organization_id == org)
        {
            return Err(Box::new(invalid("group_id", "does not exist")));
        }
        if s.role_assignments.iter().any(|x| {
            x.organization_id == org
                && x.user_id == user_id
                && x.group_id == group_id
                && x.role_id == role_id
        }) {
            return Err(Box::new(invalid("user_id", "has already been taken")));
        }
        let id = s.id();
        let a = RoleAssignment {
            id,
            organization_id: org,
            kind: "group".into(),
            role_id,
            user_id,
            group_id,
            valid_from,
            valid_until,
        };
        s.role_assignments.push(a.clone());
        Ok(a)
    })
    .map_or_else(
        |r| *r,
        |a| {
            sim.assignment_event("role_assignment.create", &a);
            Json(a).into_response()
        },
    )
}

async fn update_role_assignment(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Path(id): Path<u64>,
    Json(body): Json<Value>,
) -> Response {
    let r = &body["role_assignment"];
    let mut changes: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for field in ["valid_from", "valid_until"] {
        if r.get(field).is_some() {
            match instant(r, field) {
                Ok(v) => {
                    changes.insert(field, v);
                }
                Err(e) => return e.into_response(),
            }
        }
    }
    sim.with(|s| {
        let Some(a) = s
            .role_assignments
            .iter_mut()
            .find(|a| a.id == id && a.organization_id == org)
        else {
            return not_found();
        };
        if let Some(v) = changes.remove("valid_from") {
            a.valid_from = v;
        }
        if let Some(v) = changes.remove("valid_until") {
            a.valid_until = v;
        }
        Json(a.clone()).into_response()
    })
}

async fn delete_role_assignment(
    State(sim): State<KisiSimulator>,
    Extension(Org(org)): Extension<Org>,
    Path(id): Path<u64>,
) -> Response {
    sim.with(|s| {
        let before = s.role_assignments.len();
        let gone: Vec<RoleAssignment> = s
            .role_assignments
            .iter()
            .filter(|a| a.id == id && a.organization_id == org)
            .cloned()
            .collect();
        s.role_assignments
            .retain(|a| !(a.id == id && a.organization_id == org));
        debug_assert_eq!(before, s.role_assignments.len() + gone.len());
        gone
    })
    .first()
    .map_or_else(not_found, |a| {
        sim.assignment_event("role_assignment.destroy", a);
        StatusCode::NO_CONTENT.into_response()
    })
}
