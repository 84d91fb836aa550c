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
    #[command(
        after_help = "Telemetry (docs/telemetry.md): Prometheus metrics are served at /metrics on the HTTP port. \
Traces are exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT is set (for example http://otel-collector:4317); \
the standard OTEL_* variables apply (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_SCHEDULE_DELAY, \
OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, ...)."
    )]
    Serve(ServeArgs),
    /// Applies pending database migrations and exits (for a Kubernetes Job before upgrades).
    Migrate(MigrateArgs),
    /// Instant Key deliveries by SMS and email, and the outbox (docs/delivery.md).
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// The operator API of a running Keygate over gRPC, with the admin token (docs/cli.md).
    Admin(AdminArgs),
    /// Readiness check for container health checks: exits 0 when the server is ready, 1 when
    /// not (docs/cli.md).
    Probe(ProbeArgs),
    /// Prints a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(CompletionsArgs),
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The HTTP port of the server to check; GET /readyz on it must answer 200. An unspecified
    /// address (0.0.0.0, [::]) is checked on loopback, so the server's own KEYGATE_HTTP_ADDR works.
    #[arg(long, env = "KEYGATE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: std::net::SocketAddr,

    /// Check the gRPC health service (grpc.health.v1, overall status) on this address instead of
    /// the HTTP port, such as 127.0.0.1:50051.
    #[arg(long)]
    pub grpc_addr: Option<std::net::SocketAddr>,

    /// Seconds the check may take before it counts as not ready.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
}

/// Where the operator API is and how to authenticate to it.
#[derive(Args, Debug, Clone)]
pub struct AdminConnectArgs {
    /// gRPC endpoint of a running Keygate: http://host:port, https://host:port (TLS with the
    /// system's roots), or host:port (plain).
    #[arg(
        long,
        env = "KEYGATE_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub endpoint: String,

    /// The server's KEYGATE_ADMIN_TOKEN. Prefer the environment variable: a flag shows in the
    /// process list.
    #[arg(
        long,
        env = "KEYGATE_ADMIN_TOKEN",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true,
        global = true
    )]
    pub admin_token: String,

    /// Print JSON (one document) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// Seconds to wait for the server, for connecting and for each call.
    #[arg(long, default_value_t = 10, global = true)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub connect: AdminConnectArgs,

    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Workspaces (tenants).
    #[command(subcommand)]
    Workspaces(WorkspacesCommand),
    /// A workspace's API keys.
    #[command(subcommand, name = "api-keys")]
    ApiKeys(ApiKeysCommand),
    /// A workspace's access systems.
    #[command(subcommand)]
    Systems(SystemsCommand),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkspaceTypeArg {
    /// Virtual access systems only; seeded with the five sandbox systems.
    Sandbox,
    /// Real access systems.
    Production,
}

#[derive(Subcommand, Debug)]
pub enum WorkspacesCommand {
    /// Creates a workspace and its first API key (its token is printed once).
    Create {
        /// Display name, 1 to 200 characters.
        #[arg(long)]
        name: String,
        /// Sandbox or production.
        #[arg(long = "type", value_enum)]
        workspace_type: WorkspaceTypeArg,
        /// Name of the first API key (default: "default").
        #[arg(long)]
        api_key_name: Option<String>,
    },
    /// Lists every workspace, oldest first.
    List,
}

