//! A simulator of the Brivo Access API (`https://api.brivo.com/v1/api`, tokens from
//! `https://auth.brivo.com/oauth/token`), for the `brivo` adapter's tests.
//!
//! What it follows, and where Brivo publishes it (the API reference, <https://apidocs.brivo.com>,
//! as captured in `University-of-British-Columbia-Okanagan/MSYK_Membership`,
//! `docs/apidocs.brivo.com_.2025-11-25T01_49_47.688Z.md`):
//! - Authentication ("Authentication", "Headers", "OAuth2 Tokens"): tokens come from
//!   `POST {auth}/oauth/token` with `Authorization: Basic base64(client_id:client_secret)` and a
//!   form body, `grant_type=password` (`username`, `password`: an administrator's login) or
//!   `grant_type=refresh_token` (`refresh_token`); the answer is `{"access_token", "token_type":
//!   "bearer", "refresh_token", "expires_in"}`. Every API call carries `api-key: <key>` and
//!   `Authorization: bearer <access_token>`.
//! - Errors ("Response Codes"): `{"code": <status>, "message": "..."}`; a bad login is `401`
//!   `{"error": "invalid_grant", "error_description": "Bad credentials"}`, bad client
//!   credentials `401` `{"status": 401, "error": "Unauthorized", "message": "Bad credentials",
//!   "path": "/oauth/token"}`; a missing or wrong `api-key` is `403` with `<h1>Developer
//!   Inactive</h1>`.
//! - Listings ("Listing Calls"): `offset` (default 0) and `pageSize` (default 20, 1..=100), the
//!   answer `{"data": [..], "offset", "pageSize", "count"}` (`count`: the total).
//! - Resources: `GET /sites`, `GET /sites/{id}/access-points`, `GET /access-points`,
//!   `POST /access-points/{id}/activate` (`200`; `412` "Access point is not connected"; `403`
//!   when activation is not enabled), `GET /groups`, `GET /groups/{id}/access/access-points`
//!   (the group's permissions: `{"accessPoint": {..}, "schedule": {..}}`), `GET /groups/{id}/users`,
//!   `PUT`/`DELETE /groups/{groupId}/users/{userId}` (`204`), `GET`/`POST /users` (`externalId`
//!   unique in the account, `pin`, `effectiveFrom`/`effectiveTo`, `emails`),
//!   `GET`/`PUT`/`DELETE /users/{id}`, `GET /users/{externalId}/external`,
//!   `GET /users/{id}/groups`, `GET`/`POST /users/{id}/credentials/digital-invitations` (a Brivo
//!   Mobile Pass invitation: `{"referenceId": <e-mail>}`, `?sendInvitationEmail=true`; `409`
//!   while one is pending; "Digital Invitations").
//!
//! What it assumes where Brivo publishes nothing found: the HTTP methods where the captured
//! reference drops them (`PUT`/`DELETE` for group membership, `POST` for an activation and an
//! invitation, `PUT` (replacing the PIN and its dates) to update a user, `DELETE` a user); the per-second rate limit (configurable,
//! [`RateLimit`]; over it `429` with `Retry-After` in seconds) and the monthly call budget
//! (configurable, [`BrivoSimulator::set_monthly_budget`]); that a PIN is unique in the account
//! (`400`); that deleting a user deletes its invitations. API keys are Mashery keys
//! ("Calls to api.brivo.com require a Mashery API key"); Brivo's partners write that "Brivo
//! grants 100,000 API calls a month" (OpenEye, "Brivo Integration Instructions",
//! <https://answers.openeye.net/Configure/Integrations/Access_and_Intrusion/Brivo_Access_Control/Brivo_Integration_Instructions>).
//! At exhaustion it answers as a Mashery gateway does: `403`, body `<h1>Developer Over Rate</h1>`,
//! header `X-Error-Detail-Header: Account Over Rate Limit` (Mashery's convention, not on Brivo's
//! page). While a budget is set, every answer carries Mashery's quota headers
//! `X-Plan-Quota-Allotted` and `X-Plan-Quota-Current` (TIBCO Mashery, "Rate limit consumption
//! via debug headers", <https://support.mashery.com/blog/read/Rate_limit_consumption_via_debug_headers>,
//! and KB0080047: shown when the endpoint turns them on; whether Brivo's does is not published). A `POST /users` whose `externalId` is taken is `400`. Tokens expire after a configurable
//! `expires_in` (Brivo's partners report five minutes).
//!
//! Fault injection ([`BrivoSimulator::inject`]): the next write request (anything but `GET`),
//! or with [`BrivoSimulator::inject_any`] the next request, answers slowly, `503` before
//! applying, `500` after applying, or a refusal; [`BrivoSimulator::revoke_tokens`] ends every
//! access token now (a mid-run expiry).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, body::Body};
use serde::Serialize;
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "brivo-sim-client-4d1e";
pub const CLIENT_SECRET: &str = "brivo-sim-secret-9a7c55e2";
pub const USERNAME: &str = "admin@example.com";
pub const PASSWORD: &str = "brivo-sim-password-31f0";
pub const API_KEY: &str = "brivo-sim-api-key-7b2c90d4";
/// Where the API is mounted (the adapter's `endpoint` is `http://<addr>` + this).
pub const API_BASE: &str = "/v1/api";
/// Where tokens come from (the adapter's `auth_endpoint` is `http://<addr>` + this).
pub const TOKEN_PATH: &str = "/oauth/token";
pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;

