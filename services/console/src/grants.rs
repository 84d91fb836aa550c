//! Beyond seed 000: access grants (create, list, detail with per-door state that follows live),
//! encoding a card, remote unlock of an entrance with a confirmation, and the action attempts
//! they start. Handlers and their templates; every action is a `keygate-app` use case.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate_app::tokens::PageScope;
use keygate_domain::action::{ActionAttempt, AttemptStatus};
use keygate_domain::grant::{AccessGrant, AccessMethod, DoorState};
use keygate_domain::ids::{
    AccessGrantId, AccessMethodId, ActionAttemptId, EntranceId, UserIdentityId,
};
use keygate_domain::model::{AccessSystem, Encoder, Entrance};
use keygate_domain::page::PageRequest;
use keygate_domain::{Error, Resource, validate};
use keygate_proto::v1;
use keygate_store::GrantFilter;
use keygate_wire::parse::IntoCommand as _;
use maud::{Markup, html};

use crate::forms::{Errors, FormData};
use crate::pages::{self, layout, render};
use crate::time_fields::{local_value, parse_local, show};
use crate::{Console, Ctx, check_csrf, see_other, signed_in};

type St = State<Arc<Console>>;

pub(crate) fn first_page() -> PageRequest {
    PageRequest {
        after: None,
        limit: 200,
    }
}

macro_rules! try_page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return pages::failure(&e),
        }
    };
}

macro_rules! try_resp {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

fn id_of<T: std::str::FromStr>(raw: &str, field: &str, resource: Resource) -> Result<T, Response> {
    validate::id::<T>(field, raw, resource).map_err(|_| {
        pages::failure(&Error::NotFound {
            resource,
            id: raw.to_owned(),
        })
    })
}

fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.session.csrf); }
}

fn door_state(s: DoorState) -> &'static str {
    s.as_str()
}

fn attempt_status(s: AttemptStatus) -> &'static str {
    match s {
        AttemptStatus::Pending => "pending",
        AttemptStatus::Success => "success",
        AttemptStatus::Error => "error",
    }
}

/// Systems and entrances of the workspace, to name doors and offer them in forms.
pub(crate) struct Places {
    pub systems: Vec<AccessSystem>,
    pub entrances: Vec<Entrance>,
}

impl Places {
    pub(crate) async fn of(c: &Console, ctx: &Ctx) -> Result<Self, Error> {
        Ok(Self {
            systems: c
                .app
                .list_access_systems(ctx.ws, None, &first_page())
                .await?
                .items,
            entrances: c
                .app
                .list_entrances(
                    ctx.ws,
                    None,
                    &PageRequest {
                        after: None,
                        limit: 1000,
                    },
                )
                .await?
                .items,
        })
    }

    pub(crate) fn entrance(&self, id: EntranceId) -> String {
        self.entrances
            .iter()
            .find(|e| e.id == id)
            .map(|e| {
                let system = self
                    .systems
                    .iter()
                    .find(|s| s.id == e.acs_system_id)
                    .map(|s| s.name.as_str())
                    .unwrap_or("");
                format!("{} · {}", e.display_name, system)
            })
            .unwrap_or_else(|| id.to_string())
    }
}

/// Grants on one page of the list.
const LIST_PAGE: i32 = 50;

/// The list's filters, by query-string name: what `GrantFilter` supports.
const FILTER_FIELDS: &[&str] = &[
    "user_identity_id",
    "acs_system_id",
    "acs_entrance_id",
    "reservation_key",
    "access_grant_key",
];

/// An id filter of the list: malformed is a message next to its field (422); well formed but
/// not of this workspace is the use case's `NOT_FOUND` (404), as for a page's own id.
fn filter_id<T: std::str::FromStr>(
    f: &FormData,
    errors: &mut Errors,
    field: &str,
    resource: Resource,
) -> Option<T> {
    match validate::optional_id::<T>(field, f.get(field), resource) {
        Ok(v) => v,
        Err(_) => {
            errors.push(field, "is not a valid id");
            None
        }
    }
}

/// A key filter: checked as the key fields of `CreateAccessGrant` are.
fn filter_key(f: &FormData, errors: &mut Errors, field: &str) -> Option<String> {
    match validate::optional_name(field, f.get(field)) {
        Ok(v) => v,
        Err(v) => {
            errors.push(field, v.description);
            None
        }
    }
}

