//! The console's pages, as `maud` templates: every value is escaped at compile time. Nothing here
//! decides a rule; pages show what the use cases returned.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use keygate_app::acs_users::CredentialView;
use keygate_app::identities::IdentityView;
use keygate_app::instant_keys::KeyView;
use keygate_domain::Error;
use keygate_domain::acs::AcsUser;
use keygate_domain::capability::PermissionModel;
use keygate_domain::model::{AccessGroup, AccessSystem, Entrance, Workspace, WorkspaceType};
use maud::{DOCTYPE, Markup, html};

use crate::Ctx;
use crate::forms::{Errors, FormData};
use crate::time_fields::{local_value, show, zone_label};

pub fn render(m: Markup) -> Response {
    Html(m.into_string()).into_response()
}

fn kind(t: WorkspaceType) -> &'static str {
    match t {
        WorkspaceType::Sandbox => "sandbox",
        WorkspaceType::Production => "production",
    }
}

/// The page frame: header with the workspace (and the switcher for the operator), navigation,
/// sign-out.
pub fn layout(title: &str, ctx: Option<&Ctx>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Keygate console" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "Keygate" }
                    @if let Some(ctx) = ctx {
                        @if ctx.is_operator() {
                            a.switcher href="/console/workspaces" aria-label={ "Workspace " (ctx.workspace.name) ", " (kind(ctx.workspace.workspace_type)) ". Switch workspace" } {
                                (ctx.workspace.name) " "
                                span class={ "badge " (kind(ctx.workspace.workspace_type)) } { (kind(ctx.workspace.workspace_type)) }
                                " ▾"
                            }
                        } @else {
                            span.switcher {
                                (ctx.workspace.name) " "
                                span class={ "badge " (kind(ctx.workspace.workspace_type)) } { (kind(ctx.workspace.workspace_type)) }
                            }
                        }
                        nav aria-label="Main" {
                            a href="/console/systems" { "ACS Systems" }
                            a href="/console/identities" { "User identities" }
                            a href="/console/grants" { "Access grants" }
                            a href="/console/events" { "Events" }
                            a href="/console/webhooks" { "Webhooks" }
                        }
                        form.signout method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(ctx.session.csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    (body)
                }
            }
        }
    }
}

pub fn message_page(title: &str, message: &str) -> Html<String> {
    Html(
        layout(
            title,
            None,
            html! {
                h1 { (title) }
                p { (message) }
                p { a href="/console" { "Back to the console" } }
            },
        )
        .into_string(),
    )
}

/// A use case's refusal of a page's own resource (404 for an id not in this workspace).
pub fn failure(e: &Error) -> Response {
    let (status, title) = match e {
        Error::NotFound { .. } => (StatusCode::NOT_FOUND, "Not found"),
        Error::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        Error::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
        Error::Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, "Sign in again"),
        _ => (StatusCode::BAD_REQUEST, "Refused"),
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "console request failed");
    }
    (status, message_page(title, &e.to_string())).into_response()
}

fn general_errors(errors: &Errors) -> Markup {
    html! {
        @if !errors.general.is_empty() {
            div.alert role="alert" {
                @for m in &errors.general { p { (m) } }
            }
        }
    }
}

/// A labelled input with its error (if any) next to it, tied by `aria-describedby`.
fn field(
    label: &str,
    name: &str,
    kind: &str,
    value: &str,
    errors: &Errors,
    hint: Option<&str>,
) -> Markup {
    let id = format!("f-{name}");
    let err = errors.field(name);
    let hint_id = format!("{id}-hint");
    let err_id = format!("{id}-err");
    let described = match (hint.is_some(), err.is_some()) {
        (true, true) => Some(format!("{hint_id} {err_id}")),
        (true, false) => Some(hint_id.clone()),
        (false, true) => Some(err_id.clone()),
        (false, false) => None,
    };
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) name=(name) type=(kind) value=(value)
                aria-invalid=[err.map(|_| "true")] aria-describedby=[described];
            @if let Some(h) = hint { p.hint id=(hint_id) { (h) } }
            @if let Some(e) = err { p.error id=(err_id) { (e) } }
        }
    }
}

fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.session.csrf); }
}

/// A fresh idempotency key for a create form: submitting twice makes one thing.
fn request_id(form: &FormData) -> Markup {
    let id = match form.get("request_id") {
        "" => uuid::Uuid::new_v4().to_string(),
        s => s.to_owned(),
    };
    html! { input type="hidden" name="request_id" value=(id); }
}

fn copy_button(value: &str, what: &str) -> Markup {
    html! {
        button.copy type="button" data-copy=(value) aria-label={ "Copy " (what) } { "Copy" }
    }
}

pub fn sign_in(login_token: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            p { "Sign in with an API key to work in its workspace, or with the admin token to work in every workspace." }
            form.card method="post" action="/console/sign-in" {
                input type="hidden" name="login" value=(login_token);
                div.field {
                    label for="f-token" { "API key or admin token" }
                    input #f-token name="token" type="password" autocomplete="current-password" required
                        aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| "f-token-err")];
                    @if let Some(e) = error { p.error #f-token-err { (e) } }
                }
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub fn workspaces(ctx_csrf: &str, list: &[Workspace], current: Option<&Workspace>) -> Markup {
    layout(
        "Workspaces",
        None,
        html! {
            h1 { "Workspaces" }
            p { "Choose the workspace to work in. Sandbox workspaces hold virtual access systems; production workspaces hold your connected ones." }
            @if list.is_empty() {
                p { "There is no workspace yet: create one with " code { "keygate admin workspaces create" } "." }
            }
            ul.list {
                @for w in list {
                    li {
                        form method="post" action="/console/workspaces" {
                            input type="hidden" name="csrf" value=(ctx_csrf);
                            input type="hidden" name="workspace_id" value=(w.id.to_string());
                            button.row type="submit" aria-current=[current.filter(|c| c.id == w.id).map(|_| "true")] {
                                span { (w.name) }
                                " "
                                span class={ "badge " (kind(w.workspace_type)) } { (kind(w.workspace_type)) }
                            }
                        }
                    }
                }
            }
            form.signout method="post" action="/console/sign-out" {
                input type="hidden" name="csrf" value=(ctx_csrf);
                button.link type="submit" { "Sign out" }
            }
        },
    )
}

fn model(s: &AccessSystem) -> &'static str {
    match s.capabilities.permission_model {
        PermissionModel::AccessGroups => "access groups",
        PermissionModel::CredentialBased => "entrances on credentials",
        PermissionModel::ReservationOverride => "entrances on credentials (reservations)",
    }
}

pub fn systems(ctx: &Ctx, systems: &[AccessSystem], connect: Markup) -> Markup {
    layout(
        "Access Systems",
        Some(ctx),
        html! {
            h1 { "Access Systems" }
            (connect)
            @if systems.is_empty() {
                p { "No access system is connected to this workspace yet." }
            }
            table {
                caption.sr { "Access systems of this workspace" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "State" } th scope="col" { "acs_system_id" } } }
                tbody {
                    @for s in systems {
                        tr {
                            td data-label="Name" { a href={ "/console/systems/" (s.id.to_string()) } { (s.name) } }
                            td data-label="Type" { (s.system_type) " · " (model(s)) }
                            td data-label="State" {
                                @if s.health.disconnected_at.is_some() { "disconnected" }
                                @else if s.health.errors.is_empty() { "working" }
                                @else { span.error { "not working" } }
                            }
                            td data-label="acs_system_id" { code { (s.id.to_string()) } " " (copy_button(&s.id.to_string(), "acs_system_id")) }
                        }
                    }
                }
            }
        },
    )
}

/// The Add user form's values (kept on a failed submit).
pub struct UserForm<'a> {
    pub form: &'a FormData,
    pub errors: &'a Errors,
    pub open: bool,
}

