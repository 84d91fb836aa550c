//! Starts the real `keygate` binary on free ports and talks gRPC to it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use keygate_proto::{admin, v1};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Where a test's Keygate keeps its data.
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(format!("keygate-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How to start Keygate.
#[derive(Default, Clone)]
pub struct Options {
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub admin_token: Option<String>,
    pub extra_args: Vec<String>,
    /// More environment variables for the process (`OTEL_*`, `RUST_LOG`, ...).
    pub env: Vec<(String, String)>,
    /// Write the process's stderr (its logs) to this file instead of dropping it.
    pub stderr_file: Option<PathBuf>,
}

impl Options {
    pub fn with_admin() -> Self {
        Self {
            admin_token: Some(ADMIN_TOKEN.into()),
            ..Self::default()
        }
    }

    /// PostgreSQL (a fresh database) and Redis, as a production deployment runs, with the
    /// keys a production deployment must configure (fresh ones; replicas started with the same
    /// options share them).
    pub async fn postgres_redis() -> Self {
        let url = keygate_store::testdb::create_postgres_database().await;
        Self {
            database_url: Some(url),
            redis_url: Some(
                std::env::var("KEYGATE_TEST_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            ),
            env: production_keys(),
            ..Self::with_admin()
        }
    }
}

/// Fresh values of the keys KEYGATE_DATABASE_URL requires (docs/security.md), and the optional
/// credentials key.
pub fn production_keys() -> Vec<(String, String)> {
    use base64::Engine as _;
    [
        "KEYGATE_INSTANT_KEY_SECRET",
        "KEYGATE_PAGE_TOKEN_KEY",
        "KEYGATE_CACHE_KEY",
        "KEYGATE_CREDENTIALS_KEY",
    ]
    .into_iter()
    .map(|var| {
        let key: [u8; 32] = rand::random();
        (
            var.to_owned(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
        )
    })
    .collect()
}

/// A running Keygate process; killed on drop.
pub struct Keygate {
    child: Child,
    pub grpc_addr: String,
    pub http_addr: String,
    /// The sandbox key printed on first start (None on later starts).
    pub sandbox_key: Option<String>,
    pub stdout_lines: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl Keygate {
    /// Starts Keygate with its data in `dir` and waits until it reports ready.
    pub fn start(dir: &Path, opts: &Options) -> Self {
        Self::start_until(dir, opts, "keygate: ready")
    }

    /// Starts Keygate and waits for a stdout line starting with `ready_line`.
    pub fn start_until(dir: &Path, opts: &Options, ready_line: &str) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
        cmd.arg("serve")
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            .args(&opts.extra_args)
            .env_remove("KEYGATE_DATABASE_URL")
            .env_remove("KEYGATE_REDIS_URL")
            .env_remove("KEYGATE_ADMIN_TOKEN")
            .env(
                "KEYGATE_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(if let Some(path) = &opts.stderr_file {
                Stdio::from(std::fs::File::create(path).expect("stderr file"))
            } else if std::env::var("TEST_LOG").is_ok() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        if let Some(u) = &opts.database_url {
            cmd.env("KEYGATE_DATABASE_URL", u);
        }
        if let Some(u) = &opts.redis_url {
            cmd.env("KEYGATE_REDIS_URL", u);
        }
        if let Some(t) = &opts.admin_token {
            cmd.env("KEYGATE_ADMIN_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("spawn keygate");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut kg = Self {
            child,
            grpc_addr: String::new(),
            http_addr: String::new(),
            sandbox_key: None,
            stdout_lines: Vec::new(),
            lines: rx,
        };
        kg.wait_for_line(ready_line, Duration::from_secs(60));
        for line in &kg.stdout_lines {
            if let Some(a) = line.strip_prefix("keygate: gRPC API listening on ") {
                kg.grpc_addr = a.trim().to_owned();
            } else if let Some(a) = line.strip_prefix("keygate: HTTP (livez, readyz) listening on ")
            {
                kg.http_addr = a.trim().to_owned();
            } else if let Some(k) = line.strip_prefix("keygate: sandbox API key (shown once): ") {
                kg.sandbox_key = Some(k.trim().to_owned());
            }
        }
        let serves_grpc = !opts.extra_args.iter().any(|a| a.starts_with("--roles"))
            || opts.extra_args.iter().any(|a| a.contains("gateway"));
        assert!(
            !serves_grpc || !kg.grpc_addr.is_empty(),
            "no gRPC address in {:?}",
            kg.stdout_lines
        );
        kg
    }

    /// Reads stdout until a line starting with `prefix`.
    pub fn wait_for_line(&mut self, prefix: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with(prefix);
                    self.stdout_lines.push(line);
                    if done {
                        return;
                    }
                }
                Err(_) => panic!(
                    "keygate did not print {prefix:?} within {within:?}; got {:?}",
                    self.stdout_lines
                ),
            }
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// The HTTP status code of `GET path` on the HTTP port.
    pub fn http_status(&self, path: &str) -> u16 {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(&self.http_addr).expect("connect http");
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// Waits for the process to exit on its own (after a signal sent elsewhere).
    pub fn terminate_wait(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "keygate did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process at once (SIGKILL): no drain, no cleanup, leases left behind.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status and how long it took.
    pub fn terminate(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let started = std::time::Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "keygate did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Keygate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request with `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    let v: MetadataValue<_> = format!("Bearer {token}").parse().expect("header");
    r.metadata_mut().insert("authorization", v);
    r
}

/// The ErrorInfo reason of a status.
pub fn reason(s: &Status) -> String {
    s.get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// Asserts a call failed with `code` and `reason`.
#[track_caller]
pub fn assert_fails<T: std::fmt::Debug>(
    r: Result<T, Status>,
    code: Code,
    want_reason: &str,
) -> Status {
    match r {
        Ok(v) => panic!("expected {code:?}/{want_reason}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert_eq!(reason(&s), want_reason, "{s:?}");
            s
        }
    }
}

pub fn admin_client(
    ch: &Channel,
) -> admin::workspace_service_client::WorkspaceServiceClient<Channel> {
    admin::workspace_service_client::WorkspaceServiceClient::new(ch.clone())
}

pub fn identities(
    ch: &Channel,
) -> v1::user_identity_service_client::UserIdentityServiceClient<Channel> {
    v1::user_identity_service_client::UserIdentityServiceClient::new(ch.clone())
}

pub fn systems(
    ch: &Channel,
) -> v1::access_system_service_client::AccessSystemServiceClient<Channel> {
    v1::access_system_service_client::AccessSystemServiceClient::new(ch.clone())
}

/// Creates a workspace through the operator API; returns its id and first API key.
pub async fn create_workspace(ch: &Channel, name: &str, sandbox: bool) -> (String, String) {
    let kind = if sandbox {
        admin::WorkspaceType::Sandbox
    } else {
        admin::WorkspaceType::Production
    };
    let r = admin_client(ch)
        .create_workspace(authed(
            ADMIN_TOKEN,
            admin::CreateWorkspaceRequest {
                name: name.into(),
                workspace_type: kind as i32,
                api_key_name: String::new(),
            },
        ))
        .await
        .expect("create workspace")
        .into_inner();
    (
        r.workspace.expect("workspace").workspace_id,
        r.api_key_token,
    )
}

pub fn jane(request_id: &str) -> v1::CreateUserIdentityRequest {
    v1::CreateUserIdentityRequest {
        request_id: request_id.into(),
        user_identity_key: "guest-1".into(),
        full_name: "Jane Doe".into(),
        email_address: "jane.doe@example.com".into(),
        phone_number: "+15555551000".into(),
    }
}