#[derive(Subcommand, Debug)]
pub enum ApiKeysCommand {
    /// Creates an API key (its token is printed once).
    Create {
        /// The workspace the key acts in.
        #[arg(long)]
        workspace_id: String,
        /// Display name, such as booking-service.
        #[arg(long)]
        name: String,
    },
    /// Lists a workspace's API keys (never their secrets), revoked ones included.
    List {
        /// The workspace whose keys to list.
        #[arg(long)]
        workspace_id: String,
    },
    /// Revokes an API key; calls with it are refused from then on. Idempotent.
    Revoke {
        /// The workspace the key belongs to.
        #[arg(long)]
        workspace_id: String,
        /// The key to revoke.
        #[arg(long)]
        api_key_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SystemsCommand {
    /// Connects an access system of a named type to a workspace.
    Connect {
        /// The workspace to connect the system to.
        #[arg(long)]
        workspace_id: String,
        /// Adapter type, such as virtual_salto_space, seam, kisi, brivo or connector.
        #[arg(long = "type")]
        system_type: String,
        /// Display name (default: the type's usual name).
        #[arg(long)]
        name: Option<String>,
        /// IANA time zone of the site (default: UTC).
        #[arg(long)]
        time_zone: Option<String>,
        /// A non-secret setting the adapter reads, KEY=VALUE; repeat for more.
        #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = key_value)]
        settings: Vec<(String, String)>,
        /// A secret value (sealed at rest, never returned), KEY=VALUE; repeat for more. A value
        /// starting with @ is read from that file (`--credential api_key=@/run/secrets/key`).
        // Parsed by the command, not by clap, so that a malformed one is never echoed.
        #[arg(long = "credential", value_name = "KEY=VALUE")]
        credentials: Vec<String>,
    },
    /// Lists a workspace's access systems, oldest first.
    List {
        /// The workspace whose systems to list.
        #[arg(long)]
        workspace_id: String,
    },
}

/// `KEY=VALUE`, with a non-empty key.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err("expected KEY=VALUE with a non-empty KEY".to_owned()),
    }
}

#[derive(Subcommand, Debug)]
pub enum DeliveriesCommand {
    /// Prints deliveries newest first: channel, masked recipient, status (`sent (outbox)` for
    /// those that went to the outbox) and the Instant Key link, derived for printing.
    List(DeliveriesListArgs),
}

#[derive(Args, Debug)]
pub struct DeliveriesListArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub instant_key_secret: InstantKeySecretArgs,

    /// Public base URL of the HTTP port, as the server has it (the links are built from it).
    #[arg(
        long,
        env = "KEYGATE_PUBLIC_URL",
        default_value = "http://localhost:8080"
    )]
    pub public_url: String,

    /// Only the deliveries of this workspace.
    #[arg(long)]
    pub workspace_id: Option<String>,

    /// Only the deliveries that went to the outbox.
    #[arg(long)]
    pub outbox: bool,

    /// Most deliveries to print (at most 500).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// Instant Key deliveries by SMS and email (docs/delivery.md).
#[derive(Args, Debug, Clone)]
pub struct NotifyArgs {
    /// HTTP SMS API that Instant Key links are POSTed to (Twilio-style form: To, From, Body), such
    /// as https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json ({sid} is replaced by
    /// KEYGATE_SMS_ACCOUNT_SID). Empty: no SMS sender. https://, or http:// to loopback only.
    #[arg(long, env = "KEYGATE_SMS_API_URL", default_value = "")]
    pub sms_api_url: String,