pub fn system(
    ctx: &Ctx,
    s: &AccessSystem,
    users: &[AcsUser],
    entrances: &[Entrance],
    add: UserForm<'_>,
    health: Markup,
) -> Markup {
    let tz = zone_label(&s.time_zone);
    let f = add.form;
    layout(
        &s.name,
        Some(ctx),
        html! {
            p.crumbs { a href="/console/systems" { "Access Systems" } " › " (s.name) }
            h1 { (s.name) }
            p { (s.system_type) " · " (model(s)) " · time zone " (tz) " · " code { (s.id.to_string()) } " " (copy_button(&s.id.to_string(), "acs_system_id")) }
            (health)
            details.dialog open[add.open] {
                summary.button { "Add user" }
                form.card method="post" action={ "/console/systems/" (s.id.to_string()) "/users" } aria-labelledby="add-user-title" {
                    h2 #add-user-title { "Add New User" }
                    (csrf(ctx))
                    (request_id(f))
                    (general_errors(add.errors))
                    (field("Full name", "full_name", "text", f.get("full_name"), add.errors, None))
                    (field("Email address", "email_address", "email", f.get("email_address"), add.errors, Some("A unique email address or phone number.")))
                    (field("Phone number", "phone_number", "tel", f.get("phone_number"), add.errors, Some("International format, such as +15551234567.")))
                    (field("Access starts", "starts_at", "datetime-local", f.get("starts_at"), add.errors, Some(&format!("In {tz}. Empty: from now."))))
                    (field("Access ends", "ends_at", "datetime-local", f.get("ends_at"), add.errors, Some(&format!("In {tz}. Empty: no end."))))
                    button type="submit" { "Continue" }
                }
            }
            h2 { "Users" }
            @if users.is_empty() { p { "No user on this system yet." } }
            table {
                caption.sr { "Users of " (s.name) }
                thead { tr { th scope="col" { "Full name" } th scope="col" { "Email or phone" } th scope="col" { "Access" } th scope="col" { "User identity" } } }
                tbody {
                    @for u in users {
                        tr {
                            td data-label="Full name" { a href={ "/console/users/" (u.id.to_string()) } { (u.full_name) } }
                            td data-label="Email or phone" { (u.email_address.as_deref().or(u.phone_number.as_deref()).unwrap_or("")) }
                            td data-label="Access" { (schedule(u.access_starts_at, u.access_ends_at, &s.time_zone)) }
                            td data-label="User identity" { @if u.user_identity_id.is_some() { "linked" } @else { "not linked" } }
                        }
                    }
                }
            }
            h2 { "Entrances" }
            ul.plain {
                @for e in entrances {
                    li {
                        (e.display_name)
                        @if s.capabilities.can_remote_unlock {
                            " · " a href={ "/console/entrances/" (e.id.to_string()) "/unlock" } aria-label={ "Unlock " (e.display_name) } { "Unlock…" }
                        }
                    }
                }
            }
        },
    )
}

fn schedule(
    starts: Option<time::OffsetDateTime>,
    ends: Option<time::OffsetDateTime>,
    tz: &str,
) -> String {
    match (starts, ends) {
        (None, None) => "always".into(),
        (Some(s), None) => format!("from {}", show(s, tz)),
        (None, Some(e)) => format!("until {}", show(e, tz)),
        (Some(s), Some(e)) => format!("{} – {}", show(s, tz), show(e, tz)),
    }
}

/// Everything the user page shows.
pub struct UserPage<'a> {
    pub user: &'a AcsUser,
    pub system: &'a AccessSystem,
    pub identity: Option<&'a IdentityView>,
    pub identities: &'a [IdentityView],
    pub groups: &'a [AccessGroup],
    pub credentials: &'a [CredentialView],
    pub entrances: &'a [Entrance],
    /// The identity forms' values and errors, and which area is open.
    pub form: &'a FormData,
    pub errors: &'a Errors,
    pub open: &'a str,
    pub notice: Option<&'a str>,
}

