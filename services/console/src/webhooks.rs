//! Webhooks: create (the signing secret shown once), list, a webhook's deliveries, delete.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use keygate_domain::ids::WebhookId;
use keygate_domain::page::PageRequest;
use keygate_domain::{Error, Resource, validate};
use keygate_proto::v1;
use keygate_wire::parse::IntoCommand as _;
use maud::html;

use crate::forms::{Errors, FormData};
use crate::pages::{self, layout, render};
use crate::time_fields::show;
use crate::{Console, Ctx, check_csrf, see_other, signed_in};

type St = State<Arc<Console>>;

/// Deliveries shown on a webhook's page.
const DELIVERIES: u32 = 100;

async fn list_page(
    c: &Console,
    ctx: &Ctx,
    f: &FormData,
    errors: &Errors,
    created: Option<(WebhookId, String)>,
) -> Response {
    let hooks = match c
        .app
        .list_webhooks(
            ctx.ws,
            &PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await
    {
        Ok(p) => p.items,
        Err(e) => return pages::failure(&e),
    };
    let request_id = match f.get("request_id") {
        "" => uuid::Uuid::new_v4().to_string(),
        s => s.to_owned(),
    };
    let url_err = errors.field("url");
    let types_err = errors.field("event_types");
    let page = render(layout(
        "Webhooks",
        Some(ctx),
        html! {
            h1 { "Webhooks" }
            @if let Some((id, secret)) = &created {
                div.notice role="status" {
                    p { "Webhook created. Its signing secret is shown this once: keep it to verify deliveries." }
                    div.copyrow {
                        label.sr for="wh-secret" { "Signing secret" }
                        input #wh-secret type="text" readonly value=(secret);
                        button.copy type="button" data-copy=(secret) aria-label="Copy the signing secret" { "Copy" }
                    }
                    p { a href={ "/console/webhooks/" (id.to_string()) } { "See its deliveries" } }
                }
            }
            form.card method="post" action="/console/webhooks" {
                h2 { "New webhook" }
                input type="hidden" name="csrf" value=(ctx.session.csrf);
                input type="hidden" name="request_id" value=(request_id);
                @if !errors.general.is_empty() {
                    div.alert role="alert" { @for m in &errors.general { p { (m) } } }
                }
                div.field {
                    label for="f-url" { "URL" }
                    input #f-url type="text" name="url" value=(f.get("url")) placeholder="https://"
                        aria-invalid=[url_err.map(|_| "true")] aria-describedby=[url_err.map(|_| "f-url-err")];
                    @if let Some(e) = url_err { p.error #f-url-err { (e) } }
                }
                div.field {
                    label for="f-event_types" { "Event types" }
                    input #f-event_types type="text" name="event_types" value=(f.get("event_types"))
                        aria-describedby="f-event_types-hint";
                    p.hint #f-event_types-hint { "Separated by spaces or commas, such as access_grant.created. Empty: every event." }
                    @if let Some(e) = types_err { p.error { (e) } }
                }
                button type="submit" { "Create webhook" }
            }
            table {
                caption.sr { "Webhooks of this workspace" }
                thead { tr { th scope="col" { "URL" } th scope="col" { "Events" } th scope="col" { "State" } } }
                tbody {
                    @for h in &hooks {
                        tr {
                            td data-label="URL" { a href={ "/console/webhooks/" (h.id.to_string()) } { (h.url) } }
                            td data-label="Events" { @if h.event_types.is_empty() { "all" } @else { (h.event_types.join(", ")) } }
                            td data-label="State" {
                                @if h.is_enabled { "enabled" } @else { "disabled" @if let Some(r) = &h.disabled_reason { ": " (r) } }
                                @if h.consecutive_failures > 0 { " · " (h.consecutive_failures) " failure(s) in a row" }
                            }
                        }
                    }
                }
            }
        },
    ));
    crate::pages::answered(page, errors.is_empty())
}

pub async fn list(State(c): St, headers: HeaderMap) -> Response {
    let ctx = match signed_in(&c, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    list_page(&c, &ctx, &FormData::default(), &Errors::default(), None).await
}

pub async fn create(State(c): St, headers: HeaderMap, body: Bytes) -> Response {
    let ctx = match signed_in(&c, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = FormData::parse(&body);
    if let Err(r) = check_csrf(&ctx.session, &f) {
        return r;
    }
    let req = v1::CreateWebhookRequest {
        request_id: f.get("request_id").to_owned(),
        url: f.get("url").to_owned(),
        event_types: f
            .get("event_types")
            .split([' ', ','])
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    let created = match req.into_command() {
        Ok(cmd) => c.app.create_webhook(ctx.ws, cmd).await,
        Err(e) => Err(e),
    };
    match created {
        Ok((hook, secret)) => {
            list_page(
                &c,
                &ctx,
                &FormData::default(),
                &Errors::default(),
                Some((hook.id, secret)),
            )
            .await
        }
        Err(e) => list_page(&c, &ctx, &f, &Errors::of(&e, &["url", "event_types"]), None).await,
    }
}

fn webhook_id(raw: &str) -> Result<WebhookId, Response> {
    validate::id::<WebhookId>("webhook_id", raw, Resource::Webhook).map_err(|_| {
        pages::failure(&Error::NotFound {
            resource: Resource::Webhook,
            id: raw.to_owned(),
        })
    })
}

pub async fn detail(State(c): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = match signed_in(&c, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id = match webhook_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let hook = match c.app.get_webhook(ctx.ws, id).await {
        Ok(h) => h,
        Err(e) => return pages::failure(&e),
    };
    let deliveries = match c.app.list_webhook_deliveries(ctx.ws, id, DELIVERIES).await {
        Ok(d) => d,
        Err(e) => return pages::failure(&e),
    };
    render(layout(
        "Webhook",
        Some(&ctx),
        html! {
            p.crumbs { a href="/console/webhooks" { "Webhooks" } " › " (hook.url) }
            h1 { "Webhook" }
            p { code { (hook.url) } }
            p {
                @if hook.is_enabled { "Enabled." } @else { "Disabled" @if let Some(r) = &hook.disabled_reason { ": " (r) } "." }
                @if let Some(t) = hook.last_success_at { " Last success " (show(t, "UTC")) " UTC." }
            }
            h2 { "Deliveries" }
            @if deliveries.is_empty() { p { "None yet." } }
            table {
                caption.sr { "Deliveries, in event order" }
                thead { tr { th scope="col" { "Event" } th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Last answer" } } }
                tbody {
                    @for d in &deliveries {
                        tr {
                            td data-label="Event" { code { (d.event_id.to_string()) } }
                            td data-label="Status" { (d.status) }
                            td data-label="Attempts" { (d.attempts) }
                            td data-label="Last answer" {
                                @if let Some(s) = d.last_status_code { "HTTP " (s) }
                                @if let Some(e) = &d.last_error { " " (e) }
                            }
                        }
                    }
                }
            }
            form method="post" action={ "/console/webhooks/" (hook.id.to_string()) "/delete" } {
                input type="hidden" name="csrf" value=(ctx.session.csrf);
                button type="submit" { "Delete this webhook" }
            }
        },
    ))
}

pub async fn delete(
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
    let id = match webhook_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    match c.app.delete_webhook(ctx.ws, id).await {
        Ok(()) => see_other("/console/webhooks"),
        Err(e) => pages::failure(&e),
    }
}