    /// Account SID: the user of the SMS API's HTTP basic auth.
    #[arg(
        long,
        env = "KEYGATE_SMS_ACCOUNT_SID",
        default_value = "",
        hide_env_values = true
    )]
    pub sms_account_sid: String,

    /// Auth token: the password of the SMS API's HTTP basic auth.
    #[arg(
        long,
        env = "KEYGATE_SMS_AUTH_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub sms_auth_token: String,

    /// The number (E.164) or sender id SMS are sent from (the form field From).
    #[arg(long, env = "KEYGATE_SMS_FROM", default_value = "")]
    pub sms_from: String,

    /// SMTP server for Instant Key emails: smtps://user:pass@host:465 (TLS), smtp://user:pass@host:587
    /// (STARTTLS, required), ...?tls=opportunistic, or ...?tls=none (plain; only when said).
    /// Empty: no email sender.
    #[arg(
        long,
        env = "KEYGATE_SMTP_URL",
        default_value = "",
        hide_env_values = true
    )]
    pub smtp_url: String,

    /// The From of Instant Key emails, such as "Keygate <keys@example.com>".
    #[arg(long, env = "KEYGATE_EMAIL_FROM", default_value = "")]
    pub email_from: String,

    /// Send nothing: every delivery goes to the outbox (`keygate deliveries list`, GET /outbox).
    /// Default: on when no SMS or SMTP sender is configured and KEYGATE_DATABASE_URL is empty
    /// (the embedded default), off otherwise.
    #[arg(long, env = "KEYGATE_DELIVERY_OUTBOX", action = clap::ArgAction::Set)]
    pub delivery_outbox: Option<bool>,

    /// Multiplies every wait between delivery attempts (1.0: six attempts within about ten
    /// minutes; tests use 0.001).
    #[arg(long, env = "KEYGATE_DELIVERY_RETRY_SCALE", default_value_t = 1.0)]
    pub delivery_retry_scale: f64,
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

    /// Milliseconds a database call waits for a free connection of the pool (or for a new one
    /// to connect) before it fails.
    #[arg(
        long,
        env = "KEYGATE_DATABASE_ACQUIRE_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub database_acquire_timeout_ms: u64,

    /// Milliseconds one SQL statement may run before the database cancels it (PostgreSQL's
    /// statement_timeout on every connection; SQLite's busy timeout). `keygate migrate` runs
    /// without it. 0: no limit.
    #[arg(
        long,
        env = "KEYGATE_DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = 15000
    )]
    pub database_statement_timeout_ms: u64,

    /// Most connections this process opens to the database (each role's pool); 0: the
    /// backend's default (16 for PostgreSQL, 8 for SQLite). Size it so that replicas × pool size
    /// stays under the server's max_connections.
    #[arg(long, env = "KEYGATE_DATABASE_POOL_SIZE", default_value_t = 0)]
    pub database_pool_size: u32,
}

/// The Instant Key secret (docs/security.md): every link and client session token is derived
/// from it. Base64url, at least 32 bytes.
#[derive(Args, Debug, Clone, Default)]
pub struct InstantKeySecretArgs {
    /// Secret Instant Key links and client session tokens are derived from (base64url, at least
    /// 32 bytes; `openssl rand -base64 32 | tr '+/' '-_'`). Required with KEYGATE_DATABASE_URL;
    /// the embedded default keeps a generated one in KEYGATE_DATA_DIR/instant-key-secret.
    #[arg(
        long,
        env = "KEYGATE_INSTANT_KEY_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub instant_key_secret: String,

    /// A file holding KEYGATE_INSTANT_KEY_SECRET (a mounted Secret), instead of the variable.
    #[arg(long, env = "KEYGATE_INSTANT_KEY_SECRET_FILE")]
    pub instant_key_secret_file: Option<PathBuf>,

    /// Earlier Instant Key secrets, comma separated, still accepted for client session tokens
    /// signed with them (15 minutes are enough). Links are not re-derived from them.
    #[arg(
        long,
        env = "KEYGATE_INSTANT_KEY_SECRET_PREVIOUS",
        value_delimiter = ',',
        default_value = "",
        hide_env_values = true
    )]
    pub instant_key_secret_previous: Vec<String>,
}

