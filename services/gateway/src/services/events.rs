//! `keygate.v1.EventService`: an adapter over `keygate_app::events`. `WatchEvents` is a loop
//! here (the stream, its channel, the waits): it reads through the app after the watch's
//! position, and between reads waits for a ring of the doorbell, a one-second poll (rings
//! from other replicas) or shutdown.
//!
//! Streams are bounded: a workspace may hold [`StreamLimits::per_workspace`] open at once in
//! this process (more are refused with RESOURCE_EXHAUSTED, `WATCH_STREAM_LIMIT_REACHED`), and
//! every [`StreamLimits::recheck_every`] a stream checks that its API key still stands, so it
//! ends with UNAUTHENTICATED within seconds of the key's revocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate_app::App;
use keygate_app::events::LoggedEvent;
use keygate_app::tokens::PageScope;
use keygate_domain::ids::WorkspaceId;
use keygate_domain::validate;
use keygate_domain::{Error, ErrorReason, Resource};
use keygate_proto::v1::{self, event_service_server::EventService};
use keygate_wire::convert;
use keygate_wire::parse::IntoCommand as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, principal, workspace};
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
    /// Re-checks a stream's API key while it is open.
    pub auth: Authenticator,
    /// The open streams of each workspace, and their limits.
    pub streams: Arc<OpenStreams>,
}

/// Limits of `WatchEvents` streams.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// Streams one workspace may hold open at once in this process; 0: no limit.
    pub per_workspace: usize,
    /// How often an open stream checks that its API key was not revoked.
    pub recheck_every: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            per_workspace: 100,
            recheck_every: Duration::from_secs(3),
        }
    }
}

/// The open streams of each workspace. A stream holds a [`StreamSlot`] for its lifetime.
pub struct OpenStreams {
    limits: StreamLimits,
    open: Mutex<HashMap<WorkspaceId, usize>>,
}

/// One open stream's place in its workspace's count; dropping it frees the place.
pub struct StreamSlot {
    streams: Arc<OpenStreams>,
    workspace: WorkspaceId,
}

impl OpenStreams {
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            limits,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// A place for one more stream of `ws`, or the refusal when it has as many as it may.
    pub fn open(self: &Arc<Self>, ws: WorkspaceId) -> Result<StreamSlot, Error> {
        let max = self.limits.per_workspace;
        let mut open = self.open.lock().map_err(|_| Error::Internal {
            message: "stream counts lock poisoned".into(),
        })?;
        let n = open.entry(ws).or_insert(0);
        if max > 0 && *n >= max {
            keygate_telemetry::metrics::limit_refused("watch_streams");
            return Err(Error::LimitReached {
                reason: ErrorReason::WatchStreamLimitReached,
                message: format!(
                    "this workspace already has {max} WatchEvents streams open; close one first"
                ),
                retry_after: None,
            });
        }
        *n += 1;
        Ok(StreamSlot {
            streams: self.clone(),
            workspace: ws,
        })
    }

    /// Streams of `ws` open now.
    pub fn count(&self, ws: WorkspaceId) -> usize {
        self.open
            .lock()
            .map(|o| o.get(&ws).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.streams.open.lock()
            && let Some(n) = open.get_mut(&self.workspace)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.workspace);
            }
        }
    }
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
        let caller = principal(&req).map_err(to_status)?;
        let slot = self.streams.open(ws).map_err(to_status)?;
        let cmd = req.into_inner().into_command().map_err(to_status)?;
        let mut w = self.app.watch_events(ws, cmd).await.map_err(to_status)?;
        let (tx, rx) = mpsc::channel(256);
        let (app, auth, mut rings, mut shutdown) = (
            self.app.clone(),
            self.auth.clone(),
            self.app.tracker.doorbell().subscribe(),
            self.shutdown.clone(),
        );
        let recheck_every = self.streams.limits().recheck_every;
        tokio::spawn(async move {
            // Held until the stream ends, whichever way.
            let _slot = slot;
            let mut checked = Instant::now();
            loop {
                if checked.elapsed() >= recheck_every {
                    checked = Instant::now();
                    match auth.recheck(&caller).await {
                        Ok(()) => {}
                        Err(e @ Error::Unauthenticated { .. }) => {
                            tracing::info!(workspace_id = %ws, "watch ended: its API key no longer stands");
                            let _ = tx.send(Err(to_status(e))).await;
                            return;
                        }
                        // The store or cache failing is not the key failing: the stream goes on
                        // (its next read fails the same way if the store is down).
                        Err(e) => {
                            tracing::debug!(error = %e, "could not re-check the stream's key")
                        }
                    }
                }
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
