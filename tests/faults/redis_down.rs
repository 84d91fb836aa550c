//! Scenario 5: Redis killed mid-run. The replicas use a Redis of the test's own (a
//! `redis-server` on a free port, nothing saved; the machine's Redis is untouched) as their
//! cache. Under a steady load of reads and creates on both replicas, Redis gets SIGKILL and is
//! started again later on the same port: no caller sees an error, reads fall back to the store
//! while it is down, and the cache fills again once it is back.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_proto::v1;
use tokio::sync::watch;

use crate::cluster::{Cluster, Report, channel, free_port, metric_sum};
use crate::harness::authed;
use crate::load::run_creators;

/// Each phase (Redis up, Redis down, Redis back) lasts this long.
const PHASE: Duration = Duration::from_secs(10);
const READERS: usize = 4;
const CREATORS: usize = 2;
const PACE: Duration = Duration::from_millis(200);
/// Grants the readers read (their methods and themselves).
const READ_SET: usize = 10;

/// A throw-away `redis-server`.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        let r = Self {
            port,
            child: Some(child),
        };
        for _ in 0..100 {
            if r.ping() {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {port}");
    }

    fn ping(&self) -> bool {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
    }

    /// SIGKILL: no shutdown, connections cut.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the readers saw.
#[derive(Default)]
struct Reads {
    ok: u64,
    /// Failed reads, by gRPC code and message.
    errors: Vec<(String, String)>,
}

/// Reads grants and access methods round-robin over both replicas until `stop`.
async fn run_readers(
    urls: Vec<String>,
    key: String,
    targets: Vec<(String, String)>,
    stop: watch::Receiver<bool>,
    out: Arc<Mutex<Reads>>,
) {
    let mut chans = Vec::new();
    for u in &urls {
        chans.push(channel(u).await);
    }
    let mut tasks = Vec::new();
    for r in 0..READERS {
        let (chans, key, targets, stop, out) = (
            chans.clone(),
            key.clone(),
            targets.clone(),
            stop.clone(),
            out.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = r;
            while !*stop.borrow() {
                let ch = chans[i % chans.len()].clone();
                let (grant, method) = &targets[i % targets.len()];
                let res = if i % 2 == 0 {
                    v1::access_method_service_client::AccessMethodServiceClient::new(ch)
                        .get_access_method(authed(
                            &key,
                            v1::GetAccessMethodRequest {
                                access_method_id: method.clone(),
                            },
                        ))
                        .await
                        .map(|_| ())
                } else {
                    v1::access_grant_service_client::AccessGrantServiceClient::new(ch)
                        .get_access_grant(authed(
                            &key,
                            v1::GetAccessGrantRequest {
                                access_grant_id: grant.clone(),
                            },
                        ))
                        .await
                        .map(|_| ())
                };
                {
                    let mut o = out.lock().expect("lock");
                    match res {
                        Ok(()) => o.ok += 1,
                        Err(s) => o
                            .errors
                            .push((format!("{:?}", s.code()), s.message().to_owned())),
                    }
                }
                i += READERS;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("reader");
    }
}

/// The status cache's look-ups on every replica, by result.
#[derive(Clone, Copy, Debug, Default)]
struct Lookups {
    hit: f64,
    miss: f64,
    error: f64,
}

impl Lookups {
    fn of(cluster: &Cluster) -> Self {
        let mut l = Self::default();
        for r in &cluster.replicas {
            let m = r.metrics();
            let n = |result: &str| {
                metric_sum(
                    &m,
                    "keygate_cache_requests_total",
                    &[
                        "cache=\"status\"".to_owned(),
                        format!("result=\"{result}\""),
                    ],
                )
            };
            l.hit += n("hit");
            l.miss += n("miss");
            l.error += n("error");
        }
        l
    }

    fn since(self, before: Self) -> Self {
        Self {
            hit: self.hit - before.hit,
            miss: self.miss - before.miss,
            error: self.error - before.error,
        }
    }

    fn total(self) -> f64 {
        self.hit + self.miss + self.error
    }

    fn hit_rate(self) -> f64 {
        self.hit / self.total().max(1.0)
    }

    fn row(self) -> String {
        format!(
            "{:.0} look-ups: {:.0} hits ({:.0} %), {:.0} misses, {:.0} failed (read from the store)",
            self.total(),
            self.hit,
            self.hit_rate() * 100.0,
            self.miss,
            self.error
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long (three 10 s phases): run by tools/faults"]
async fn redis_killed_mid_run() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let cluster = Cluster::start_on("redis", 2, &[], &format!("redis://127.0.0.1:{port}")).await;
    let urls = cluster.urls();
    let key = cluster.key.clone();

    // The grants the readers read.
    let mut grants =
        v1::access_grant_service_client::AccessGrantServiceClient::new(channel(&urls[0]).await);
    let mut targets = Vec::new();
    for i in 0..READ_SET {
        let g = grants
            .create_access_grant(authed(
                &key,
                cluster.grant_request(&format!("redis-read-{i}"), &format!("Reader {i}")),
            ))
            .await
            .expect("grant to read")
            .into_inner()
            .access_grant
            .expect("grant");
        let method = g
            .requested_access_methods
            .first()
            .and_then(|m| m.created_access_method_ids.first())
            .cloned()
            .expect("a method");
        targets.push((g.access_grant_id, method));
    }

    let (stop_tx, stop) = watch::channel(false);
    let reads = Arc::new(Mutex::new(Reads::default()));
    let readers = tokio::spawn(run_readers(
        urls.clone(),
        key.clone(),
        targets,
        stop.clone(),
        reads.clone(),
    ));
    // Creates are not retried: any failure counts.
    let creators = tokio::spawn(run_creators(
        urls.clone(),
        key.clone(),
        cluster.grant_request("", ""),
        "redis",
        CREATORS,
        PACE,
        stop,
        |_| false,
        1,
    ));

    // Warm the cache, then the three phases.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answered = || reads.lock().expect("lock").ok;
    let (t0, r0) = (Lookups::of(&cluster), answered());
    tokio::time::sleep(PHASE).await;
    let (t1, r1) = (Lookups::of(&cluster), answered());
    redis.kill();
    tokio::time::sleep(PHASE).await;
    let (t2, r2) = (Lookups::of(&cluster), answered());
    let back = tokio::task::block_in_place(|| Redis::start(port));
    let (t3, r3) = (Lookups::of(&cluster), answered());
    tokio::time::sleep(PHASE).await;
    let (t4, r4) = (Lookups::of(&cluster), answered());
    stop_tx.send(true).expect("stop");
    readers.await.expect("readers");
    let creates = creators.await.expect("creators");
    drop(back);

    let (up, down, again) = (t1.since(t0), t2.since(t1), t4.since(t3));
    let r = reads.lock().expect("lock");
    assert!(r.errors.is_empty(), "reads failed: {:?}", r.errors);
    assert!(
        creates.failed.is_empty(),
        "creates failed: {:?}",
        creates.failed
    );
    assert!(up.hit > 0.0, "the cache serves reads while Redis is up");
    assert!(
        // Hits only of look-ups already answered when Redis was killed (at most one per
        // reader and cache in flight).
        down.error > 0.0 && down.hit <= (READERS * 2) as f64,
        "with Redis down, look-ups fail over to the store: {down:?}"
    );
    assert!(
        again.hit_rate() >= 0.5 * up.hit_rate(),
        "the cache fills again once Redis is back: {:.2} vs {:.2} before",
        again.hit_rate(),
        up.hit_rate()
    );

    let mut report = Report::new(
        "5. Redis killed mid-run",
        &format!(
            "The replicas' Redis is a `redis-server` of the test's own (free port, nothing saved). \
             {READERS} readers call `GetAccessMethod` and `GetAccessGrant` on {READ_SET} grants \
             round-robin over both replicas (10 ms apart each), and {CREATORS} clients create \
             grants ({} ms apart, never retried). After 3 s of warm-up: {} s with Redis up; then \
             Redis gets SIGKILL, {} s down; then it is started again (empty) on the same port, {} s. \
             Look-ups: `keygate_cache_requests_total{{cache=\"status\"}}`, both replicas.",
            PACE.as_millis(),
            PHASE.as_secs(),
            PHASE.as_secs(),
            PHASE.as_secs()
        ),
    );
    report.row("Redis up: status cache", up.row());
    report.row("Redis down: status cache", down.row());
    report.row("Redis back (empty): status cache", again.row());
    let per_sec = |n: u64| n as f64 / PHASE.as_secs_f64();
    report.row(
        "Reads answered per second: Redis up / down / back",
        format!(
            "{:.0} / {:.0} / {:.0} (not asserted; with Redis down the cache skips it for a \
             second after each failure, and look-ups read the store)",
            per_sec(r1 - r0),
            per_sec(r2 - r1),
            per_sec(r4 - r3)
        ),
    );
    report.row(
        "Reads answered / failed",
        format!("{} / {} (must be 0)", r.ok, r.errors.len()),
    );
    report.row(
        "Creates acknowledged / failed (not retried)",
        format!(
            "{} / {} (must be 0)",
            creates.acked.len(),
            creates.failed.len()
        ),
    );
    report.write("5-redis", "redis");
}
