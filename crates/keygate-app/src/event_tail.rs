//! One tail of the event log per process, shared by every `WatchEvents` stream of the process.
//!
//! The tail follows each workspace that has at least one watcher: it reads the log once per
//! ring of the doorbell (and, for rings lost or sent by replicas without a shared doorbell, once
//! per poll interval: one query for all watched workspaces), unfiltered, presents each event
//! once (its cursor sealed, its webhook looked up), and fans it out to every watcher of the
//! workspace whose filter it passes. An idle watcher costs no store query and no CPU.
//!
//! A watcher that starts behind the tail (a cursor in the past) first reads the log on its own
//! until it has caught up, then joins the tail at the position it reached; the tail hands it
//! only events after that position. Both follow the log's per-workspace `seq`, which is commit
//! order, so the hand-over has no gap and no duplicate.
//!
//! Each watcher has a bounded buffer. When the tail finds it full, the watcher is cut: its
//! [`Subscription::next`] answers [`Next::Cut`] and the adapter ends the stream with its
//! resume cursor ([`Subscription::resume_cursor`]). A slow watcher never holds up the others
//! and never grows without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use keygate_cache::bus::Ring;
use keygate_domain::Error;
use keygate_domain::events::{Event, EventFilter};
use keygate_domain::ids::WorkspaceId;
use keygate_store::EventLog;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::App;
use crate::events::{LoggedEvent, WATCH_BATCH, WatchEvents, seal_cursor};

/// How the tail runs.
#[derive(Clone, Copy, Debug)]
pub struct TailConfig {
    /// How often the tail checks, in one query, whether any watched workspace moved without a
    /// ring (rings lost, or another replica without a shared doorbell).
    pub poll: Duration,
    /// Events one watcher may have waiting; when full, the watcher is cut.
    pub buffer: usize,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            buffer: 256,
        }
    }
}

/// The process's tail. Cheap to clone; the task behind it ends when the last clone is dropped.
#[derive(Clone)]
pub struct EventTail {
    shared: Arc<Shared>,
}

struct Shared {
    app: App,
    log: Arc<dyn EventLog>,
    config: TailConfig,
    state: Mutex<State>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    workspaces: HashMap<WorkspaceId, Watched>,
    next_id: u64,
}

/// A workspace the tail follows.
struct Watched {
    /// The tail has read and fanned out every event up to here.
    position: i64,
    /// A ring or the poll said there is more after `position`.
    pending: bool,
    members: HashMap<u64, Member>,
}

struct Member {
    filter: EventFilter,
    /// The member has every event up to here (from its own catch-up or from the tail).
    after: i64,
    tx: mpsc::Sender<Arc<LoggedEvent>>,
    cut: Arc<AtomicBool>,
}

/// What a watcher gets next.
#[derive(Debug)]
pub enum Next {
    Event(Arc<LoggedEvent>),
    /// The watcher fell too far behind and was cut; end the stream with
    /// [`Subscription::resume_cursor`].
    Cut,
}

enum Phase {
    /// Reading the log on its own after `read` (a cursor in the past).
    CatchingUp { read: i64 },
    /// Caught up to `read`; joins the tail on the next call.
    Joining { read: i64 },
    /// A member of the tail.
    Live {
        id: u64,
        rx: mpsc::Receiver<Arc<LoggedEvent>>,
        cut: Arc<AtomicBool>,
    },
}

/// One watcher: a `WatchEvents` stream's place in the log and its filter. Dropping it leaves
/// the tail.
pub struct Subscription {
    shared: Arc<Shared>,
    workspace: WorkspaceId,
    filter: EventFilter,
    /// The seq of the last event handed out (or where the watch started).
    delivered: i64,
    backlog: VecDeque<Event>,
    phase: Phase,
}

fn poisoned() -> Error {
    Error::Internal {
        message: "event tail lock poisoned".into(),
    }
}

impl EventTail {
    /// Starts the tail over `log` (the store's event log; a narrower one in tests). Must be
    /// called inside a tokio runtime.
    pub fn start(app: App, log: Arc<dyn EventLog>, config: TailConfig) -> Self {
        let rings = app.tracker.doorbell().subscribe();
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            app,
            log,
            config,
            state: Mutex::new(State::default()),
            wake: wake.clone(),
        });
        tokio::spawn(run(Arc::downgrade(&shared), rings, wake, config.poll));
        Self { shared }
    }

    /// Opens a watch: live from the newest event without a cursor, or after the cursor's event.
    pub async fn watch(&self, ws: WorkspaceId, cmd: WatchEvents) -> Result<Subscription, Error> {
        let from_cursor = !cmd.cursor.is_empty();
        let w = self.shared.app.watch_events(ws, cmd).await?;
        let (filter, after) = w.into_parts();
        Ok(Subscription {
            shared: self.shared.clone(),
            workspace: ws,
            filter,
            delivered: after,
            backlog: VecDeque::new(),
            phase: if from_cursor {
                Phase::CatchingUp { read: after }
            } else {
                Phase::Joining { read: after }
            },
        })
    }

    /// Workspaces followed and watchers in the tail now.
    pub fn watched(&self) -> (usize, usize) {
        self.shared
            .lock()
            .map(|s| {
                (
                    s.workspaces.len(),
                    s.workspaces.values().map(|w| w.members.len()).sum(),
                )
            })
            .unwrap_or((0, 0))
    }
}

