//! The process's one tail of the event log (`keygate_app::event_tail`): many watchers share one
//! read per ring, idle watchers cost no reads, a slow watcher is cut with its cursor and resumes
//! without loss, and every watcher's filter still applies. On SQLite, and on PostgreSQL when
//! `KEYGATE_TEST_DATABASE_URL` is set.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keygate_app::App;
use keygate_app::event_tail::{EventTail, Next, Subscription, TailConfig};
use keygate_app::events::WatchEvents;
use keygate_app::grants::{CreateGrant, Grantee};
use keygate_app::idempotency;
use keygate_domain::Error;
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::events::{ACCESS_GRANT_CREATED, Event, EventFilter};
use keygate_domain::grant::ModeRequest;
use keygate_domain::ids::{EntranceId, EventId, WorkspaceId};
use keygate_domain::model::NewUserIdentity;
use keygate_store::conformance::{quick_start_entrances, seeded_workspace};
use keygate_store::testdb::TestDb;
use keygate_store::{EventLog, Store};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};

/// The store's event log, counting the tail's reads.
struct CountingLog {
    inner: Arc<dyn Store>,
    lists: AtomicUsize,
    heads: AtomicUsize,
    /// One-shot holds of unfiltered reads, to force an interleaving.
    gates: Mutex<Vec<Gate>>,
}

/// Holds the next unfiltered read after `after`: it signals `entered`, then waits for
/// `release`, before the query (`before_query`) or after it (its answer then is stale).
struct Gate {
    after: i64,
    before_query: bool,
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

impl CountingLog {
    /// Arms a gate; returns (entered, release).
    fn gate(&self, after: i64, before_query: bool) -> (Arc<Notify>, Arc<Notify>) {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        self.gates.lock().expect("gates").push(Gate {
            after,
            before_query,
            entered: entered.clone(),
            release: release.clone(),
        });
        (entered, release)
    }
}

#[async_trait]
impl EventLog for CountingLog {
    async fn list_events(
        &self,
        ws: WorkspaceId,
        filter: &EventFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, Error> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let gate = if *filter == EventFilter::default() {
            let mut gates = self.gates.lock().expect("gates");
            gates
                .iter()
                .position(|g| g.after == after)
                .map(|i| gates.remove(i))
        } else {
            None
        };
        let Some(gate) = gate else {
            return self.inner.list_events(ws, filter, after, limit).await;
        };
        if gate.before_query {
            gate.entered.notify_one();
            gate.release.notified().await;
            self.inner.list_events(ws, filter, after, limit).await
        } else {
            let found = self.inner.list_events(ws, filter, after, limit).await;
            gate.entered.notify_one();
            gate.release.notified().await;
            found
        }
    }

    async fn get_event(&self, ws: WorkspaceId, id: EventId) -> Result<Event, Error> {
        self.inner.get_event(ws, id).await
    }

    async fn purge_events(&self, before: OffsetDateTime) -> Result<u64, Error> {
        self.inner.purge_events(before).await
    }

    async fn latest_event_seq(&self, ws: WorkspaceId) -> Result<i64, Error> {
        self.heads.fetch_add(1, Ordering::SeqCst);
        self.inner.latest_event_seq(ws).await
    }

    async fn latest_event_seqs(
        &self,
        wss: &[WorkspaceId],
    ) -> Result<Vec<(WorkspaceId, i64)>, Error> {
        self.heads.fetch_add(1, Ordering::SeqCst);
        self.inner.latest_event_seqs(wss).await
    }
}

struct Fixture {
    app: App,
    ws: WorkspaceId,
    doors: Vec<EntranceId>,
    log: Arc<CountingLog>,
    tail: EventTail,
    _db: TestDb,
}

async fn fixture(buffer: usize) -> Fixture {
    let db = match std::env::var("KEYGATE_TEST_DATABASE_URL") {
        Ok(_) => TestDb::postgres().await,
        Err(_) => TestDb::sqlite().await,
    };
    let store: Arc<dyn Store> = db.store.clone();
    let ws = seeded_workspace(&*store, "tail").await;
    let doors = quick_start_entrances(&*store, ws).await;
    let app = common::app(store.clone(), Default::default());
    let log = Arc::new(CountingLog {
        inner: store,
        lists: AtomicUsize::new(0),
        heads: AtomicUsize::new(0),
        gates: Mutex::new(Vec::new()),
    });
    let tail = EventTail::start(
        app.clone(),
        log.clone(),
        TailConfig {
            poll: Duration::from_millis(100),
            buffer,
        },
    );
    Fixture {
        app,
        ws,
        doors,
        log,
        tail,
        _db: db,
    }
}

impl Fixture {
    async fn grant(&self) {
        let cmd = CreateGrant {
            idem: idempotency::claim("CreateAccessGrant", None, b""),
            name: None,
            access_grant_key: None,
            reservation_key: None,
            grantee: Grantee::New(NewUserIdentity {
                user_identity_key: None,
                full_name: "Jane Doe".into(),
                email_address: Some("jane@example.com".into()),
                phone_number: None,
            }),
            entrance_ids: self.doors.clone(),
            modes: vec![ModeRequest {
                mode: AccessMethodMode::Card,
                code: None,
            }],
            starts_at: None,
            ends_at: None,
            only_system: None,
        };
        self.app
            .create_access_grant(self.ws, cmd)
            .await
            .expect("create grant");
    }