pub fn user(ctx: &Ctx, p: UserPage<'_>) -> Markup {
    let u = p.user;
    let s = p.system;
    let groups_model = s.capabilities.permission_model == PermissionModel::AccessGroups;
    let entrance_name = |id: &keygate_domain::ids::EntranceId| {
        p.entrances
            .iter()
            .find(|e| &e.id == id)
            .map(|e| e.display_name.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let f = p.form;
    layout(
        &u.full_name,
        Some(ctx),
        html! {
            p.crumbs {
                a href="/console/systems" { "Access Systems" } " › "
                a href={ "/console/systems/" (s.id.to_string()) } { (s.name) } " › " (u.full_name)
            }
            h1 { (u.full_name) }
            @if let Some(n) = p.notice { p.notice role="status" { (n) } }
            div.columns {
                aside {
                    section aria-labelledby="identity-title" {
                        details open[p.open == "identity" || p.identity.is_some()] {
                            summary #identity-title { "User identity" }
                            @if let Some(i) = p.identity {
                                p { a href={ "/console/identities/" (i.identity.id.to_string()) } { (i.identity.full_name) } }
                            } @else {
                                p { "Not linked. A credential is issued to a user identity." }
                                details.dialog open[p.open == "identity"] {
                                    summary.button { "Link to user identity" }
                                    div.card {
                                        h2 { "Choose a user identity" }
                                        (general_errors(p.errors))
                                        @if !p.identities.is_empty() {
                                            form method="post" action={ "/console/users/" (u.id.to_string()) "/identity" } {
                                                (csrf(ctx))
                                                div.field {
                                                    label for="f-user_identity_id" { "Existing user identity" }
                                                    select #f-user_identity_id name="user_identity_id" {
                                                        @for i in p.identities {
                                                            option value=(i.identity.id.to_string()) { (i.identity.full_name) @if let Some(e) = &i.identity.email_address { " (" (e) ")" } }
                                                        }
                                                    }
                                                }
                                                button type="submit" { "Link" }
                                            }
                                        }
                                        details.dialog open[!p.errors.is_empty()] {
                                            summary.button { "New user identity" }
                                            form method="post" action={ "/console/users/" (u.id.to_string()) "/identity" } aria-labelledby="new-identity-title" {
                                                h3 #new-identity-title { "Add New User Identity" }
                                                (csrf(ctx))
                                                (request_id(f))
                                                input type="hidden" name="new" value="1";
                                                (field("Full name", "full_name", "text", or(f.get("full_name"), &u.full_name, f), p.errors, None))
                                                (field("Email address", "email_address", "email", or(f.get("email_address"), u.email_address.as_deref().unwrap_or(""), f), p.errors, None))
                                                (field("Phone number", "phone_number", "tel", or(f.get("phone_number"), u.phone_number.as_deref().unwrap_or(""), f), p.errors, None))
                                                (field("User identity key", "user_identity_key", "text", f.get("user_identity_key"), p.errors, Some("Optional: your own unique key for this person.")))
                                                button type="submit" { "Save" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    p { a.button href={ "/console/users/" (u.id.to_string()) "/credentials" } { "Add Credential" } }
                    dl {
                        dt { "Email" } dd { (u.email_address.as_deref().unwrap_or("—")) }
                        dt { "Phone" } dd { (u.phone_number.as_deref().unwrap_or("—")) }
                        dt { "Access" } dd { (schedule(u.access_starts_at, u.access_ends_at, &s.time_zone)) }
                        dt { "acs_user_id" } dd { code { (u.id.to_string()) } }
                    }
                }
                div {
                    @if groups_model {
                        section aria-labelledby="groups-title" {
                            h2 #groups-title { "Access Groups" }
                            @if u.access_group_ids.is_empty() { p { "In no access group." } }
                            ul.plain {
                                @for g in p.groups.iter().filter(|g| u.access_group_ids.contains(&g.id)) { li { (g.display_name) } }
                            }
                            details.dialog open[p.open == "groups"] {
                                summary.button { "Manage Access" }
                                form.card method="post" action={ "/console/users/" (u.id.to_string()) "/groups" } {
                                    (csrf(ctx))
                                    fieldset {
                                        legend { "Manage Access for " (u.full_name) }
                                        @for g in p.groups {
                                            div.check {
                                                input type="checkbox" id={ "g-" (g.id.to_string()) } name="group" value=(g.id.to_string()) checked[u.access_group_ids.contains(&g.id)];
                                                label for={ "g-" (g.id.to_string()) } { (g.display_name) }
                                            }
                                        }
                                    }
                                    button type="submit" { "Save" }
                                }
                            }
                        }
                    }
                    section aria-labelledby="credentials-title" {
                        h2 #credentials-title { "Credentials" }
                        @if p.credentials.is_empty() { p { "No credential yet." } }
                        table {
                            caption.sr { "Credentials of " (u.full_name) }
                            thead { tr { th scope="col" { "Type" } th scope="col" { "State" } th scope="col" { "Entrances" } th scope="col" { "When" } } }
                            tbody {
                                @for c in p.credentials {
                                    tr {
                                        td data-label="Type" { (c.method.mode.display_name()) }
                                        td data-label="State" { @if c.method.is_issued { "issued" } @else { "pending" } }
                                        td data-label="Entrances" { (c.method.doors.iter().map(|d| entrance_name(&d.entrance_id)).collect::<Vec<_>>().join(", ")) }
                                        td data-label="When" { (schedule(Some(c.credential.starts_at), c.credential.ends_at, &s.time_zone)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The value of an input: what was submitted, else a suggestion when nothing was submitted yet.
fn or<'a>(submitted: &'a str, suggestion: &'a str, form: &FormData) -> &'a str {
    if form.0.is_empty() {
        suggestion
    } else {
        submitted
    }
}

pub fn credential_form(
    ctx: &Ctx,
    u: &AcsUser,
    s: &AccessSystem,
    entrances: &[Entrance],
    f: &FormData,
    errors: &Errors,
) -> Markup {
    let caps = &s.capabilities;
    let tz = zone_label(&s.time_zone);
    let chosen = f.all("acs_entrance_ids");
    // A new form starts with the user's own access schedule.
    let suggest = |name: &str, t: Option<time::OffsetDateTime>| {
        if f.0.is_empty() {
            t.map(|t| local_value(t, &s.time_zone)).unwrap_or_default()
        } else {
            f.get(name).to_owned()
        }
    };
    let (starts, ends) = (
        suggest("starts_at", u.access_starts_at),
        suggest("ends_at", u.access_ends_at),
    );
    let mode = match f.get("access_method") {
        "" => "mobile_key",
        m => m,
    };
    let modes: Vec<(&str, &str, bool)> = vec![
        ("mobile_key", "Mobile key", caps.can_issue_mobile_keys),
        (
            "card",
            "Card",
            caps.supports(keygate_domain::capability::AccessMethodMode::Card),
        ),
        (
            "code",
            "PIN code",
            caps.supports(keygate_domain::capability::AccessMethodMode::Code),
        ),
    ];
    layout(
        "Add Credential",
        Some(ctx),
        html! {
            p.crumbs {
                a href={ "/console/systems/" (s.id.to_string()) } { (s.name) } " › "
                a href={ "/console/users/" (u.id.to_string()) } { (u.full_name) } " › Add Credential"
            }
            h1 { "Add Credential for " (u.full_name) }
            form.card method="post" action={ "/console/users/" (u.id.to_string()) "/credentials" } {
                (csrf(ctx))
                (request_id(f))
                (general_errors(errors))
                fieldset {
                    legend { "Choose type of credential" }
                    @for (value, label, ok) in &modes {
                        @if *ok {
                            div.check {
                                input type="radio" id={ "m-" (value) } name="access_method" value=(value) checked[*value == mode];
                                label for={ "m-" (value) } { (label) }
                            }
                        }
                    }
                    @if let Some(e) = errors.field("access_method") { p.error { (e) } }
                }
                @if caps.can_assign_entrances_directly {
                    fieldset aria-describedby=[errors.field("acs_entrance_ids").map(|_| "entrances-err")] {
                        legend { "Select entrances for " (u.full_name) }
                        @for e in entrances {
                            div.check {
                                input type="checkbox" id={ "e-" (e.id.to_string()) } name="acs_entrance_ids" value=(e.id.to_string()) checked[chosen.contains(&e.id.to_string())];
                                label for={ "e-" (e.id.to_string()) } { (e.display_name) }
                            }
                        }
                        @if let Some(e) = errors.field("acs_entrance_ids") { p.error #entrances-err { (e) } }
                    }
                } @else {
                    p.hint { (s.name) " opens the entrances of the user's access groups." }
                }
                fieldset {
                    legend { "Enter start & end time" }
                    (field("Starts", "starts_at", "datetime-local", &starts, errors, Some(&format!("In {tz}. Empty: the user's access start, or now."))))
                    (field("Ends", "ends_at", "datetime-local", &ends, errors, Some(&format!("In {tz}. Empty: the user's access end."))))
                }
                @if caps.supports(keygate_domain::capability::AccessMethodMode::Code) {
                    (field("PIN code (only for a PIN code)", "code", "text", f.get("code"), errors, Some("Optional: empty lets the system choose.")))
                }
                button type="submit" { "Next" }
            }
        },
    )
}

pub fn credential_done(ctx: &Ctx, u: &AcsUser, c: &CredentialView) -> Markup {
    layout(
        "Credential created",
        Some(ctx),
        html! {
            h1 { "Credential created" }
            p role="status" { (c.method.mode.display_name()) " for " (u.full_name) " was created. "
                @if c.method.is_issued { "It is issued." } @else { "Keygate is issuing it on the access system now." } }
            p { a.button href={ "/console/users/" (u.id.to_string()) } { "Done" } }
        },
    )
}

pub fn identities(ctx: &Ctx, list: &[IdentityView]) -> Markup {
    layout(
        "User identities",
        Some(ctx),
        html! {
            h1 { "User identities" }
            @if list.is_empty() { p { "No user identity yet: link one from an access system user's page." } }
            table {
                caption.sr { "User identities of this workspace" }
                thead { tr { th scope="col" { "Full name" } th scope="col" { "Email" } th scope="col" { "Phone" } } }
                tbody {
                    @for i in list {
                        tr {
                            td data-label="Full name" { a href={ "/console/identities/" (i.identity.id.to_string()) } { (i.identity.full_name) } }
                            td data-label="Email" { (i.identity.email_address.as_deref().unwrap_or("")) }
                            td data-label="Phone" { (i.identity.phone_number.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        },
    )
}

/// A key just generated: its link and QR code, shown once in the dialog.
pub struct NewKey<'a> {
    pub url: &'a str,
    pub qr_svg: &'a str,
}

pub fn identity(
    ctx: &Ctx,
    i: &IdentityView,
    users: &[AcsUser],
    keys: &[KeyView],
    new_key: Option<NewKey<'_>>,
    errors: &Errors,
) -> Markup {
    let who = &i.identity;
    let now = time::OffsetDateTime::now_utc();
    layout(
        &who.full_name,
        Some(ctx),
        html! {
            p.crumbs { a href="/console/identities" { "User identities" } " › " (who.full_name) }
            h1 { (who.full_name) }
            div.columns {
                aside {
                    section aria-labelledby="ik-title" {
                        h2 #ik-title { "Instant Key" }
                        p.hint { "One link that opens every mobile credential of " (who.full_name) "." }
                        (general_errors(errors))
                        form method="post" action={ "/console/identities/" (who.id.to_string()) "/instant-keys" } {
                            (csrf(ctx))
                            input type="hidden" name="request_id" value=(uuid::Uuid::new_v4().to_string());
                            button type="submit" { "Generate Instant Key" }
                        }
                    }
                    dl {
                        dt { "Email" } dd { (who.email_address.as_deref().unwrap_or("—")) }
                        dt { "Phone" } dd { (who.phone_number.as_deref().unwrap_or("—")) }
                        @if let Some(k) = &who.user_identity_key { dt { "Key" } dd { (k) } }
                        dt { "user_identity_id" } dd { code { (who.id.to_string()) } }
                    }
                }
                div {
                    h2 { "Access system users" }
                    ul.plain {
                        @for u in users { li { a href={ "/console/users/" (u.id.to_string()) } { (u.full_name) } } }
                    }
                    h2 { "Instant Keys" }
                    @if keys.is_empty() { p { "None yet." } }
                    table {
                        caption.sr { "Instant Keys of " (who.full_name) }
                        thead { tr { th scope="col" { "Created" } th scope="col" { "State" } th scope="col" { "Devices" } th scope="col" { span.sr { "Actions" } } } }
                        tbody {
                            @for k in keys {
                                @let active = k.key.revoked_at.is_none() && k.key.expires_at.is_none_or(|e| e > now);
                                tr {
                                    td data-label="Created" { (show(k.key.created_at, "UTC")) " UTC" }
                                    td data-label="State" { @if k.key.revoked_at.is_some() { "revoked" } @else if !active { "expired" } @else { "active" } }
                                    td data-label="Devices" { (k.key.use_count) " of " (k.key.max_use_count) }
                                    td data-label="" {
                                        @if active {
                                            form method="post" action={ "/console/instant-keys/" (k.key.id.to_string()) "/revoke" } {
                                                (csrf(ctx))
                                                button.link type="submit" aria-label={ "Revoke the key created " (show(k.key.created_at, "UTC")) } { "Revoke" }
                                            }
                                        }
                                    }
                                }
                                @if active || !k.deliveries.is_empty() {
                                    tr {
                                        td colspan="4" {
                                            @if active {
                                                form.inline method="post" action={ "/console/instant-keys/" (k.key.id.to_string()) "/send" } {
                                                    (csrf(ctx))
                                                    input type="hidden" name="request_id" value=(uuid::Uuid::new_v4().to_string());
                                                    label for={ "ch-" (k.key.id.to_string()) } { "Send by" }
                                                    " "
                                                    select id={ "ch-" (k.key.id.to_string()) } name="channel" {
                                                        option value="email" { "Email" }
                                                        option value="sms" { "SMS" }
                                                    }
                                                    " "
                                                    label for={ "to-" (k.key.id.to_string()) } { "to" }
                                                    " "
                                                    input type="text" id={ "to-" (k.key.id.to_string()) } name="to" placeholder="the person's own";
                                                    " "
                                                    button type="submit" { "Send" }
                                                }
                                            }
                                            @if !k.deliveries.is_empty() {
                                                ul.plain {
                                                    @for d in &k.deliveries {
                                                        li {
                                                            (d.channel.as_str()) " to " (d.to) ": " strong { (d.status.as_str()) }
                                                            " (" (d.attempts) " attempt(s)"
                                                            @if let Some(e) = &d.last_error { "; " (e) }
                                                            ")"
                                                        }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(k) = new_key {
                dialog.modal open aria-labelledby="ik-dialog-title" {
                    h2 #ik-dialog-title { "Instant Key Link" }
                    p { "Share this link with " (who.full_name) ": no app install needed, they tap to unlock." }
                    div.field {
                        label for="ik-link" { "Instant Key link" }
                        div.copyrow {
                            input #ik-link type="text" readonly value=(k.url);
                            (copy_button(k.url, "the Instant Key link"))
                        }
                    }
                    img.qr src={ "data:image/svg+xml;base64," (base64::engine::general_purpose::STANDARD.encode(k.qr_svg)) }
                        alt="QR code of the Instant Key link" width="240" height="240";
                    form method="dialog" {
                        button type="submit" { "Close" }
                    }
                }
            }
        },
    )
}

/// A page answered `200` when the form was taken (`ok`), else `422` with its errors shown.
pub fn answered(page: axum::response::Response, ok: bool) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if ok {
        page
    } else {
        (axum::http::StatusCode::UNPROCESSABLE_ENTITY, page).into_response()
    }
}
