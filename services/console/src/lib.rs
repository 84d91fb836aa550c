//! The web console: seed 000's flow by clicks, for operators and front desks.
//!
//! An adapter like the gRPC services: each handler reads the session, parses the form (through
//! the same `keygate-wire` conversions as the RPCs, so a field rule is written once), calls a
//! `keygate-app` use case in the session's workspace, and renders a page with `maud` (every value
//! escaped at compile time). No rule lives here.
//!
//! Sessions: an opaque random id in a cookie (`HttpOnly`, `SameSite=Strict`, `Path=/console`,
//! `Secure` when the public URL is https), the principal kept server-side by
//! [`keygate_app::sessions::Sessions`] in the (sealed, shared) cache. Every POST carries the
//! session's CSRF token; the sign-in form a double-submit token of its own.

// Helpers answer with the page to show instead (a redirect, a 403, a 404): a `Response`, as the
// handlers return.
#![allow(clippy::result_large_err)]

mod connections;
mod events;
mod forms;
mod grants;
mod handlers;
mod pages;
mod time_fields;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keygate_app::App;
use keygate_app::auth::{Authenticator, Principal};
use keygate_app::sessions::{Session, Sessions};
use keygate_app::throttle::AuthFailureLimiter;
use keygate_domain::Error;
use keygate_domain::ids::WorkspaceId;
use keygate_domain::model::Workspace;
use tracing::Instrument as _;

/// The path every console page lives under.
pub const PREFIX: &str = "/console";
/// The session cookie.
pub const SESSION_COOKIE: &str = "kg_console";
/// The sign-in form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "kg_console_login";

/// What the console needs from the process.
#[derive(Clone)]
pub struct Console {
    pub app: App,
    pub auth: Authenticator,
    pub sessions: Sessions,
    /// `Secure` cookies (the console is reached over TLS: the public URL is https).
    pub secure_cookies: bool,
    /// The budget of failed authentications per client address: the one limiter the gRPC API
    /// and the Seam-compatible API run (`keygate_app::throttle::Limiters::auth_failures`), so a
    /// client has one budget whichever surface it guesses on.
    pub auth_failures: Arc<AuthFailureLimiter>,
}

/// The console's routes, all under [`PREFIX`].
pub fn router(console: Console) -> Router {
    let state = Arc::new(console);
    Router::new()
        .route("/console", get(handlers::home))
        .route("/console/", get(handlers::home))
        .route(
            "/console/sign-in",
            get(handlers::sign_in_page).post(handlers::sign_in),
        )
        .route("/console/sign-out", post(handlers::sign_out))
        .route(
            "/console/workspaces",
            get(handlers::workspaces).post(handlers::select_workspace),
        )
        .route(
            "/console/systems",
            get(handlers::systems).post(connections::connect),
        )
        .route("/console/systems/{id}/sync", post(connections::sync))
        .route(
            "/console/systems/{id}/disconnect",
            post(connections::disconnect),
        )
        .route("/console/systems/{id}", get(handlers::system))
        .route("/console/systems/{id}/users", post(handlers::add_user))
        .route("/console/users/{id}", get(handlers::user))
        .route(
            "/console/users/{id}/identity",
            post(handlers::link_identity),
        )
        .route("/console/users/{id}/groups", post(handlers::manage_access))
        .route(
            "/console/users/{id}/credentials",
            get(handlers::credential_form).post(handlers::add_credential),
        )
        .route("/console/identities", get(handlers::identities))
        .route("/console/identities/{id}", get(handlers::identity))
        .route(
            "/console/identities/{id}/instant-keys",
            post(handlers::generate_instant_key),
        )
        .route(
            "/console/instant-keys/{id}/revoke",
            post(handlers::revoke_instant_key),
        )
        .route("/console/events", get(events::list))
        .route(
            "/console/webhooks",
            get(webhooks::list).post(webhooks::create),
        )
        .route("/console/webhooks/{id}", get(webhooks::detail))
        .route("/console/webhooks/{id}/delete", post(webhooks::delete))
        .route("/console/grants", get(grants::list).post(grants::create))
        .route("/console/grants/new", get(grants::new_form))
        .route("/console/grants/{id}", get(grants::detail))
        .route(
            "/console/grants/{id}/edit",
            get(grants::edit_form).post(grants::update),
        )
        .route(
            "/console/grants/{id}/delete",
            get(grants::delete_confirm).post(grants::delete),
        )
        .route("/console/methods/{id}/encode", post(grants::encode))
        .route("/console/attempts/{id}", get(grants::attempt))
        .route(
            "/console/entrances/{id}/unlock",
            get(grants::unlock_confirm).post(grants::unlock),
        )
        .route(
            "/console/instant-keys/{id}/send",
            post(handlers::send_instant_key),
        )
        .route("/console/static/console.css", get(handlers::css))
        .route("/console/static/console.js", get(handlers::js))
        .layer(axum::middleware::from_fn(protect))
        .with_state(state)
}

