//! The events view: the workspace's event log, oldest first, a page at a time; the last page
//! follows the log live (it reloads while it is not full, so new events appear at its end).
//! A GET form filters it by event types, access grant, person, system, entrance and time range
//! (`ListEvents`' filter, parsed by the same conversion as the RPC); the filter stays in every
//! link and reload.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use keygate_app::events::open_cursor;
use keygate_domain::events::{self, EventFilter};
use keygate_domain::page::PageRequest;
use keygate_domain::{Error, Resource};
use keygate_proto::v1;
use keygate_wire::parse::IntoCommand as _;
use maud::html;

use crate::forms::{Errors, FormData};
use crate::grants::{Places, filter_select, first_page};
use crate::pages::{self, layout, render};
use crate::time_fields::{parse_local, show};
use crate::{Console, signed_in};

/// Events on one page.
const PAGE: u32 = 100;

/// The filter's fields in the query string.
const FIELDS: &[&str] = &[
    "event_types",
    "access_grant_id",
    "access_method_id",
    "user_identity_id",
    "acs_system_id",
    "acs_entrance_id",
    "occurred_after",
    "occurred_before",
];

/// The `EventFilter` of the query string, through `ListEventsRequest`'s conversion; a bad
/// value is a message next to its field.
fn filter_of(f: &FormData, errors: &mut Errors) -> EventFilter {
    let mut time = |name: &str| match parse_local(f.get(name), "UTC") {
        Ok(t) => t.map(keygate_wire::convert::ts),
        Err(m) => {
            errors.push(name, m);
            None
        }
    };
    let occurred_after = time("occurred_after");
    let occurred_before = time("occurred_before");
    let req = v1::ListEventsRequest {
        event_types: f.all("event_types"),
        access_grant_id: f.get("access_grant_id").to_owned(),
        access_method_id: f.get("access_method_id").to_owned(),
        user_identity_id: f.get("user_identity_id").to_owned(),
        acs_system_id: f.get("acs_system_id").to_owned(),
        acs_entrance_id: f.get("acs_entrance_id").to_owned(),
        occurred_after,
        occurred_before,
        ..Default::default()
    };
    match req.into_command() {
        Ok(cmd) => cmd.filter,
        // A malformed id is NOT_FOUND to the API; in a filter form it is a typing error.
        Err(Error::NotFound { resource, .. }) => {
            let field = match resource {
                Resource::UserIdentity => "user_identity_id",
                Resource::AccessSystem => "acs_system_id",
                Resource::Entrance => "acs_entrance_id",
                Resource::AccessMethod => "access_method_id",
                _ => "access_grant_id",
            };
            errors.push(field, "is not a valid id");
            EventFilter::default()
        }
        Err(e) => {
            let more = Errors::of(&e, FIELDS);
            errors.fields.extend(more.fields);
            errors.general.extend(more.general);
            EventFilter::default()
        }
    }
}

/// The query string of this view: the filter as typed, and the cursor.
fn query(f: &FormData, after: &str) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &f.0 {
        if FIELDS.contains(&k.as_str()) && !v.trim().is_empty() {
            q.append_pair(k, v.trim());
        }
    }
    if !after.is_empty() {
        q.append_pair("after", after);
    }
    q.finish()
}

