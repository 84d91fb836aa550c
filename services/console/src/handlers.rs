//! The console's handlers: session, parse, call `keygate-app`, render. A refusal of a form is
//! shown on the same page, next to its field, with what was typed kept.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_app::auth::Principal;
use keygate_app::throttle::ClientAddr;
use keygate_domain::ids::{
    AccessGroupId, AccessSystemId, AcsUserId, InstantKeyId, UserIdentityId, WorkspaceId,
};
use keygate_domain::model::Workspace;
use keygate_domain::page::PageRequest;
use keygate_domain::{Error, Resource, acs, validate};
use keygate_proto::v1;
use keygate_wire::parse::IntoCommand as _;

use crate::forms::{Errors, FormData};
use crate::pages::{self, render};
use crate::time_fields::parse_local;
use crate::{
    Console, Ctx, LOGIN_COOKIE, SESSION_COOKIE, check_csrf, cookie, see_other, session_of,
    set_cookie, signed_in,
};

type St = State<Arc<Console>>;

/// Rows a console list shows (the first page).
const ROWS: u32 = 200;

fn first_page() -> PageRequest {
    PageRequest {
        after: None,
        limit: ROWS,
    }
}

/// Unwraps a use case's answer for a page's own resource, or answers with its failure page.
macro_rules! page_try {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return pages::failure(&e),
        }
    };
}

