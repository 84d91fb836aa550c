//! `EventLog::latest_event_seqs` on SQLite and on the real PostgreSQL: what the process's event
//! tail polls, one query for every watched workspace. Each asked workspace that has events is
//! answered with its newest seq (the same as `latest_event_seq`); a workspace without events,
//! an unknown id and a workspace not asked for are not; another tenant's appends never show in
//! a workspace's answer; long lists (more than one statement's worth) are answered whole.

use std::collections::HashMap;
use std::sync::Arc;

use keygate_domain::capability::AccessMethodMode;
use keygate_domain::events::EventFilter;
use keygate_domain::ids::WorkspaceId;
use keygate_store::Store;
use keygate_store::conformance::{new_grant, quick_start_entrances, seeded_workspace};

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = keygate_store::testdb::TestDb::sqlite().await;
                    super::$name(db.store.clone()).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let db = keygate_store::testdb::TestDb::postgres().await;
                    super::$name(db.store.clone()).await;
                }
            }
        )*
    };
}

on_both!(
    heads_follow_appends_per_workspace,
    heads_answer_long_lists_whole,
);

/// Appends one grant's events to `ws`; returns how many.
async fn append(store: &dyn Store, ws: WorkspaceId) -> usize {
    let doors = quick_start_entrances(store, ws).await;
    let new = new_grant(store, ws, &doors[..1], &[AccessMethodMode::MobileKey]).await;
    let (_, events) = store
        .create_access_grant(ws, &new, None)
        .await
        .expect("create grant");
    assert!(!events.is_empty(), "a grant appends events");
    events.len()
}

/// The answer as a map, checking that no workspace is answered twice.
async fn heads(store: &dyn Store, asked: &[WorkspaceId]) -> HashMap<WorkspaceId, i64> {
    let rows = store.latest_event_seqs(asked).await.expect("heads");
    let mut out = HashMap::new();
    for (ws, seq) in rows {
        assert!(asked.contains(&ws), "{ws} was not asked for");
        assert!(out.insert(ws, seq).is_none(), "{ws} answered twice");
    }
    out
}

/// The seq of the newest event in `ws`'s log, read through `list_events` (0 when empty).
async fn newest_listed(store: &dyn Store, ws: WorkspaceId) -> i64 {
    store
        .list_events(ws, &EventFilter::default(), 0, 10_000)
        .await
        .expect("log")
        .last()
        .map_or(0, |e| e.seq)
}

/// What a workspace's answer must be: its newest seq when it has events, absent otherwise.
async fn expect_head(store: &dyn Store, got: &HashMap<WorkspaceId, i64>, ws: WorkspaceId) {
    let newest = newest_listed(store, ws).await;
    assert_eq!(
        store.latest_event_seq(ws).await.expect("latest"),
        newest,
        "latest_event_seq agrees with the log"
    );
    if newest == 0 {
        assert_eq!(got.get(&ws), None, "{ws} has no events: not answered");
    } else {
        assert_eq!(got.get(&ws), Some(&newest), "{ws}'s newest seq");
    }
}

async fn heads_follow_appends_per_workspace(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "heads a").await;
    let b = seeded_workspace(&*store, "heads b").await;
    let c = seeded_workspace(&*store, "heads c").await;
    let unknown = WorkspaceId::new();

    // Nothing asked: nothing answered.
    assert!(heads(&*store, &[]).await.is_empty());

    // Empty logs (whatever creating a workspace recorded is its log's start).
    let got = heads(&*store, &[a, b, c, unknown]).await;
    for ws in [a, b, c] {
        expect_head(&*store, &got, ws).await;
    }
    assert_eq!(got.get(&unknown), None, "an unknown workspace has no head");
    let start_a = got.get(&a).copied().unwrap_or(0);
    let start_b = got.get(&b).copied().unwrap_or(0);
    let start_c = got.get(&c).copied().unwrap_or(0);

    // Appends to a move a's head by what was appended; b and c stay where they were.
    let n = append(&*store, a).await;
    let got = heads(&*store, &[a, b, c, unknown]).await;
    assert_eq!(got.get(&a), Some(&(start_a + n as i64)));
    for ws in [a, b, c] {
        expect_head(&*store, &got, ws).await;
    }
    assert_eq!(got.get(&b).copied().unwrap_or(0), start_b);
    assert_eq!(got.get(&c).copied().unwrap_or(0), start_c);

    // Another tenant's appends (several, so its seq passes a's) never show in a's answer, and
    // a workspace not asked for is not answered even though it moved.
    let mut m = 0;
    for _ in 0..3 {
        m += append(&*store, b).await;
    }
    let only_a = heads(&*store, &[a]).await;
    assert_eq!(only_a.len(), 1, "only a is answered: {only_a:?}");
    assert_eq!(only_a.get(&a), Some(&(start_a + n as i64)));
    let got = heads(&*store, &[a, b, c]).await;
    assert_eq!(got.get(&b), Some(&(start_b + m as i64)));
    for ws in [a, b, c] {
        expect_head(&*store, &got, ws).await;
    }

    // A workspace asked twice is answered once.
    let twice = heads(&*store, &[b, b]).await;
    assert_eq!(twice.get(&b), Some(&(start_b + m as i64)));

    // The order of the question does not matter.
    let forward = heads(&*store, &[a, b, c]).await;
    let backward = heads(&*store, &[c, b, a]).await;
    assert_eq!(forward, backward);
}

async fn heads_answer_long_lists_whole(store: Arc<dyn Store>) {
    let a = seeded_workspace(&*store, "long list a").await;
    let b = seeded_workspace(&*store, "long list b").await;
    append(&*store, a).await;
    append(&*store, b).await;
    append(&*store, b).await;
    let head_a = newest_listed(&*store, a).await;
    let head_b = newest_listed(&*store, b).await;
    assert!(head_a > 0 && head_b > head_a, "b has more events than a");

    // 1,200 unknown ids around the two real ones, so they fall in different statements of a
    // chunked query (and one after the first thousand).
    let mut asked: Vec<WorkspaceId> = (0..1200).map(|_| WorkspaceId::new()).collect();
    asked.insert(3, a);
    asked.insert(1100, b);
    let got = heads(&*store, &asked).await;
    assert_eq!(got.len(), 2, "only the two real workspaces: {got:?}");
    assert_eq!(got.get(&a), Some(&head_a));
    assert_eq!(got.get(&b), Some(&head_b));
}
