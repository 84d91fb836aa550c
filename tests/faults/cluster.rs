//! Two (or more) `keygate serve` replicas on one fresh PostgreSQL database and one Redis, each on
//! fixed loopback ports so a replica restarted after `kill -9` comes back at the same address.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keygate_proto::v1;
use tonic::transport::{Channel, Endpoint};

use crate::harness::{DataDir, authed, create_workspace, production_keys};

/// The Redis database the suite uses (its keys stay out of database 0).
const REDIS_DB: u32 = 7;

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Where the suite writes its results and the replicas' logs.
pub fn out_dir() -> PathBuf {
    let dir = std::env::var_os("KEYGATE_FAULTS_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faults"));
    std::fs::create_dir_all(&dir).expect("faults output dir");
    dir
}

/// One replica: a `keygate serve` process that can be killed and started again.
pub struct Replica {
    pub name: String,
    dir: DataDir,
    pub grpc_port: u16,
    pub http_port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    pub starts: u32,
}

impl Replica {
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Starts the process and waits for `keygate: ready`; returns how long that took.
    pub fn start(&mut self) -> Duration {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let started = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("replica log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("serve")
            .args(["--grpc-addr", &format!("127.0.0.1:{}", self.grpc_port)])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http_port)])
            .arg("--data-dir")
            .arg(&self.dir.0)
            .args(&self.args)
            .env(
                "KEYGATE_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn keygate");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout for the life of the process so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("keygate: ready") => break,
                Ok(_) => {}
                Err(e) => panic!("{} did not get ready within 60 s: {e}", self.name),
            }
        }
        started.elapsed()
    }

    /// SIGKILL: no drain, no cleanup, leases left behind.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns whether it exited with 0 and how long it took.
    pub fn terminate(&mut self, within: Duration) -> (bool, Duration) {
        let mut c = self.child.take().expect("running replica");
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(ok.success(), "kill -TERM failed");
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return (status.success(), started.elapsed());
            }
            if started.elapsed() > within {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not exit within {within:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The body of `GET /metrics` on the HTTP port.
    pub fn metrics(&self) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http_port))
            .expect("connect to the HTTP port");
        write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The replicas, the database they share and a sandbox workspace to work in.
pub struct Cluster {
    pub replicas: Vec<Replica>,
    pub database_url: String,
    pub workspace_id: String,
    pub key: String,
    /// One entrance on each of two virtual access systems, each with card and mobile key.
    pub doors: Vec<String>,
    pub systems: Vec<String>,
}