/// The page-token key and the cache key (docs/security.md). Base64url, at least 32 bytes each.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeKeyArgs {
    /// Key page tokens (the page_token of list calls) are sealed with (base64url, at least 32
    /// bytes). Required with KEYGATE_DATABASE_URL; the embedded default keeps a generated one in
    /// KEYGATE_DATA_DIR/page-token-key.
    #[arg(
        long,
        env = "KEYGATE_PAGE_TOKEN_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub page_token_key: String,

    /// A file holding KEYGATE_PAGE_TOKEN_KEY, instead of the variable.
    #[arg(long, env = "KEYGATE_PAGE_TOKEN_KEY_FILE")]
    pub page_token_key_file: Option<PathBuf>,

    /// Earlier page-token keys, comma separated: tokens sealed with them still open (only read).
    #[arg(
        long,
        env = "KEYGATE_PAGE_TOKEN_KEY_PREVIOUS",
        value_delimiter = ',',
        default_value = "",
        hide_env_values = true
    )]
    pub page_token_key_previous: Vec<String>,

    /// Key that seals (encrypts and authenticates) every Redis cache entry, so Redis never
    /// holds a PIN in clear and cannot make Keygate believe a planted API key record (base64url,
    /// at least 32 bytes). Required with KEYGATE_REDIS_URL and KEYGATE_DATABASE_URL; the embedded
    /// default keeps a generated one in KEYGATE_DATA_DIR/cache-key.
    #[arg(
        long,
        env = "KEYGATE_CACHE_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub cache_key: String,

    /// A file holding KEYGATE_CACHE_KEY, instead of the variable.
    #[arg(long, env = "KEYGATE_CACHE_KEY_FILE")]
    pub cache_key_file: Option<PathBuf>,

    /// Earlier cache keys, comma separated: entries sealed with them still open until they expire.
    #[arg(
        long,
        env = "KEYGATE_CACHE_KEY_PREVIOUS",
        value_delimiter = ',',
        default_value = "",
        hide_env_values = true
    )]
    pub cache_key_previous: Vec<String>,

    /// Key that seals (AEAD) the credentials of connected access systems at rest (base64url, at
    /// least 32 bytes). Optional with KEYGATE_DATABASE_URL: without it, systems that need
    /// credentials cannot be connected (CREDENTIALS_KEY_MISSING); the embedded default keeps a
    /// generated one in KEYGATE_DATA_DIR/credentials-key.
    #[arg(
        long,
        env = "KEYGATE_CREDENTIALS_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub credentials_key: String,

    /// A file holding KEYGATE_CREDENTIALS_KEY, instead of the variable.
    #[arg(long, env = "KEYGATE_CREDENTIALS_KEY_FILE")]
    pub credentials_key_file: Option<PathBuf>,

    /// Earlier credentials keys, comma separated: credentials sealed with them still open.
    #[arg(
        long,
        env = "KEYGATE_CREDENTIALS_KEY_PREVIOUS",
        value_delimiter = ',',
        default_value = "",
        hide_env_values = true
    )]
    pub credentials_key_previous: Vec<String>,
}

impl InstantKeySecretArgs {
    pub fn configured(&self) -> crate::secrets::Configured<'_> {
        crate::secrets::Configured {
            value: &self.instant_key_secret,
            file: self.instant_key_secret_file.as_deref(),
            previous: &self.instant_key_secret_previous,
        }
    }
}

impl ServeKeyArgs {
    pub fn page_token_key(&self) -> crate::secrets::Configured<'_> {
        crate::secrets::Configured {
            value: &self.page_token_key,
            file: self.page_token_key_file.as_deref(),
            previous: &self.page_token_key_previous,
        }
    }

    pub fn cache_key(&self) -> crate::secrets::Configured<'_> {
        crate::secrets::Configured {
            value: &self.cache_key,
            file: self.cache_key_file.as_deref(),
            previous: &self.cache_key_previous,
        }
    }

    pub fn credentials_key(&self) -> crate::secrets::Configured<'_> {
        crate::secrets::Configured {
            value: &self.credentials_key,
            file: self.credentials_key_file.as_deref(),
            previous: &self.credentials_key_previous,
        }
    }
}

impl NotifyArgs {
    /// The settings as the delivery crate takes them; `embedded` when the store is the SQLite file.
    pub fn settings(&self, embedded: bool) -> keygate_delivery::notify::Settings {
        keygate_delivery::notify::Settings {
            sms_api_url: self.sms_api_url.clone(),
            sms_account_sid: self.sms_account_sid.clone(),
            sms_auth_token: self.sms_auth_token.clone(),
            sms_from: self.sms_from.clone(),
            smtp_url: self.smtp_url.clone(),
            email_from: self.email_from.clone(),
            outbox: self.delivery_outbox,
            embedded,
            retry_scale: self.delivery_retry_scale,
        }
    }
}

