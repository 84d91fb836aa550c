//! Connected access systems: connect one (type, name, time zone, settings, credentials), its
//! health (errors, warnings, last sync), sync it now, disconnect it. Credentials go from the form
//! to `ConnectAccessSystem`, which seals them; they are never shown or logged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate_domain::ids::AccessSystemId;
use keygate_domain::model::AccessSystem;
use keygate_domain::{Error, Resource, validate};
use keygate_proto::v1;
use keygate_wire::parse::IntoCommand as _;
use maud::{Markup, html};

use crate::forms::{Errors, FormData};
use crate::pages;
use crate::time_fields::show;
use crate::{Console, Ctx, check_csrf, see_other, signed_in};

type St = State<Arc<Console>>;

/// `key=value` lines of a textarea; a line without `=` is an error on the field.
fn pairs(raw: &str, field: &str, errors: &mut Errors) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in raw.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            _ => errors.push(field, "one key=value per line"),
        }
    }
    out
}

/// The health of a system and its actions, for the system's page.
pub fn health(ctx: &Ctx, s: &AccessSystem, notice: Option<&str>, errors: &Errors) -> Markup {
    let h = &s.health;
    html! {
        section aria-labelledby="health-title" {
            h2 #health-title { "Connection" }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            @if !errors.general.is_empty() {
                div.alert role="alert" { @for m in &errors.general { p { (m) } } }
            }
            @if let Some(t) = h.disconnected_at {
                p { "Disconnected " (show(t, "UTC")) " UTC: Keygate calls it no more." }
            } @else {
                p {
                    @if h.errors.is_empty() { "Working." } @else { "Not working." }
                    @if let Some(t) = h.last_synced_at { " Last synced " (show(t, "UTC")) " UTC." }
                }
                @for e in &h.errors { p.error { (e.message) " (" (e.code) ")" } }
                @for w in &h.warnings { p.hint { "Warning: " (w.message) } }
                form.inline method="post" action={ "/console/systems/" (s.id.to_string()) "/sync" } {
                    input type="hidden" name="csrf" value=(ctx.session.csrf);
                    button type="submit" { "Sync now" }
                }
                details {
                    summary { "Disconnect…" }
                    form method="post" action={ "/console/systems/" (s.id.to_string()) "/disconnect" } {
                        input type="hidden" name="csrf" value=(ctx.session.csrf);
                        div.check {
                            input #f-confirm type="checkbox" name="confirm" value="yes" required;
                            label for="f-confirm" { "Disconnect " (s.name) ": Keygate stops calling it and forgets its credentials" }
                        }
                        button type="submit" { "Disconnect" }
                    }
                }
            }
        }
    }
}

const CONNECT_FIELDS: &[&str] = &[
    "system_type",
    "name",
    "time_zone",
    "settings",
    "credentials",
];

/// The Connect form of the systems page, with the types this server has adapters for.
pub fn connect_form(ctx: &Ctx, types: &[String], f: &FormData, errors: &Errors) -> Markup {
    let err = |n: &str| errors.field(n).map(str::to_owned);
    html! {
        details.dialog open[!errors.is_empty()] {
            summary.button { "Connect an access system" }
            form.card method="post" action="/console/systems" {
                h2 { "Connect an access system" }
                input type="hidden" name="csrf" value=(ctx.session.csrf);
                input type="hidden" name="request_id" value=(match f.get("request_id") { "" => uuid::Uuid::new_v4().to_string(), s => s.to_owned() });
                @if !errors.general.is_empty() {
                    div.alert role="alert" { @for m in &errors.general { p { (m) } } }
                }
                div.field {
                    label for="f-system_type" { "Type" }
                    select #f-system_type name="system_type" {
                        @for t in types { option value=(t) selected[f.get("system_type") == t.as_str()] { (t) } }
                    }
                    @if let Some(e) = err("system_type") { p.error { (e) } }
                }
                div.field {
                    label for="f-name" { "Name (optional)" }
                    input #f-name type="text" name="name" value=(f.get("name"));
                    @if let Some(e) = err("name") { p.error { (e) } }
                }
                div.field {
                    label for="f-time_zone" { "Time zone (optional)" }
                    input #f-time_zone type="text" name="time_zone" value=(f.get("time_zone")) placeholder="Europe/Paris";
                    @if let Some(e) = err("time_zone") { p.error { (e) } }
                }
                div.field {
                    label for="f-settings" { "Settings" }
                    textarea #f-settings name="settings" rows="3" aria-describedby="f-settings-hint" { (f.get("settings")) }
                    p.hint #f-settings-hint { "One key=value per line, such as address=https://…" }
                    @if let Some(e) = err("settings") { p.error { (e) } }
                }
                div.field {
                    label for="f-credentials" { "Credentials" }
                    textarea #f-credentials name="credentials" rows="2" autocomplete="off" aria-describedby="f-credentials-hint" {}
                    p.hint #f-credentials-hint { "One key=value per line; sealed when stored, never shown again (retype them after a refusal)." }
                    @if let Some(e) = err("credentials") { p.error { (e) } }
                }
                button type="submit" { "Connect" }
            }
        }
    }
}

