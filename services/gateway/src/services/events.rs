//! `keygate.v1.EventService`: an adapter over `keygate_app::events`. `WatchEvents` is a loop
//! here (the stream, its channel, the waits): it reads through the app after the watch's
//! position, and between reads waits for a ring of the doorbell, a one-second poll (rings
//! from other replicas) or shutdown.

use std::time::Duration;

use keygate_app::App;
use keygate_app::events::LoggedEvent;
use keygate_app::tokens::PageScope;
use keygate_domain::Resource;
use keygate_domain::validate;
use keygate_proto::v1::{self, event_service_server::EventService};
use keygate_wire::convert;
use keygate_wire::parse::IntoCommand as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::workspace;
use crate::error::{Reply, reply, to_status};

/// How often a watcher re-reads the log without a ring.
const POLL: Duration = Duration::from_secs(1);

/// The stream type of `WatchEvents` (what the generated trait expects).
type WatchStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<v1::WatchEventsResponse, Status>> + Send + 'static>,
>;

pub struct Events {
    pub app: App,
    /// Turns true on SIGTERM: open streams end with UNAVAILABLE so clients reconnect elsewhere.
    pub shutdown: watch::Receiver<bool>,
}

/// The event on the wire, with the webhook a `webhook.disabled` event is about.
fn wire(e: &LoggedEvent) -> v1::Event {
    let mut pb = convert::event(&e.event, e.cursor.clone());
    if let Some(id) = e.webhook_id {
        pb.webhook_id = id.to_string();
    }
    pb
}

#[tonic::async_trait]
impl EventService for Events {
    #[tracing::instrument(skip_all)]
    async fn get_event(&self, req: Request<v1::GetEventRequest>) -> Reply<v1::GetEventResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let id = validate::id("event_id", &req.get_ref().event_id, Resource::Event)?;
            let e = self.app.get_event(ws, id).await?;
            Ok(v1::GetEventResponse {
                event: Some(wire(&e)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_events(
        &self,
        req: Request<v1::ListEventsRequest>,
    ) -> Reply<v1::ListEventsResponse> {
        let ws = workspace(&req)?;
        reply(async {
            let cmd = req.into_inner().into_command()?;
            let key = format!("{:?}", cmd.filter);
            let parts = ["ListEvents", key.as_str()];
            let scope = PageScope::workspace(ws, &parts);
            let page = self
                .app
                .page_request(&scope, cmd.page_size, &cmd.page_token)?;
            let found = self.app.list_events(ws, &cmd.filter, &page).await?;
            Ok(v1::ListEventsResponse {
                events: found.items.iter().map(wire).collect(),
                next_page_token: self.app.tokens.seal(&scope, found.next_after)?,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn watch_events(
        &self,
        req: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let ws = workspace(&req)?;
        let cmd = req.into_inner().into_command().map_err(to_status)?;
        let mut w = self.app.watch_events(ws, cmd).await.map_err(to_status)?;
        let (tx, rx) = mpsc::channel(256);
        let (app, mut rings, mut shutdown) = (
            self.app.clone(),
            self.app.tracker.doorbell().subscribe(),
            self.shutdown.clone(),
        );
        tokio::spawn(async move {
            loop {
                let batch = match app.next_events(&mut w).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(to_status(e))).await;
                        return;
                    }
                };
                for e in batch {
                    let e = match app.logged_event(w.workspace(), e).await {
                        Ok(e) => e,
                        Err(err) => {
                            let _ = tx.send(Err(to_status(err))).await;
                            return;
                        }
                    };
                    let msg = v1::WatchEventsResponse {
                        event: Some(wire(&e)),
                        cursor: e.cursor,
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return; // The client went away.
                    }
                }
                if !w.caught_up() {
                    continue;
                }
                // Wait for a ring of this workspace, the poll interval, or shutdown.
                let deadline = tokio::time::sleep(POLL);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        ring = rings.recv() => match ring {
                            Ok(r) if !w.woken_by(&r) => continue,
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