/// A span per request and the headers every console response carries: nothing but this
/// origin's style, script and images (and `data:` images: the QR code), no framing, no
/// referrer, nothing cached.
async fn protect(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "console",
        method = %req.method(),
        path = %req.uri().path(),
        workspace_id = tracing::field::Empty,
        status = tracing::field::Empty
    );
    let mut res = next.run(req).instrument(span.clone()).await;
    span.record("status", res.status().as_u16());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The value of cookie `name` in a request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value of the console: `HttpOnly`, `SameSite=Strict`, `Path=/console`.
pub(crate) fn set_cookie(c: &Console, name: &str, value: &str, max_age: Option<u64>) -> String {
    let mut s = format!("{name}={value}; Path={PREFIX}; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        s.push_str(&format!("; Max-Age={age}"));
    }
    if c.secure_cookies {
        s.push_str("; Secure");
    }
    s
}

/// A signed-in request: the session and the workspace it acts in.
pub(crate) struct Ctx {
    pub session: Session,
    pub ws: WorkspaceId,
    pub workspace: Workspace,
}

impl Ctx {
    pub fn is_operator(&self) -> bool {
        self.session.principal == Principal::Operator
    }
}

pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// The session of a request, or where to go instead: sign-in when there is none (or its API
/// key was revoked), the workspace switcher when the operator has not chosen one.
pub(crate) async fn session_of(
    c: &Console,
    headers: &HeaderMap,
) -> Result<(String, Session), Response> {
    let Some(sid) = cookie(headers, SESSION_COOKIE) else {
        return Err(see_other("/console/sign-in"));
    };
    let session = match c.sessions.get(sid).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(see_other("/console/sign-in")),
        Err(e) => return Err(pages::failure(&e)),
    };
    if let Err(e) = c.auth.recheck(&session.principal).await {
        tracing::info!(error = %e, "console session ended: its key no longer stands");
        let _ = c.sessions.end(sid).await;
        return Err(see_other("/console/sign-in"));
    }
    Ok((sid.to_owned(), session))
}

pub(crate) async fn signed_in(c: &Console, headers: &HeaderMap) -> Result<Ctx, Response> {
    let (_, session) = session_of(c, headers).await?;
    let Some(ws) = session.workspace() else {
        return Err(see_other("/console/workspaces"));
    };
    let workspace = match c.app.get_workspace(ws).await {
        Ok(w) => w,
        Err(Error::NotFound { .. }) if session.principal == Principal::Operator => {
            return Err(see_other("/console/workspaces"));
        }
        Err(e) => return Err(pages::failure(&e)),
    };
    tracing::Span::current().record("workspace_id", tracing::field::display(ws));
    Ok(Ctx {
        session,
        ws,
        workspace,
    })
}

/// Refuses a form without this session's CSRF token (403).
pub(crate) fn check_csrf(session: &Session, form: &forms::FormData) -> Result<(), Response> {
    if session.csrf_matches(form.get("csrf")) {
        Ok(())
    } else {
        tracing::warn!("console form refused: missing or wrong CSRF token");
        Err((
            StatusCode::FORBIDDEN,
            pages::message_page(
                "Form refused",
                "This form did not come from your console session (or the session changed). Go back, reload the page and try again.",
            ),
        )
            .into_response())
    }
}
