//! `--streams N[,N...]`: what open `WatchEvents` streams cost one server.
//!
//! For each N, a fresh `keygate serve` child process (gateway role only, so no orchestrator or
//! delivery loop polls the store; the in-process cache and doorbell; the per-workspace stream
//! limit and the rate limit out of the way) on a fresh database. The streams are this process's;
//! the server's figures are the child's alone, read from `/proc/<pid>`:
//! - RSS (`VmRSS`) idle before the streams and after N streams are open and settled (opened
//!   200 at a time);
//! - store statements over an idle window, with 0 streams and with N (the child logs each
//!   statement at `sqlx::query=debug`; on PostgreSQL also the database's committed transactions
//!   from `pg_stat_database`);
//! - CPU (utime + stime) over the same idle windows;
//! - event lag: grants created one after another, each `access_grant.created` timed on every
//!   stream from the start of its `CreateAccessGrant` call.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keygate_proto::{admin, v1};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use crate::{authed, doors_on, mobile_grant, ms, percentile};

/// Streams per HTTP/2 connection (the server allows 256 at once on one connection).
const STREAMS_PER_CONNECTION: usize = 100;
/// How long each idle window lasts.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Grants created one after another for the lag.
const LAG_GRANTS: usize = 50;
/// Pause between two of those creates.
const LAG_GAP: Duration = Duration::from_millis(100);
/// How long PostgreSQL may keep an idle backend's statistics before reporting them, and a bit.
const PG_STATS_DELAY: Duration = Duration::from_secs(11);
/// Streams being opened at once: a steady state, not the high-water mark of a burst of opens
/// waiting for the store's pool (each open reads where the log ends).
const OPENING_AT_ONCE: usize = 200;
const ADMIN_TOKEN: &str = "keygate-load-admin-token-0123456789";