    async fn watch(&self, filter: EventFilter, cursor: String) -> Subscription {
        self.tail
            .watch(self.ws, WatchEvents { filter, cursor })
            .await
            .expect("watch")
    }

    /// Waits until the tail has `n` watchers.
    async fn joined(&self, n: usize) {
        for _ in 0..200 {
            if self.tail.watched().1 == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("watchers never joined: {:?}", self.tail.watched());
    }

    fn reads(&self) -> (usize, usize) {
        (
            self.log.lists.load(Ordering::SeqCst),
            self.log.heads.load(Ordering::SeqCst),
        )
    }
}

/// Joins the tail without taking an event (a watch joins on its first `next`).
async fn join(sub: &mut Subscription) {
    let r = tokio::time::timeout(Duration::from_millis(50), sub.next()).await;
    assert!(r.is_err(), "no event expected yet: {r:?}");
}

/// Events of a watcher running on its own task.
fn forward(mut sub: Subscription) -> mpsc::UnboundedReceiver<i64> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Next::Event(e)) = sub.next().await {
            if tx.send(e.event.seq).is_err() {
                return;
            }
        }
    });
    rx
}

async fn take(rx: &mut mpsc::UnboundedReceiver<i64>, n: usize) -> Vec<i64> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(s)) => got.push(s),
            other => panic!("got {} of {n} events, then {other:?}", got.len()),
        }
    }
    got
}

#[tokio::test]
async fn many_watchers_share_one_read_per_ring_and_idle_watchers_read_nothing() {
    let f = fixture(256).await;
    let watchers = 300;
    let mut rxs = Vec::new();
    for _ in 0..watchers {
        rxs.push(forward(
            f.watch(EventFilter::default(), String::new()).await,
        ));
    }
    f.joined(watchers).await;
    // Let the first read of the newly followed workspace happen.
    tokio::time::sleep(Duration::from_millis(150)).await;

    // Idle: no event reads at all; the polls are one query each, whatever the watcher count.
    let (lists, heads) = f.reads();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (lists_idle, heads_idle) = f.reads();
    assert_eq!(lists_idle - lists, 0, "idle watchers read the log");
    assert!(
        (5..=15).contains(&(heads_idle - heads)),
        "about one poll per 100 ms for {watchers} watchers, got {}",
        heads_idle - heads
    );

    // One grant: every watcher gets every event, from a handful of reads, not one per watcher.
    f.grant().await;
    let want = f
        .app
        .store
        .list_events(f.ws, &EventFilter::default(), 0, 1_000)
        .await
        .expect("log");
    let want: Vec<i64> = want.iter().map(|e| e.seq).collect();
    assert!(!want.is_empty());
    for rx in &mut rxs {
        assert_eq!(take(rx, want.len()).await, want);
    }
    let (lists_after, _) = f.reads();
    assert!(
        lists_after - lists_idle <= 3,
        "{} reads of the log for one commit and {watchers} watchers",
        lists_after - lists_idle
    );
}

#[tokio::test]
async fn a_slow_watcher_is_cut_with_its_cursor_and_resumes_without_loss() {
    let f = fixture(16).await;
    let mut fast = forward(f.watch(EventFilter::default(), String::new()).await);
    let mut slow = f.watch(EventFilter::default(), String::new()).await;
    join(&mut slow).await;
    f.joined(2).await;

    f.grant().await;
    let first = take(&mut fast, 1).await;
    // The slow watcher takes two events, then stops reading.
    let mut slow_got = Vec::new();
    for _ in 0..2 {
        match slow.next().await.expect("event") {
            Next::Event(e) => slow_got.push(e.event.seq),
            Next::Cut => panic!("cut too early"),
        }
    }
    for _ in 0..10 {
        f.grant().await;
    }
    let total = f.app.store.latest_event_seq(f.ws).await.expect("head") as usize;
    let mut all = first;
    all.extend(take(&mut fast, total - all.len()).await);
    assert!(all.len() > 16 + 2, "enough events to fill the buffer");
    assert_eq!(slow_got, all[..2]);

    // The slow one is cut (the fast one went on meanwhile) ...
    assert!(matches!(slow.next().await, Ok(Next::Cut)));
    let cursor = slow.resume_cursor().expect("cursor");
    drop(slow);
    // ... and resumes from its cursor with exactly what it missed: from the log first, then
    // from the tail again, no gap, no duplicate.
    let mut resumed = forward(f.watch(EventFilter::default(), cursor).await);
    assert_eq!(take(&mut resumed, all.len() - 2).await, all[2..]);
    f.grant().await;
    let more = take(&mut fast, 1).await;
    assert_eq!(
        take(&mut resumed, 1).await,
        more,
        "live again after the catch-up"
    );
}

