//! The orchestrator under a backlog, against real stores: every provider call is counted
//! through the provider-call metric (a recorder of this test binary), so a job called twice
//! shows up as a count above one per job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use keygate_app::tracker::Tracker;
use keygate_domain::capability::AccessMethodMode;
use keygate_domain::events::EventFilter;
use keygate_domain::grant::{AccessMethod, DoorState};
use keygate_domain::ids::{AccessGrantId, WorkspaceId};
use keygate_domain::model::now;
use keygate_domain::page::PageRequest;
use keygate_orchestrator::{Orchestrator, OrchestratorConfig};
use keygate_providers::virtual_system::VirtualSystems;
use keygate_store::conformance::{entrance_named, new_grant, seeded_workspace};
use keygate_store::testdb::TestDb;
use keygate_store::{MethodFilter, Store};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use tokio::sync::watch;

/// Provider calls seen, by (acs_system_id, operation).
type Calls = Arc<Mutex<HashMap<(String, String), u64>>>;

struct Counting {
    calls: Calls,
}

struct CallHistogram {
    key: (String, String),
    calls: Calls,
}

impl HistogramFn for CallHistogram {
    fn record(&self, _value: f64) {
        if let Ok(mut c) = self.calls.lock() {
            *c.entry(self.key.clone()).or_default() += 1;
        }
    }
}

impl Recorder for Counting {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() != keygate_telemetry::metrics::PROVIDER_CALL_DURATION {
            return Histogram::noop();
        }
        let label = |name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
                .unwrap_or_default()
        };
        Histogram::from_arc(Arc::new(CallHistogram {
            key: (label("acs_system_id"), label("operation")),
            calls: self.calls.clone(),
        }))
    }
}

/// The calls recorded by this test binary's recorder (installed once).
fn calls() -> Calls {
    static CALLS: OnceLock<Calls> = OnceLock::new();
    CALLS
        .get_or_init(|| {
            let calls = Calls::default();
            metrics::set_global_recorder(Counting {
                calls: calls.clone(),
            })
            .expect("the only recorder of this test binary");
            calls
        })
        .clone()
}

