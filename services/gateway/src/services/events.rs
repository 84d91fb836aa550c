//! `keygate.v1.EventService`: an adapter over `keygate_app::events`. A `WatchEvents` stream
//! is a place in the process's one tail of the event log (`keygate_app::event_tail`), which
//! reads the log once per ring of the doorbell or poll for every stream and fans events out;
//! the stream here only turns them into messages, re-checks its key and ends on shutdown or
//! when the tail cut it for reading too slowly (UNAVAILABLE with its resume cursor in
//! `ErrorInfo.metadata["cursor"]`).
//!
//! Streams are bounded: a workspace may hold [`StreamLimits::per_workspace`] open at once in
//! this process (more are refused with RESOURCE_EXHAUSTED, `WATCH_STREAM_LIMIT_REACHED`), and
//! every [`StreamLimits::recheck_every`] a stream checks that its API key still stands, so it
//! ends with UNAUTHENTICATED within seconds of the key's revocation.
//!
//! The service is served as [`EventServer`]: the generated server for every method but
//! `WatchEvents`, whose replies are encoded through a small buffer ([`WatchCodec`]): tonic's
//! default, 8 KiB allocated for every response stream, was most of what an idle stream cost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_app::App;
use keygate_app::event_tail::{EventTail, Next, Subscription};
use keygate_app::events::LoggedEvent;
use keygate_app::tokens::PageScope;
use keygate_domain::ids::WorkspaceId;
use keygate_domain::validate;
use keygate_domain::{Error, ErrorReason, Resource};
use keygate_proto::v1::{self, event_service_server::EventService};
use keygate_wire::convert;
use keygate_wire::parse::IntoCommand as _;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, Principal, principal, workspace};
use crate::error::{Reply, ended_with_cursor, reply, to_status};

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
    /// The process's one tail of the event log, which every stream waits on.
    pub tail: EventTail,
    /// One re-check per API key with open streams, shared by its streams.
    pub key_checks: Arc<KeyChecks>,
}

/// Limits of `WatchEvents` streams.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// Streams one workspace may hold open at once in this process; 0: no limit.
    pub per_workspace: usize,
    /// How often an open stream checks that its API key was not revoked.
    pub recheck_every: Duration,
    /// Events one stream may have waiting on the server; a stream whose client reads too
    /// slowly to keep it from filling is ended with UNAVAILABLE (`WATCH_TOO_SLOW`) and its
    /// resume cursor.
    pub buffer: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            per_workspace: 100,
            recheck_every: Duration::from_secs(3),
            buffer: 256,
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

/// Why a key no longer stands, once its re-check found out.
type Verdict = Option<(ErrorReason, String)>;

/// The re-checks of the API keys that have open streams: one task per key, every
/// [`StreamLimits::recheck_every`], whatever the number of its streams, each of which waits on
/// the key's verdict. (A check per stream woke every stream every few seconds: idle CPU that grew
/// with the number of streams.) The task ends when the key's last stream has, or after it
/// found the key revoked.
pub struct KeyChecks {
    auth: Authenticator,
    every: Duration,
    keys: Mutex<HashMap<keygate_domain::ids::ApiKeyId, watch::Receiver<Verdict>>>,
}

