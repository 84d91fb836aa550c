//! Scenario 2: `kill -9` of a replica every few seconds under a steady create load, each
//! restarted at once: no acknowledged grant lost, no event lost or reordered for a watcher that
//! resumes by cursor across the deaths (repeats only of an `event_id`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate_proto::v1;
use tokio::sync::watch;

use crate::cluster::{Cluster, Report, all_events, channel};
use crate::harness::authed;
use crate::load::{Watched, check_against_log, run_creators, run_watcher};

const CREATORS: usize = 4;
/// Each creator waits this long between two creates: a steady load the orchestrators keep up with.
const PACE: Duration = Duration::from_millis(250);

fn secs_from_env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How the log and a watcher came to rest after the load.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settled {
    /// From the end of the load until the log stopped growing (the jobs the load left behind
    /// finished): the orchestrators' backlog, not the watcher.
    pub log_secs: f64,
    /// From the log's last growth until the watcher held its last event.
    pub watcher_secs: f64,
    /// Most events the watcher was behind the log at any check (once a second).
    pub max_behind: usize,
}

/// How long the jobs left by the load may take to finish: the backlog grows with the run's
/// length and drains at the orchestrators' pace, which the machine's other work slows.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);
/// How long after the log's last growth the watcher may take to hold its last event.
const WATCHER_LIMIT: Duration = Duration::from_secs(15);