#[tokio::test]
async fn filters_apply_on_the_shared_tail_and_on_the_catch_up() {
    let f = fixture(256).await;
    let created = EventFilter {
        event_types: vec![ACCESS_GRANT_CREATED.name.to_owned()],
        ..Default::default()
    };
    let start = f.app.store.latest_event_seq(f.ws).await.expect("head");
    let start_cursor =
        keygate_app::events::seal_cursor(&f.app.tokens, f.ws, start).expect("cursor");
    let mut all = forward(f.watch(EventFilter::default(), String::new()).await);
    let mut only_created = forward(f.watch(created.clone(), String::new()).await);
    f.joined(2).await;

    f.grant().await;
    f.grant().await;
    let log = f
        .app
        .store
        .list_events(f.ws, &EventFilter::default(), start, 1_000)
        .await
        .expect("log");
    let want: Vec<i64> = log
        .iter()
        .filter(|e| e.event_type == ACCESS_GRANT_CREATED.name)
        .map(|e| e.seq)
        .collect();
    assert_eq!(want.len(), 2);
    assert_eq!(
        take(&mut all, log.len()).await,
        log.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    assert_eq!(take(&mut only_created, 2).await, want);

    // A filtered watch from a cursor catches up through the store's filter, then joins.
    let mut late = forward(f.watch(created, start_cursor).await);
    assert_eq!(take(&mut late, 2).await, want);
    f.grant().await;
    let next = take(&mut only_created, 1).await;
    assert_eq!(take(&mut late, 1).await, next);
    // Nothing else reached the filtered watchers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(only_created.try_recv().is_err());
    assert!(late.try_recv().is_err());
}

/// The last watcher of a workspace leaves while the tail is reading it, and a watcher further
/// back joins at once: the tail follows the workspace anew from the newcomer's position, and
/// the read that was under way (which started further on) must not be handed to it, or the
/// events in between are lost for it.
#[tokio::test]
async fn a_read_under_way_is_not_handed_to_a_watcher_that_joined_further_back() {
    let f = fixture(256).await;
    f.grant().await;
    let h0 = f.app.store.latest_event_seq(f.ws).await.expect("head");
    // A: live from h0, the workspace's only watcher.
    let mut a = f.watch(EventFilter::default(), String::new()).await;
    join(&mut a).await;
    f.joined(1).await;
    // Let the tail's first read of the newly followed workspace happen.
    tokio::time::sleep(Duration::from_millis(150)).await;

    // B resumes from h0: its catch-up reads the log (nothing after h0 yet) and is held there,
    // before it joins the tail.
    let (b_read, b_go) = f.log.gate(h0, false);
    let cursor = keygate_app::events::seal_cursor(&f.app.tokens, f.ws, h0).expect("cursor");
    let mut b = forward(f.watch(EventFilter::default(), cursor).await);
    b_read.notified().await;

    // The tail moves on past h0 (A gets those events) ...
    f.grant().await;
    let h1 = f.app.store.latest_event_seq(f.ws).await.expect("head");
    for _ in h0..h1 {
        assert!(matches!(a.next().await, Ok(Next::Event(_))));
    }
    // ... and its next read (after h1) is held before its query.
    let (tail_read, tail_go) = f.log.gate(h1, true);
    f.grant().await;
    let h2 = f.app.store.latest_event_seq(f.ws).await.expect("head");
    tail_read.notified().await;

    // A leaves (the workspace is no longer followed); B joins at h0, behind the held read.
    drop(a);
    f.joined(0).await;
    b_go.notify_one();
    f.joined(1).await;
    tail_go.notify_one();

    // B gets every event after h0, in order: none lost between h0 and h1.
    let want: Vec<i64> = (h0 + 1..=h2).collect();
    assert_eq!(take(&mut b, want.len()).await, want);
}