/// The `GrantFilter` of the list's query string; `Err` is the 404 page of an id that is not in
/// this workspace.
async fn grant_filter(
    c: &Console,
    ctx: &Ctx,
    f: &FormData,
    errors: &mut Errors,
) -> Result<GrantFilter, Response> {
    let filter = GrantFilter {
        user_identity_id: filter_id(f, errors, "user_identity_id", Resource::UserIdentity),
        acs_system_id: filter_id(f, errors, "acs_system_id", Resource::AccessSystem),
        acs_entrance_id: filter_id(f, errors, "acs_entrance_id", Resource::Entrance),
        reservation_key: filter_key(f, errors, "reservation_key"),
        access_grant_key: filter_key(f, errors, "access_grant_key"),
        access_grant_ids: Vec::new(),
    };
    let found = async {
        if let Some(id) = filter.user_identity_id {
            c.app.get_user_identity(ctx.ws, id).await?;
        }
        if let Some(id) = filter.acs_system_id {
            c.app.get_access_system(ctx.ws, id).await?;
        }
        if let Some(id) = filter.acs_entrance_id {
            c.app.get_entrance(ctx.ws, id).await?;
        }
        Ok::<_, Error>(())
    };
    found.await.map_err(|e| pages::failure(&e))?;
    Ok(filter)
}

/// The list's query string with `page` set (the filters kept).
fn list_query(f: &FormData, page: &str) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for name in FILTER_FIELDS {
        if !f.get(name).is_empty() {
            q.append_pair(name, f.get(name));
        }
    }
    if !page.is_empty() {
        q.append_pair("page", page);
    }
    q.finish()
}

/// A labelled `select` of a filter: "any" first, then `options` (value, label); a value typed
/// into the URL that is not among them is kept as an option of its own.
pub(crate) fn filter_select(
    label: &str,
    name: &str,
    any: &str,
    options: &[(String, String)],
    f: &FormData,
    errors: &Errors,
) -> Markup {
    let id = format!("q-{name}");
    let current = f.get(name);
    let err = errors.field(name);
    let err_id = format!("{id}-err");
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name) aria-invalid=[err.map(|_| "true")] aria-describedby=[err.map(|_| err_id.clone())] {
                option value="" { (any) }
                @for (value, text) in options {
                    option value=(value) selected[current == value] { (text) }
                }
                @if !current.is_empty() && !options.iter().any(|(v, _)| v == current) {
                    option value=(current) selected { (current) }
                }
            }
            @if let Some(e) = err { p.error id=(err_id) { (e) } }
        }
    }
}

fn filter_text(label: &str, name: &str, f: &FormData, errors: &Errors) -> Markup {
    let id = format!("q-{name}");
    let err = errors.field(name);
    let err_id = format!("{id}-err");
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) type="text" name=(name) value=(f.get(name))
                aria-invalid=[err.map(|_| "true")] aria-describedby=[err.map(|_| err_id.clone())];
            @if let Some(e) = err { p.error id=(err_id) { (e) } }
        }
    }
}

