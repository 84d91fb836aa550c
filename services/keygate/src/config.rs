//! Configuration: every setting is a flag and a `KEYGATE_*` environment variable, documented
//! by `keygate --help` (the operator reference is generated from the same definitions).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "keygate",
    version,
    about = "Keygate: a self-hosted, multi-tenant gRPC gateway for physical access management.",
    long_about = "Keygate puts access control systems (Salto, Visionline, Latch, Brivo, ...) behind one gRPC contract.\n\
With no configuration it stores data in a SQLite file under KEYGATE_DATA_DIR, caches in process, and creates a sandbox \
workspace with five virtual access systems on first start."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
// Parsed once at start; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Runs Keygate (all roles by default).
    Serve(ServeArgs),
    /// Applies pending database migrations and exits (for a Kubernetes Job before upgrades).
    Migrate(MigrateArgs),
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Directory for the embedded SQLite database and the sandbox API key file.
    #[arg(long, env = "KEYGATE_DATA_DIR", default_value = "./keygate-data")]
    pub data_dir: PathBuf,

    /// Store of record. A postgres:// URL uses PostgreSQL; empty uses SQLite in KEYGATE_DATA_DIR.
    #[arg(
        long,
        env = "KEYGATE_DATABASE_URL",
        default_value = "",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Log format.
    #[arg(long, env = "KEYGATE_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,

    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, env = "KEYGATE_LOG", default_value = "info")]
    pub log: String,
}

impl StoreArgs {
    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("keygate.db").display())
        } else {
            self.database_url.clone()
        }
    }
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Only check: exit with status 1 if the schema is behind this build, without changing it.
    #[arg(long)]
    pub check: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The gRPC API.
    Gateway,
    /// Access grant workers: provisioning, encoding and revocation jobs.
    Orchestrator,
    /// Instant Key pages and notifications (no work yet: arrives with delivery).
    Delivery,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Address of the gRPC API.
    #[arg(long, env = "KEYGATE_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP port (liveness /livez, readiness /readyz; Instant Key pages and metrics later).
    #[arg(long, env = "KEYGATE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Cache. A redis:// URL shares the cache across replicas; empty caches in process.
    #[arg(
        long,
        env = "KEYGATE_REDIS_URL",
        default_value = "",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// Token for the operator API (keygate.admin.v1). Empty disables that API.
    #[arg(
        long,
        env = "KEYGATE_ADMIN_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub admin_token: String,

    /// Public base URL of the HTTP port, used to build Instant Key links.
    #[arg(
        long,
        env = "KEYGATE_PUBLIC_URL",
        default_value = "http://localhost:8080"
    )]
    pub public_url: String,

    /// Roles to run, comma separated. Default: all.
    #[arg(long, env = "KEYGATE_ROLES", value_enum, value_delimiter = ',', default_values_t = [Role::Gateway, Role::Orchestrator, Role::Delivery])]
    pub roles: Vec<Role>,

    /// Apply migrations at start. Off: wait (NOT_SERVING) until `keygate migrate` has run.
    #[arg(long, env = "KEYGATE_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// Create a sandbox workspace with virtual access systems on first start. Default: on when
    /// KEYGATE_DATABASE_URL is empty (the embedded store), off otherwise (a production database
    /// gets no sandbox unless asked).
    #[arg(long, env = "KEYGATE_BOOTSTRAP_SANDBOX", action = clap::ArgAction::Set)]
    pub bootstrap_sandbox: Option<bool>,

    /// Sustained requests per second allowed per workspace.
    #[arg(long, env = "KEYGATE_RATE_LIMIT_RPS", default_value_t = 100.0)]
    pub rate_limit_rps: f64,

    /// Burst of requests allowed per workspace.
    #[arg(long, env = "KEYGATE_RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,

    /// Longest time a call may take, in seconds (a shorter grpc-timeout from the client wins).
    #[arg(long, env = "KEYGATE_MAX_DEADLINE_SECS", default_value_t = 30)]
    pub max_deadline_secs: u64,

    /// Calls in flight before new ones are refused with UNAVAILABLE.
    #[arg(long, env = "KEYGATE_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "KEYGATE_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// How long the sandbox virtual access systems take to provision, in milliseconds.
    #[arg(
        long,
        env = "KEYGATE_SANDBOX_PROVISION_DELAY_MS",
        default_value_t = 250
    )]
    pub sandbox_provision_delay_ms: u64,

    /// Seconds an orchestrator holds a job; a crashed worker's jobs are taken over after this.
    #[arg(long, env = "KEYGATE_JOB_LEASE_SECS", default_value_t = 30)]
    pub job_lease_secs: u64,

    /// Seconds between reconciliation passes, which read every access system back and repair
    /// what drifted from the record; 0 turns them off.
    #[arg(long, env = "KEYGATE_RECONCILE_SECS", default_value_t = 300)]
    pub reconcile_secs: u64,

    /// Milliseconds between checks for grants whose `ends_at` has passed (their access is then
    /// revoked everywhere).
    #[arg(long, env = "KEYGATE_EXPIRY_CHECK_MS", default_value_t = 5000)]
    pub expiry_check_ms: u64,

    /// Seconds to let in-flight calls finish after SIGTERM before exiting anyway.
    #[arg(long, env = "KEYGATE_DRAIN_SECS", default_value_t = 20)]
    pub drain_secs: u64,
}