/// A token bucket: `requests_per_second`, at most `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
}

/// What the next (write) request does instead of its ordinary answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Waits `delay`, then applies and answers (`apply`), or answers `504` applying nothing.
    Slow { delay: Duration, apply: bool },
    /// `503` before applying anything.
    Unavailable,
    /// Applies the request, then answers `500`.
    ErrorAfterApplying,
    /// Refuses with this status (`400`, `403`, ...) without applying anything.
    Refuse(u16),
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Site {
    pub id: u64,
    pub site_name: String,
    pub time_zone: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPoint {
    pub id: u64,
    pub name: String,
    pub control_panel_id: u64,
    pub site_id: u64,
    pub site_name: String,
    pub activation_enabled: bool,
    #[serde(skip)]
    pub connected: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub id: u64,
    pub name: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub first_name: String,
    pub last_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_to: Option<String>,
    pub suspended: bool,
    pub emails: Vec<Value>,
}

/// A Brivo Mobile Pass invitation (`/users/{id}/credentials/digital-invitations`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invitation {
    pub id: u64,
    #[serde(skip)]
    pub user_id: u64,
    pub reference_id: String,
    pub access_code: String,
    pub status: String,
    #[serde(skip)]
    pub emailed: bool,
}

/// The ids the seed made.
#[derive(Clone, Debug)]
pub struct Seed {
    pub site_id: u64,
    pub access_point_ids: Vec<u64>,
    /// "Staff" (the first two access points) and "Everyone" (all four).
    pub group_ids: Vec<u64>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Token {
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    sites: Vec<Site>,
    access_points: Vec<AccessPoint>,
    groups: Vec<Group>,
    /// (group, access point)
    permissions: Vec<(u64, u64)>,
    users: Vec<User>,
    /// (group, user)
    members: Vec<(u64, u64)>,
    invitations: Vec<Invitation>,
    activations: Vec<u64>,
    next_id: u64,
    access_tokens: HashMap<String, Token>,
    refresh_tokens: HashSet<String>,
    token_lifetime: u64,
    token_requests: usize,
    grants: Vec<&'static str>,
    faults: VecDeque<(bool, Fault)>,
    rate_limit: Option<RateLimit>,
    bucket: Option<Bucket>,
    budget: Option<u64>,
    calls: u64,
    max_page: usize,
    requests: Vec<String>,
    throttled: usize,
}

impl Inner {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn secret(&mut self, kind: &str) -> String {
        let n = self.id();
        format!(
            "{kind}-{n:08x}-{:08x}",
            n.wrapping_mul(2_654_435_761) as u32
        )
    }

