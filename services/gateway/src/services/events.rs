//! `keygate.v1.EventService`. The event log in the store is the record: listing and watching
//! both read it after a cursor, so a watcher that reconnects with its last cursor gets exactly
//! the events it missed, none twice. The doorbell only shortens the wait; a one-second poll
//! covers rings from other replicas.

use std::sync::Arc;
use std::time::Duration;

use keygate_cache::bus::Doorbell;
use keygate_domain::events::{self, EventFilter};
use keygate_domain::ids::EventId;
use keygate_domain::validate;
use keygate_domain::{Error, FieldViolation, Resource};
use keygate_proto::v1::{self, event_service_server::EventService};
use keygate_store::Store;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::principal;
use crate::error::to_status;
use keygate_app::events::{open_cursor, seal_cursor};
use keygate_app::tokens::{PageScope, PageTokens};
use keygate_wire::convert;

/// Rows read per store round trip while catching up.
const BATCH: u32 = 500;
/// How often a watcher re-reads the log without a ring.
const POLL: Duration = Duration::from_secs(1);

/// The stream type of `WatchEvents` (what the generated trait expects).
type WatchStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<v1::WatchEventsResponse, Status>> + Send + 'static>,
>;

pub struct Events {
    pub store: Arc<dyn Store>,
    pub tokens: PageTokens,
    pub doorbell: Doorbell,
    /// Turns true on SIGTERM: open streams end with UNAVAILABLE so clients reconnect elsewhere.
    pub shutdown: watch::Receiver<bool>,
}

/// `convert::event`, plus the webhook a `webhook.disabled` event is about: the log keeps it
/// beside the event (the domain event does not carry it yet), so it is read for those only.
async fn wire_event(
    store: &dyn Store,
    e: &keygate_domain::events::Event,
    cursor: String,
) -> Result<v1::Event, Error> {
    let mut wire = convert::event(e, cursor);
    if e.event_type == events::WEBHOOK_DISABLED.name
        && let Some(id) = store.event_webhook_id(e.workspace_id, e.seq).await?
    {
        wire.webhook_id = id.to_string();
    }
    Ok(wire)
}

struct RawFilter<'a> {
    event_types: &'a [String],
    access_grant_id: &'a str,
    access_method_id: &'a str,
    acs_system_id: &'a str,
    acs_entrance_id: &'a str,
    user_identity_id: &'a str,
}

fn filter(r: &RawFilter<'_>) -> Result<EventFilter, Error> {
    for (i, t) in r.event_types.iter().enumerate() {
        if events::by_name(t).is_none() {
            return Err(Error::InvalidArgument {
                violations: vec![FieldViolation::new(
                    format!("event_types[{i}]"),
                    format!("unknown event type {t:?}"),
                )],
            });
        }
    }
    Ok(EventFilter {
        event_types: r.event_types.to_vec(),
        access_grant_id: validate::optional_id(
            "access_grant_id",
            r.access_grant_id,
            Resource::AccessGrant,
        )?,
        access_method_id: validate::optional_id(
            "access_method_id",
            r.access_method_id,
            Resource::AccessMethod,
        )?,
        acs_system_id: validate::optional_id(
            "acs_system_id",
            r.acs_system_id,
            Resource::AccessSystem,
        )?,
        acs_entrance_id: validate::optional_id(
            "acs_entrance_id",
            r.acs_entrance_id,
            Resource::Entrance,
        )?,
        user_identity_id: validate::optional_id(
            "user_identity_id",
            r.user_identity_id,
            Resource::UserIdentity,
        )?,
        occurred_after: None,
        occurred_before: None,
    })
}

