//! Scenario 3: SIGTERM of a replica under load: no failed unary call for clients that retry only
//! `UNAVAILABLE`, streams end with `UNAVAILABLE` and resume from their last cursor without loss,
//! and the process exits (status 0) within the drain time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_proto::v1;
use tokio::sync::watch;
use tonic::Code;

use crate::cluster::{Cluster, Report, all_events, channel};
use crate::harness::authed;
use crate::kill9::settle;
use crate::load::{Watched, check_against_log, run_creators, run_watcher};

const CREATORS: usize = 4;
const PACE: Duration = Duration::from_millis(100);
const DRAIN_SECS: u64 = 5;
/// Attempts of one call: the first and up to four retries, each only after `UNAVAILABLE`.
const ATTEMPTS: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: run by tools/faults"]
async fn sigterm_under_load() {
    let drain = DRAIN_SECS.to_string();
    let mut cluster = Cluster::start(
        "sigterm",
        2,
        &["--drain-secs", &drain, "--job-lease-secs", "2"],
    )
    .await;
    let urls = cluster.urls();
    let key = cluster.key.clone();
    v1::access_grant_service_client::AccessGrantServiceClient::new(channel(&urls[1]).await)
        .create_access_grant(authed(&key, cluster.grant_request("term-first", "First")))
        .await
        .expect("first grant");
    let before = all_events(&urls[1], &key).await;
    let start = before.last().expect("an event").cursor.clone();

    let (stop_watch_tx, stop_watch) = watch::channel(false);
    let (stop_load_tx, stop_load) = watch::channel(false);
    // One watcher starts on the replica that will be stopped, one on the other.
    let watched: Vec<Arc<Mutex<Watched>>> = (0..2).map(|_| Arc::default()).collect();
    let watchers: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(run_watcher(
                urls.clone(),
                key.clone(),
                start.clone(),
                i,
                stop_watch.clone(),
                watched[i].clone(),
            ))
        })
        .collect();
    let creators = tokio::spawn(run_creators(
        urls.clone(),
        key.clone(),
        cluster.grant_request("", ""),
        "term",
        CREATORS,
        PACE,
        stop_load,
        // `UNAVAILABLE`: refused before handling (or no connection). `CANCELLED` "operation was
        // canceled": hyper's answer for a call it had queued on a connection the server closed
        // after its GOAWAY; retried too, and checked below never to have reached a server.
        |s| {
            s.code() == Code::Unavailable
                || (s.code() == Code::Cancelled && s.message().contains("operation was canceled"))
        },
        ATTEMPTS,
    ));

    tokio::time::sleep(Duration::from_secs(3)).await;
    let (exited_ok, took) = tokio::task::block_in_place(|| {
        cluster.replicas[0].terminate(Duration::from_secs(DRAIN_SECS + 10))
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_load_tx.send(true).expect("stop load");
    let creates = creators.await.expect("creators");

    let mut logs = Vec::new();
    for w in &watched {
        logs.push(settle(&urls[1], &key, w).await.0);
    }
    stop_watch_tx.send(true).expect("stop watchers");
    for w in watchers {
        w.await.expect("watcher");
    }
    let mut dups = Vec::new();
    for (w, log) in watched.iter().zip(&logs) {
        dups.push(check_against_log(
            &w.lock().expect("lock").events,
            &log[before.len()..],
        ));
    }
    let first_end = watched[0].lock().expect("lock").ends.first().cloned();

    // A retried `CANCELLED` must be a call no replica saw: its attempt id is in no log.
    let logs_text: String = cluster
        .log_paths()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    let cancelled: Vec<&String> = creates
        .retried_attempts
        .iter()
        .filter(|(c, _)| *c == Code::Cancelled)
        .map(|(_, id)| id)
        .collect();
    let seen: Vec<&&String> = cancelled
        .iter()
        .filter(|id| {
            logs_text.contains(&format!("request_id={id}")) || logs_text.contains(id.as_str())
        })
        .collect();
    assert!(
        seen.is_empty(),
        "cancelled calls that reached a replica (a server-side failure): {seen:?}"
    );
    assert!(exited_ok, "the stopped replica exits with status 0");
    assert!(
        took <= Duration::from_secs(DRAIN_SECS + 1),
        "exit within the drain time, took {took:?}"
    );
    assert!(
        creates.failed.is_empty(),
        "failed unary calls: {:?}",
        creates.failed
    );
    let (code, message) = first_end
        .clone()
        .expect("the stream on the stopped replica ended");
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(
        message.contains("cursor"),
        "the stream says to resume with its cursor: {message}"
    );

    let mut report = Report::new(
        "3. SIGTERM of a replica under load",
        &format!(
            "{CREATORS} clients create grants ({} ms apart, a new `request_id` each) on both \
             replicas; two `WatchEvents` consumers follow the workspace, one on each replica. \
             After 3 s replica a gets SIGTERM (`--drain-secs {DRAIN_SECS}`); the load goes on 3 s \
             more. A client retries a call only when it fails with `UNAVAILABLE` (what tonic \
             reports when the connection is refused or the server refused the stream before \
             handling it, `REFUSED_STREAM` after `GOAWAY`) or with `CANCELLED` \"operation was \
             canceled\" (hyper's answer for a call it had queued on a connection the server \
             closed after its `GOAWAY`; each such attempt is then looked up in the replicas' \
             logs by its own `x-request-id`, and must not be there), on the other replica, same \
             `request_id` and body, at most {} times. **A failed call** is one whose last \
             attempt did not return OK: any other code at any attempt, or `UNAVAILABLE` \
             {ATTEMPTS} times. A watcher whose stream ends reopens on the other replica with \
             its last cursor.",
            PACE.as_millis(),
            ATTEMPTS - 1
        ),
    );
    report.row(
        "Exit status and time from SIGTERM to exit",
        format!(
            "{} in {} ms (must be 0 within {DRAIN_SECS} s + 1 s)",
            if exited_ok { "0" } else { "non-zero" },
            took.as_millis()
        ),
    );
    report.row(
        "Creates acknowledged / attempts",
        format!("{} / {}", creates.acked.len(), creates.attempts),
    );
    report.row(
        "Attempts retried, by code",
        format!("{:?}", creates.retried),
    );
    report.row(
        "Retried `CANCELLED` attempts found in a replica's log (each attempt carries its own `x-request-id`)",
        format!("{} of {} (must be 0: the call never reached a server)", seen.len(), cancelled.len()),
    );
    report.row(
        "Failed unary calls",
        format!("{} (must be 0)", creates.failed.len()),
    );
    report.row(
        "How the stream on the stopped replica ended",
        format!("{:?}: \"{}\"", code, message.replace('|', "\\|")),
    );
    for (i, w) in watched.iter().enumerate() {
        let w = w.lock().expect("lock");
        report.row(
            format!("Watcher {i}: events in the log / received without repeats / repeats"),
            format!(
                "{} / {} / {} (streams opened: {})",
                logs[i].len() - before.len(),
                w.events.len() - dups[i],
                dups[i],
                w.streams
            ),
        );
    }
    report.write("3-sigterm", "sigterm");
}