    fn throttle(&mut self) -> Option<u64> {
        let limit = self.rate_limit?;
        let now = Instant::now();
        let b = self.bucket.get_or_insert(Bucket {
            tokens: f64::from(limit.burst),
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * limit.requests_per_second).min(f64::from(limit.burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            self.throttled += 1;
            let wait = (1.0 - b.tokens) / limit.requests_per_second;
            Some(wait.ceil().max(1.0) as u64)
        }
    }
}

/// The simulator: cheap to clone, every clone the same state.
#[derive(Clone)]
pub struct BrivoSimulator {
    inner: Arc<Mutex<Inner>>,
    seed: Arc<Seed>,
}

impl Default for BrivoSimulator {
    fn default() -> Self {
        Self::new()
    }
}

impl BrivoSimulator {
    /// A simulator with the seed: one site ("HQ"), four access points (activation enabled),
    /// two groups with permissions (schedule "24x7 - Always On").
    pub fn new() -> Self {
        let mut s = Inner {
            max_page: MAX_PAGE_SIZE,
            token_lifetime: 300,
            ..Inner::default()
        };
        let site_id = s.id();
        s.sites.push(Site {
            id: site_id,
            site_name: "HQ".into(),
            time_zone: "America/New_York".into(),
        });
        let panel = s.id();
        let mut access_point_ids = Vec::new();
        for name in ["Front Door", "Back Door", "Server Room", "Roof"] {
            let id = s.id();
            s.access_points.push(AccessPoint {
                id,
                name: name.into(),
                control_panel_id: panel,
                site_id,
                site_name: "HQ".into(),
                activation_enabled: true,
                connected: true,
            });
            access_point_ids.push(id);
        }
        let mut group_ids = Vec::new();
        for (name, aps) in [
            ("Staff", &access_point_ids[..2]),
            ("Everyone", &access_point_ids[..]),
        ] {
            let id = s.id();
            s.groups.push(Group {
                id,
                name: name.into(),
            });
            for ap in aps {
                s.permissions.push((id, *ap));
            }
            group_ids.push(id);
        }
        Self {
            inner: Arc::new(Mutex::new(s)),
            seed: Arc::new(Seed {
                site_id,
                access_point_ids,
                group_ids,
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

    /// The token endpoint and the API, without a listener.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/sites", get(list_sites))
            .route("/sites/{id}/access-points", get(site_access_points))
            .route("/access-points", get(list_access_points))
            .route("/access-points/{id}/activate", post(activate))
            .route("/groups", get(list_groups))
            .route("/groups/{id}/access/access-points", get(group_permissions))
            .route("/groups/{id}/users", get(group_users))
            .route(
                "/groups/{group}/users/{user}",
                put(add_member).delete(remove_member),
            )
            .route("/users", get(list_users).post(create_user))
            .route(
                "/users/{id}",
                get(get_user).put(update_user).delete(delete_user),
            )
            .route("/users/{id}/external", get(user_by_external))
            .route("/users/{id}/groups", get(user_groups))
            .route(
                "/users/{id}/credentials/digital-invitations",
                get(list_invitations).post(create_invitation),
            )
            .fallback(|| async {
                (
                    StatusCode::from_u16(596).unwrap_or(StatusCode::NOT_FOUND),
                    "<h1>596 Service Not Found</h1>",
                )
                    .into_response()
            })
            .layer(middleware::from_fn_with_state(self.clone(), gate));
        Router::new()
            .route(TOKEN_PATH, post(token))
            .nest(API_BASE, api)
            .with_state(self.clone())
    }

    /// Serves on 127.0.0.1 (an ephemeral port) until the runtime ends.
    pub async fn serve(&self) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "the Brivo simulator stopped");
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

    /// Ends every access token now (refresh tokens stay valid).
    pub fn revoke_tokens(&self) {
        self.with(|s| s.access_tokens.clear());
    }

    /// Ends every access token and every refresh token now: only a new login gets in.
    pub fn revoke_all_tokens(&self) {
        self.with(|s| {
            s.access_tokens.clear();
            s.refresh_tokens.clear();
        });
    }

    /// The grant type of every token request, answered or refused, in order.
    pub fn grants(&self) -> Vec<&'static str> {
        self.with(|s| s.grants.clone())
    }

    /// The `expires_in` of tokens issued from now on (default 300 s).
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.with(|s| s.token_lifetime = seconds.max(1));
    }

    /// How many token requests (any grant) were answered with a token.
    pub fn token_requests(&self) -> usize {
        self.with(|s| s.token_requests)
    }

    /// Limits API requests (`None`: no limit, the default).
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.with(|s| {
            s.rate_limit = limit;
            s.bucket = None;
        });
    }

    /// The API calls left this month (`None`: unlimited, the default). Every API call that
    /// carries the right `api-key` counts.
    pub fn set_monthly_budget(&self, calls: Option<u64>) {
        self.with(|s| {
            s.budget = calls;
            s.calls = 0;
        });
    }

    /// API calls counted against the budget.
    pub fn calls(&self) -> u64 {
        self.with(|s| s.calls)
    }

    /// The largest page a listing answers, whatever `pageSize` asks (default 100).
    pub fn set_max_page_size(&self, n: usize) {
        self.with(|s| s.max_page = n.clamp(1, MAX_PAGE_SIZE));
    }

    /// Adds an access point to the seeded site (for paging).
    pub fn add_access_point(&self, name: &str) -> u64 {
        let site = self.seed.site_id;
        self.with(|s| {
            let id = s.id();
            s.access_points.push(AccessPoint {
                id,
                name: name.into(),
                control_panel_id: 0,
                site_id: site,
                site_name: "HQ".into(),
                activation_enabled: true,
                connected: true,
            });
            id
        })
    }

    /// Whether an access point answers (`412` to an activation when not).
    pub fn set_connected(&self, access_point: u64, connected: bool) {
        self.with(|s| {
            for ap in s.access_points.iter_mut().filter(|a| a.id == access_point) {
                ap.connected = connected;
            }
        });
    }

    pub fn users(&self) -> Vec<User> {
        self.with(|s| s.users.clone())
    }

    /// The groups a user belongs to.
    pub fn groups_of(&self, user: u64) -> Vec<u64> {
        self.with(|s| {
            s.members
                .iter()
                .filter(|(_, u)| *u == user)
                .map(|(g, _)| *g)
                .collect()
        })
    }

    /// Every mobile pass invitation made.
    pub fn invitations(&self) -> Vec<Invitation> {
        self.with(|s| s.invitations.clone())
    }

    /// The access points activated, in order.
    pub fn activations(&self) -> Vec<u64> {
        self.with(|s| s.activations.clone())
    }

    /// Every API request that passed authentication, as `"GET /users"` (without the base).
    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone())
    }