/// The grants of the workspace, filtered by the GET form's values (who, system, entrance,
/// reservation key, access grant key), a page at a time by the app's sealed page token (bound
/// to the filter). A malformed filter is shown next to its field (422).
pub async fn list(State(c): St, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    let f = FormData::parse(q.unwrap_or_default().as_bytes());
    let mut errors = Errors::default();
    let filter = try_resp!(grant_filter(&c, &ctx, &f, &mut errors).await);
    let places = try_page!(Places::of(&c, &ctx).await);
    let people = try_page!(
        c.app
            .list_user_identities(ctx.ws, &Default::default(), &first_page())
            .await
    );
    let parts: Vec<&str> = std::iter::once("console:ListAccessGrants")
        .chain(FILTER_FIELDS.iter().map(|n| f.get(n)))
        .collect();
    let scope = PageScope::workspace(ctx.ws, &parts);
    let mut grants = Vec::new();
    let mut next = String::new();
    if errors.is_empty() {
        let listed = async {
            let page = c.app.page_request(&scope, LIST_PAGE, f.get("page"))?;
            let found = c.app.list_access_grants(ctx.ws, &filter, &page).await?;
            let next = c.app.tokens.seal(&scope, found.next_after)?;
            Ok::<_, Error>((found.items, next))
        };
        match listed.await {
            Ok((items, n)) => (grants, next) = (items, n),
            Err(e @ (Error::InvalidArgument { .. } | Error::InvalidToken { .. })) => {
                errors = Errors::of(&e, &[])
            }
            Err(e) => return pages::failure(&e),
        }
    }
    let who = |id: UserIdentityId| {
        people
            .items
            .iter()
            .find(|p| p.identity.id == id)
            .map(|p| p.identity.full_name.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let person_options: Vec<(String, String)> = people
        .items
        .iter()
        .map(|p| (p.identity.id.to_string(), p.identity.full_name.clone()))
        .collect();
    let system_options: Vec<(String, String)> = places
        .systems
        .iter()
        .map(|s| (s.id.to_string(), s.name.clone()))
        .collect();
    let entrance_options: Vec<(String, String)> = places
        .entrances
        .iter()
        .map(|e| (e.id.to_string(), places.entrance(e.id)))
        .collect();
    let filtered = FILTER_FIELDS.iter().any(|n| !f.get(n).is_empty());
    let page = render(layout(
        "Access grants",
        Some(&ctx),
        html! {
            h1 { "Access grants" }
            @if f.get("deleted") == "1" {
                p.notice role="status" { "The access grant was deleted; Keygate is taking its access back from the doors." }
            }
            p { a.button href="/console/grants/new" { "New access grant" } }
            form.filters.card method="get" action="/console/grants" aria-label="Filter access grants" {
                (filter_select("Who", "user_identity_id", "Anyone", &person_options, &f, &errors))
                (filter_select("Access system", "acs_system_id", "Any system", &system_options, &f, &errors))
                (filter_select("Entrance", "acs_entrance_id", "Any entrance", &entrance_options, &f, &errors))
                (filter_text("Reservation key", "reservation_key", &f, &errors))
                (filter_text("Access grant key", "access_grant_key", &f, &errors))
                div.field {
                    button type="submit" { "Filter" }
                    @if filtered { " " a href="/console/grants" { "Clear filters" } }
                }
            }
            @if !errors.general.is_empty() {
                div.alert role="alert" { @for m in &errors.general { p { (m) } } }
            }
            @if errors.is_empty() && grants.is_empty() {
                p { @if filtered || !f.get("page").is_empty() { "No access grant matches." } @else { "No access grant yet." } }
            }
            table {
                caption.sr { "Access grants of this workspace" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Who" } th scope="col" { "From" } th scope="col" { "Until" } th scope="col" { "Pending" } } }
                tbody {
                    @for g in &grants {
                        tr {
                            td data-label="Name" { a href={ "/console/grants/" (g.id.to_string()) } { (g.name) } }
                            td data-label="Who" { (who(g.user_identity_id)) }
                            td data-label="From" { (show(g.starts_at, "UTC")) " UTC" }
                            td data-label="Until" { @if let Some(e) = g.ends_at { (show(e, "UTC")) " UTC" } @else { "no end" } }
                            td data-label="Pending" { (g.pending_mutations.len()) }
                        }
                    }
                }
            }
            p.pager {
                @if !f.get("page").is_empty() {
                    a href={ "/console/grants?" (list_query(&f, "")) } { "First page" }
                }
                @if !next.is_empty() {
                    a href={ "/console/grants?" (list_query(&f, &next)) } rel="next" { "Next page" }
                }
            }
        },
    ));
    pages::answered(page, errors.is_empty())
}

const GRANT_FIELDS: &[&str] = &[
    "user_identity_id",
    "acs_entrance_ids",
    "requested_access_methods",
    "starts_at",
    "ends_at",
    "name",
];

async fn grant_form(c: &Console, ctx: &Ctx, f: &FormData, errors: &Errors) -> Response {
    let places = try_page!(Places::of(c, ctx).await);
    let people = try_page!(
        c.app
            .list_user_identities(ctx.ws, &Default::default(), &first_page())
            .await
    );
    let chosen = f.all("acs_entrance_ids");
    let modes = f.all("mode");
    let request_id = match f.get("request_id") {
        "" => uuid::Uuid::new_v4().to_string(),
        s => s.to_owned(),
    };
    let err = |name: &str| errors.field(name).map(str::to_owned);
    let page = render(layout(
        "New access grant",
        Some(ctx),
        html! {
            p.crumbs { a href="/console/grants" { "Access grants" } " › New" }
            h1 { "New access grant" }
            form.card method="post" action="/console/grants" {
                (csrf(ctx))
                input type="hidden" name="request_id" value=(request_id);
                @if !errors.general.is_empty() {
                    div.alert role="alert" { @for m in &errors.general { p { (m) } } }
                }
                div.field {
                    label for="f-user_identity_id" { "Who" }
                    select #f-user_identity_id name="user_identity_id" aria-invalid=[err("user_identity_id").map(|_| "true")] {
                        @for p in &people.items {
                            option value=(p.identity.id.to_string()) selected[f.get("user_identity_id") == p.identity.id.to_string()] { (p.identity.full_name) }
                        }
                    }
                    @if let Some(e) = err("user_identity_id") { p.error { (e) } }
                }
                div.field {
                    label for="f-name" { "Name (optional)" }
                    input #f-name type="text" name="name" value=(f.get("name"));
                    @if let Some(e) = err("name") { p.error { (e) } }
                }
                fieldset {
                    legend { "Where" }
                    @for s in &places.systems {
                        p.hint { (s.name) }
                        @for e in places.entrances.iter().filter(|e| e.acs_system_id == s.id) {
                            div.check {
                                input type="checkbox" id={ "e-" (e.id.to_string()) } name="acs_entrance_ids" value=(e.id.to_string()) checked[chosen.contains(&e.id.to_string())];
                                label for={ "e-" (e.id.to_string()) } { (e.display_name) " · " (s.name) }
                            }
                        }
                    }
                    @if let Some(e) = err("acs_entrance_ids") { p.error { (e) } }
                }
                fieldset {
                    legend { "How" }
                    @for (value, label) in [("mobile_key", "Mobile key"), ("card", "Card"), ("code", "PIN code"), ("cloud_key", "Cloud key")] {
                        div.check {
                            input type="checkbox" id={ "m-" (value) } name="mode" value=(value) checked[modes.iter().any(|m| m == value)];
                            label for={ "m-" (value) } { (label) }
                        }
                    }
                    @if let Some(e) = err("requested_access_methods") { p.error { (e) } }
                }
                fieldset {
                    legend { "When (UTC)" }
                    div.field {
                        label for="f-starts_at" { "Starts" }
                        input #f-starts_at type="datetime-local" name="starts_at" value=(f.get("starts_at"));
                        p.hint { "Empty: now." }
                        @if let Some(e) = err("starts_at") { p.error { (e) } }
                    }
                    div.field {
                        label for="f-ends_at" { "Ends" }
                        input #f-ends_at type="datetime-local" name="ends_at" value=(f.get("ends_at"));
                        p.hint { "Empty: no end." }
                        @if let Some(e) = err("ends_at") { p.error { (e) } }
                    }
                }
                button type="submit" { "Create access grant" }
            }
        },
    ));
    crate::pages::answered(page, errors.is_empty())
}

pub async fn new_form(State(c): St, headers: HeaderMap) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    grant_form(&c, &ctx, &FormData::default(), &Errors::default()).await
}

/// `CreateAccessGrant` from the form: who, where, how, when.
pub async fn create(State(c): St, headers: HeaderMap, body: Bytes) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    let f = FormData::parse(&body);
    try_resp!(check_csrf(&ctx.session, &f));
    let mut errors = Errors::default();
    let time = |errors: &mut Errors, name: &str| match parse_local(f.get(name), "UTC") {
        Ok(t) => t,
        Err(m) => {
            errors.push(name, m);
            None
        }
    };
    let starts = time(&mut errors, "starts_at");
    let ends = time(&mut errors, "ends_at");
    if errors.is_empty() {
        let modes = f
            .all("mode")
            .iter()
            .map(|m| match m.as_str() {
                "mobile_key" => v1::AccessMethodMode::MobileKey,
                "card" => v1::AccessMethodMode::Card,
                "code" => v1::AccessMethodMode::Code,
                "cloud_key" => v1::AccessMethodMode::CloudKey,
                _ => v1::AccessMethodMode::Unspecified,
            })
            .map(|m| v1::NewRequestedAccessMethod {
                mode: m as i32,
                code: String::new(),
            })
            .collect();
        let req = v1::CreateAccessGrantRequest {
            request_id: f.get("request_id").to_owned(),
            acs_entrance_ids: f.all("acs_entrance_ids"),
            requested_access_methods: modes,
            starts_at: starts.map(keygate_wire::convert::ts),
            ends_at: ends.map(keygate_wire::convert::ts),
            access_grant_key: String::new(),
            name: f.get("name").to_owned(),
            reservation_key: String::new(),
            grantee: Some(v1::create_access_grant_request::Grantee::UserIdentityId(
                f.get("user_identity_id").to_owned(),
            )),
        };
        let created = match req.into_command() {
            Ok(cmd) => c.app.create_access_grant(ctx.ws, cmd).await,
            Err(e) => Err(e),
        };
        match created {
            Ok(g) => return see_other(&format!("/console/grants/{}", g.id)),
            Err(e) => errors = Errors::of(&e, GRANT_FIELDS),
        }
    }
    grant_form(&c, &ctx, &f, &errors).await
}