impl StoreArgs {
    /// The pool's size and timeouts; `statement_timeout: None` when
    /// KEYGATE_DATABASE_STATEMENT_TIMEOUT_MS is 0.
    pub fn pool_settings(&self) -> keygate_store::PoolSettings {
        keygate_store::PoolSettings {
            acquire_timeout: std::time::Duration::from_millis(
                self.database_acquire_timeout_ms.max(1),
            ),
            statement_timeout: (self.database_statement_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(self.database_statement_timeout_ms)),
            max_connections: (self.database_pool_size > 0).then_some(self.database_pool_size),
        }
    }

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

/// A vendor simulator `keygate serve` can run for sandbox workspaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Simulator {
    Kisi,
    Brivo,
    /// None at all.
    None,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The gRPC API.
    Gateway,
    /// Access grant workers: provisioning, encoding and revocation jobs.
    Orchestrator,
    /// Webhook deliveries, the Instant Key pages, and Instant Key links by SMS and email.
    Delivery,
}

impl Role {
    /// The role's name, as `--roles` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Orchestrator => "orchestrator",
            Self::Delivery => "delivery",
        }
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Address of the gRPC API.
    #[arg(long, env = "KEYGATE_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP port (liveness /livez, readiness /readyz, Prometheus /metrics, and the Instant Key pages /ik/... in the delivery role).
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

    /// Most gRPC calls in flight; past the limit new ones are refused at once with
    /// RESOURCE_EXHAUSTED (SERVER_OVERLOADED) and a RetryInfo.
    #[arg(long, env = "KEYGATE_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Whether the in-flight limit adapts below --max-in-flight when calls slow down (load
    /// shedding that keeps latency); false: a fixed limit of --max-in-flight.
    #[arg(long, env = "KEYGATE_ADAPTIVE_IN_FLIGHT", default_value_t = true, action = clap::ArgAction::Set)]
    pub adaptive_in_flight: bool,

    /// Failed authentications per minute from one client address (its /64 for IPv6) before the
    /// gRPC API refuses it with RESOURCE_EXHAUSTED, ahead of any key lookup; 0: no limit.
    #[arg(
        long,
        env = "KEYGATE_AUTH_FAILURES_PER_MINUTE_PER_CLIENT",
        default_value_t = 60
    )]
    pub auth_failures_per_minute_per_client: u32,

    /// WatchEvents streams one workspace may hold open at once on this server; 0: no limit.
    #[arg(
        long,
        env = "KEYGATE_WATCH_STREAMS_PER_WORKSPACE",
        default_value_t = 100
    )]
    pub watch_streams_per_workspace: usize,

    /// Webhooks one workspace may have; CreateWebhook beyond it is refused with
    /// RESOURCE_EXHAUSTED (WEBHOOK_LIMIT_REACHED); 0: no limit.
    #[arg(long, env = "KEYGATE_WEBHOOKS_PER_WORKSPACE", default_value_t = 20)]
    pub webhooks_per_workspace: u32,

    /// Webhook deliveries of one workspace in flight at once in this process's dispatcher, so
    /// one workspace's backlog cannot take every slot.
    #[arg(
        long,
        env = "KEYGATE_WEBHOOK_IN_FLIGHT_PER_WORKSPACE",
        default_value_t = 8
    )]
    pub webhook_in_flight_per_workspace: usize,

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

    /// Vendor simulators this process runs on loopback, comma separated (`kisi`, `brivo`, or
    /// `none`), which sandbox workspaces connect in place of the vendor. Default: both with the
    /// embedded store, none with PostgreSQL.
    #[arg(long, env = "KEYGATE_SIMULATORS", value_enum, value_delimiter = ',')]
    pub simulators: Option<Vec<Simulator>>,

    /// Seconds an orchestrator holds a job; a crashed worker's jobs are taken over after this.
    #[arg(long, env = "KEYGATE_JOB_LEASE_SECS", default_value_t = 30)]
    pub job_lease_secs: u64,

    /// Seconds a remote unlock (Instant Key page, `UnlockDoor`, `UnlockEntrance`) may wait to be
    /// sent to the access system, from the request; past it the unlock is never sent and its
    /// action attempt fails with `unlock_expired`. At least 1.
    #[arg(long, env = "KEYGATE_UNLOCK_DEADLINE_SECS", default_value_t = 30)]
    pub unlock_deadline_secs: u64,

    /// Seconds between reconciliation passes, which read every access system back and repair
    /// what drifted from the record; 0 turns them off.
    #[arg(long, env = "KEYGATE_RECONCILE_SECS", default_value_t = 300)]
    pub reconcile_secs: u64,

    /// How often every connected access system is synced (its entrances, access groups and
    /// encoders read again), in seconds; 0 turns the periodic sync off.
    #[arg(long, env = "KEYGATE_SYNC_SECS", default_value_t = 300)]
    pub sync_secs: u64,

    /// Milliseconds between checks for grants whose `ends_at` has passed (their access is then
    /// revoked everywhere).
    #[arg(long, env = "KEYGATE_EXPIRY_CHECK_MS", default_value_t = 5000)]
    pub expiry_check_ms: u64,

    /// Days events are kept (for ListEvents, resuming watchers and webhooks); 0 keeps them for ever.
    #[arg(long, env = "KEYGATE_EVENT_RETENTION_DAYS", default_value_t = 30)]
    pub event_retention_days: u32,

    /// Seconds to let in-flight calls finish after SIGTERM before exiting anyway.
    #[arg(long, env = "KEYGATE_DRAIN_SECS", default_value_t = 20)]
    pub drain_secs: u64,

    /// Multiplies every delay of the webhook retry schedule and the 5-day disable period
    /// (1.0 = as published; tests use 0.00001 to run the 27-hour schedule in about a second).
    #[arg(long, env = "KEYGATE_WEBHOOK_RETRY_SCALE", default_value_t = 1.0)]
    pub webhook_retry_scale: f64,

    /// Let webhooks be sent to loopback addresses (127.0.0.0/8, ::1). For tests and local receivers.
    #[arg(long, env = "KEYGATE_WEBHOOK_ALLOW_LOOPBACK", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_loopback: bool,

    /// Let webhooks be sent to private networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7).
    #[arg(long, env = "KEYGATE_WEBHOOK_ALLOW_PRIVATE_NETWORKS", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private_networks: bool,

    #[command(flatten)]
    pub notify: NotifyArgs,

    #[command(flatten)]
    pub http_port: HttpPortArgs,

    #[command(flatten)]
    pub instant_key_secret: InstantKeySecretArgs,

    #[command(flatten)]
    pub keys: ServeKeyArgs,
}