    /// How many requests were answered `429`.
    pub fn throttled(&self) -> usize {
        self.with(|s| s.throttled)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "code": status.as_u16(), "message": message })),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn html(status: StatusCode, body: &'static str) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(input: &[u8]) -> String {
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `POST /oauth/token`: the password and refresh_token grants.
async fn token(
    State(sim): State<BrivoSimulator>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let expected = format!(
        "Basic {}",
        base64(format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes())
    );
    if basic.is_empty() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized", "error_description": "Full authentication is required to access this resource"})),
        )
            .into_response();
    }
    if basic != expected {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": 401, "error": "Unauthorized", "message": "Bad credentials", "path": TOKEN_PATH})),
        )
            .into_response();
    }
    let bad_grant = || {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_grant", "error_description": "Bad credentials"})),
        )
            .into_response()
    };
    sim.with(|s| {
        match form.get("grant_type").map(String::as_str) {
            Some("password") => {
                s.grants.push("password");
                if form.get("username").map(String::as_str) != Some(USERNAME)
                    || form.get("password").map(String::as_str) != Some(PASSWORD)
                {
                    return bad_grant();
                }
            }
            Some("refresh_token") => {
                s.grants.push("refresh_token");
                let Some(r) = form.get("refresh_token") else {
                    return bad_grant();
                };
                if !s.refresh_tokens.remove(r) {
                    return (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({"error": "invalid_grant", "error_description": "Invalid refresh token"})),
                    )
                        .into_response();
                }
            }
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "unsupported_grant_type", "error_description": "Unsupported grant type"})),
                )
                    .into_response();
            }
        }
        s.token_requests += 1;
        let access = s.secret("at");
        let refresh = s.secret("rt");
        let lifetime = s.token_lifetime;
        s.access_tokens.insert(
            access.clone(),
            Token {
                expires: Instant::now() + Duration::from_secs(lifetime),
            },
        );
        s.refresh_tokens.insert(refresh.clone());
        Json(json!({
            "access_token": access,
            "token_type": "bearer",
            "refresh_token": refresh,
            "expires_in": lifetime,
            "scope": "brivo.api",
        }))
        .into_response()
    })
}

