//! The events view: the workspace's event log, oldest first, a page at a time; the last page
//! follows the log live (it reloads while it is not full, so new events appear at its end).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use keygate_app::events::open_cursor;
use keygate_domain::events::EventFilter;
use keygate_domain::page::PageRequest;
use maud::html;
use serde::Deserialize;

use crate::pages::{self, layout, render};
use crate::time_fields::show;
use crate::{Console, signed_in};

/// Events on one page.
const PAGE: u32 = 100;

#[derive(Deserialize)]
pub struct Position {
    /// The cursor of the event this page starts after (empty: the start of the log).
    #[serde(default)]
    after: String,
}

pub async fn list(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(at): Query<Position>,
) -> Response {
    let ctx = match signed_in(&c, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let after = match open_cursor(&c.app.tokens, ctx.ws, &at.after) {
        Ok(seq) => seq,
        Err(e) => return pages::failure(&e),
    };
    let found = match c
        .app
        .list_events(
            ctx.ws,
            &EventFilter::default(),
            &PageRequest {
                after: after.map(|s| s.to_string()),
                limit: PAGE,
            },
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return pages::failure(&e),
    };
    let full = found.items.len() as u32 == PAGE;
    let last = found.items.last().map(|e| e.cursor.clone());
    render(layout(
        "Events",
        Some(&ctx),
        html! {
            h1 { "Events" }
            @if !full {
                p.notice role="status" data-live="3" { "Following the log live: new events appear at the end of this list." }
            }
            @if found.items.is_empty() { p { "No event after this point yet." } }
            table {
                caption.sr { "Events, oldest first" }
                thead { tr { th scope="col" { "When (UTC)" } th scope="col" { "Event" } th scope="col" { "What happened" } } }
                tbody {
                    @for e in &found.items {
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
            p {
                @if after.is_some() { a href="/console/events" { "From the start" } " " }
                @if let (true, Some(l)) = (full, last) {
                    a href={ "/console/events?after=" (l) } { "Next page" }
                }
            }
        },
    ))
}
