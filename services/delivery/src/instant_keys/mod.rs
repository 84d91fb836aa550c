//! The Instant Key page on the HTTP port (delivery role): `GET /ik/<token>` shows the person's
//! doors, `POST /ik/<token>/claim` keeps the key on this device, `POST /ik/<token>/unlock`
//! unlocks one door through its access system (an action attempt of type unlock, run by the
//! orchestrator), `/ik/<token>/qr.svg|png` is the QR code of the link, and
//! `POST /ik/api/v1/unlock` is the same unlock for a mobile key's `client_session_token`.
//!
//! A key is refused, with nothing sent to any access system, when its link is malformed or
//! unknown (404), revoked or expired (410), or already claimed by as many devices as it may be
//! (403). Opening the link (`GET`/`HEAD`, as link previewers and mail scanners do) never claims
//! it: a device claims a key by an explicit action, the claim button or its first unlock (both
//! POST); it is known from then on by a cookie whose SHA-256 is stored. Every request is rate
//! limited per client and per key before the store is read ([`limits`]).

pub mod limits;
pub mod page;

use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keygate_app::App;
use keygate_app::instant_keys::Refused;
use keygate_domain::Error;
use keygate_domain::action::{ActionAttempt, ActionType, AttemptStatus};
use keygate_domain::ids::{ActionAttemptId, EntranceId, WorkspaceId};
use keygate_domain::instant_key::{self, Inactive, InstantKey};
use keygate_domain::model::now;

use self::limits::Limits;
use self::page::Outcome;
use keygate_app::doors::Door;

/// Name of the cookie that tells one device from another.
const DEVICE_COOKIE: &str = "kg_device";
/// How long a page waits for an unlock to finish before it shows "still unlocking".
const UNLOCK_WAIT: Duration = Duration::from_secs(8);

/// Everything the pages need.
#[derive(Clone)]
pub struct Pages {
    /// The use cases behind the pages (opening a link, the person's doors, unlocking).
    pub app: App,
    /// The rate limits, checked before the store is read.
    pub limits: Arc<Limits>,
}

/// The routes of the pages, to merge into the HTTP router. `GET` routes answer `HEAD` too,
/// with the same headers and no body.
pub fn router(pages: Pages) -> Router {
    let limits = pages.limits.clone();
    Router::new()
        .route("/ik/api/v1/unlock", post(api_unlock))
        .route("/ik/{token}", get(show))
        .route("/ik/{token}/claim", post(claim))
        .route("/ik/{token}/unlock", post(unlock))
        .route("/ik/{token}/qr.svg", get(qr_svg))
        .route("/ik/{token}/qr.png", get(qr_png))
        .with_state(pages)
        .route_layer(axum::middleware::from_fn_with_state(limits, limits::limit))
        .layer(axum::middleware::map_response(secure))
}

/// Every answer of the pages (including the router's own, such as a rejected form) carries
/// the headers of [`no_store`].
async fn secure(mut r: Response) -> Response {
    no_store(r.headers_mut());
    r
}

/// Why a page is refused: the HTTP status and what the person reads.
pub(crate) struct Refusal(pub StatusCode, pub &'static str, pub &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (self.0, page::refusal(self.1, self.2)).into_response();
        no_store(r.headers_mut());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    }
}

const NOT_FOUND: Refusal = Refusal(
    StatusCode::NOT_FOUND,
    "This link does not work",
    "Check that you opened the whole link you were sent. If it still does not work, ask for a new one.",
);
const UNAVAILABLE: Refusal = Refusal(
    StatusCode::SERVICE_UNAVAILABLE,
    "Please try again",
    "Your key could not be loaded just now. Try again in a moment.",
);

