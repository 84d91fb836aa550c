//! The event log: reading it (get, list, watch) and the cursors a listing or a watch resumes
//! from. The log in the store is the record: listing and watching both read it after a
//! position, so a watcher that reconnects with its last cursor gets exactly the events it
//! missed, none twice. The doorbell only shortens a watcher's wait.

use keygate_cache::bus::Ring;
use keygate_domain::events::{self, Event, EventFilter};
use keygate_domain::ids::{EventId, WebhookId, WorkspaceId};
use keygate_domain::page::{Page, PageRequest};
use keygate_domain::{Error, ErrorReason};

use crate::App;
use crate::tokens::{PageScope, PageTokens};

/// Events a watch reads per store round trip while catching up.
pub const WATCH_BATCH: u32 = 500;

/// Cursors are sealed like page tokens, bound to the workspace (not to a filter: one cursor
/// resumes any watch of that workspace).
fn cursor_scope(ws: WorkspaceId) -> PageScope<'static> {
    PageScope::workspace(ws, &["event_cursor"])
}

/// The cursor of the event at `seq` (also the `cursor` of webhook deliveries).
pub fn seal_cursor(tokens: &PageTokens, ws: WorkspaceId, seq: i64) -> Result<String, Error> {
    tokens.seal(&cursor_scope(ws), Some(seq.to_string()))
}

pub fn open_cursor(
    tokens: &PageTokens,
    ws: WorkspaceId,
    cursor: &str,
) -> Result<Option<i64>, Error> {
    let bad = |_| Error::InvalidToken {
        reason: ErrorReason::InvalidCursor,
        message: "cursor is invalid or from another workspace".into(),
    };
    match tokens.open(&cursor_scope(ws), cursor).map_err(bad)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| Error::InvalidToken {
            reason: ErrorReason::InvalidCursor,
            message: "cursor is malformed".into(),
        }),
    }
}

/// An event as callers see it: with its cursor, and the webhook a `webhook.disabled` event is
/// about (the log keeps it beside the event; the domain event does not carry it yet).
#[derive(Clone, Debug)]
pub struct LoggedEvent {
    pub event: Event,
    pub cursor: String,
    pub webhook_id: Option<WebhookId>,
}

/// A validated `ListEvents`: the filter, and the page as asked (its scope depends on the
/// filter).
#[derive(Clone, Debug)]
pub struct ListEvents {
    pub filter: EventFilter,
    pub page_size: i32,
    pub page_token: String,
}

/// A validated `WatchEvents`.
#[derive(Clone, Debug)]
pub struct WatchEvents {
    pub filter: EventFilter,
    /// Empty: live from now on.
    pub cursor: String,
}

/// An open watch: where it stands in the log and what it wants. `WatchEvents` streams hand it
/// to the process's tail (`crate::event_tail`); a lone reader may also loop on
/// [`App::next_events`], waiting for a ring (see [`EventWatch::woken_by`]) whenever it has
/// caught up.
#[derive(Debug)]
pub struct EventWatch {
    workspace: WorkspaceId,
    workspace_key: String,
    filter: EventFilter,
    after: i64,
    caught_up: bool,
}

impl EventWatch {
    pub fn workspace(&self) -> WorkspaceId {
        self.workspace
    }

    /// Whether the last batch read everything there was (wait before reading again).
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// The filter and the position the watch starts after (for the process's event tail).
    pub fn into_parts(self) -> (EventFilter, i64) {
        (self.filter, self.after)
    }

    /// Whether a ring of the doorbell announces events this watch has not read yet.
    pub fn woken_by(&self, ring: &Ring) -> bool {
        ring.workspace_id == self.workspace_key && ring.seq > self.after
    }
}

impl App {
    pub async fn get_event(&self, ws: WorkspaceId, id: EventId) -> Result<LoggedEvent, Error> {
        let e = self.store.get_event(ws, id).await?;
        self.logged_event(ws, e).await
    }

    /// Events oldest first, after the page's position.
    pub async fn list_events(
        &self,
        ws: WorkspaceId,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<LoggedEvent>, Error> {
        let after: i64 = page
            .after
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let found = self
            .store
            .list_events(ws, filter, after, page.limit)
            .await?;
        let next_after = (found.len() as u32 == page.limit)
            .then(|| found.last().map(|e| e.seq.to_string()))
            .flatten();
        let mut items = Vec::with_capacity(found.len());
        for e in found {
            items.push(self.logged_event(ws, e).await?);
        }
        Ok(Page { items, next_after })
    }

    /// Opens a watch: after the cursor's event, or, without a cursor, after the newest event.
    pub async fn watch_events(
        &self,
        ws: WorkspaceId,
        cmd: WatchEvents,
    ) -> Result<EventWatch, Error> {
        let WatchEvents { filter, cursor } = cmd;
        let after = match open_cursor(&self.tokens, ws, &cursor)? {
            Some(seq) => seq,
            None => self.store.latest_event_seq(ws).await?,
        };
        Ok(EventWatch {
            workspace: ws,
            workspace_key: ws.to_string(),
            filter,
            after,
            caught_up: false,
        })
    }

    /// The next events of a watch that pass its filter, at most [`WATCH_BATCH`], oldest
    /// first; the watch moves past them. Present each with [`App::logged_event`].
    pub async fn next_events(&self, w: &mut EventWatch) -> Result<Vec<Event>, Error> {
        let batch = self
            .store
            .list_events(w.workspace, &w.filter, w.after, WATCH_BATCH)
            .await?;
        if let Some(last) = batch.last() {
            w.after = last.seq;
        }
        w.caught_up = (batch.len() as u32) < WATCH_BATCH;
        Ok(batch)
    }

    /// An event with its cursor and, for `webhook.disabled`, its webhook.
    pub async fn logged_event(&self, ws: WorkspaceId, event: Event) -> Result<LoggedEvent, Error> {
        let cursor = seal_cursor(&self.tokens, ws, event.seq)?;
        let webhook_id = if event.event_type == events::WEBHOOK_DISABLED.name {
            self.store
                .event_webhook_id(event.workspace_id, event.seq)
                .await?
        } else {
            None
        };
        Ok(LoggedEvent {
            event,
            cursor,
            webhook_id,
        })
    }
}