fn method_section(
    ctx: &Ctx,
    m: &AccessMethod,
    places: &Places,
    encoders: &HashMap<String, Vec<Encoder>>,
) -> Markup {
    let system_encoders: Vec<&Encoder> = m
        .doors
        .iter()
        .filter_map(|d| encoders.get(&d.acs_system_id.to_string()))
        .flatten()
        .collect();
    html! {
        section.card aria-label=(m.display_name) {
            h2 { (m.display_name) }
            p {
                (m.mode.display_name()) " · "
                @if m.is_issued { "issued" } @else { "not issued yet" }
                @if let Some(code) = &m.code { " · code " code { (code) } }
            }
            @for w in &m.warnings { p.hint { "Warning: " (w.message) } }
            @for e in &m.errors { p.error { (e.message) } }
            table {
                caption.sr { "Doors of " (m.display_name) }
                thead { tr { th scope="col" { "Door" } th scope="col" { "State" } th scope="col" { "Pending change" } } }
                tbody {
                    @for d in &m.doors {
                        tr {
                            td data-label="Door" { (places.entrance(d.entrance_id)) }
                            td data-label="State" { span class={ "state " (door_state(d.state)) } { (door_state(d.state)) } @if let Some(r) = &d.reason { " — " (r) } }
                            td data-label="Pending change" { @if let Some(p) = &d.pending { (p.message) } }
                        }
                    }
                }
            }
            @if m.is_card_encoding_required && !system_encoders.is_empty() {
                form method="post" action={ "/console/methods/" (m.id.to_string()) "/encode" } {
                    (csrf(ctx))
                    input type="hidden" name="request_id" value=(uuid::Uuid::new_v4().to_string());
                    div.field {
                        label for={ "enc-" (m.id.to_string()) } { "Encoder" }
                        select id={ "enc-" (m.id.to_string()) } name="acs_encoder_id" {
                            @for e in &system_encoders {
                                option value=(e.id.to_string()) { (e.display_name) @if !e.is_online { " (offline)" } }
                            }
                        }
                    }
                    button type="submit" { "Encode card" }
                }
            }
        }
    }
}