fn count(calls: &Calls, system: &str, operation: &str) -> u64 {
    calls
        .lock()
        .map(|c| {
            c.get(&(system.to_owned(), operation.to_owned()))
                .copied()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn cfg(owner: &str, lease: Duration) -> OrchestratorConfig {
    OrchestratorConfig {
        owner: owner.into(),
        lease,
        poll: Duration::from_millis(20),
        backoff_base: Duration::from_millis(5),
        backoff_cap: Duration::from_millis(20),
        breaker_threshold: 100,
        ..Default::default()
    }
}

struct Running {
    stop: watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn tracker(store: &Arc<dyn Store>) -> Tracker {
    Tracker::in_process(
        store.clone(),
        Arc::new(keygate_cache::InProcessCache::new(1000)),
    )
}

fn start(store: &Arc<dyn Store>, systems: &VirtualSystems, cfg: OrchestratorConfig) -> Running {
    let (stop, rx) = watch::channel(false);
    let o = Orchestrator::new(
        store.clone(),
        Arc::new(systems.clone()),
        tracker(store),
        cfg,
    );
    tokio::spawn(o.run(rx));
    Running { stop }
}

async fn methods(store: &dyn Store, ws: WorkspaceId, g: AccessGrantId) -> Vec<AccessMethod> {
    store
        .list_access_methods(
            ws,
            &MethodFilter {
                access_grant_id: Some(g),
                ..Default::default()
            },
            &PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("methods")
        .items
}

fn settled(ms: &[AccessMethod]) -> bool {
    ms.iter().all(|m| {
        m.doors
            .iter()
            .all(|d| !matches!(d.state, DoorState::Pending | DoorState::Unknown))
    })
}

/// `n` one-door PIN grants on the workspace's Latch (2 requests/s, burst 5).
async fn backlog(store: &dyn Store, ws: WorkspaceId, n: usize) -> Vec<AccessGrantId> {
    let door = entrance_named(store, ws, "virtual_latch", "Unit 1A").await;
    let mut grants = Vec::with_capacity(n);
    for _ in 0..n {
        let g = store
            .create_access_grant(
                ws,
                &new_grant(store, ws, &[door], &[AccessMethodMode::Code]).await,
                None,
            )
            .await
            .expect("create")
            .0;
        grants.push(g.id);
    }
    grants
}

async fn latch_of(store: &dyn Store, ws: WorkspaceId) -> String {
    store
        .list_access_systems(
            ws,
            None,
            &PageRequest {
                after: None,
                limit: 50,
            },
        )
        .await
        .expect("systems")
        .items
        .into_iter()
        .find(|s| s.system_type == "virtual_latch")
        .expect("latch")
        .id
        .to_string()
}

/// Jobs queued on a 2 requests/s system wait far longer than a (short) lease; each still gets
/// exactly one provision call.
async fn a_backlog_on_a_slow_system_calls_each_job_once(store: Arc<dyn Store>) {
    const JOBS: usize = 200;
    let calls = calls();
    let ws = seeded_workspace(store.as_ref(), "Backlog").await;
    let latch = latch_of(store.as_ref(), ws).await;
    let grants = backlog(store.as_ref(), ws, JOBS).await;
    let systems = VirtualSystems::new(Duration::from_millis(1));
    let started = now();
    let _running = start(&store, &systems, cfg("backlog", Duration::from_secs(2)));
    // 200 calls at 2/s: about 100 s; the bound is generous for a shared machine.
    let mut pending = grants.clone();
    for _ in 0..1200 {
        let mut still = Vec::new();
        for g in pending {
            if !settled(&methods(store.as_ref(), ws, g).await) {
                still.push(g);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(pending.is_empty(), "{} grants never settled", pending.len());
    let provisions = count(&calls, &latch, "provision");
    eprintln!(
        "backlog of {JOBS} on a 2/s system: {provisions} provision calls ({:.2} per job) in {} s",
        provisions as f64 / JOBS as f64,
        (now() - started).whole_seconds()
    );
    assert_eq!(provisions, JOBS as u64, "one provision call per job");
    for g in grants {
        for m in methods(store.as_ref(), ws, g).await {
            assert!(m.doors.iter().all(|d| d.state == DoorState::Granted));
        }
    }
}

async fn revoked(store: &dyn Store, ws: WorkspaceId) -> bool {
    store
        .list_events(ws, &EventFilter::default(), 0, 1000)
        .await
        .expect("events")
        .iter()
        .any(|e| e.event_type == "access_method.revoked")
}

/// Tenant A has 500 jobs queued on its Latch (2 requests/s: over four minutes of work); tenant
/// B's revocation on its own Latch is not queued behind them.
async fn another_tenants_backlog_does_not_delay_a_revocation(store: Arc<dyn Store>) {
    let calls = calls();
    let systems = VirtualSystems::new(Duration::from_millis(1));
    let b = seeded_workspace(store.as_ref(), "Tenant B").await;
    let b_grant = backlog(store.as_ref(), b, 1).await[0];
    let running = start(&store, &systems, cfg("fair", Duration::from_secs(30)));
    for _ in 0..400 {
        if settled(&methods(store.as_ref(), b, b_grant).await) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled(&methods(store.as_ref(), b, b_grant).await));
    drop(running);
    let a = seeded_workspace(store.as_ref(), "Tenant A").await;
    let a_latch = latch_of(store.as_ref(), a).await;
    backlog(store.as_ref(), a, 500).await;
    let _running = start(&store, &systems, cfg("fair", Duration::from_secs(30)));
    // A's backlog is being worked on.
    for _ in 0..400 {
        if count(&calls, &a_latch, "provision") >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = now();
    store
        .delete_access_grant(b, b_grant, asked)
        .await
        .expect("delete");
    let mut waited = 0;
    while !revoked(store.as_ref(), b).await && waited < 1200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let took = now() - asked;
    let a_done = count(&calls, &a_latch, "provision");
    eprintln!(
        "tenant B's revocation took {} ms while tenant A's backlog had {} of 500 provisions done",
        took.whole_milliseconds(),
        a_done
    );
    assert!(revoked(store.as_ref(), b).await, "B's access was revoked");
    assert!(
        a_done < 250,
        "B's revocation did not wait for A's backlog to drain ({a_done} of A's 500 done)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fair_across_tenants() {
    another_tenants_backlog_does_not_delay_a_revocation(TestDb::postgres().await.store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fair_across_tenants() {
    another_tenants_backlog_does_not_delay_a_revocation(TestDb::sqlite().await.store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backlog_calls_each_job_once() {
    a_backlog_on_a_slow_system_calls_each_job_once(TestDb::postgres().await.store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backlog_calls_each_job_once() {
    a_backlog_on_a_slow_system_calls_each_job_once(TestDb::sqlite().await.store).await
}