/// The api-key, the token, the rate limit, the budget, the request log and scripted faults.
async fn gate(State(sim): State<BrivoSimulator>, req: Request, next: Next) -> Response {
    let key = req
        .headers()
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if key != API_KEY {
        return html(StatusCode::FORBIDDEN, "<h1>Developer Inactive</h1>");
    }
    if let Some(wait) = sim.with(|s| s.throttle()) {
        let mut r = html(StatusCode::TOO_MANY_REQUESTS, "<h1>Developer Over Qps</h1>");
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let (over, quota) = sim.with(|s| {
        s.calls += 1;
        (
            s.budget.is_some_and(|b| s.calls > b),
            s.budget.map(|b| (b, s.calls.min(b))),
        )
    });
    if over {
        let mut r = html(StatusCode::FORBIDDEN, "<h1>Developer Over Rate</h1>");
        r.headers_mut().insert(
            "x-error-detail-header",
            HeaderValue::from_static("Account Over Rate Limit"),
        );
        return r;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("bearer ")
                .or_else(|| v.strip_prefix("Bearer "))
        })
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    let valid = sim.with(|s| {
        s.access_tokens
            .get(&bearer)
            .is_some_and(|t| t.expires > Instant::now())
    });
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token", "error_description": "Invalid access token"})),
        )
            .into_response();
    }
    let write = req.method() != Method::GET;
    let path = req.uri().path().to_owned();
    let line = format!("{} {}", req.method(), path);
    let fault = sim.with(|s| {
        s.requests.push(line);
        let i = s.faults.iter().position(|(any, _)| *any || write)?;
        s.faults.remove(i).map(|(_, f)| f)
    });
    let mut resp = match fault {
        None => next.run(req).await,
        Some(Fault::Slow { delay, apply }) => {
            if apply {
                let late = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    next.run(req).await
                });
                late.await.unwrap_or_else(|_| {
                    error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
                })
            } else {
                tokio::time::sleep(delay).await;
                error(StatusCode::GATEWAY_TIMEOUT, "Gateway timeout")
            }
        }
        Some(Fault::Unavailable) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "A dependent service is unavailable",
        ),
        Some(Fault::ErrorAfterApplying) => {
            let _applied = next.run(req).await;
            error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
        }
        Some(Fault::Refuse(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            let message = if status == StatusCode::FORBIDDEN {
                "You are not allowed to perform that action"
            } else {
                "Invalid criteria provided"
            };
            error(status, message)
        }
    };
    // Mashery's rate-limit headers, on an endpoint that has them turned on: the month's
    // allotment and what has been spent of it.
    if let Some((allotted, current)) = quota {
        let h = resp.headers_mut();
        h.insert("x-plan-quota-allotted", HeaderValue::from(allotted));
        h.insert("x-plan-quota-current", HeaderValue::from(current));
    }
    resp
}

type Params = Query<HashMap<String, String>>;

/// One page by `offset`/`pageSize`: `{"data", "offset", "pageSize", "count"}`.
fn page<T: Serialize>(
    sim: &BrivoSimulator,
    items: Vec<T>,
    q: &HashMap<String, String>,
) -> Response {
    let max = sim.with(|s| s.max_page);
    let size = match q.get("pageSize").map(|v| v.parse::<usize>()) {
        None => DEFAULT_PAGE_SIZE,
        Some(Ok(n)) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
        Some(_) => return bad_request("Invalid listing criteria provided"),
    };
    let offset = match q.get("offset").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return bad_request("Invalid listing criteria provided"),
    };
    let count = items.len();
    let data: Vec<T> = items.into_iter().skip(offset).take(size.min(max)).collect();
    Json(json!({ "data": data, "offset": offset, "pageSize": size, "count": count }))
        .into_response()
}