pub async fn detail(State(c): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    let gid = try_resp!(id_of(&id, "access_grant_id", Resource::AccessGrant));
    detail_page(&c, &ctx, gid, &Errors::default()).await
}

/// A grant with its methods and doors; `errors` of a refused encoding above them.
async fn detail_page(c: &Console, ctx: &Ctx, gid: AccessGrantId, errors: &Errors) -> Response {
    let g: AccessGrant = try_page!(c.app.get_access_grant(ctx.ws, gid).await);
    let person = try_page!(c.app.get_user_identity(ctx.ws, g.user_identity_id).await);
    let places = try_page!(Places::of(c, ctx).await);
    let mut methods = Vec::new();
    for m in &g.access_method_ids {
        match c.app.get_access_method(ctx.ws, *m).await {
            Ok(m) => methods.push(m),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return pages::failure(&e),
        }
    }
    let mut encoders: HashMap<String, Vec<Encoder>> = HashMap::new();
    if methods.iter().any(|m| m.is_card_encoding_required) {
        for e in try_page!(c.app.list_encoders(ctx.ws, None, &first_page()).await).items {
            encoders
                .entry(e.acs_system_id.to_string())
                .or_default()
                .push(e);
        }
    }
    let live = methods.iter().any(|m| {
        m.doors
            .iter()
            .any(|d| d.state == DoorState::Pending || d.pending.is_some())
    });
    let page = render(layout(
        &g.name,
        Some(ctx),
        html! {
            p.crumbs { a href="/console/grants" { "Access grants" } " › " (g.name) }
            h1 { (g.name) }
            p {
                "For " a href={ "/console/identities/" (person.identity.id.to_string()) } { (person.identity.full_name) }
                ", from " (show(g.starts_at, "UTC")) " UTC"
                @if let Some(e) = g.ends_at { " until " (show(e, "UTC")) " UTC" } @else { ", no end" }
            }
            p.actions {
                a.button href={ "/console/grants/" (g.id.to_string()) "/edit" } { "Edit" }
                " "
                a href={ "/console/grants/" (g.id.to_string()) "/delete" } { "Delete…" }
                " "
                a href={ "/console/events?access_grant_id=" (g.id.to_string()) } { "Events of this grant" }
            }
            @if live {
                p.notice role="status" data-live="3" { "Changes are being pushed to the access systems; this page follows them." }
            }
            @if !errors.general.is_empty() {
                div.alert role="alert" { @for m in &errors.general { p { (m) } } }
            }
            @for w in &g.warnings { p.hint { "Warning: " (w.message) } }
            @for e in &g.errors { p.error { (e.message) } }
            @for m in &methods { (method_section(ctx, m, &places, &encoders)) }
        },
    ));
    crate::pages::answered(page, errors.is_empty())
}

/// The update form's fields: what `UpdateAccessGrant` takes.
const EDIT_FIELDS: &[&str] = &[
    "name",
    "starts_at",
    "ends_at",
    "clear_ends_at",
    "add_acs_entrance_ids",
    "remove_acs_entrance_ids",
];