/// Limits of the public HTTP port and of the Instant Key pages on it (docs/instant-keys.md).
#[derive(Args, Debug, Clone)]
pub struct HttpPortArgs {
    /// Seconds a client has to send a request's headers (and that a kept-alive connection may
    /// idle between requests) before the HTTP port closes the connection.
    #[arg(
        long,
        env = "KEYGATE_HTTP_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub http_header_read_timeout_secs: u64,

    /// Seconds an HTTP request may take, its body included, before it is answered 503. Keep it
    /// above 8: an Instant Key unlock waits up to 8 seconds for the door.
    #[arg(long, env = "KEYGATE_HTTP_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub http_request_timeout_secs: u64,

    /// HTTP requests in flight before new ones are refused with 503 and Retry-After (the
    /// /livez and /readyz probes are exempt).
    #[arg(long, env = "KEYGATE_HTTP_MAX_IN_FLIGHT", default_value_t = 256)]
    pub http_max_in_flight: usize,

    /// Open HTTP connections; more wait in the listen backlog until one closes.
    #[arg(long, env = "KEYGATE_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,

    /// Proxies in front of the HTTP port whose X-Forwarded-For is believed, comma separated
    /// addresses or networks (10.0.0.0/8, fd00::/8). Empty: the peer address is the client.
    #[arg(
        long,
        env = "KEYGATE_HTTP_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub http_trusted_proxies: Vec<String>,