pub async fn connect(State(c): St, headers: HeaderMap, body: Bytes) -> Response {
    let ctx = match signed_in(&c, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = FormData::parse(&body);
    if let Err(r) = check_csrf(&ctx.session, &f) {
        return r;
    }
    let mut errors = Errors::default();
    let settings = pairs(f.get("settings"), "settings", &mut errors);
    let credentials = pairs(f.get("credentials"), "credentials", &mut errors);
    if errors.is_empty() {
        let req = v1::ConnectAccessSystemRequest {
            system_type: f.get("system_type").to_owned(),
            name: f.get("name").to_owned(),
            time_zone: f.get("time_zone").to_owned(),
            request_id: f.get("request_id").to_owned(),
            settings,
            credentials,
        };
        let connected = match req.into_command() {
            Ok(cmd) => c.app.connect_access_system(ctx.ws, cmd).await,
            Err(e) => Err(e),
        };
        match connected {
            Ok(s) => return see_other(&format!("/console/systems/{}", s.id)),
            Err(e) => errors = Errors::of(&e, CONNECT_FIELDS),
        }
    }
    // The form again, with what was typed (but not the credentials).
    let mut kept = f.clone();
    kept.0.retain(|(k, _)| k != "credentials");
    crate::handlers::systems_page(&c, &ctx, &kept, &errors).await
}

fn system_id(raw: &str) -> Result<AccessSystemId, Response> {
    validate::id::<AccessSystemId>("acs_system_id", raw, Resource::AccessSystem).map_err(|_| {
        pages::failure(&Error::NotFound {
            resource: Resource::AccessSystem,
            id: raw.to_owned(),
        })
    })
}

pub async fn sync(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = match signed_in(&c, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = FormData::parse(&body);
    if let Err(r) = check_csrf(&ctx.session, &f) {
        return r;
    }
    let id = match system_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    match c.app.sync_access_system(ctx.ws, id).await {
        Ok((_, report)) => {
            let notice = format!(
                "Synced: {} entrance(s) added, {} removed, {} restored; {} access group(s) added, {} removed.",
                report.entrances_added.len(),
                report.entrances_removed.len(),
                report.entrances_restored.len(),
                report.access_groups_added,
                report.access_groups_removed
            );
            crate::handlers::system_with(&c, &ctx, id, Some(&notice), &Errors::default()).await
        }
        Err(e @ Error::NotFound { .. }) => pages::failure(&e),
        Err(e) => {
            let page = crate::handlers::system_with(&c, &ctx, id, None, &Errors::of(&e, &[])).await;
            (StatusCode::UNPROCESSABLE_ENTITY, page).into_response()
        }
    }
}

pub async fn disconnect(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let ctx = match signed_in(&c, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = FormData::parse(&body);
    if let Err(r) = check_csrf(&ctx.session, &f) {
        return r;
    }
    let id = match system_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if f.get("confirm") != "yes" {
        let mut errors = Errors::default();
        errors
            .general
            .push("Tick the confirmation to disconnect.".to_owned());
        return crate::handlers::system_with(&c, &ctx, id, None, &errors).await;
    }
    match c.app.disconnect_access_system(ctx.ws, id).await {
        Ok(_) => see_other(&format!("/console/systems/{id}")),
        Err(e) => pages::failure(&e),
    }
}