/// The grant as the edit form shows it first.
fn edit_values(g: &AccessGrant) -> FormData {
    let mut v = vec![
        ("name".to_owned(), g.name.clone()),
        ("starts_at".to_owned(), local_value(g.starts_at, "UTC")),
        (
            "ends_at".to_owned(),
            g.ends_at.map(|e| local_value(e, "UTC")).unwrap_or_default(),
        ),
    ];
    v.extend(
        g.entrance_ids
            .iter()
            .map(|e| ("acs_entrance_ids".to_owned(), e.to_string())),
    );
    FormData(v)
}

/// The edit form: name, entrances, start and end, with `f`'s values (the grant's, or what was
/// submitted) and the refusal's messages next to their fields.
async fn edit_page(
    c: &Console,
    ctx: &Ctx,
    g: &AccessGrant,
    f: &FormData,
    errors: &Errors,
) -> Response {
    let places = try_page!(Places::of(c, ctx).await);
    let chosen = f.all("acs_entrance_ids");
    let err = |name: &str| errors.field(name).map(str::to_owned);
    let where_err = err("add_acs_entrance_ids").or_else(|| err("remove_acs_entrance_ids"));
    let ends_err = err("ends_at").or_else(|| err("clear_ends_at"));
    let id = g.id.to_string();
    let page = render(layout(
        &format!("Edit {}", g.name),
        Some(ctx),
        html! {
            p.crumbs { a href="/console/grants" { "Access grants" } " › " a href={ "/console/grants/" (id) } { (g.name) } " › Edit" }
            h1 { "Edit " (g.name) }
            form.card method="post" action={ "/console/grants/" (id) "/edit" } {
                (csrf(ctx))
                @if !errors.general.is_empty() {
                    div.alert role="alert" { @for m in &errors.general { p { (m) } } }
                }
                div.field {
                    label for="f-name" { "Name" }
                    input #f-name type="text" name="name" value=(f.get("name"))
                        aria-invalid=[err("name").map(|_| "true")] aria-describedby=[err("name").map(|_| "f-name-err")];
                    @if let Some(e) = err("name") { p.error #f-name-err { (e) } }
                }
                fieldset {
                    legend { "Where" }
                    @for s in &places.systems {
                        @let here: Vec<&Entrance> = places.entrances.iter().filter(|e| e.acs_system_id == s.id).collect();
                        @if !here.is_empty() {
                            p.hint { (s.name) }
                            @for e in here {
                                div.check {
                                    input type="checkbox" id={ "e-" (e.id.to_string()) } name="acs_entrance_ids" value=(e.id.to_string()) checked[chosen.contains(&e.id.to_string())];
                                    label for={ "e-" (e.id.to_string()) } { (e.display_name) " · " (s.name) }
                                }
                            }
                        }
                    }
                    p.hint { "A door added gets the grant's access methods; a door removed has its access taken back." }
                    @if let Some(e) = where_err { p.error { (e) } }
                }
                fieldset {
                    legend { "When (UTC)" }
                    div.field {
                        label for="f-starts_at" { "Starts" }
                        input #f-starts_at type="datetime-local" name="starts_at" value=(f.get("starts_at"))
                            aria-invalid=[err("starts_at").map(|_| "true")];
                        p.hint { "Empty: unchanged." }
                        @if let Some(e) = err("starts_at") { p.error { (e) } }
                    }
                    div.field {
                        label for="f-ends_at" { "Ends" }
                        input #f-ends_at type="datetime-local" name="ends_at" value=(f.get("ends_at"))
                            aria-invalid=[ends_err.as_ref().map(|_| "true")];
                        p.hint { "Empty: no end." }
                        @if let Some(e) = &ends_err { p.error { (e) } }
                    }
                }
                button type="submit" { "Save changes" }
                " "
                a href={ "/console/grants/" (id) } { "Cancel" }
            }
        },
    ));
    pages::answered(page, errors.is_empty())
}

pub async fn edit_form(State(c): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    let gid: AccessGrantId = try_resp!(id_of(&id, "access_grant_id", Resource::AccessGrant));
    let g = try_page!(c.app.get_access_grant(ctx.ws, gid).await);
    edit_page(&c, &ctx, &g, &edit_values(&g), &Errors::default()).await
}

/// `UpdateAccessGrant` with what the form changed: a field left as it was is not sent (the
/// form shows minutes; an unchanged start keeps its seconds), an emptied end clears it,
/// entrances checked or unchecked are added or removed.
pub async fn update(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    let f = FormData::parse(&body);
    try_resp!(check_csrf(&ctx.session, &f));
    let gid: AccessGrantId = try_resp!(id_of(&id, "access_grant_id", Resource::AccessGrant));
    let g = try_page!(c.app.get_access_grant(ctx.ws, gid).await);
    let mut errors = Errors::default();
    let mut time = |name: &str, was: Option<time::OffsetDateTime>| {
        let raw = f.get(name);
        if was.is_some_and(|w| local_value(w, "UTC") == raw) {
            return Ok(None);
        }
        parse_local(raw, "UTC").map_err(|m| errors.push(name, m))
    };
    let starts = time("starts_at", Some(g.starts_at));
    let ends = time("ends_at", g.ends_at);
    if let (Ok(starts_at), Ok(ends_at)) = (starts, ends) {
        let clear_ends_at = f.get("ends_at").is_empty() && g.ends_at.is_some();
        let chosen = f.all("acs_entrance_ids");
        let current: Vec<String> = g.entrance_ids.iter().map(|e| e.to_string()).collect();
        let req = v1::UpdateAccessGrantRequest {
            access_grant_id: id.clone(),
            starts_at: starts_at.map(keygate_wire::convert::ts),
            ends_at: ends_at.map(keygate_wire::convert::ts),
            add_acs_entrance_ids: chosen
                .iter()
                .filter(|e| !current.contains(e))
                .cloned()
                .collect(),
            remove_acs_entrance_ids: current
                .iter()
                .filter(|e| !chosen.contains(e))
                .cloned()
                .collect(),
            name: (f.get("name") != g.name).then(|| f.get("name").to_owned()),
            clear_ends_at,
        };
        let updated = match req.into_command() {
            Ok(cmd) => c.app.update_access_grant(ctx.ws, cmd).await,
            Err(e) => Err(e),
        };
        match updated {
            Ok(_) => return see_other(&format!("/console/grants/{id}")),
            Err(e @ Error::NotFound { .. })
                if e.reason() == Resource::AccessGrant.not_found_reason() =>
            {
                return pages::failure(&e);
            }
            Err(e) => errors = Errors::of(&e, EDIT_FIELDS),
        }
    }
    edit_page(&c, &ctx, &g, &f, &errors).await
}

fn delete_page(ctx: &Ctx, g: &AccessGrant, errors: &Errors) -> Markup {
    let id = g.id.to_string();
    layout(
        "Delete access grant",
        Some(ctx),
        html! {
            p.crumbs { a href="/console/grants" { "Access grants" } " › " a href={ "/console/grants/" (id) } { (g.name) } " › Delete" }
            h1 { "Delete " (g.name) "?" }
            p { "Its access methods stop working: Keygate takes the access back from every door ("
                (g.entrance_ids.len()) " entrance(s)). This cannot be undone." }
            @if !errors.general.is_empty() {
                div.alert role="alert" { @for m in &errors.general { p { (m) } } }
            }
            form method="post" action={ "/console/grants/" (id) "/delete" } {
                (csrf(ctx))
                button.danger type="submit" { "Delete access grant" }
                " "
                a href={ "/console/grants/" (id) } { "Cancel" }
            }
        },
    )
}

/// The confirmation before a delete: nothing changes on a GET.
pub async fn delete_confirm(State(c): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    let gid: AccessGrantId = try_resp!(id_of(&id, "access_grant_id", Resource::AccessGrant));
    let g = try_page!(c.app.get_access_grant(ctx.ws, gid).await);
    render(delete_page(&ctx, &g, &Errors::default()))
}

/// `DeleteAccessGrant` after the confirmation, then the list.
pub async fn delete(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    let f = FormData::parse(&body);
    try_resp!(check_csrf(&ctx.session, &f));
    let gid: AccessGrantId = try_resp!(id_of(&id, "access_grant_id", Resource::AccessGrant));
    let g = try_page!(c.app.get_access_grant(ctx.ws, gid).await);
    match c.app.delete_access_grant(ctx.ws, gid).await {
        Ok(()) => see_other("/console/grants?deleted=1"),
        Err(e @ Error::NotFound { .. }) => pages::failure(&e),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            render(delete_page(&ctx, &g, &Errors::of(&e, &[]))),
        )
            .into_response(),
    }
}