impl Shared {
    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// Marks `ws` as having events after `seq` (if the tail follows it).
    fn ring(&self, ring: &Ring) {
        let Ok(ws) = ring.workspace_id.parse::<WorkspaceId>() else {
            return;
        };
        if let Ok(mut s) = self.lock()
            && let Some(w) = s.workspaces.get_mut(&ws)
            && ring.seq > w.position
        {
            w.pending = true;
        }
    }

    fn pend_all(&self) {
        if let Ok(mut s) = self.lock() {
            for w in s.workspaces.values_mut() {
                w.pending = true;
            }
        }
    }

    /// One query for every watched workspace: which moved past the tail.
    #[tracing::instrument(skip_all, name = "event_tail.poll")]
    async fn poll(&self) {
        let watched: Vec<WorkspaceId> = match self.lock() {
            Ok(s) => s.workspaces.keys().copied().collect(),
            Err(_) => return,
        };
        if watched.is_empty() {
            return;
        }
        match self.log.latest_event_seqs(&watched).await {
            Ok(heads) => {
                if let Ok(mut s) = self.lock() {
                    for (ws, head) in heads {
                        if let Some(w) = s.workspaces.get_mut(&ws)
                            && head > w.position
                        {
                            w.pending = true;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "event tail could not poll the log"),
        }
    }

    /// Reads every pending workspace's new events and fans them out.
    async fn read_pending(&self) {
        let pending: Vec<(WorkspaceId, i64)> = match self.lock() {
            Ok(mut s) => s
                .workspaces
                .iter_mut()
                .filter(|(_, w)| w.pending)
                .map(|(ws, w)| {
                    w.pending = false;
                    (*ws, w.position)
                })
                .collect(),
            Err(_) => return,
        };
        for (ws, position) in pending {
            if let Err(e) = self.read(ws, position).await {
                tracing::warn!(workspace_id = %ws, error = %e, "event tail could not read the log");
                // Tried again on the next ring or poll.
                if let Ok(mut s) = self.lock()
                    && let Some(w) = s.workspaces.get_mut(&ws)
                {
                    w.pending = true;
                }
            }
        }
    }

    #[tracing::instrument(skip(self), name = "event_tail.read")]
    async fn read(&self, ws: WorkspaceId, mut position: i64) -> Result<(), Error> {
        let all = EventFilter::default();
        loop {
            let batch = self
                .log
                .list_events(ws, &all, position, WATCH_BATCH)
                .await?;
            let full = batch.len() as u32 == WATCH_BATCH;
            let mut logged = Vec::with_capacity(batch.len());
            for e in batch {
                logged.push(Arc::new(self.app.logged_event(ws, e).await?));
            }
            let Some(last) = logged.last() else {
                return Ok(());
            };
            let from = position;
            position = last.event.seq;
            if !self.fan_out(ws, from, &logged)? || !full {
                return Ok(());
            }
        }
    }

    /// Hands `events` (in seq order, read from the log after `from`) to every member of `ws`
    /// that has not had them. Returns whether the workspace is still followed and this read
    /// should go on.
    fn fan_out(
        &self,
        ws: WorkspaceId,
        from: i64,
        events: &[Arc<LoggedEvent>],
    ) -> Result<bool, Error> {
        let mut s = self.lock()?;
        let Some(w) = s.workspaces.get_mut(&ws) else {
            return Ok(false);
        };
        if w.position < from {
            // The workspace was left and followed anew, from further back, while this read was
            // under way (its last watcher went and a watcher behind it joined): the events
            // between its position and `from` were never read. Handing these on would skip
            // them; the new entry's own read (pending since it was made) starts at its position.
            w.pending = true;
            return Ok(false);
        }
        for ev in events {
            let seq = ev.event.seq;
            if seq <= w.position {
                continue;
            }
            w.position = seq;
            w.members.retain(|_, m| {
                if seq <= m.after {
                    return true;
                }
                m.after = seq;
                if !m.filter.matches(&ev.event) {
                    return true;
                }
                match m.tx.try_send(ev.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        m.cut.store(true, Ordering::Release);
                        keygate_telemetry::metrics::limit_refused("watch_buffer");
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
        if w.members.is_empty() {
            s.workspaces.remove(&ws);
            return Ok(false);
        }
        Ok(true)
    }

    /// Joins `ws`'s tail at `read`, or says where the tail already is when it is ahead (the
    /// caller reads up to there on its own first).
    #[allow(clippy::type_complexity)]
    fn join(
        &self,
        ws: WorkspaceId,
        filter: &EventFilter,
        read: i64,
    ) -> Result<Result<(u64, mpsc::Receiver<Arc<LoggedEvent>>, Arc<AtomicBool>), i64>, Error> {
        let mut s = self.lock()?;
        let id = s.next_id;
        let created = !s.workspaces.contains_key(&ws);
        let w = s.workspaces.entry(ws).or_insert_with(|| Watched {
            position: read,
            // Read once at once: a ring sent before the workspace was followed was not heard.
            pending: true,
            members: HashMap::new(),
        });
        if w.position > read {
            return Ok(Err(w.position));
        }
        let (tx, rx) = mpsc::channel(self.config.buffer.max(1));
        let cut = Arc::new(AtomicBool::new(false));
        w.members.insert(
            id,
            Member {
                filter: filter.clone(),
                after: read,
                tx,
                cut: cut.clone(),
            },
        );
        s.next_id += 1;
        drop(s);
        if created {
            self.wake.notify_one();
        }
        Ok(Ok((id, rx, cut)))
    }

    fn leave(&self, ws: WorkspaceId, id: u64) {
        if let Ok(mut s) = self.lock()
            && let Some(w) = s.workspaces.get_mut(&ws)
        {
            w.members.remove(&id);
            if w.members.is_empty() {
                s.workspaces.remove(&ws);
            }
        }
    }
}

async fn run(
    shared: Weak<Shared>,
    mut rings: broadcast::Receiver<Ring>,
    wake: Arc<Notify>,
    poll: Duration,
) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut polled = false;
        let mut lagged = false;
        let mut heard = Vec::new();
        tokio::select! {
            r = rings.recv() => match r {
                Ok(r) => heard.push(r),
                Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => polled = true,
            _ = wake.notified() => {}
        }
        // Rings already queued are served by the same reads.
        loop {
            match rings.try_recv() {
                Ok(r) => heard.push(r),
                Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                Err(_) => break,
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if lagged {
            shared.pend_all();
        }
        for r in &heard {
            shared.ring(r);
        }
        if polled {
            shared.poll().await;
        }
        shared.read_pending().await;
    }
}

impl Subscription {
    pub fn workspace(&self) -> WorkspaceId {
        self.workspace
    }

    /// The cursor to resume from: the last event handed out, or where the watch started.
    pub fn resume_cursor(&self) -> Result<String, Error> {
        seal_cursor(&self.shared.app.tokens, self.workspace, self.delivered)
    }

    /// The next event that passes the filter. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<Next, Error> {
        loop {
            if let Some(e) = self.backlog.front() {
                let logged = self
                    .shared
                    .app
                    .logged_event(self.workspace, e.clone())
                    .await?;
                self.backlog.pop_front();
                self.delivered = logged.event.seq;
                return Ok(Next::Event(Arc::new(logged)));
            }
            match &mut self.phase {
                Phase::CatchingUp { read } => {
                    let from = *read;
                    // Where the log ends now: with a filter, the last matching event says
                    // nothing of how far the read went.
                    let head = if self.filter == EventFilter::default() {
                        None
                    } else {
                        Some(self.shared.log.latest_event_seq(self.workspace).await?)
                    };
                    let batch = self
                        .shared
                        .log
                        .list_events(self.workspace, &self.filter, from, WATCH_BATCH)
                        .await?;
                    let last = batch.last().map(|e| e.seq).unwrap_or(from);
                    self.phase = if batch.len() as u32 == WATCH_BATCH {
                        Phase::CatchingUp { read: last }
                    } else {
                        Phase::Joining {
                            read: last.max(head.unwrap_or(from)),
                        }
                    };
                    self.backlog.extend(batch);
                }
                Phase::Joining { read } => {
                    let read = *read;
                    self.phase = match self.shared.join(self.workspace, &self.filter, read)? {
                        Ok((id, rx, cut)) => Phase::Live { id, rx, cut },
                        // The tail is ahead: read up to it on our own first.
                        Err(_) => Phase::CatchingUp { read },
                    };
                }
                Phase::Live { rx, cut, .. } => {
                    if cut.load(Ordering::Acquire) {
                        return Ok(Next::Cut);
                    }
                    match rx.recv().await {
                        Some(e) => {
                            self.delivered = e.event.seq;
                            return Ok(Next::Event(e));
                        }
                        None if cut.load(Ordering::Acquire) => return Ok(Next::Cut),
                        None => {
                            return Err(Error::Internal {
                                message: "the event tail stopped".into(),
                            });
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Phase::Live { id, .. } = self.phase {
            self.shared.leave(self.workspace, id);
        }
    }
}