    /// Views of one Instant Key link per minute (the page, its QR codes, claims); 0: no limit.
    #[arg(
        long,
        env = "KEYGATE_PAGE_VIEWS_PER_MINUTE_PER_KEY",
        default_value_t = 60
    )]
    pub page_views_per_minute_per_key: u32,

    /// Views of Instant Key pages per minute from one client address; 0: no limit.
    #[arg(
        long,
        env = "KEYGATE_PAGE_VIEWS_PER_MINUTE_PER_CLIENT",
        default_value_t = 300
    )]
    pub page_views_per_minute_per_client: u32,

    /// Unlocks per minute through one Instant Key link or client_session_token; 0: no limit.
    #[arg(
        long,
        env = "KEYGATE_PAGE_UNLOCKS_PER_MINUTE_PER_KEY",
        default_value_t = 12
    )]
    pub page_unlocks_per_minute_per_key: u32,

    /// Unlocks per minute (pages and /ik/api/v1/unlock) from one client address; 0: no limit.
    #[arg(
        long,
        env = "KEYGATE_PAGE_UNLOCKS_PER_MINUTE_PER_CLIENT",
        default_value_t = 60
    )]
    pub page_unlocks_per_minute_per_client: u32,
}

impl HttpPortArgs {
    /// The limits of the port; an unparsable trusted proxy is an error.
    pub fn port_limits(&self) -> Result<crate::http::PortLimits, String> {
        let trusted_proxies = self
            .http_trusted_proxies
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("KEYGATE_HTTP_TRUSTED_PROXIES: {e}"))?;
        Ok(crate::http::PortLimits {
            header_read_timeout: std::time::Duration::from_secs(
                self.http_header_read_timeout_secs.max(1),
            ),
            request_timeout: std::time::Duration::from_secs(self.http_request_timeout_secs.max(1)),
            max_in_flight: self.http_max_in_flight,
            max_connections: self.http_max_connections,
            trusted_proxies,
        })
    }

    /// The rate limits of the Instant Key pages.
    pub fn page_limits(&self) -> keygate_delivery::instant_keys::limits::LimitSettings {
        keygate_delivery::instant_keys::limits::LimitSettings {
            views_per_key: self.page_views_per_minute_per_key,
            views_per_client: self.page_views_per_minute_per_client,
            unlocks_per_key: self.page_unlocks_per_minute_per_key,
            unlocks_per_client: self.page_unlocks_per_minute_per_client,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let argv = ["keygate", "serve"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Serve(a) => a,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn keys_and_their_rotation_lists_parse() {
        let a = serve(&[
            "--instant-key-secret",
            "current",
            "--instant-key-secret-previous",
            "old1,old2",
            "--page-token-key-file",
            "/run/secrets/page-token-key",
            "--cache-key",
            "c",
        ]);
        let ik = a.instant_key_secret.configured();
        assert_eq!(ik.value, "current");
        assert_eq!(ik.previous, ["old1", "old2"]);
        assert_eq!(ik.file, None);
        let pt = a.keys.page_token_key();
        assert_eq!(pt.value, "");
        assert_eq!(
            pt.file,
            Some(std::path::Path::new("/run/secrets/page-token-key"))
        );
        assert_eq!(a.keys.cache_key().value, "c");
        assert!(
            a.keys
                .cache_key()
                .previous
                .iter()
                .all(|p| p.trim().is_empty()),
            "no previous cache key"
        );
    }

    #[test]
    fn database_timeouts_parse_with_defaults_and_zero_means_no_limit() {
        use std::time::Duration;
        let d = serve(&[]).store.pool_settings();
        assert_eq!(d.acquire_timeout, Duration::from_secs(5));
        assert_eq!(d.statement_timeout, Some(Duration::from_secs(15)));
        let s = serve(&[
            "--database-acquire-timeout-ms",
            "750",
            "--database-statement-timeout-ms",
            "0",
        ])
        .store
        .pool_settings();
        assert_eq!(s.acquire_timeout, Duration::from_millis(750));
        assert_eq!(s.statement_timeout, None);
        assert!(
            Cli::try_parse_from(["keygate", "serve", "--database-statement-timeout-ms", "-1"])
                .is_err()
        );
    }
}