/// `filter=name__eq:x;other__eq:y` as `(field, op, value)`.
fn filters(q: &HashMap<String, String>) -> Vec<(String, String, String)> {
    q.get("filter")
        .map(|f| {
            f.split(';')
                .filter_map(|part| {
                    let (lhs, value) = part.split_once(':')?;
                    let (field, op) = lhs.split_once("__")?;
                    Some((field.to_owned(), op.to_owned(), value.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A path id that is not a number: `400`.
struct BadId;

impl IntoResponse for BadId {
    fn into_response(self) -> Response {
        bad_request("Invalid criteria provided")
    }
}

fn id_param(raw: &str) -> Result<u64, BadId> {
    raw.parse().map_err(|_| BadId)
}

async fn list_sites(State(sim): State<BrivoSimulator>, Query(q): Params) -> Response {
    let items = sim.with(|s| s.sites.clone());
    page(&sim, items, &q)
}

async fn site_access_points(
    State(sim): State<BrivoSimulator>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let id = match id_param(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    let items = sim.with(|s| {
        s.sites.iter().any(|x| x.id == id).then(|| {
            s.access_points
                .iter()
                .filter(|a| a.site_id == id)
                .cloned()
                .collect::<Vec<_>>()
        })
    });
    match items {
        Some(items) => page(&sim, items, &q),
        None => error(StatusCode::NOT_FOUND, "Site not found"),
    }
}

async fn list_access_points(State(sim): State<BrivoSimulator>, Query(q): Params) -> Response {
    let name = filters(&q)
        .into_iter()
        .find(|(f, o, _)| f == "name" && o == "eq")
        .map(|(_, _, v)| v.to_lowercase());
    let items: Vec<AccessPoint> = sim.with(|s| {
        s.access_points
            .iter()
            .filter(|a| {
                name.as_deref()
                    .is_none_or(|n| a.name.to_lowercase().contains(n))
            })
            .cloned()
            .collect()
    });
    page(&sim, items, &q)
}

async fn activate(State(sim): State<BrivoSimulator>, Path(id): Path<String>) -> Response {
    let id = match id_param(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    sim.with(|s| {
        let Some(ap) = s.access_points.iter().find(|a| a.id == id) else {
            return error(StatusCode::NOT_FOUND, "Unknown Access Point");
        };
        if !ap.activation_enabled {
            return error(
                StatusCode::FORBIDDEN,
                "You are not allowed to perform that action",
            );
        }
        if !ap.connected {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "Access point is not connected",
            );
        }
        s.activations.push(id);
        StatusCode::OK.into_response()
    })
}

async fn list_groups(State(sim): State<BrivoSimulator>, Query(q): Params) -> Response {
    let items = sim.with(|s| s.groups.clone());
    page(&sim, items, &q)
}

async fn group_permissions(
    State(sim): State<BrivoSimulator>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let id = match id_param(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    let items = sim.with(|s| {
        s.groups.iter().any(|g| g.id == id).then(|| {
            s.permissions
                .iter()
                .filter(|(g, _)| *g == id)
                .filter_map(|(_, ap)| s.access_points.iter().find(|a| a.id == *ap))
                .map(|a| {
                    json!({
                        "accessPoint": { "id": a.id, "name": a.name, "type": "Door" },
                        "schedule": { "id": 1, "name": "24x7 - Always On" },
                    })
                })
                .collect::<Vec<_>>()
        })
    });
    match items {
        Some(items) => page(&sim, items, &q),
        None => error(StatusCode::NOT_FOUND, "Group not found"),
    }
}

async fn group_users(
    State(sim): State<BrivoSimulator>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let id = match id_param(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    let items = sim.with(|s| {
        s.groups.iter().any(|g| g.id == id).then(|| {
            s.members
                .iter()
                .filter(|(g, _)| *g == id)
                .filter_map(|(_, u)| s.users.iter().find(|x| x.id == *u).cloned())
                .collect::<Vec<_>>()
        })
    });
    match items {
        Some(items) => page(&sim, items, &q),
        None => error(StatusCode::NOT_FOUND, "Group not found"),
    }
}

async fn add_member(
    State(sim): State<BrivoSimulator>,
    Path((group, user)): Path<(String, String)>,
) -> Response {
    let (group, user) = match (id_param(&group), id_param(&user)) {
        (Ok(g), Ok(u)) => (g, u),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    sim.with(|s| {
        if !s.groups.iter().any(|g| g.id == group) {
            return error(StatusCode::NOT_FOUND, "Group not found");
        }
        if !s.users.iter().any(|u| u.id == user) {
            return error(StatusCode::NOT_FOUND, "User not found");
        }
        if !s.members.contains(&(group, user)) {
            s.members.push((group, user));
        }
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn remove_member(
    State(sim): State<BrivoSimulator>,
    Path((group, user)): Path<(String, String)>,
) -> Response {
    let (group, user) = match (id_param(&group), id_param(&user)) {
        (Ok(g), Ok(u)) => (g, u),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    sim.with(|s| {
        if !s.groups.iter().any(|g| g.id == group) {
            return error(StatusCode::NOT_FOUND, "Group not found");
        }
        s.members.retain(|m| *m != (group, user));
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn list_users(State(sim): State<BrivoSimulator>, Query(q): Params) -> Response {
    let fs = filters(&q);
    let items: Vec<User> = sim.with(|s| {
        s.users
            .iter()
            .filter(|u| {
                fs.iter().all(|(f, o, v)| match (f.as_str(), o.as_str()) {
                    ("firstname", "eq") => u.first_name.to_lowercase().contains(&v.to_lowercase()),
                    ("lastname", "eq") => u.last_name.to_lowercase().contains(&v.to_lowercase()),
                    ("id", "eq") => v.split(',').any(|i| i == u.id.to_string()),
                    _ => true,
                })
            })
            .cloned()
            .collect()
    });
    page(&sim, items, &q)
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

fn valid_pin(pin: &str) -> bool {
    (4..=8).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

async fn create_user(State(sim): State<BrivoSimulator>, body: Body) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return bad_request("The request body is not formatted properly");
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return bad_request("The request body is not formatted properly");
    };
    let (Some(first), Some(last)) = (text(&v, "firstName"), text(&v, "lastName")) else {
        return bad_request("firstName and lastName are required");
    };
    let pin = text(&v, "pin");
    if pin.as_deref().is_some_and(|p| !valid_pin(p)) {
        return bad_request("Invalid PIN");
    }
    let external = text(&v, "externalId");
    sim.with(|s| {
        if let Some(e) = &external
            && s.users.iter().any(|u| u.external_id.as_ref() == Some(e))
        {
            return bad_request("External id already exists");
        }
        if let Some(p) = &pin
            && s.users.iter().any(|u| u.pin.as_ref() == Some(p))
        {
            return bad_request("PIN already in use");
        }
        let id = s.id();
        let user = User {
            id,
            external_id: external,
            first_name: first,
            last_name: last,
            pin,
            effective_from: text(&v, "effectiveFrom"),
            effective_to: text(&v, "effectiveTo"),
            suspended: false,
            emails: v
                .get("emails")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        };
        s.users.push(user.clone());
        Json(user).into_response()
    })
}

async fn get_user(State(sim): State<BrivoSimulator>, Path(id): Path<String>) -> Response {
    let id = match id_param(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    sim.with(|s| match s.users.iter().find(|u| u.id == id) {
        Some(u) => Json(u.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "User not found"),
    })
}

async fn user_by_external(State(sim): State<BrivoSimulator>, Path(ext): Path<String>) -> Response {
    sim.with(|s| {
        match s
            .users
            .iter()
            .find(|u| u.external_id.as_deref() == Some(ext.as_str()))
        {
            Some(u) => Json(u.clone()).into_response(),
            None => error(StatusCode::NOT_FOUND, "User not found"),
        }
    })
}

async fn update_user(
    State(sim): State<BrivoSimulator>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let id = match id_param(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return bad_request("The request body is not formatted properly");
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return bad_request("The request body is not formatted properly");
    };
    let pin = text(&v, "pin");
    if pin.as_deref().is_some_and(|p| !valid_pin(p)) {
        return bad_request("Invalid PIN");
    }
    sim.with(|s| {
        if let Some(p) = &pin
            && s.users
                .iter()
                .any(|u| u.id != id && u.pin.as_ref() == Some(p))
        {
            return bad_request("PIN already in use");
        }
        let Some(user) = s.users.iter_mut().find(|u| u.id == id) else {
            return error(StatusCode::NOT_FOUND, "User not found");
        };
        if let Some(f) = text(&v, "firstName") {
            user.first_name = f;
        }
        if let Some(l) = text(&v, "lastName") {
            user.last_name = l;
        }
        // Update replaces the PIN and its dates: absent is cleared.
        user.pin = pin;
        user.effective_from = text(&v, "effectiveFrom");
        user.effective_to = text(&v, "effectiveTo");
        if let Some(e) = v.get("emails").and_then(Value::as_array) {
            user.emails = e.clone();
        }
        Json(user.clone()).into_response()
    })
}

async fn delete_user(State(sim): State<BrivoSimulator>, Path(id): Path<String>) -> Response {
    let id = match id_param(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    sim.with(|s| {
        let before = s.users.len();
        s.users.retain(|u| u.id != id);
        if s.users.len() == before {
            return error(StatusCode::NOT_FOUND, "User not found");
        }
        s.members.retain(|(_, u)| *u != id);
        s.invitations.retain(|i| i.user_id != id);
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn user_groups(State(sim): State<BrivoSimulator>, Path(id): Path<String>) -> Response {
    let id = match id_param(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    sim.with(|s| {
        if !s.users.iter().any(|u| u.id == id) {
            return error(StatusCode::NOT_FOUND, "User not found");
        }
        let data: Vec<Group> = s
            .members
            .iter()
            .filter(|(_, u)| *u == id)
            .filter_map(|(g, _)| s.groups.iter().find(|x| x.id == *g).cloned())
            .collect();
        let count = data.len();
        Json(json!({ "data": data, "count": count })).into_response()
    })
}

async fn list_invitations(
    State(sim): State<BrivoSimulator>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let id = match id_param(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    let status = filters(&q)
        .into_iter()
        .find(|(f, o, _)| f == "status" && o == "eq")
        .map(|(_, _, v)| v.to_uppercase())
        .unwrap_or_else(|| "ALL".to_owned());
    let items = sim.with(|s| {
        s.users.iter().any(|u| u.id == id).then(|| {
            s.invitations
                .iter()
                .filter(|i| i.user_id == id && (status == "ALL" || i.status == status))
                .cloned()
                .collect::<Vec<_>>()
        })
    });
    match items {
        Some(items) => page(&sim, items, &q),
        None => error(StatusCode::NOT_FOUND, "User not found"),
    }
}

/// A pending invitation already there is `409`, as Brivo documents.
async fn create_invitation(
    State(sim): State<BrivoSimulator>,
    Path(id): Path<String>,
    Query(q): Params,
    body: Body,
) -> Response {
    let id = match id_param(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return bad_request("The request body is not formatted properly");
    };
    let Some(reference) = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| text(&v, "referenceId"))
    else {
        return bad_request("Invalid criteria provided");
    };
    let emailed = q.get("sendInvitationEmail").is_some_and(|v| v == "true");
    sim.with(|s| {
        if !s.users.iter().any(|u| u.id == id) {
            return error(StatusCode::NOT_FOUND, "User not found");
        }
        if s
            .invitations
            .iter()
            .any(|i| i.user_id == id && i.status == "PENDING")
        {
            return error(
                StatusCode::CONFLICT,
                "There is already a pending invitation for the cardHolder. No new invitation will be generated",
            );
        }
        let n = s.id();
        let inv = Invitation {
            id: n,
            user_id: id,
            reference_id: reference,
            access_code: format!("c{n:07x}"),
            status: "PENDING".into(),
            emailed,
        };
        s.invitations.push(inv.clone());
        Json(inv).into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_encodes() {
        assert_eq!(
            base64(b"ABC-123-456:qwerty98765"),
            "QUJDLTEyMy00NTY6cXdlcnR5OTg3NjU="
        );
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