#[tonic::async_trait]
impl EventService for Events {
    #[tracing::instrument(skip_all)]
    async fn get_event(
        &self,
        req: Request<v1::GetEventRequest>,
    ) -> Result<Response<v1::GetEventResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let id: EventId = validate::id("event_id", &req.get_ref().event_id, Resource::Event)
            .map_err(to_status)?;
        let e = self.store.get_event(ws, id).await.map_err(to_status)?;
        let cursor = seal_cursor(&self.tokens, ws, e.seq).map_err(to_status)?;
        Ok(Response::new(v1::GetEventResponse {
            event: Some(
                wire_event(&*self.store, &e, cursor)
                    .await
                    .map_err(to_status)?,
            ),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_events(
        &self,
        req: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let mut f = filter(&RawFilter {
            event_types: &r.event_types,
            access_grant_id: &r.access_grant_id,
            access_method_id: &r.access_method_id,
            acs_system_id: &r.acs_system_id,
            acs_entrance_id: &r.acs_entrance_id,
            user_identity_id: &r.user_identity_id,
        })
        .map_err(to_status)?;
        f.occurred_after = r.occurred_after.as_ref().and_then(convert::from_ts);
        f.occurred_before = r.occurred_before.as_ref().and_then(convert::from_ts);
        let key = format!("{f:?}");
        let parts = ["ListEvents", key.as_str()];
        let scope = PageScope::workspace(ws, &parts);
        let page = super::page_request(&self.tokens, &scope, r.page_size, &r.page_token)
            .map_err(to_status)?;
        let after: i64 = page
            .after
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let found = self
            .store
            .list_events(ws, &f, after, page.limit)
            .await
            .map_err(to_status)?;
        let next = (found.len() as u32 == page.limit)
            .then(|| found.last().map(|e| e.seq.to_string()))
            .flatten();
        let mut out = Vec::with_capacity(found.len());
        for e in &found {
            let cursor = seal_cursor(&self.tokens, ws, e.seq).map_err(to_status)?;
            out.push(
                wire_event(&*self.store, e, cursor)
                    .await
                    .map_err(to_status)?,
            );
        }
        Ok(Response::new(v1::ListEventsResponse {
            events: out,
            next_page_token: self.tokens.seal(&scope, next).map_err(to_status)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn watch_events(
        &self,
        req: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let ws = principal(&req)
            .and_then(|p| p.workspace())
            .map_err(to_status)?;
        let r = req.into_inner();
        let f = filter(&RawFilter {
            event_types: &r.event_types,
            access_grant_id: &r.access_grant_id,
            access_method_id: &r.access_method_id,
            acs_system_id: &r.acs_system_id,
            acs_entrance_id: &r.acs_entrance_id,
            user_identity_id: &r.user_identity_id,
        })
        .map_err(to_status)?;
        let start = match open_cursor(&self.tokens, ws, &r.cursor).map_err(to_status)? {
            Some(seq) => seq,
            // No cursor: live from now on.
            None => self.store.latest_event_seq(ws).await.map_err(to_status)?,
        };
        let (tx, rx) = mpsc::channel(256);
        let (store, tokens, mut rings, mut shutdown) = (
            self.store.clone(),
            self.tokens.clone(),
            self.doorbell.subscribe(),
            self.shutdown.clone(),
        );
        let ws_key = ws.to_string();
        tokio::spawn(async move {
            let mut after = start;
            loop {
                let batch = match store.list_events(ws, &f, after, BATCH).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(to_status(e))).await;
                        return;
                    }
                };
                for e in &batch {
                    after = e.seq;
                    let cursor = match seal_cursor(&tokens, ws, e.seq) {
                        Ok(c) => c,
                        Err(err) => {
                            let _ = tx.send(Err(to_status(err))).await;
                            return;
                        }
                    };
                    let event = match wire_event(&*store, e, cursor.clone()).await {
                        Ok(w) => w,
                        Err(err) => {
                            let _ = tx.send(Err(to_status(err))).await;
                            return;
                        }
                    };
                    let msg = v1::WatchEventsResponse {
                        event: Some(event),
                        cursor,
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return; // The client went away.
                    }
                }
                if batch.len() as u32 == BATCH {
                    continue;
                }
                // Wait for a ring of this workspace, the poll interval, or shutdown.
                let deadline = tokio::time::sleep(POLL);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        ring = rings.recv() => match ring {
                            Ok(r) if r.workspace_id != ws_key || r.seq <= after => continue,
                            _ => break,
                        },
                        _ = &mut deadline => break,
                        _ = tx.closed() => return,
                        _ = shutdown.changed() => {
                            let _ = tx.send(Err(Status::unavailable("server is shutting down; reconnect with your last cursor"))).await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