/// The `keygate` binary: `KEYGATE_BIN`, or next to this one (`cargo build --release -p keygate`).
fn keygate_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KEYGATE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("this executable's path")?;
    let bin = me
        .parent()
        .context("this executable's directory")?
        .join("keygate");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p keygate) or set KEYGATE_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn random_key() -> String {
    use base64::Engine as _;
    let key: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// A `keygate serve` child process; killed on drop.
struct Server {
    child: Child,
    grpc_url: String,
    /// The child's stderr: its log, one line per store statement among others.
    log: PathBuf,
    /// The PostgreSQL database's name, for `pg_stat_database`.
    pg_database: Option<String>,
    _dir: keygate_store::testdb::TempDir,
}

impl Server {
    async fn start(postgres: bool) -> anyhow::Result<Self> {
        let dir = keygate_store::testdb::TempDir::new("keygate-load-streams");
        let (database_url, pg_database) = if postgres {
            let url = keygate_store::testdb::create_postgres_database().await;
            let name = url.rsplit('/').next().unwrap_or_default().to_owned();
            (url, Some(name))
        } else {
            (
                format!("sqlite://{}", dir.0.join("keygate.db").display()),
                None,
            )
        };
        let grpc_port = free_port()?;
        let http_port = free_port()?;
        let log = dir.0.join("stderr.log");
        let mut child = Command::new(keygate_bin()?)
            .arg("serve")
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .arg("--data-dir")
            .arg(dir.0.join("data"))
            .env_remove("RUST_LOG")
            .env_remove("KEYGATE_REDIS_URL")
            .env("KEYGATE_DATABASE_URL", &database_url)
            .env("KEYGATE_LOG", "warn,sqlx::query=debug")
            .env("KEYGATE_ROLES", "gateway")
            .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KEYGATE_WATCH_STREAMS_PER_WORKSPACE", "0")
            .env("KEYGATE_RATE_LIMIT_RPS", "1000000")
            .env("KEYGATE_RATE_LIMIT_BURST", "1000000")
            .env("KEYGATE_MAX_IN_FLIGHT", "1000000")
            .env("KEYGATE_INSTANT_KEY_SECRET", random_key())
            .env("KEYGATE_PAGE_TOKEN_KEY", random_key())
            .env("KEYGATE_CACHE_KEY", random_key())
            .env("KEYGATE_CREDENTIALS_KEY", random_key())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()
            .context("starting keygate serve")?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Drains stdout for the life of the child so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = Self {
            child,
            grpc_url: format!("http://127.0.0.1:{grpc_port}"),
            log,
            pg_database,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::task::block_in_place(|| rx.recv_timeout(left)) {
                Ok(line) if line.starts_with("keygate: ready") => break,
                Ok(_) => {}
                Err(e) => {
                    let tail = std::fs::read_to_string(&server.log).unwrap_or_default();
                    let _ = server.child.kill();
                    bail!("keygate serve did not get ready within 60 s ({e}); its log:\n{tail}");
                }
            }
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size, in KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS in /proc/<pid>/status")
    }

    /// CPU time used so far (user + system), in clock ticks.
    fn cpu_ticks(&self) -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name (which may hold spaces), from field 3 (state) on.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = f.get(11).context("utime")?.parse()?;
        let stime: u64 = f.get(12).context("stime")?.parse()?;
        Ok(utime + stime)
    }

    /// Store statements the child has logged so far.
    fn statements(&self) -> anyhow::Result<usize> {
        Ok(count_statements(&self.log))
    }
}

fn count_statements(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|s| s.lines().filter(|l| l.contains("sqlx::query")).count())
        .unwrap_or(0)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Committed and rolled back transactions of `database` so far (`pg_stat_database`).
async fn pg_transactions(database: &str) -> anyhow::Result<i64> {
    use sqlx::Connection as _;
    let mut conn =
        sqlx::PgConnection::connect(&keygate_store::testdb::postgres_admin_url()).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(n)
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// What the server did over an idle window.
struct Idle {
    statements: usize,
    pg_transactions: Option<i64>,
    cpu_seconds: f64,
}

async fn idle_window(server: &Server, ticks_per_second: f64) -> anyhow::Result<Idle> {
    // A backend that has just reported its statistics keeps the next ones for up to 10 s
    // (PGSTAT_IDLE_INTERVAL) when it goes idle: wait that out so the window does not count the
    // statements that came before it (opening the streams). The same delay at the window's end
    // is idle time like the window itself.
    let pg_before = match &server.pg_database {
        Some(db) => {
            tokio::time::sleep(PG_STATS_DELAY).await;
            Some(pg_transactions(db).await?)
        }
        None => None,
    };
    let statements = server.statements()?;
    let cpu = server.cpu_ticks()?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let cpu_after = server.cpu_ticks()?;
    let statements_after = server.statements()?;
    let pg_after = match &server.pg_database {
        Some(db) => Some(pg_transactions(db).await?),
        None => None,
    };
    Ok(Idle {
        statements: statements_after.saturating_sub(statements),
        pg_transactions: pg_before.zip(pg_after).map(|(b, a)| a - b),
        cpu_seconds: cpu_after.saturating_sub(cpu) as f64 / ticks_per_second,
    })
}

/// What one stream received: each grant's `access_grant.created`, with when it arrived.
type Arrivals = Vec<(String, Instant)>;

/// Opens one stream on `ch` and records what arrives until `stop`.
async fn watch_one(
    ch: Channel,
    key: String,
    opened: Arc<AtomicUsize>,
    opening: Arc<tokio::sync::Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Arrivals> {
    let permit = opening.acquire_owned().await?;
    let mut stream = v1::event_service_client::EventServiceClient::new(ch)
        .watch_events(authed(
            &key,
            v1::WatchEventsRequest {
                event_types: vec!["access_grant.created".into()],
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    opened.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let mut got = Vec::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(got),
            next = stream.next() => match next {
                Some(Ok(m)) => {
                    let at = Instant::now();
                    if let Some(e) = m.event {
                        got.push((e.access_grant_id, at));
                    }
                }
                Some(Err(s)) => bail!("stream ended: {s}"),
                None => bail!("stream ended without a status"),
            },
        }
    }
}

/// One scenario's figures.
struct Figures {
    n: usize,
    open_seconds: f64,
    rss_idle_kib: u64,
    rss_streams_kib: u64,
    idle0: Idle,
    idle_n: Idle,
    lags: Vec<Duration>,
    missing: usize,
    failed_streams: usize,
    create_p50: Duration,
}

async fn measure(n: usize, postgres: bool, ticks_per_second: f64) -> anyhow::Result<Figures> {
    let server = Server::start(postgres).await?;
    let ch = Channel::from_shared(server.grpc_url.clone())?
        .connect()
        .await?;
    let created = admin::workspace_service_client::WorkspaceServiceClient::new(ch.clone())
        .create_workspace(authed(
            ADMIN_TOKEN,
            admin::CreateWorkspaceRequest {
                name: "Streams".into(),
                workspace_type: admin::WorkspaceType::Sandbox as i32,
                api_key_name: String::new(),
            },
        ))
        .await?
        .into_inner();
    let key = created.api_key_token;
    let door = doors_on(&ch, &key, &["virtual_salto_ks"])
        .await?
        .into_iter()
        .next()
        .context("a door")?
        .0;
    let mut grants = v1::access_grant_service_client::AccessGrantServiceClient::new(ch.clone());

    // Warm-up: a create and one stream that sees it, so first-use allocations are in "idle".
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let opened = Arc::new(AtomicUsize::new(0));
        let w = tokio::spawn(watch_one(
            ch.clone(),
            key.clone(),
            opened.clone(),
            Arc::new(tokio::sync::Semaphore::new(1)),
            stop_rx,
        ));
        while opened.load(Ordering::Relaxed) == 0 && !w.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        grants
            .create_access_grant(authed(&key, mobile_grant(std::slice::from_ref(&door))))
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stop_tx.send(true);
        w.await??;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle_kib = server.rss_kib()?;
    let idle0 = idle_window(&server, ticks_per_second).await?;

    // N streams over N / 100 connections.
    let connections = n.div_ceil(STREAMS_PER_CONNECTION).max(1);
    let chans = crate::channels(server.grpc_url.clone(), connections).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let opened = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let opening = Arc::new(tokio::sync::Semaphore::new(OPENING_AT_ONCE));
    let watchers: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(watch_one(
                chans[i % connections].clone(),
                key.clone(),
                opened.clone(),
                opening.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    while opened.load(Ordering::Relaxed) < n {
        let failed = watchers.iter().filter(|w| w.is_finished()).count();
        if failed > 0 {
            let _ = stop_tx.send(true);
            let mut first = None;
            for w in watchers {
                if let Ok(Err(e)) = w.await {
                    first.get_or_insert(e);
                }
            }
            bail!(
                "{failed} of {n} streams failed while opening: {}",
                first.map_or_else(String::new, |e| e.to_string())
            );
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} streams opened within 180 s",
                opened.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_seconds = started.elapsed().as_secs_f64();
    // Settled: every stream has joined the tail and the server's buffers are allocated.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_streams_kib = server.rss_kib()?;
    let idle_n = idle_window(&server, ticks_per_second).await?;

    // Lag: grants one after another; each timed from the start of its create call.
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut create_times = Vec::new();
    for _ in 0..LAG_GRANTS {
        let t = Instant::now();
        let g = grants
            .create_access_grant(authed(&key, mobile_grant(std::slice::from_ref(&door))))
            .await?
            .into_inner()
            .access_grant
            .context("grant")?;
        create_times.push(t.elapsed());
        sent.insert(g.access_grant_id, t);
        tokio::time::sleep(LAG_GAP).await;
    }
    // Give the last events time to arrive everywhere.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let mut lags = Vec::with_capacity(n * LAG_GRANTS);
    let mut missing = 0;
    let mut failed_streams = 0;
    for w in watchers {
        match w.await {
            Ok(Ok(got)) => {
                let mut seen = 0;
                for (grant, at) in got {
                    if let Some(t) = sent.get(&grant) {
                        lags.push(at.saturating_duration_since(*t));
                        seen += 1;
                    }
                }
                missing += LAG_GRANTS.saturating_sub(seen);
            }
            _ => {
                failed_streams += 1;
                missing += LAG_GRANTS;
            }
        }
    }
    lags.sort();
    create_times.sort();
    Ok(Figures {
        n,
        open_seconds,
        rss_idle_kib,
        rss_streams_kib,
        idle0,
        idle_n,
        lags,
        missing,
        failed_streams,
        create_p50: percentile(&create_times, 0.5),
    })
}

fn print(f: &Figures, postgres: bool) {
    let added = f.rss_streams_kib.saturating_sub(f.rss_idle_kib);
    println!(
        "\n{} streams ({} connections), opened in {:.1} s",
        f.n,
        f.n.div_ceil(STREAMS_PER_CONNECTION).max(1),
        f.open_seconds
    );
    println!(
        "   RSS idle {:.1} MiB, with the streams {:.1} MiB: +{:.1} MiB, {:.1} KiB per stream (target: 10,000 streams within 100 MB, ~10 KB each)",
        f.rss_idle_kib as f64 / 1024.0,
        f.rss_streams_kib as f64 / 1024.0,
        added as f64 / 1024.0,
        added as f64 / f.n as f64
    );
    let secs = IDLE_WINDOW.as_secs_f64();
    for (label, idle) in [("0 streams", &f.idle0), ("with the streams", &f.idle_n)] {
        println!(
            "   idle {secs:.0} s, {label:<16}: {} store statements ({:.1}/s){}, CPU {:.3} s ({:.1}% of a core)",
            idle.statements,
            idle.statements as f64 / secs,
            idle.pg_transactions
                .map_or(String::new(), |t| format!(", {t} PostgreSQL transactions")),
            idle.cpu_seconds,
            100.0 * idle.cpu_seconds / secs
        );
    }
    println!(
        "   lag create start → access_grant.created on every stream ({LAG_GRANTS} grants, {} samples): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; create call p50 {:.1} ms{}",
        f.lags.len(),
        ms(percentile(&f.lags, 0.5)),
        ms(percentile(&f.lags, 0.99)),
        ms(percentile(&f.lags, 1.0)),
        ms(f.create_p50),
        if postgres { " (postgres)" } else { " (sqlite)" }
    );
    if f.missing > 0 || f.failed_streams > 0 {
        println!(
            "   MISSING: {} events not received, {} streams failed",
            f.missing, f.failed_streams
        );
    }
}

/// `--streams N[,N...]`.
pub async fn run(counts: &[usize], postgres: bool) -> anyhow::Result<()> {
    let ticks_per_second = clock_ticks_per_second();
    println!(
        "keygate-load --streams: store = {}, {} cores; a `keygate serve` child (gateway role) per count; idle windows of {} s",
        if postgres { "postgres" } else { "sqlite" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        IDLE_WINDOW.as_secs()
    );
    for &n in counts {
        let f = measure(n, postgres, ticks_per_second).await?;
        print(&f, postgres);
    }
    Ok(())
}