/// Encode a card on an encoder: `EncodeAccessMethod`, then the attempt's page.
pub async fn encode(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    let f = FormData::parse(&body);
    try_resp!(check_csrf(&ctx.session, &f));
    let mid: AccessMethodId = try_resp!(id_of(&id, "access_method_id", Resource::AccessMethod));
    let method = try_page!(c.app.get_access_method(ctx.ws, mid).await);
    let req = v1::EncodeAccessMethodRequest {
        access_method_id: id,
        acs_encoder_id: f.get("acs_encoder_id").to_owned(),
        request_id: f.get("request_id").to_owned(),
    };
    let attempt = match req.into_command() {
        Ok(cmd) => c.app.encode_access_method(ctx.ws, cmd).await,
        Err(e) => Err(e),
    };
    match attempt {
        Ok(a) => see_other(&format!("/console/attempts/{}", a.id)),
        Err(e @ Error::NotFound { .. })
            if e.reason() == Resource::AccessMethod.not_found_reason() =>
        {
            pages::failure(&e)
        }
        Err(e) => detail_page(&c, &ctx, method.access_grant_id, &Errors::of(&e, &[])).await,
    }
}

pub async fn attempt(State(c): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    let aid: ActionAttemptId = try_resp!(id_of(&id, "action_attempt_id", Resource::ActionAttempt));
    let a: ActionAttempt = try_page!(c.app.get_action_attempt(ctx.ws, aid).await);
    let back = match a.access_method_id {
        Some(m) => match c.app.get_access_method(ctx.ws, m).await {
            Ok(m) => Some(format!("/console/grants/{}", m.access_grant_id)),
            Err(_) => None,
        },
        None => None,
    };
    let what = match (a.access_method_id.is_some(), a.acs_entrance_id) {
        (true, _) if a.acs_encoder_id.is_some() => "Encoding a card".to_owned(),
        (_, Some(e)) => match c.app.get_entrance(ctx.ws, e).await {
            Ok(e) => format!("Unlocking {}", e.display_name),
            Err(_) => "Unlocking".to_owned(),
        },
        _ => "Action".to_owned(),
    };
    render(layout(
        &what,
        Some(&ctx),
        html! {
            h1 { (what) }
            @if a.status == AttemptStatus::Pending {
                p.notice role="status" data-live="2" { "Waiting for the access system…" }
            } @else if a.status == AttemptStatus::Success {
                p.notice role="status" { "Done: " (attempt_status(a.status)) "."
                    @if let Some(r) = &a.result { " Card number " code { (r.card_number) } "." } }
            } @else {
                div.alert role="alert" {
                    p { "It failed" @if let Some(e) = &a.error { ": " (e.message) " (" (e.error_type) ")" } "." }
                }
            }
            @if let Some(b) = back { p { a href=(b) { "Back to the access grant" } } }
            p { a href="/console/systems" { "ACS Systems" } }
        },
    ))
}