impl KeyChecks {
    pub fn new(auth: Authenticator, every: Duration) -> Self {
        Self {
            auth,
            every,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The verdict of `caller`'s key, checked from now on; `None` for a caller without one.
    fn watch(self: &Arc<Self>, caller: &Principal) -> Option<watch::Receiver<Verdict>> {
        let Principal::Workspace { api_key_id, .. } = *caller else {
            return None;
        };
        // The map is only inserted into and removed from: a poisoned lock still holds a whole one.
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = keys.get(&api_key_id) {
            return Some(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        keys.insert(api_key_id, rx.clone());
        drop(keys);
        tokio::spawn(self.clone().check(*caller, api_key_id, tx));
        Some(rx)
    }

    async fn check(
        self: Arc<Self>,
        caller: Principal,
        id: keygate_domain::ids::ApiKeyId,
        tx: watch::Sender<Verdict>,
    ) {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Under the lock, so a stream subscribing now either finds this task or starts one.
            {
                let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
                if tx.receiver_count() <= 1 {
                    keys.remove(&id);
                    return;
                }
            }
            match self.auth.recheck(&caller).await {
                Ok(()) => {}
                Err(Error::Unauthenticated { reason, message }) => {
                    tracing::info!(api_key_id = %id, "watches end: their API key no longer stands");
                    self.keys
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    let _ = tx.send(Some((reason, message)));
                    return;
                }
                // The store or cache failing is not the key failing: the streams go on.
                Err(e) => tracing::debug!(error = %e, "could not re-check the streams' key"),
            }
        }
    }
}

/// Bytes a `WatchEvents` stream's encoder starts with (tonic's default is 8 KiB). One event is a
/// few hundred bytes; the buffer grows when a message, or a burst the client has not taken yet,
/// needs more.
const WATCH_ENCODE_BUFFER: usize = 1024;

/// How much encoded data a stream gathers before yielding (tonic's default).
const WATCH_YIELD_THRESHOLD: usize = 32 * 1024;

/// The codec of `WatchEvents`: prost, with a small encode buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchCodec;

impl tonic::codec::Codec for WatchCodec {
    type Encode = v1::WatchEventsResponse;
    type Decode = v1::WatchEventsRequest;
    type Encoder = tonic_prost::ProstEncoder<v1::WatchEventsResponse>;
    type Decoder = tonic_prost::ProstDecoder<v1::WatchEventsRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::new(
            WATCH_ENCODE_BUFFER,
            WATCH_YIELD_THRESHOLD,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(tonic::codec::BufferSettings::default())
    }
}

const WATCH_EVENTS_PATH: &str = "/keygate.v1.EventService/WatchEvents";

/// `keygate.v1.EventService` as the server serves it: the generated server for every method
/// but `WatchEvents`, which is encoded through [`WatchCodec`].
#[derive(Clone)]
pub struct EventServer {
    generated: v1::event_service_server::EventServiceServer<Events>,
    events: Arc<Events>,
    max_message_bytes: usize,
}

impl EventServer {
    /// The service, with `max_message_bytes` as the largest request and reply of every method.
    pub fn new(events: Events, max_message_bytes: usize) -> Self {
        let events = Arc::new(events);
        Self {
            generated: v1::event_service_server::EventServiceServer::from_arc(events.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            events,
            max_message_bytes,
        }
    }
}

impl tonic::server::NamedService for EventServer {
    const NAME: &'static str =
        <v1::event_service_server::EventServiceServer<Events> as tonic::server::NamedService>::NAME;
}

/// `WatchEvents` as tonic's server-streaming handler.
struct WatchHandler(Arc<Events>);

impl tonic::server::ServerStreamingService<v1::WatchEventsRequest> for WatchHandler {
    type Response = v1::WatchEventsResponse;
    type ResponseStream = WatchStream;
    type Future = tonic::codegen::BoxFuture<Response<WatchStream>, Status>;

    fn call(&mut self, request: Request<v1::WatchEventsRequest>) -> Self::Future {
        let events = self.0.clone();
        Box::pin(async move { events.watch_events(request).await })
    }
}

impl<B> tower::Service<http::Request<B>> for EventServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != WATCH_EVENTS_PATH {
            return self.generated.call(req);
        }
        let handler = WatchHandler(self.events.clone());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(WatchCodec)
                .apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.server_streaming(handler, req).await)
        })
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
        let sub = self.tail.watch(ws, cmd).await.map_err(to_status)?;
        let state = Watching {
            sub,
            key: self.key_checks.watch(&caller),
            shutdown: self.shutdown.clone(),
            _slot: slot,
            ended: false,
        };
        Ok(Response::new(Box::pin(Unfold::new(state, Watching::step))))
    }
}