fn inactive(why: Inactive) -> Refusal {
    match why {
        Inactive::Revoked => Refusal(
            StatusCode::GONE,
            "This key was revoked",
            "It no longer opens any door. Ask whoever sent it for a new one.",
        ),
        Inactive::Expired => Refusal(
            StatusCode::GONE,
            "This key has expired",
            "Its access period is over, so it no longer opens any door.",
        ),
        Inactive::Exhausted => Refusal(
            StatusCode::FORBIDDEN,
            "This key is in use on another device",
            "It can only be used on the devices that chose to use it first. Ask for a key of your own.",
        ),
    }
}

fn internal(e: &Error) -> Refusal {
    tracing::warn!(error = %e, "Instant Key page failed");
    UNAVAILABLE
}

/// The headers of every response of the pages: the token is in the URL, so nothing is cached
/// or sent on as a referrer, the page cannot be framed, and only its own style runs.
fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(page::content_security_policy()),
    );
}

fn device_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == DEVICE_COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 43)
}

/// The key of a link, checked and claimed for this device (an explicit action: a POST). Returns
/// the key and, for a device seen for the first time, the cookie to set.
async fn claimed(
    pages: &Pages,
    token: &str,
    headers: &HeaderMap,
) -> Result<(InstantKey, Option<String>), Refusal> {
    let cookie = device_cookie(headers);
    let opened = pages
        .app
        .claim_instant_key(token, cookie.as_deref())
        .await
        .map_err(refusal)?;
    let secure = pages.app.links.public_url().starts_with("https://");
    let cookie = opened.new_device.map(|device| {
        format!(
            "{DEVICE_COOKIE}={device}; Path=/ik; Max-Age=31536000; HttpOnly; SameSite=Lax{}",
            if secure { "; Secure" } else { "" }
        )
    });
    Ok((opened.key, cookie))
}

/// The page's answer to a refusal of the use case.
fn refusal(r: Refused) -> Refusal {
    match r {
        Refused::NotFound => NOT_FOUND,
        Refused::Inactive(why) => inactive(why),
        Refused::CannotUnlockNow => Refusal(
            StatusCode::FORBIDDEN,
            "This door cannot be unlocked now",
            "It cannot be opened from this page at this time. Go back to see when and how it opens.",
        ),
        Refused::Failed(e) => internal(&e),
    }
}

fn html(body: String) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(h);
    r
}

/// A `303 See Other` back to a page, with the device cookie of a new claim, and the headers of
/// every answer.
fn see_other(to: &str, cookie: Option<String>) -> Response {
    let mut r = Redirect::to(to).into_response();
    let h = r.headers_mut();
    no_store(h);
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    r
}