/// The confirmation before a remote unlock: nothing opens on a GET.
pub async fn unlock_confirm(State(c): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    let eid: EntranceId = try_resp!(id_of(&id, "acs_entrance_id", Resource::Entrance));
    let e = try_page!(c.app.get_entrance(ctx.ws, eid).await);
    let s = try_page!(c.app.get_access_system(ctx.ws, e.acs_system_id).await);
    render(unlock_page(&ctx, &e, &s, &Errors::default()))
}

fn unlock_page(ctx: &Ctx, e: &Entrance, s: &AccessSystem, errors: &Errors) -> Markup {
    layout(
        "Unlock",
        Some(ctx),
        html! {
            p.crumbs { a href={ "/console/systems/" (s.id.to_string()) } { (s.name) } " › " (e.display_name) }
            h1 { "Unlock " (e.display_name) "?" }
            p { "The door of " (s.name) " opens now, for whoever is there." }
            @if !errors.general.is_empty() {
                div.alert role="alert" { @for m in &errors.general { p { (m) } } }
            }
            form method="post" action={ "/console/entrances/" (e.id.to_string()) "/unlock" } {
                (csrf(ctx))
                input type="hidden" name="request_id" value=(uuid::Uuid::new_v4().to_string());
                button type="submit" { "Unlock " (e.display_name) }
                " "
                a href={ "/console/systems/" (s.id.to_string()) } { "Cancel" }
            }
        },
    )
}

/// `UnlockEntrance` after the confirmation, then the attempt's page.
pub async fn unlock(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = try_resp!(signed_in(&c, &headers).await);
    let f = FormData::parse(&body);
    try_resp!(check_csrf(&ctx.session, &f));
    let eid: EntranceId = try_resp!(id_of(&id, "acs_entrance_id", Resource::Entrance));
    let e = try_page!(c.app.get_entrance(ctx.ws, eid).await);
    let s = try_page!(c.app.get_access_system(ctx.ws, e.acs_system_id).await);
    let req = v1::UnlockEntranceRequest {
        acs_entrance_id: id,
        request_id: f.get("request_id").to_owned(),
    };
    let attempt = match req.into_command() {
        Ok(cmd) => c.app.unlock_entrance(ctx.ws, cmd).await,
        Err(e) => Err(e),
    };
    match attempt {
        Ok(a) => see_other(&format!("/console/attempts/{}", a.id)),
        Err(err @ Error::NotFound { .. }) => pages::failure(&err),
        Err(err) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            render(unlock_page(&ctx, &e, &s, &Errors::of(&err, &[]))),
        )
            .into_response(),
    }
}