/// Unwraps a session, or answers with where to go.
macro_rules! session_try {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

/// An id from the URL: malformed is 404, like an id of another workspace.
fn path_id<T>(raw: &str, field: &str, resource: Resource) -> Result<T, Response>
where
    T: std::str::FromStr,
{
    validate::id::<T>(field, raw, resource).map_err(|_| {
        pages::failure(&Error::NotFound {
            resource,
            id: raw.to_owned(),
        })
    })
}

pub async fn home(State(c): St, headers: HeaderMap) -> Response {
    match session_of(&c, &headers).await {
        Ok(_) => see_other("/console/systems"),
        Err(r) => r,
    }
}

fn random_token() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

fn sign_in_response(c: &Console, error: Option<&str>, status: StatusCode) -> Response {
    let login = random_token();
    (
        status,
        [(
            header::SET_COOKIE,
            set_cookie(c, LOGIN_COOKIE, &login, Some(600)),
        )],
        render(pages::sign_in(&login, error)),
    )
        .into_response()
}

pub async fn sign_in_page(State(c): St) -> Response {
    sign_in_response(&c, None, StatusCode::OK)
}

#[tracing::instrument(skip_all)]
pub async fn sign_in(
    State(c): St,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
    body: Bytes,
) -> Response {
    // The HTTP port attaches the client address to every request; without one (a router not
    // behind that port) every such request shares one budget, which fails closed.
    let client = client.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.0);
    let form = FormData::parse(&body);
    // The sign-in form's own CSRF check: the token of its form must be the one of its cookie.
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || expected != form.get("login") {
        return sign_in_response(
            &c,
            Some("The sign-in form expired: try again."),
            StatusCode::FORBIDDEN,
        );
    }
    if let Err(wait) = c.auth_failures.check(client) {
        tracing::warn!("console sign-in refused: too many failed sign-ins");
        let mut res = sign_in_response(
            &c,
            Some(&format!(
                "Too many failed sign-ins: try again in {} seconds.",
                wait.as_secs().max(1)
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
        if let Ok(v) = wait.as_secs().max(1).to_string().parse() {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return res;
    }
    let principal = match c.auth.sign_in(form.get("token")).await {
        Ok(p) => p,
        Err(e) => {
            c.auth_failures.failed(client);
            tracing::info!(reason = e.reason().as_str(), "console sign-in refused");
            return sign_in_response(&c, Some(&e.to_string()), StatusCode::UNAUTHORIZED);
        }
    };
    let (sid, _) = match c.sessions.start(principal).await {
        Ok(s) => s,
        Err(e) => return pages::failure(&e),
    };
    tracing::info!(
        operator = principal == Principal::Operator,
        "console session started"
    );
    let to = if principal == Principal::Operator {
        "/console/workspaces"
    } else {
        "/console/systems"
    };
    let mut res = see_other(to);
    let h = res.headers_mut();
    for v in [
        set_cookie(&c, SESSION_COOKIE, &sid, Some(c.sessions.ttl().as_secs())),
        set_cookie(&c, LOGIN_COOKIE, "", Some(0)),
    ] {
        if let Ok(v) = v.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    res
}

pub async fn sign_out(State(c): St, headers: HeaderMap, body: Bytes) -> Response {
    let (sid, session) = session_try!(session_of(&c, &headers).await);
    let form = FormData::parse(&body);
    session_try!(check_csrf(&session, &form));
    page_try!(c.sessions.end(&sid).await);
    tracing::info!("console session ended by sign-out");
    let mut res = see_other("/console/sign-in");
    if let Ok(v) = set_cookie(&c, SESSION_COOKIE, "", Some(0)).parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// The operator's workspace switcher; an API key's session has one workspace.
pub async fn workspaces(State(c): St, headers: HeaderMap) -> Response {
    let (_, session) = session_try!(session_of(&c, &headers).await);
    if session.principal != Principal::Operator {
        return see_other("/console/systems");
    }
    let list = page_try!(c.app.list_workspaces(&first_page()).await);
    let current: Option<&Workspace> = session
        .workspace()
        .and_then(|w| list.items.iter().find(|x| x.id == w));
    render(pages::workspaces(&session.csrf, &list.items, current))
}

pub async fn select_workspace(State(c): St, headers: HeaderMap, body: Bytes) -> Response {
    let (sid, session) = session_try!(session_of(&c, &headers).await);
    let form = FormData::parse(&body);
    session_try!(check_csrf(&session, &form));
    if session.principal != Principal::Operator {
        return see_other("/console/systems");
    }
    let ws: WorkspaceId = session_try!(path_id(
        form.get("workspace_id"),
        "workspace_id",
        Resource::Workspace
    ));
    page_try!(c.app.get_workspace(ws).await);
    page_try!(c.sessions.select_workspace(&sid, session, ws).await);
    see_other("/console/systems")
}

pub async fn systems(State(c): St, headers: HeaderMap) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    systems_page(&c, &ctx, &FormData::default(), &Errors::default()).await
}

/// The systems list, with the Connect form (its values and errors after a refusal).
pub(crate) async fn systems_page(
    c: &Console,
    ctx: &Ctx,
    form: &FormData,
    errors: &Errors,
) -> Response {
    let list = page_try!(c.app.list_access_systems(ctx.ws, None, &first_page()).await);
    let types = c.app.providers.types();
    let page = render(pages::systems(
        ctx,
        &list.items,
        crate::connections::connect_form(ctx, &types, form, errors),
    ));
    crate::pages::answered(page, errors.is_empty())
}

/// A system's page with a notice or the errors of its connection actions.
pub(crate) async fn system_with(
    c: &Console,
    ctx: &Ctx,
    id: AccessSystemId,
    notice: Option<&str>,
    errors: &Errors,
) -> Response {
    let none = FormData::default();
    let ok = Errors::default();
    system_page_full(c, ctx, id, (&none, &ok, false), (notice, errors)).await
}

async fn system_page(
    c: &Console,
    ctx: &Ctx,
    id: AccessSystemId,
    form: &FormData,
    errors: &Errors,
    open: bool,
) -> Response {
    let ok = Errors::default();
    system_page_full(c, ctx, id, (form, errors, open), (None, &ok)).await
}

/// A system's page: the Add user form's values, errors and whether it is open; the connection
/// area's notice and errors.
async fn system_page_full(
    c: &Console,
    ctx: &Ctx,
    id: AccessSystemId,
    (form, errors, open): (&FormData, &Errors, bool),
    connection: (Option<&str>, &Errors),
) -> Response {
    let s = page_try!(c.app.get_access_system(ctx.ws, id).await);
    let health = crate::connections::health(ctx, &s, connection.0, connection.1);
    let users = page_try!(
        c.app
            .list_acs_users(
                ctx.ws,
                &acs::AcsUserFilter {
                    acs_system_id: Some(id),
                    user_identity_id: None,
                },
                &first_page(),
            )
            .await
    );
    let entrances = page_try!(c.app.list_entrances(ctx.ws, Some(id), &first_page()).await);
    let page = render(pages::system(
        ctx,
        &s,
        &users.items,
        &entrances.items,
        pages::UserForm { form, errors, open },
        health,
    ));
    crate::pages::answered(page, errors.is_empty() && connection.1.is_empty())
}

pub async fn system(State(c): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let id = session_try!(path_id(&id, "acs_system_id", Resource::AccessSystem));
    system_page(
        &c,
        &ctx,
        id,
        &FormData::default(),
        &Errors::default(),
        false,
    )
    .await
}

const USER_FIELDS: &[&str] = &[
    "full_name",
    "email_address",
    "phone_number",
    "starts_at",
    "ends_at",
];

/// Add user (seed 000, step 6): `CreateAcsUser` from the form.
pub async fn add_user(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let form = FormData::parse(&body);
    session_try!(check_csrf(&ctx.session, &form));
    let system_id: AccessSystemId =
        session_try!(path_id(&id, "acs_system_id", Resource::AccessSystem));
    let s = page_try!(c.app.get_access_system(ctx.ws, system_id).await);
    let mut errors = Errors::default();
    let starts = times(&mut errors, &form, "starts_at", &s.time_zone);
    let ends = times(&mut errors, &form, "ends_at", &s.time_zone);
    if errors.is_empty() {
        let req = v1::CreateAcsUserRequest {
            request_id: form.get("request_id").to_owned(),
            acs_system_id: id.clone(),
            full_name: form.get("full_name").to_owned(),
            email_address: form.get("email_address").to_owned(),
            phone_number: form.get("phone_number").to_owned(),
            access_schedule: (starts.is_some() || ends.is_some()).then(|| v1::AccessSchedule {
                starts_at: starts.map(keygate_wire::convert::ts),
                ends_at: ends.map(keygate_wire::convert::ts),
            }),
        };
        let created = match req.into_command() {
            Ok(cmd) => c.app.create_acs_user(ctx.ws, cmd).await,
            Err(e) => Err(e),
        };
        match created {
            Ok(_) => return see_other(&format!("/console/systems/{id}")),
            Err(e @ Error::NotFound { .. }) => return pages::failure(&e),
            Err(e) => errors = Errors::of(&e, USER_FIELDS),
        }
    }
    system_page(&c, &ctx, system_id, &form, &errors, true).await
}

/// A time field of a form, read in the system's zone; a bad one is an error on its field.
fn times(
    errors: &mut Errors,
    form: &FormData,
    name: &str,
    tz: &str,
) -> Option<time::OffsetDateTime> {
    match parse_local(form.get(name), tz) {
        Ok(t) => t,
        Err(m) => {
            errors.push(name, m);
            None
        }
    }
}

struct UserState<'a> {
    form: &'a FormData,
    errors: &'a Errors,
    open: &'a str,
    notice: Option<&'a str>,
}

async fn user_page(c: &Console, ctx: &Ctx, id: AcsUserId, st: UserState<'_>) -> Response {
    let u = page_try!(c.app.get_acs_user(ctx.ws, id).await);
    let s = page_try!(c.app.get_access_system(ctx.ws, u.acs_system_id).await);
    let identity = match u.user_identity_id {
        Some(i) => Some(page_try!(c.app.get_user_identity(ctx.ws, i).await)),
        None => None,
    };
    let identities = if identity.is_none() {
        page_try!(
            c.app
                .list_user_identities(ctx.ws, &Default::default(), &first_page())
                .await
        )
        .items
    } else {
        Vec::new()
    };
    let groups = page_try!(
        c.app
            .list_access_groups(ctx.ws, Some(s.id), &first_page())
            .await
    );
    let credentials = page_try!(
        c.app
            .list_credentials(
                ctx.ws,
                &acs::CredentialFilter {
                    acs_user_id: Some(id),
                    ..Default::default()
                },
                &first_page(),
            )
            .await
    );
    let entrances = page_try!(
        c.app
            .list_entrances(ctx.ws, Some(s.id), &first_page())
            .await
    );
    let page = render(pages::user(
        ctx,
        pages::UserPage {
            user: &u,
            system: &s,
            identity: identity.as_ref(),
            identities: &identities,
            groups: &groups.items,
            credentials: &credentials.items,
            entrances: &entrances.items,
            form: st.form,
            errors: st.errors,
            open: st.open,
            notice: st.notice,
        },
    ));
    crate::pages::answered(page, st.errors.is_empty())
}

pub async fn user(State(c): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let id = session_try!(path_id(&id, "acs_user_id", Resource::AcsUser));
    user_page(
        &c,
        &ctx,
        id,
        UserState {
            form: &FormData::default(),
            errors: &Errors::default(),
            open: "",
            notice: None,
        },
    )
    .await
}

const IDENTITY_FIELDS: &[&str] = &[
    "full_name",
    "email_address",
    "phone_number",
    "user_identity_key",
    "user_identity_id",
];

/// Link to user identity (seed 000, steps 9 to 11): an existing one, or a new one created and
/// linked.
pub async fn link_identity(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let form = FormData::parse(&body);
    session_try!(check_csrf(&ctx.session, &form));
    let user: AcsUserId = session_try!(path_id(&id, "acs_user_id", Resource::AcsUser));
    page_try!(c.app.get_acs_user(ctx.ws, user).await);
    let identity = if form.get("new") == "1" {
        let req = v1::CreateUserIdentityRequest {
            request_id: form.get("request_id").to_owned(),
            user_identity_key: form.get("user_identity_key").to_owned(),
            full_name: form.get("full_name").to_owned(),
            email_address: form.get("email_address").to_owned(),
            phone_number: form.get("phone_number").to_owned(),
        };
        match req.into_command() {
            Ok(cmd) => c
                .app
                .create_user_identity(ctx.ws, cmd)
                .await
                .map(|v| v.identity.id),
            Err(e) => Err(e),
        }
    } else {
        validate::id::<UserIdentityId>(
            "user_identity_id",
            form.get("user_identity_id"),
            Resource::UserIdentity,
        )
    };
    let linked = match identity {
        Ok(i) => c.app.link_acs_user(ctx.ws, user, i).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match linked {
        Ok(()) => see_other(&format!("/console/users/{id}")),
        Err(e) => {
            let errors = Errors::of(&e, IDENTITY_FIELDS);
            user_page(
                &c,
                &ctx,
                user,
                UserState {
                    form: &form,
                    errors: &errors,
                    open: "identity",
                    notice: None,
                },
            )
            .await
        }
    }
}

/// Manage Access (seed 000, step 12): the checked groups become the user's groups, one
/// membership change at a time through the use case.
pub async fn manage_access(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let form = FormData::parse(&body);
    session_try!(check_csrf(&ctx.session, &form));
    let user: AcsUserId = session_try!(path_id(&id, "acs_user_id", Resource::AcsUser));
    let u = page_try!(c.app.get_acs_user(ctx.ws, user).await);
    let mut wanted = Vec::new();
    let mut errors = Errors::default();
    for raw in form.all("group") {
        match validate::id::<AccessGroupId>("group", &raw, Resource::AccessGroup) {
            Ok(g) => wanted.push(g),
            Err(e) => errors.general.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        let changes = wanted
            .iter()
            .filter(|g| !u.access_group_ids.contains(g))
            .map(|g| (*g, true))
            .chain(
                u.access_group_ids
                    .iter()
                    .filter(|g| !wanted.contains(g))
                    .map(|g| (*g, false)),
            )
            .collect::<Vec<_>>();
        for (g, member) in changes {
            if let Err(e) = c
                .app
                .set_access_group_membership(ctx.ws, user, g, member)
                .await
            {
                errors = Errors::of(&e, &[]);
                break;
            }
        }
    }
    if errors.is_empty() {
        return see_other(&format!("/console/users/{id}"));
    }
    user_page(
        &c,
        &ctx,
        user,
        UserState {
            form: &FormData::default(),
            errors: &errors,
            open: "groups",
            notice: None,
        },
    )
    .await
}

async fn credential_page(
    c: &Console,
    ctx: &Ctx,
    user: AcsUserId,
    form: &FormData,
    errors: &Errors,
) -> Response {
    let u = page_try!(c.app.get_acs_user(ctx.ws, user).await);
    let s = page_try!(c.app.get_access_system(ctx.ws, u.acs_system_id).await);
    let entrances = page_try!(
        c.app
            .list_entrances(ctx.ws, Some(s.id), &first_page())
            .await
    );
    let page = render(pages::credential_form(
        ctx,
        &u,
        &s,
        &entrances.items,
        form,
        errors,
    ));
    crate::pages::answered(page, errors.is_empty())
}

pub async fn credential_form(State(c): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let user = session_try!(path_id(&id, "acs_user_id", Resource::AcsUser));
    credential_page(&c, &ctx, user, &FormData::default(), &Errors::default()).await
}

const CREDENTIAL_FIELDS: &[&str] = &[
    "access_method",
    "acs_entrance_ids",
    "starts_at",
    "ends_at",
    "code",
];

/// Add Credential (seed 000, steps 13 to 16): `CreateCredential` from the form, then Done.
pub async fn add_credential(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let form = FormData::parse(&body);
    session_try!(check_csrf(&ctx.session, &form));
    let user: AcsUserId = session_try!(path_id(&id, "acs_user_id", Resource::AcsUser));
    let u = page_try!(c.app.get_acs_user(ctx.ws, user).await);
    let s = page_try!(c.app.get_access_system(ctx.ws, u.acs_system_id).await);
    let mut errors = Errors::default();
    let starts = times(&mut errors, &form, "starts_at", &s.time_zone);
    let ends = times(&mut errors, &form, "ends_at", &s.time_zone);
    let mode = match form.get("access_method") {
        "mobile_key" => v1::AccessMethodMode::MobileKey,
        "card" => v1::AccessMethodMode::Card,
        "code" => v1::AccessMethodMode::Code,
        _ => v1::AccessMethodMode::Unspecified,
    };
    if errors.is_empty() {
        let req = v1::CreateCredentialRequest {
            request_id: form.get("request_id").to_owned(),
            acs_user_id: id.clone(),
            access_method: mode as i32,
            acs_entrance_ids: form.all("acs_entrance_ids"),
            starts_at: starts.map(keygate_wire::convert::ts),
            ends_at: ends.map(keygate_wire::convert::ts),
            code: form.get("code").to_owned(),
            card_number: String::new(),
        };
        let created = match req.into_command() {
            Ok(cmd) => c.app.create_credential(ctx.ws, cmd).await,
            Err(e) => Err(e),
        };
        match created {
            Ok(view) => return render(pages::credential_done(&ctx, &u, &view)),
            Err(e) => errors = Errors::of(&e, CREDENTIAL_FIELDS),
        }
    }
    credential_page(&c, &ctx, user, &form, &errors).await
}

pub async fn identities(State(c): St, headers: HeaderMap) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let list = page_try!(
        c.app
            .list_user_identities(ctx.ws, &Default::default(), &first_page())
            .await
    );
    render(pages::identities(&ctx, &list.items))
}

async fn identity_page(
    c: &Console,
    ctx: &Ctx,
    id: UserIdentityId,
    new_key: Option<pages::NewKey<'_>>,
    errors: &Errors,
) -> Response {
    let i = page_try!(c.app.get_user_identity(ctx.ws, id).await);
    let users = page_try!(
        c.app
            .list_acs_users(
                ctx.ws,
                &acs::AcsUserFilter {
                    acs_system_id: None,
                    user_identity_id: Some(id),
                },
                &first_page(),
            )
            .await
    );
    let keys = page_try!(
        c.app
            .list_instant_keys(ctx.ws, Some(id), &first_page())
            .await
    );
    let page = render(pages::identity(
        ctx,
        &i,
        &users.items,
        &keys.items,
        new_key,
        errors,
    ));
    crate::pages::answered(page, errors.is_empty())
}

pub async fn identity(State(c): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let id = session_try!(path_id(&id, "user_identity_id", Resource::UserIdentity));
    identity_page(&c, &ctx, id, None, &Errors::default()).await
}

/// Generate Instant Key (seed 000, step 18): the page answers with the dialog of the link and
/// its QR code (the link is in the page only, never in a URL of the console).
pub async fn generate_instant_key(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let form = FormData::parse(&body);
    session_try!(check_csrf(&ctx.session, &form));
    let identity: UserIdentityId =
        session_try!(path_id(&id, "user_identity_id", Resource::UserIdentity));
    let req = v1::GenerateInstantKeyRequest {
        request_id: form.get("request_id").to_owned(),
        user_identity_id: id.clone(),
        max_use_count: 0,
        expires_at: None,
    };
    let generated = match req.into_command() {
        Ok(cmd) => c.app.generate_instant_key(ctx.ws, cmd).await,
        Err(e) => Err(e),
    };
    match generated {
        Ok((_, url)) => {
            let qr = page_try!(keygate_wire::qr::svg(&url));
            tracing::info!(user_identity_id = %identity, "Instant Key generated in the console");
            identity_page(
                &c,
                &ctx,
                identity,
                Some(pages::NewKey {
                    url: &url,
                    qr_svg: &qr,
                }),
                &Errors::default(),
            )
            .await
        }
        Err(e @ Error::NotFound { .. }) => pages::failure(&e),
        Err(e) => identity_page(&c, &ctx, identity, None, &Errors::of(&e, &[])).await,
    }
}

pub async fn revoke_instant_key(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let form = FormData::parse(&body);
    session_try!(check_csrf(&ctx.session, &form));
    let key: InstantKeyId = session_try!(path_id(&id, "instant_key_id", Resource::InstantKey));
    let revoked = page_try!(c.app.revoke_instant_key(ctx.ws, key).await);
    see_other(&format!(
        "/console/identities/{}",
        revoked.key.user_identity_id
    ))
}

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

pub async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

/// Send an Instant Key's link by SMS or email (`DeliverInstantKey`); the deliveries show under
/// the key on the identity page.
pub async fn send_instant_key(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = session_try!(signed_in(&c, &headers).await);
    let form = FormData::parse(&body);
    session_try!(check_csrf(&ctx.session, &form));
    let key: InstantKeyId = session_try!(path_id(&id, "instant_key_id", Resource::InstantKey));
    let k = page_try!(
        c.app
            .get_instant_key(ctx.ws, keygate_app::instant_keys::KeyLookup::Id(key))
            .await
    );
    let channel = match form.get("channel") {
        "sms" => v1::DeliveryChannel::Sms,
        "email" => v1::DeliveryChannel::Email,
        _ => v1::DeliveryChannel::Unspecified,
    };
    let req = v1::DeliverInstantKeyRequest {
        request_id: form.get("request_id").to_owned(),
        instant_key_id: id,
        channel: channel as i32,
        to: form.get("to").to_owned(),
    };
    let sent = match req.into_command() {
        Ok(cmd) => c.app.deliver_instant_key(ctx.ws, cmd).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(_) => see_other(&format!("/console/identities/{}", k.key.user_identity_id)),
        Err(e) => identity_page(&c, &ctx, k.key.user_identity_id, None, &Errors::of(&e, &[])).await,
    }
}