/// Waits until the log has stopped growing for 3 s and the watcher holds its last event. The
/// two are timed apart: the log keeps growing while the jobs of the load run (up to
/// `DRAIN_LIMIT`), the watcher must follow it closely (`WATCHER_LIMIT` after the log's last
/// growth).
pub async fn settle(
    url: &str,
    key: &str,
    watched: &Arc<Mutex<Watched>>,
) -> (Vec<v1::Event>, Settled) {
    let started = Instant::now();
    let mut out = Settled::default();
    // The log's length and when it was last seen to change.
    let mut grew: (usize, Instant) = (0, started);
    // When the watcher was first seen holding the log's last event since its last growth.
    let mut caught: Option<Instant> = None;
    loop {
        // The watcher's last event first: the log read after it holds that event.
        let watcher_last = watched
            .lock()
            .expect("lock")
            .events
            .last()
            .map(|e| e.event_id.clone());
        let log = all_events(url, key).await;
        let held = watcher_last
            .as_ref()
            .and_then(|id| log.iter().rposition(|e| &e.event_id == id))
            .map_or(0, |i| i + 1);
        let behind = log.len() - held;
        out.max_behind = out.max_behind.max(behind);
        if log.len() != grew.0 {
            grew = (log.len(), Instant::now());
            caught = None;
        }
        if behind == 0 && caught.is_none() {
            caught = Some(Instant::now());
        }
        let quiet = grew.1.elapsed();
        if let Some(at) = caught
            && quiet >= Duration::from_secs(3)
        {
            out.log_secs = grew.1.duration_since(started).as_secs_f64();
            out.watcher_secs = at.duration_since(grew.1).as_secs_f64();
            return (log, out);
        }
        assert!(
            started.elapsed() < DRAIN_LIMIT,
            "the log stops growing within {DRAIN_LIMIT:?} of the load's end ({} events, watcher {behind} behind)",
            log.len()
        );
        assert!(
            behind == 0 || quiet < WATCHER_LIMIT,
            "the watcher holds the log's last event within {WATCHER_LIMIT:?} of its last growth \
             ({} events in the log, watcher {behind} behind at {watcher_last:?})",
            log.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long (60 s of kills, then ~60 s for the jobs the load left to finish): run by tools/faults"]
async fn kill9_every_few_seconds_under_load() {
    let run_secs = secs_from_env("KEYGATE_FAULTS_KILL_SECS", 60);
    let every = Duration::from_secs(secs_from_env("KEYGATE_FAULTS_KILL_EVERY_SECS", 5));
    // Short leases, so a survivor takes over the jobs of a killed replica quickly.
    let mut cluster = Cluster::start("kill9", 2, &["--job-lease-secs", "2"]).await;
    let urls = cluster.urls();
    let key = cluster.key.clone();

    // A first grant gives the log a position to start watching from.
    v1::access_grant_service_client::AccessGrantServiceClient::new(channel(&urls[0]).await)
        .create_access_grant(authed(&key, cluster.grant_request("k9-first", "First")))
        .await
        .expect("first grant");
    let before = all_events(&urls[0], &key).await;
    let start = before.last().expect("an event").cursor.clone();

    let (stop_watch_tx, stop_watch) = watch::channel(false);
    let (stop_load_tx, stop_load) = watch::channel(false);
    let watched = Arc::new(Mutex::new(Watched::default()));
    let watcher = tokio::spawn(run_watcher(
        urls.clone(),
        key.clone(),
        start,
        0,
        stop_watch,
        watched.clone(),
    ));
    let creators = tokio::spawn(run_creators(
        urls.clone(),
        key.clone(),
        cluster.grant_request("", ""),
        "k9",
        CREATORS,
        PACE,
        stop_load,
        |_| true,
        1000,
    ));

    let started = Instant::now();
    let mut restarts = Vec::new();
    let mut kills = 0usize;
    while started.elapsed() + every <= Duration::from_secs(run_secs) {
        tokio::time::sleep(every).await;
        let r = &mut cluster.replicas[kills % 2];
        r.kill9();
        restarts.push(tokio::task::block_in_place(|| r.start()));
        kills += 1;
    }
    tokio::time::sleep(Duration::from_secs(run_secs).saturating_sub(started.elapsed())).await;
    stop_load_tx.send(true).expect("stop load");
    let creates = creators.await.expect("creators");
    let load_secs = started.elapsed().as_secs_f64();

    // Every acknowledged grant is there.
    let mut grants =
        v1::access_grant_service_client::AccessGrantServiceClient::new(channel(&urls[1]).await);
    let mut missing = Vec::new();
    for (request_id, id) in &creates.acked {
        let r = grants
            .get_access_grant(authed(
                &key,
                v1::GetAccessGrantRequest {
                    access_grant_id: id.clone(),
                },
            ))
            .await;
        if r.is_err() {
            missing.push(request_id.clone());
        }
    }
    // No create made two grants: every person (named after its request_id) is there once.
    let (people, names, backlog): (i64, i64, i64) = {
        use sqlx::Connection as _;
        let mut db = sqlx::PgConnection::connect(&cluster.database_url)
            .await
            .expect("connect");
        let (people, names) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT full_name) FROM user_identities WHERE workspace_id = $1 AND full_name LIKE 'k9-%'",
        )
        .bind(&cluster.workspace_id)
        .fetch_one(&mut db)
        .await
        .expect("count people");
        // The jobs the load left behind: the log grows until they are done.
        let backlog = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE workspace_id = $1 AND state IN ('queued', 'running')",
        )
        .bind(&cluster.workspace_id)
        .fetch_one(&mut db)
        .await
        .expect("count jobs");
        (people, names, backlog)
    };

    let (log, settled) = settle(&urls[0], &key, &watched).await;
    stop_watch_tx.send(true).expect("stop watcher");
    watcher.await.expect("watcher");
    let w = watched.lock().expect("lock");
    let log_after: Vec<v1::Event> = log[before.len()..].to_vec();
    let dups = check_against_log(&w.events, &log_after);

    assert!(kills >= 2, "at least two kills");
    assert!(
        creates.failed.is_empty(),
        "creates given up: {:?}",
        creates.failed
    );
    assert!(missing.is_empty(), "acknowledged grants lost: {missing:?}");
    assert_eq!(people, names, "one grant (and one person) per request_id");

    let restart_ms: Vec<u128> = restarts.iter().map(Duration::as_millis).collect();
    let mut ends: std::collections::BTreeMap<String, usize> = Default::default();
    for (code, _) in &w.ends {
        *ends.entry(format!("{code:?}")).or_default() += 1;
    }
    let mut report = Report::new(
        "2. `kill -9` of a replica every few seconds under load",
        &format!(
            "{CREATORS} clients create grants (2 doors, card and mobile key; a new `request_id` each; \
             {} ms between two creates of a client) for {run_secs} s, starting on alternating replicas. A failed attempt is retried, \
             same `request_id` and body, on the other replica 100 ms later, until it is \
             acknowledged. Every {} s one replica (alternately) gets SIGKILL and is started again \
             at once on the same ports; job leases are 2 s. A `WatchEvents` consumer follows the \
             workspace from the last event before the load, and on any end of its stream reopens \
             on the other replica with the cursor of the last event it received.",
            PACE.as_millis(),
            every.as_secs()
        ),
    );
    report.row("Kills (SIGKILL, then restart)", kills);
    report.row("Restart to `ready`, ms (each)", format!("{restart_ms:?}"));
    report.row(
        "Creates acknowledged",
        format!(
            "{} ({:.1}/s over {load_secs:.0} s), {} attempts",
            creates.acked.len(),
            creates.acked.len() as f64 / load_secs,
            creates.attempts
        ),
    );
    report.row(
        "Failed attempts retried, by code",
        format!("{:?}", creates.retried),
    );
    report.row(
        "Creates given up",
        format!("{} (must be 0)", creates.failed.len()),
    );
    report.row(
        "Acknowledged grants readable afterwards",
        format!(
            "{}/{} (must be all)",
            creates.acked.len() - missing.len(),
            creates.acked.len()
        ),
    );
    report.row(
        "People created by the load / distinct request ids among them",
        format!("{people} / {names} (must be equal: no create made twice)"),
    );
    report.row(
        "Events in the log during the run / received by the watcher without repeats",
        format!(
            "{} / {} (must be equal, same order)",
            log_after.len(),
            w.events.len() - dups
        ),
    );
    report.row(
        "Jobs queued or running when the load stopped / time until the log stopped growing",
        format!("{backlog} / {:.1} s", settled.log_secs),
    );
    report.row(
        "Watcher: most events behind the log at a check (each second, after the load) / time to hold the log's last event after its last growth",
        format!(
            "{} / {:.1} s (must be ≤ {} s)",
            settled.max_behind,
            settled.watcher_secs,
            WATCHER_LIMIT.as_secs()
        ),
    );
    report.row("Repeated events (same `event_id`, same event)", dups);
    report.row(
        "Streams opened / how they ended",
        format!("{} / {ends:?}", w.streams),
    );
    report.write("2-kill9", "kill9");
}