impl Cluster {
    /// The replicas' log files.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        self.replicas.iter().map(|r| r.log.clone()).collect()
    }

    /// Starts `n` replicas (one after the other, so only the first migrates) with `args`, and
    /// creates a sandbox workspace through the first.
    pub async fn start(scenario: &str, n: usize, args: &[&str]) -> Self {
        let base = std::env::var("KEYGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        Self::start_on(scenario, n, args, &base).await
    }

    /// [`Cluster::start`] with the Redis at `redis_base` (`redis://host:port`).
    pub async fn start_on(scenario: &str, n: usize, args: &[&str], redis_base: &str) -> Self {
        let database_url = keygate_store::testdb::create_postgres_database().await;
        let redis_url = format!("{}/{REDIS_DB}", redis_base.trim_end_matches('/'));
        let mut env = production_keys();
        env.extend([
            ("KEYGATE_DATABASE_URL".to_owned(), database_url.clone()),
            ("KEYGATE_REDIS_URL".to_owned(), redis_url),
            (
                "KEYGATE_ADMIN_TOKEN".to_owned(),
                crate::harness::ADMIN_TOKEN.to_owned(),
            ),
        ]);
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        // The suite measures faults, not the per-workspace rate limit.
        args.extend(
            ["--rate-limit-rps", "100000", "--rate-limit-burst", "100000"].map(String::from),
        );
        let logs = out_dir().join("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        let mut replicas = Vec::new();
        for i in 0..n {
            let name = format!("replica-{}", (b'a' + i as u8) as char);
            let log = logs.join(format!("{scenario}-{name}.log"));
            let _ = std::fs::remove_file(&log);
            let mut r = Replica {
                name,
                dir: DataDir::new(),
                grpc_port: free_port(),
                http_port: free_port(),
                args: args.clone(),
                env: env.clone(),
                log,
                child: None,
                starts: 0,
            };
            r.start();
            replicas.push(r);
        }
        let ch = channel(&replicas[0].grpc_url()).await;
        let (workspace_id, key) = create_workspace(&ch, scenario, true).await;
        let (systems, doors) = two_doors(&ch, &key).await;
        Self {
            replicas,
            database_url,
            workspace_id,
            key,
            doors,
            systems,
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(Replica::grpc_url).collect()
    }

    /// A create request for a new grant to both doors, card and mobile key.
    pub fn grant_request(&self, request_id: &str, full_name: &str) -> v1::CreateAccessGrantRequest {
        v1::CreateAccessGrantRequest {
            request_id: request_id.into(),
            grantee: Some(v1::create_access_grant_request::Grantee::UserIdentity(
                v1::NewUserIdentity {
                    full_name: full_name.into(),
                    ..Default::default()
                },
            )),
            acs_entrance_ids: self.doors.clone(),
            requested_access_methods: [
                v1::AccessMethodMode::Card as i32,
                v1::AccessMethodMode::MobileKey as i32,
            ]
            .map(|mode| v1::NewRequestedAccessMethod {
                mode,
                code: String::new(),
            })
            .to_vec(),
            ..Default::default()
        }
    }
}

/// A lazily connecting channel: a replica that is down fails calls with `UNAVAILABLE`, and the
/// same channel reconnects once it is back.
pub async fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_owned())
        .expect("uri")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

async fn two_doors(ch: &Channel, key: &str) -> (Vec<String>, Vec<String>) {
    let mut client = v1::access_system_service_client::AccessSystemServiceClient::new(ch.clone());
    let all = client
        .list_access_systems(authed(key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("list systems")
        .into_inner()
        .acs_systems;
    let (mut systems, mut doors) = (Vec::new(), Vec::new());
    for t in ["virtual_salto_space", "virtual_visionline"] {
        let s = all
            .iter()
            .find(|s| s.system_type == t)
            .expect("virtual system");
        let e = client
            .list_entrances(authed(
                key,
                v1::ListEntrancesRequest {
                    acs_system_id: s.acs_system_id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list entrances")
            .into_inner()
            .acs_entrances;
        doors.push(
            e.into_iter()
                .find(|e| e.can_unlock_with_card && e.can_unlock_with_mobile_key)
                .expect("door with card and mobile key")
                .acs_entrance_id,
        );
        systems.push(s.acs_system_id.clone());
    }
    (systems, doors)
}

/// The sum of a Prometheus series' values over the lines of `name` whose labels contain every
/// `label="value"` of `want`.
pub fn metric_sum(text: &str, name: &str, want: &[String]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| want.iter().all(|w| l.contains(w.as_str())))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Every event of the workspace, in log order.
pub async fn all_events(url: &str, key: &str) -> Vec<v1::Event> {
    let mut client = v1::event_service_client::EventServiceClient::new(channel(url).await);
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let r = client
            .list_events(authed(
                key,
                v1::ListEventsRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list events")
            .into_inner();
        out.extend(r.events);
        if r.next_page_token.is_empty() {
            return out;
        }
        page_token = r.next_page_token;
    }
}

/// `key value, key value, ...` of a count map (`sep` between a key and its value), for a row.
pub fn tally<K: std::fmt::Display, V: std::fmt::Display>(
    m: &std::collections::BTreeMap<K, V>,
    sep: &str,
) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}{sep}{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One section of docs/reliability.md: a table of what was asserted and the figure measured.
pub struct Report {
    title: String,
    intro: String,
    rows: Vec<(String, String)>,
}

impl Report {
    pub fn new(title: &str, intro: &str) -> Self {
        Self {
            title: title.into(),
            intro: intro.into(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, what: impl Into<String>, figure: impl std::fmt::Display) {
        self.rows.push((what.into(), figure.to_string()));
    }

    /// Writes `<out>/<file>.md` (tools/faults puts the sections into docs/reliability.md).
    pub fn write(&self, file: &str, test: &str) {
        let mut s = format!(
            "### {}\n\n{}\n\n| Asserted | Figure |\n|---|---|\n",
            self.title, self.intro
        );
        for (what, fig) in &self.rows {
            s.push_str(&format!("| {what} | {fig} |\n"));
        }
        s.push_str(&format!("\nCommand: `tools/faults {test}`\n\n"));
        std::fs::write(out_dir().join(format!("{file}.md")), &s).expect("write report");
        eprintln!("{}", s);
    }
}