pub async fn list(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let ctx = match signed_in(&c, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = FormData::parse(raw.unwrap_or_default().as_bytes());
    let after = match open_cursor(&c.app.tokens, ctx.ws, f.get("after")) {
        Ok(seq) => seq,
        Err(e) => return pages::failure(&e),
    };
    let mut errors = Errors::default();
    let filter = filter_of(&f, &mut errors);
    let mut found = Vec::new();
    if errors.is_empty() {
        found = match c
            .app
            .list_events(
                ctx.ws,
                &filter,
                &PageRequest {
                    after: after.map(|s| s.to_string()),
                    limit: PAGE,
                },
            )
            .await
        {
            Ok(p) => p.items,
            Err(e) => return pages::failure(&e),
        };
        // An id this workspace never had is 404 (a deleted grant or person of its own still
        // has its events, so its log shows).
        if found.is_empty() && after.is_none() {
            let exists = async {
                if let Some(id) = filter.access_grant_id {
                    c.app.get_access_grant(ctx.ws, id).await?;
                }
                if let Some(id) = filter.access_method_id {
                    c.app.get_access_method(ctx.ws, id).await?;
                }
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
            if let Err(e @ Error::NotFound { .. }) = exists.await {
                return pages::failure(&e);
            }
        }
    }
    let places = match Places::of(&c, &ctx).await {
        Ok(p) => p,
        Err(e) => return pages::failure(&e),
    };
    let people = match c
        .app
        .list_user_identities(ctx.ws, &Default::default(), &first_page())
        .await
    {
        Ok(p) => p.items,
        Err(e) => return pages::failure(&e),
    };
    let person_options: Vec<(String, String)> = people
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
    let full = found.len() as u32 == PAGE;
    let last = found.last().map(|e| e.cursor.clone());
    let chosen = f.all("event_types");
    let err = |name: &str| errors.field(name).map(str::to_owned);
    let filtered = FIELDS.iter().any(|n| !f.get(n).is_empty());
    let page = render(layout(
        "Events",
        Some(&ctx),
        html! {
            h1 { "Events" }
            form.filters.card method="get" action="/console/events" aria-label="Filter events" {
                div.field {
                    label for="q-event_types" { "Event types" }
                    select #q-event_types name="event_types" multiple size="6"
                        aria-invalid=[err("event_types").map(|_| "true")] aria-describedby="q-event_types-hint" {
                        @for t in events::ALL {
                            option value=(t.name) selected[chosen.iter().any(|c| c == t.name)] title=(t.description) { (t.name) }
                        }
                        @for t in chosen.iter().filter(|c| events::by_name(c).is_none()) {
                            option value=(t) selected { (t) }
                        }
                    }
                    p.hint #q-event_types-hint { "None chosen: every type. Ctrl or ⌘ to choose several." }
                    @if let Some(e) = err("event_types") { p.error { (e) } }
                }
                div.field {
                    label for="q-access_grant_id" { "Access grant id" }
                    input #q-access_grant_id type="text" name="access_grant_id" value=(f.get("access_grant_id"))
                        aria-invalid=[err("access_grant_id").map(|_| "true")];
                    @if let Some(e) = err("access_grant_id") { p.error { (e) } }
                }
                div.field {
                    label for="q-access_method_id" { "Access method id" }
                    input #q-access_method_id type="text" name="access_method_id" value=(f.get("access_method_id"))
                        aria-invalid=[err("access_method_id").map(|_| "true")];
                    @if let Some(e) = err("access_method_id") { p.error { (e) } }
                }
                (filter_select("Who", "user_identity_id", "Anyone", &person_options, &f, &errors))
                (filter_select("Access system", "acs_system_id", "Any system", &system_options, &f, &errors))
                (filter_select("Entrance", "acs_entrance_id", "Any entrance", &entrance_options, &f, &errors))
                div.field {
                    label for="q-occurred_after" { "From (UTC)" }
                    input #q-occurred_after type="datetime-local" name="occurred_after" value=(f.get("occurred_after"))
                        aria-invalid=[err("occurred_after").map(|_| "true")];
                    @if let Some(e) = err("occurred_after") { p.error { (e) } }
                }
                div.field {
                    label for="q-occurred_before" { "Before (UTC)" }
                    input #q-occurred_before type="datetime-local" name="occurred_before" value=(f.get("occurred_before"))
                        aria-invalid=[err("occurred_before").map(|_| "true")];
                    @if let Some(e) = err("occurred_before") { p.error { (e) } }
                }
                div.field {
                    button type="submit" { "Filter" }
                    @if filtered { " " a href="/console/events" { "Clear filters" } }
                }
            }
            @if !errors.general.is_empty() {
                div.alert role="alert" { @for m in &errors.general { p { (m) } } }
            }
            @if errors.is_empty() && !full {
                p.notice role="status" data-live="3" {
                    "Following the log live: new events "
                    @if filtered { "that match the filter " }
                    "appear at the end of this list."
                }
            }
            @if errors.is_empty() && found.is_empty() { p { "No event after this point yet." } }
            table {
                caption.sr { "Events, oldest first" }
                thead { tr { th scope="col" { "When (UTC)" } th scope="col" { "Event" } th scope="col" { "What happened" } } }
                tbody {
                    @for e in &found {
                        tr {
                            td data-label="When (UTC)" { (show(e.event.occurred_at, "UTC")) }
                            td data-label="Event" { code { (e.event.event_type) } }
                            td data-label="What happened" {
                                (e.event.description)
                                @if let Some(g) = e.event.access_grant_id {
                                    " · " a href={ "/console/grants/" (g.to_string()) } { "grant" }
                                }
                            }
                        }
                    }
                }
            }
            p.pager {
                @if after.is_some() { a href={ "/console/events?" (query(&f, "")) } { "From the start" } }
                @if let (true, Some(l)) = (full, last) {
                    a href={ "/console/events?" (query(&f, &l)) } rel="next" { "Next page" }
                }
            }
        },
    ));
    pages::answered(page, errors.is_empty())
}