#[derive(serde::Deserialize)]
struct ShowQuery {
    attempt: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn show(
    State(pages): State<Pages>,
    Path(token): Path<String>,
    Query(q): Query<ShowQuery>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    // A view writes nothing: previewers fetch links before the guest does.
    let cookie = device_cookie(&headers);
    let viewed = pages
        .app
        .view_instant_key(&token, cookie.as_deref())
        .await
        .map_err(refusal)?;
    let key = viewed.key;
    let person = pages
        .app
        .get_user_identity(key.workspace_id, key.user_identity_id)
        .await
        .map_err(|e| internal(&e))?
        .identity;
    let doors = pages
        .app
        .person_doors(key.workspace_id, key.user_identity_id, key.access_grant_id)
        .await
        .map_err(|e| internal(&e))?;
    let outcome = match q.attempt.and_then(|a| a.parse::<ActionAttemptId>().ok()) {
        Some(id) => outcome(&pages, key.workspace_id, id, &doors).await,
        None => None,
    };
    Ok(html(page::key_page(
        &token,
        &person.full_name,
        &doors,
        outcome,
        viewed.claimed,
        now(),
    )))
}

/// `POST /ik/<token>/claim`: "Use this key on this phone". Claims the key for this device and
/// goes back to the page; a key claimed by as many devices as it may be is refused (403).
#[tracing::instrument(skip_all)]
async fn claim(
    State(pages): State<Pages>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let (_, cookie) = claimed(&pages, &token, &headers).await?;
    Ok(see_other(&format!("/ik/{token}"), cookie))
}

/// What became of an unlock of one of these doors.
async fn outcome(
    pages: &Pages,
    ws: WorkspaceId,
    id: ActionAttemptId,
    doors: &[Door],
) -> Option<Outcome> {
    let a = pages.app.get_action_attempt(ws, id).await.ok()?;
    if a.action_type != ActionType::UnlockDoor {
        return None;
    }
    let door = doors
        .iter()
        .find(|d| Some(d.entrance_id) == a.acs_entrance_id)?;
    let name = door.name.clone();
    Some(match a.status {
        AttemptStatus::Success => Outcome::Unlocked(name),
        AttemptStatus::Error => Outcome::Failed(
            name,
            a.error
                .map(|e| for_a_person(&e.error_type, e.message))
                .unwrap_or_default(),
        ),
        AttemptStatus::Pending => Outcome::Pending(name, pages.app.unlock_deadline.as_secs()),
    })
}

/// Why an unlock failed, in words for the person at the door: Keygate's own reasons
/// (`docs/unlock.md`) say what happened to the door; an access system's reason is its message.
fn for_a_person(error_type: &str, message: String) -> String {
    use keygate_domain::action::unlock_errors as e;
    let said = match error_type {
        e::EXPIRED => "it took too long, so the door was not opened. Try again.",
        e::ACCESS_REVOKED => "this key no longer opens it.",
        e::WINDOW_CLOSED => "your access to it is not active now.",
        e::NOT_SUPPORTED => "it cannot be unlocked from here.",
        e::NOT_CONFIRMED => {
            "it may or may not have opened. Check the door, and try again if it is still locked."
        }
        e::CHECK_FAILED => "something went wrong, and the door was not opened. Try again.",
        _ => return message,
    };
    said.to_owned()
}

#[derive(serde::Deserialize)]
struct UnlockForm {
    acs_entrance_id: String,
}

#[tracing::instrument(skip_all)]
async fn unlock(
    State(pages): State<Pages>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<UnlockForm>,
) -> Result<Response, Refusal> {
    // The first unlock from a device claims the key for it, like the claim button.
    let (key, cookie) = claimed(&pages, &token, &headers).await?;
    let entrance: EntranceId = form.acs_entrance_id.parse().map_err(|_| NOT_FOUND)?;
    let id = pages
        .app
        .request_unlock(
            key.workspace_id,
            key.user_identity_id,
            key.access_grant_id,
            entrance,
            Some(key.id),
        )
        .await
        .map_err(refusal)?;
    wait(&pages, key.workspace_id, id).await;
    Ok(see_other(&format!("/ik/{token}?attempt={id}"), cookie))
}

/// Waits until the attempt is no longer pending, at most [`UNLOCK_WAIT`].
async fn wait(pages: &Pages, ws: WorkspaceId, id: ActionAttemptId) -> Option<ActionAttempt> {
    let deadline = tokio::time::Instant::now() + UNLOCK_WAIT;
    loop {
        let a = pages.app.get_action_attempt(ws, id).await.ok();
        if a.as_ref()
            .is_some_and(|a| a.status != AttemptStatus::Pending)
            || tokio::time::Instant::now() >= deadline
        {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn qr(pages: &Pages, token: &str) -> Result<String, Refusal> {
    // The QR code is as secret as the link; it is served only while the key works.
    pages
        .app
        .working_key_of_link(token)
        .await
        .map_err(refusal)?;
    Ok(instant_key::link(pages.app.links.public_url(), token))
}

#[tracing::instrument(skip_all)]
async fn qr_svg(
    State(pages): State<Pages>,
    Path(token): Path<String>,
) -> Result<Response, Refusal> {
    let url = qr(&pages, &token).await?;
    let svg = keygate_wire::qr::svg(&url).map_err(|e| internal(&e))?;
    let mut r = (StatusCode::OK, svg).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    no_store(r.headers_mut());
    Ok(r)
}

#[tracing::instrument(skip_all)]
async fn qr_png(
    State(pages): State<Pages>,
    Path(token): Path<String>,
) -> Result<Response, Refusal> {
    let url = qr(&pages, &token).await?;
    let png = keygate_wire::qr::png(&url).map_err(|e| internal(&e))?;
    let mut r = (StatusCode::OK, png).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    no_store(r.headers_mut());
    Ok(r)
}

#[derive(serde::Deserialize)]
struct ApiUnlock {
    acs_entrance_id: String,
}

#[derive(serde::Serialize)]
struct ApiOutcome {
    action_attempt_id: String,
    status: &'static str,
    error_type: Option<String>,
    error_message: Option<String>,
}

pub(crate) fn api_error(status: StatusCode, reason: &str) -> Response {
    let mut r = (status, axum::Json(serde_json::json!({ "error": reason }))).into_response();
    no_store(r.headers_mut());
    r
}

/// `POST /ik/api/v1/unlock` with `authorization: Bearer <client_session_token>`: unlocks one of
/// the person's doors. 401 for a missing, forged or expired token; 404 for a door that is not
/// theirs; 403 for one that cannot be unlocked now.
#[tracing::instrument(skip_all)]
async fn api_unlock(
    State(pages): State<Pages>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<ApiUnlock>,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Ok(secret) = pages.app.links.secret() else {
        return api_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    };
    let Some((ws, user)) = token.and_then(|t| secret.verify_client_session(t, now())) else {
        return api_error(StatusCode::UNAUTHORIZED, "invalid_client_session_token");
    };
    let Ok(entrance) = body.acs_entrance_id.parse::<EntranceId>() else {
        return api_error(StatusCode::NOT_FOUND, "entrance_not_found");
    };
    let id = match pages
        .app
        .request_unlock(ws, user, None, entrance, None)
        .await
    {
        Ok(id) => id,
        Err(Refused::NotFound) => return api_error(StatusCode::NOT_FOUND, "entrance_not_found"),
        Err(Refused::CannotUnlockNow | Refused::Inactive(_)) => {
            return api_error(StatusCode::FORBIDDEN, "cannot_unlock_now");
        }
        Err(Refused::Failed(e)) => {
            tracing::warn!(error = %e, "unlock API failed");
            return api_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
    };
    let done = wait(&pages, ws, id).await;
    let (status, error) = match done {
        Some(a) => (
            match a.status {
                AttemptStatus::Success => "success",
                AttemptStatus::Error => "error",
                AttemptStatus::Pending => "pending",
            },
            a.error,
        ),
        None => ("pending", None),
    };
    let mut r = axum::Json(ApiOutcome {
        action_attempt_id: id.to_string(),
        status,
        error_type: error.as_ref().map(|e| e.error_type.clone()),
        error_message: error.map(|e| e.message),
    })
    .into_response();
    no_store(r.headers_mut());
    r
}

#[cfg(test)]
mod tests {
    use keygate_domain::action::unlock_errors;

    #[test]
    fn keygates_own_reasons_are_said_for_a_person() {
        let expired = super::for_a_person(
            unlock_errors::EXPIRED,
            "not sent by its deadline (2026-12-05 9:00:00.0 +00:00:00)".into(),
        );
        assert!(expired.contains("not opened"), "{expired}");
        assert!(
            !expired.contains("2026"),
            "no timestamps for a person: {expired}"
        );
        for t in [
            unlock_errors::ACCESS_REVOKED,
            unlock_errors::WINDOW_CLOSED,
            unlock_errors::NOT_SUPPORTED,
            unlock_errors::NOT_CONFIRMED,
            unlock_errors::CHECK_FAILED,
        ] {
            assert_ne!(super::for_a_person(t, "raw".into()), "raw", "{t}");
        }
        // An access system's own reason is passed on.
        assert_eq!(
            super::for_a_person("lock_not_online", "the lock did not answer".into()),
            "the lock did not answer"
        );
    }
}
