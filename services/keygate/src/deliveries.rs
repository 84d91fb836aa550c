//! Reading Instant Key deliveries as a person: `keygate deliveries list` in a terminal, and
//! `GET /outbox` on the HTTP port (served only when this server sends nothing and puts every
//! delivery in the outbox). The links are derived again from the key ids for the reader; they
//! are not stored.

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keygate_app::auth::{Authenticator, Principal};
use keygate_delivery::notify::outbox;
use keygate_domain::ids::WorkspaceId;
use keygate_domain::instant_key::Links;
use keygate_store::{SCHEMA_VERSION, Store};

use crate::config::DeliveriesListArgs;

/// Rows the outbox page shows.
const PAGE_ROWS: u32 = 100;

/// Loads the Instant Key secret into `links`: the one the server uses (from the configuration,
/// or the embedded default's file in the data directory).
pub async fn load_secret(
    args: &DeliveriesListArgs,
    store: &dyn Store,
    links: &Links,
) -> anyhow::Result<()> {
    let spec = crate::secrets::INSTANT_KEY_SECRET;
    let plan = crate::secrets::plan(
        spec,
        args.instant_key_secret.configured(),
        &args.store.data_dir,
        args.store.database_url.is_empty(),
    )?;
    let (ring, _) = crate::secrets::finish(spec, plan, Some(store)).await?;
    links.set_secrets(ring.current, ring.previous);
    Ok(())
}

/// `keygate deliveries list`.
pub async fn list(args: DeliveriesListArgs) -> anyhow::Result<()> {
    if args.store.database_url.is_empty() {
        let file = args.store.data_dir.join("keygate.db");
        anyhow::ensure!(
            file.exists(),
            "no database at {}: start `keygate serve` first, or set --data-dir / KEYGATE_DATABASE_URL",
            file.display()
        );
    }
    let store = keygate_store::open_with(&args.store.database_url(), &args.store.pool_settings())?;
    let v = store.schema_version().await?;
    anyhow::ensure!(
        v >= SCHEMA_VERSION,
        "schema is at version {v}; this build needs {SCHEMA_VERSION}: run `keygate migrate`"
    );
    let workspace: Option<WorkspaceId> = args
        .workspace_id
        .as_deref()
        .map(|w| {
            w.parse()
                .with_context(|| format!("--workspace-id {w:?} is not a workspace id"))
        })
        .transpose()?;
    let links = Links::new(&args.public_url);
    load_secret(&args, &*store, &links).await?;
    let entries = outbox::entries(&*store, &links, workspace, args.outbox, args.limit).await?;
    print!("{}", outbox::text(&entries));
    Ok(())
}

/// What `/outbox` needs.
#[derive(Clone)]
pub struct OutboxPage {
    pub store: Arc<dyn Store>,
    pub links: Links,
    pub auth: Authenticator,
}

/// `GET /outbox`. Only merged into the HTTP router in outbox mode. It needs a credential, as
/// `Authorization: Bearer <token>` or as the password of HTTP basic auth (so a browser asks for
/// it): a workspace API key shows that workspace's outbox, the admin token every workspace's.
pub fn router(page: OutboxPage) -> Router {
    Router::new().route("/outbox", get(show)).with_state(page)
}

/// The token of a Bearer or Basic `Authorization` header.
fn credential(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned()).filter(|t| !t.is_empty());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(STANDARD.decode(rest).ok()?).ok()?;
        let (user, pass) = decoded.split_once(':').unwrap_or((&decoded, ""));
        let token = if pass.is_empty() { user } else { pass };
        return Some(token.to_owned()).filter(|t| !t.is_empty());
    }
    None
}

fn secret_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
}

fn challenge() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "The outbox needs a credential: an API key of the workspace (its own deliveries) or the admin token (all), \
as Authorization: Bearer <token>, or as the password of this login.\n",
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Keygate outbox\", charset=\"UTF-8\""),
    );
    secret_headers(&mut r);
    r
}

/// Whose outbox a credential opens: `Some(workspace)`, or `None` for every workspace (admin).
async fn scope(auth: &Authenticator, token: &str) -> Option<Option<WorkspaceId>> {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
    );
    if let Ok(Principal::Workspace { workspace_id, .. }) = auth
        .authenticate("/keygate.v1.InstantKeyService/ListInstantKeys", &h)
        .await
    {
        return Some(Some(workspace_id));
    }
    match auth
        .authenticate("/keygate.admin.v1.WorkspaceService/ListWorkspaces", &h)
        .await
    {
        Ok(Principal::Operator) => Some(None),
        _ => None,
    }
}

#[tracing::instrument(skip_all)]
async fn show(State(page): State<OutboxPage>, headers: HeaderMap) -> Response {
    let Some(token) = credential(&headers) else {
        return challenge();
    };
    let Some(workspace) = scope(&page.auth, &token).await else {
        return challenge();
    };
    let label = match workspace {
        Some(ws) => format!("workspace {ws}"),
        None => "every workspace".to_owned(),
    };
    match outbox::entries(&*page.store, &page.links, workspace, true, PAGE_ROWS).await {
        Ok(entries) => {
            let mut r = (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                outbox::html(&entries, &label),
            )
                .into_response();
            secret_headers(&mut r);
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the outbox failed");
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                "The outbox cannot be read just now; try again.\n",
            )
                .into_response();
            secret_headers(&mut r);
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_credentials_are_read() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer kg_a_b"),
        );
        assert_eq!(credential(&h).as_deref(), Some("kg_a_b"));
        let basic = format!("Basic {}", STANDARD.encode("me:kg_a_b"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&basic).expect("header"),
        );
        assert_eq!(credential(&h).as_deref(), Some("kg_a_b"));
        let user_only = format!("Basic {}", STANDARD.encode("admin-token:"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&user_only).expect("header"),
        );
        assert_eq!(credential(&h).as_deref(), Some("admin-token"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Digest x"));
        assert_eq!(credential(&h), None);
    }
}