/// One open stream: no task and no channel of its own; tonic polls it when the client can take
/// more, and it waits on its place in the process's event tail meanwhile.
struct Watching {
    sub: Subscription,
    /// The verdict of the stream's key ([`KeyChecks`]); `None` once no more can come.
    key: Option<watch::Receiver<Verdict>>,
    shutdown: watch::Receiver<bool>,
    /// Held until the stream ends, whichever way.
    _slot: StreamSlot,
    ended: bool,
}

type Item = Result<v1::WatchEventsResponse, Status>;

impl Watching {
    /// The stream's end with its resume cursor (`ErrorInfo.metadata["cursor"]`).
    fn end(&mut self, reason: ErrorReason, message: &str) -> Status {
        self.ended = true;
        match self.sub.resume_cursor() {
            Ok(cursor) => ended_with_cursor(reason, message, cursor),
            Err(e) => to_status(e),
        }
    }

    async fn step(mut self) -> Option<(Item, Self)> {
        if self.ended {
            return None;
        }
        loop {
            if *self.shutdown.borrow() {
                let s = self.end(
                    ErrorReason::ServerDraining,
                    "server is shutting down; reconnect with the cursor in ErrorInfo metadata",
                );
                return Some((Err(s), self));
            }
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => continue,
                changed = key_changed(&mut self.key), if self.key.is_some() => match changed {
                    Some((reason, message)) => {
                        tracing::info!(workspace_id = %self.sub.workspace(), "watch ended: its API key no longer stands");
                        self.ended = true;
                        let e = Error::Unauthenticated { reason, message };
                        return Some((Err(to_status(e)), self));
                    }
                    // The key's check ended without a verdict: nothing more will come.
                    None => self.key = None,
                },
                next = self.sub.next() => match next {
                    Ok(Next::Event(e)) => {
                        let msg = v1::WatchEventsResponse {
                            event: Some(wire(&e)),
                            cursor: e.cursor.clone(),
                        };
                        return Some((Ok(msg), self));
                    }
                    Ok(Next::Cut) => {
                        tracing::info!(workspace_id = %self.sub.workspace(), "watch cut: its client reads too slowly");
                        let s = self.end(
                            ErrorReason::WatchTooSlow,
                            "the stream fell too far behind and was ended; reconnect with the cursor in ErrorInfo metadata",
                        );
                        return Some((Err(s), self));
                    }
                    Err(e) => {
                        self.ended = true;
                        return Some((Err(to_status(e)), self));
                    }
                },
            }
        }
    }
}

/// The next verdict on a stream's key; `None` when no verdict can come any more.
async fn key_changed(key: &mut Option<watch::Receiver<Verdict>>) -> Verdict {
    let rx = key.as_mut()?;
    loop {
        if let Some(v) = rx.borrow_and_update().clone() {
            return Some(v);
        }
        rx.changed().await.ok()?;
    }
}

/// A stream from a state and an async step (what `futures::stream::unfold` does, without the
/// dependency).
struct Unfold<S, F, Fut> {
    state: Option<S>,
    step: F,
    running: Option<std::pin::Pin<Box<Fut>>>,
}

impl<S, F, Fut> Unfold<S, F, Fut> {
    fn new(state: S, step: F) -> Self {
        Self {
            state: Some(state),
            step,
            running: None,
        }
    }
}

impl<S, F, Fut, T> tokio_stream::Stream for Unfold<S, F, Fut>
where
    F: Fn(S) -> Fut + Unpin,
    Fut: Future<Output = Option<(T, S)>>,
    S: Unpin,
{
    type Item = T;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        let this = &mut *self;
        if let Some(state) = this.state.take() {
            this.running = Some(Box::pin((this.step)(state)));
        }
        let Some(fut) = this.running.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        match fut.as_mut().poll(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(out) => {
                this.running = None;
                match out {
                    Some((item, state)) => {
                        this.state = Some(state);
                        std::task::Poll::Ready(Some(item))
                    }
                    None => std::task::Poll::Ready(None),
                }
            }
        }
    }
}
