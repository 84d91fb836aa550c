//! `keygate serve`: wires the roles, reports readiness, and drains on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use keygate_app::App;
use keygate_app::reads::StatusReads;
use keygate_app::tokens::PageTokens;
use keygate_app::tracker::Tracker;
use keygate_cache::bus::Doorbell;
use keygate_cache::{Cache, InProcessCache, RedisCache, SealKeys, SealedCache};
use keygate_gateway::stack::StackConfig;
use keygate_gateway::{GatewayDeps, ServerConfig, set_health};
use keygate_orchestrator::{Orchestrator, OrchestratorConfig, Reconciler, store_ledger};
use keygate_providers::Registry;

/// Most systems one round of the periodic sync reads.
const SYNC_BATCH: i64 = 50;
use keygate_providers::virtual_system::VirtualSystems;
use keygate_store::{SCHEMA_VERSION, Store};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::bootstrap;
use crate::config::{Role, ServeArgs};
use crate::secrets::{self, KeySpec, Plan};

/// How the store is watched once ready: readiness turns NOT_SERVING after `failures` pings in a
/// row fail or take longer than `timeout` (a hung database counts as down, not as slow).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PingPolicy {
    pub every: Duration,
    pub timeout: Duration,
    pub failures: u32,
}

/// A ping every 2 s that must answer within 2 s; two misses in a row (one slow query is
/// forgiven) turn readiness off, so a hung store is reported within about 8 s.
const PING_POLICY: PingPolicy = PingPolicy {
    every: Duration::from_secs(2),
    timeout: Duration::from_secs(2),
    failures: 2,
};
/// How often the orchestrator role samples the job queue for the metrics.
const QUEUE_SAMPLE_EVERY: Duration = Duration::from_secs(5);

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let url = args.store.database_url();
    let embedded = args.store.database_url.is_empty();
    let bootstrap_sandbox = args.bootstrap_sandbox.unwrap_or(embedded);
    if embedded || bootstrap_sandbox {
        // The SQLite file and the sandbox key file live here.
        create_private_dir(&args.store.data_dir)?;
    }
    let store =
        keygate_store::open_with(&url, &args.store.pool_settings()).context("opening the store")?;
    // The keys, from the configuration (docs/security.md); the embedded default's files are
    // written once the store answers, when an earlier version's key may have to be copied out.
    let data_dir = &args.store.data_dir;
    let instant_key_plan = secrets::plan(
        secrets::INSTANT_KEY_SECRET,
        args.instant_key_secret.configured(),
        data_dir,
        embedded,
    )?;
    let page_token_plan = secrets::plan(
        secrets::PAGE_TOKEN_KEY,
        args.keys.page_token_key(),
        data_dir,
        embedded,
    )?;
    let cache: Arc<dyn Cache> = if args.redis_url.is_empty() {
        // One process: nothing leaves it, so entries are not sealed.
        Arc::new(InProcessCache::new(100_000))
    } else {
        let spec = secrets::CACHE_KEY;
        let plan = secrets::plan(spec, args.keys.cache_key(), data_dir, embedded)?;
        let (ring, origin) = secrets::finish(spec, plan, None).await?;
        tracing::info!(key = spec.var, ?origin, "cache key loaded");
        let keys = SealKeys::new(&ring.current, &ring.previous).context("KEYGATE_CACHE_KEY")?;
        let redis = RedisCache::new(&args.redis_url).context("parsing KEYGATE_REDIS_URL")?;
        Arc::new(SealedCache::new(Arc::new(redis), keys))
    };
    tracing::info!(store = store.backend_name(), cache = cache.name(), roles = ?args.roles, "starting");
    anyhow::ensure!(
        args.webhook_retry_scale.is_finite() && args.webhook_retry_scale > 0.0,
        "KEYGATE_WEBHOOK_RETRY_SCALE must be a positive number, not {}",
        args.webhook_retry_scale
    );
    let webhook_network = keygate_app::ssrf::NetworkPolicy {
        allow_loopback: args.webhook_allow_loopback,
        allow_private_networks: args.webhook_allow_private_networks,
    };
    // Instant Key links by SMS and email: checked here so a bad setting stops every role, since
    // the gateway must agree with the senders on which channels exist.
    let notify =
        keygate_delivery::notify::NotifyConfig::from_settings(&args.notify.settings(embedded))
            .context("Instant Key delivery settings")?;
    let instant_key_delivery = notify.availability();
    let outbox_mode = notify.outbox;
    if outbox_mode {
        tracing::info!(
            "Instant Key deliveries go to the outbox: nothing is sent (keygate deliveries list, GET /outbox)"
        );
    }

    // Metrics are always recorded; a process that cannot install the recorder (a second
    // server in one test process) serves no /metrics rather than failing.
    let metrics = match keygate_telemetry::metrics::install() {
        Ok(m) => {
            m.spawn_upkeep();
            Some(m)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics disabled");
            None
        }
    };

    let (reporter, health_service) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::NotServing).await;
    let ready = Arc::new(AtomicBool::new(false));
    let page_tokens = PageTokens::default();
    let links = keygate_domain::instant_key::Links::new(&args.public_url);
    let keys = Keys {
        instant_key: instant_key_plan,
        page_token: page_token_plan,
        links: links.clone(),
        page_tokens: page_tokens.clone(),
    };
    // Configured keys are in use at once; the embedded default's may wait for the store.
    keys.load(None).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let doorbell = if args.redis_url.is_empty() {
        Doorbell::new()
    } else {
        Doorbell::with_redis(&args.redis_url).context("KEYGATE_REDIS_URL for the event doorbell")?
    };
    let tracker = Tracker::new(
        StatusReads::new(store.clone(), cache.clone()),
        doorbell,
        Arc::new(Notify::new()),
        instant_key_delivery.wake.clone(),
    );
    // The adapter of every access system type this build can talk to; the use cases (connect)
    // and the orchestrator (every call) go through the same registry.
    let credentials = match secrets::credentials_plan(
        args.keys.credentials_key(),
        data_dir,
        embedded,
    )? {
        Some(plan) => {
            let spec = secrets::CREDENTIALS_KEY;
            let (ring, origin) = secrets::finish(spec, plan, None).await?;
            tracing::info!(key = spec.var, ?origin, "credentials key loaded");
            keygate_app::connections::CredentialSeal::new(
                SealKeys::for_purpose(
                    keygate_app::connections::CREDENTIALS_PURPOSE,
                    &ring.current,
                    &ring.previous,
                )
                .context("KEYGATE_CREDENTIALS_KEY")?,
            )
        }
        None => {
            tracing::info!(
                "no KEYGATE_CREDENTIALS_KEY: access systems that need credentials cannot be connected"
            );
            keygate_app::connections::CredentialSeal::default()
        }
    };
    let simulators = crate::simulators::start(&crate::simulators::chosen(
        args.simulators.as_deref(),
        embedded,
    ))
    .await?;
    let directory: Arc<dyn keygate_providers::Directory> = Arc::new(
        keygate_app::connections::StoreDirectory::new(store.clone(), credentials.clone())
            .with_simulators(simulators.clone()),
    );
    let mut providers = Registry::new();
    providers.register(Arc::new(VirtualSystems::with_ledger(
        Duration::from_millis(args.sandbox_provision_delay_ms),
        Arc::new(store_ledger(store.as_ref())),
    )));
    providers.register(Arc::new(
        keygate_providers::connector::ConnectorProvider::new(directory.clone()),
    ));
    providers.register(Arc::new(keygate_providers::seam::SeamProvider::new(
        directory.clone(),
    )));
    providers.register(Arc::new(keygate_providers::kisi::KisiProvider::new(
        directory.clone(),
    )));
    providers.register(Arc::new(keygate_providers::brivo::BrivoProvider::new(
        directory,
    )));
    let app = App {
        store: store.clone(),
        tracker: tracker.clone(),
        links: links.clone(),
        tokens: page_tokens.clone(),
        instant_key_delivery: instant_key_delivery.clone(),
        webhook_network,
        unlock_deadline: Duration::from_secs(args.unlock_deadline_secs.max(1)),
        limits: keygate_app::Limits {
            webhooks_per_workspace: args.webhooks_per_workspace,
        },
        providers: providers.clone(),
        credentials,
        simulators,
    };
    let (ready_tx, ready_rx) = watch::channel(false);

    // One per-workspace request budget and one failed-authentication budget per client for
    // every API surface of this process (gRPC and the Seam-compatible HTTP API).
    let limiters = keygate_app::throttle::Limiters::new(
        args.rate_limit_rps,
        args.rate_limit_burst,
        args.auth_failures_per_minute_per_client,
        // One bucket per workspace for all replicas; each replica's own while Redis is down.
        if args.redis_url.is_empty() {
            None
        } else {
            Some(Arc::new(
                RedisCache::new(&args.redis_url)
                    .context("KEYGATE_REDIS_URL for the shared rate limits")?,
            ))
        },
    );
    if args.roles.contains(&Role::Gateway) {
        let listener = TcpListener::bind(args.grpc_addr)
            .await
            .with_context(|| format!("binding the gRPC address {}", args.grpc_addr))?;
        let addr = listener.local_addr()?;
        println!("keygate: gRPC API listening on {addr}");
        let deps = GatewayDeps {
            app: app.clone(),
            admin_token: Some(args.admin_token.clone()).filter(|t| !t.is_empty()),
            shutdown: stop_rx.clone(),
        };
        let cfg = ServerConfig {
            stack: StackConfig {
                rate_per_second: args.rate_limit_rps,
                rate_burst: args.rate_limit_burst,
                max_deadline: Duration::from_secs(args.max_deadline_secs.max(1)),
                max_in_flight: args.max_in_flight.max(1),
                adaptive_in_flight: args.adaptive_in_flight,
                auth_failures_per_minute: args.auth_failures_per_minute_per_client,
                // The shared limiters below are the ones used; their Redis is set there.
                shared_rate: None,
            },
            limiters: Some(limiters.clone()),
            max_message_bytes: args.max_message_bytes,
            streams: keygate_gateway::services::events::StreamLimits {
                per_workspace: args.watch_streams_per_workspace,
                ..Default::default()
            },
            ..ServerConfig::default()
        };
        let stop = stopped(stop_rx.clone());
        servers.spawn(async move {
            if let Err(e) = keygate_gateway::serve(listener, deps, cfg, health_service, stop).await
            {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
    }
    if args.roles.contains(&Role::Orchestrator) {
        let providers = Arc::new(providers.clone());
        let cfg = OrchestratorConfig {
            lease: Duration::from_secs(args.job_lease_secs.max(1)),
            ..OrchestratorConfig::default()
        };
        let reconciler = Reconciler::new(
            store.clone(),
            providers.clone(),
            tracker.clone(),
            cfg.call_timeout,
        );
        let orchestrator = Orchestrator::new(store.clone(), providers, tracker.clone(), cfg);
        let stop = stop_rx.clone();
        let mut ready = ready_rx.clone();
        // Not drained like a server: on exit its leases expire and another worker takes over.
        tokio::spawn(async move {
            if ready.wait_for(|r| *r).await.is_ok() {
                orchestrator.run(stop).await;
            }
        });
        let stop = stop_rx.clone();
        let mut ready = ready_rx.clone();
        let sampled = store.clone();
        tokio::spawn(async move {
            if ready.wait_for(|r| *r).await.is_ok() {
                keygate_orchestrator::sample_queue(sampled, QUEUE_SAMPLE_EVERY, stop).await;
            }
        });
        let stop = stop_rx.clone();
        let mut ready = ready_rx.clone();
        let every = (args.reconcile_secs > 0).then(|| Duration::from_secs(args.reconcile_secs));
        let expiry = Duration::from_millis(args.expiry_check_ms);
        tokio::spawn(async move {
            if ready.wait_for(|r| *r).await.is_ok() {
                reconciler.run(every, expiry, stop).await;
            }
        });
        // The periodic sync of connected systems (their entrances, groups and encoders).
        if args.sync_secs > 0 {
            let every = Duration::from_secs(args.sync_secs);
            let (app, mut stop, mut ready) = (app.clone(), stop_rx.clone(), ready_rx.clone());
            tokio::spawn(async move {
                if ready.wait_for(|r| *r).await.is_err() {
                    return;
                }
                loop {
                    match app.sync_due(every, SYNC_BATCH).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(synced = n, "periodic sync of access systems"),
                        Err(e) => {
                            tracing::warn!(error = %e, "periodic sync could not list the systems due")
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(every.min(Duration::from_secs(60))) => {}
                        _ = stop.changed() => return,
                    }
                }
            });
        }
    }
    if args.roles.contains(&Role::Delivery) {
        use keygate_delivery::webhooks::{Dispatcher, DispatcherConfig, RetryPolicy};
        let dispatcher = Dispatcher::new(
            store.clone(),
            tracker.clone(),
            Arc::new(keygate_wire::events::EventJson {
                tokens: page_tokens.clone(),
            }),
            DispatcherConfig {
                retry: RetryPolicy {
                    scale: args.webhook_retry_scale,
                },
                network: webhook_network,
                per_workspace: args.webhook_in_flight_per_workspace.max(1),
                ..DispatcherConfig::default()
            },
        );
        let stop = stop_rx.clone();
        let mut ready = ready_rx.clone();
        // Like the orchestrator: on exit its leases expire and another dispatcher takes over.
        tokio::spawn(async move {
            if ready.wait_for(|r| *r).await.is_ok() {
                dispatcher.run(stop).await;
            }
        });
        let sender = keygate_delivery::notify::Sender::new(
            store.clone(),
            tracker.clone(),
            links.clone(),
            &notify,
            &instant_key_delivery,
            keygate_delivery::notify::SenderConfig {
                retry: notify.retry,
                ..keygate_delivery::notify::SenderConfig::default()
            },
        )
        .context("Instant Key delivery settings")?;
        let stop = stop_rx.clone();
        let mut ready = ready_rx.clone();
        tokio::spawn(async move {
            if ready.wait_for(|r| *r).await.is_ok() {
                sender.run(stop).await;
            }
        });
    }

    let port_limits = args
        .http_port
        .port_limits()
        .map_err(anyhow::Error::msg)
        .context("HTTP port settings")?;
    let http = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding the HTTP address {}", args.http_addr))?;
    println!(
        "keygate: HTTP (livez, readyz) listening on {}",
        http.local_addr()?
    );
    let mut routes = crate::http::router(ready.clone(), metrics);
    if args.roles.contains(&Role::Gateway) {
        // The Seam-compatible HTTP/JSON API (docs/seam-compatibility.md): the same keys, limits and use
        // cases as gRPC, under /seam.
        routes = routes.merge(keygate_seam_api::router(keygate_seam_api::SeamApi {
            app: app.clone(),
            auth: keygate_app::auth::Authenticator::new(
                store.clone(),
                cache.clone(),
                Some(args.admin_token.clone()).filter(|t| !t.is_empty()),
            ),
            limiters: limiters.clone(),
        }));
        println!(
            "keygate: Seam-compatible API at http://{}{}",
            http.local_addr()?,
            keygate_seam_api::PREFIX
        );
    }
    if args.roles.contains(&Role::Delivery) {
        // The Instant Key pages: the links of grants and of GenerateInstantKey lead here.
        routes = routes.merge(keygate_delivery::instant_keys::router(
            keygate_delivery::instant_keys::Pages {
                app: app.clone(),
                limits: Arc::new(keygate_delivery::instant_keys::limits::Limits::new(
                    args.http_port.page_limits(),
                )),
            },
        ));
        // Access systems' own webhooks (Kisi's event webhook posts here).
        routes = routes.merge(keygate_delivery::vendor_hooks::router(app.clone()));
        if outbox_mode {
            // Only when nothing is sent; it needs an API key or the admin token.
            routes = routes.merge(crate::deliveries::router(crate::deliveries::OutboxPage {
                store: store.clone(),
                links: links.clone(),
                auth: keygate_app::auth::Authenticator::new(
                    store.clone(),
                    cache.clone(),
                    Some(args.admin_token.clone()).filter(|t| !t.is_empty()),
                ),
            }));
        }
    }
    if args.roles.contains(&Role::Gateway) {
        // The web console (docs/console.md): with the gateway, the role that answers people.
        routes = routes.merge(keygate_console::router(keygate_console::Console {
            app: app.clone(),
            auth: keygate_app::auth::Authenticator::new(
                store.clone(),
                cache.clone(),
                Some(args.admin_token.clone()).filter(|t| !t.is_empty()),
            ),
            sessions: keygate_app::sessions::Sessions::new(
                cache.clone(),
                keygate_app::sessions::DEFAULT_SESSION_TTL,
            ),
            secure_cookies: args.public_url.starts_with("https://"),
            // The same failed-authentication budget per client as gRPC and the Seam API.
            auth_failures: limiters.auth_failures.clone(),
        }));
    }
    let stop = stopped(stop_rx.clone());
    servers.spawn(crate::http::serve(http, routes, port_limits, stop));

    let readiness = tokio::spawn(become_ready(Readiness {
        store: store.clone(),
        data_dir: args.store.data_dir.clone(),
        migrate: args.migrate_on_start,
        bootstrap_sandbox,
        keys,
        reporter: reporter.clone(),
        ready: ready.clone(),
        store_ready: ready_tx,
        event_retention: (args.event_retention_days > 0)
            .then(|| time::Duration::days(i64::from(args.event_retention_days))),
    }));

    shutdown_signal().await;
    tracing::info!(
        drain_secs = args.drain_secs,
        "shutting down: NOT_SERVING, draining in-flight calls"
    );
    ready.store(false, Ordering::SeqCst);
    set_health(&reporter, ServingStatus::NotServing).await;
    readiness.abort();
    let _ = stop_tx.send(true);
    let drain = Duration::from_secs(args.drain_secs);
    if tokio::time::timeout(drain, async {
        while servers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("drain deadline passed; closing the remaining connections");
    }
    Ok(())
}

/// Resolves when the stop flag turns true.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The Instant Key secret and the page-token key, and where they go.
struct Keys {
    instant_key: Plan,
    page_token: Plan,
    links: keygate_domain::instant_key::Links,
    page_tokens: PageTokens,
}

impl Keys {
    /// Loads the keys that are known: all of them with `store` (pending ones are copied out of
    /// it or generated), only the configured or already written ones without.
    async fn load(&self, store: Option<&dyn Store>) -> anyhow::Result<()> {
        async fn one(
            spec: KeySpec,
            plan: &Plan,
            store: Option<&dyn Store>,
        ) -> anyhow::Result<Option<secrets::KeyRing>> {
            if store.is_none() && matches!(plan, Plan::Pending { .. }) {
                return Ok(None);
            }
            let settings = store.map(|s| s as &dyn keygate_store::SettingsStore);
            let (ring, origin) = secrets::finish(spec, plan.clone(), settings).await?;
            tracing::info!(key = spec.var, ?origin, "key loaded");
            Ok(Some(ring))
        }
        if let Some(ring) = one(secrets::INSTANT_KEY_SECRET, &self.instant_key, store).await? {
            self.links.set_secrets(ring.current, ring.previous);
        }
        if let Some(ring) = one(secrets::PAGE_TOKEN_KEY, &self.page_token, store).await? {
            self.page_tokens.set_keys(ring.current, ring.previous);
        }
        Ok(())
    }
}

/// Brings the store to the expected schema, loads shared secrets, makes the sandbox, and only
/// then reports SERVING; afterwards keeps checking the store.
/// What readiness needs: the store to prepare, and the flags and signals to raise after.
struct Readiness {
    store: Arc<dyn Store>,
    data_dir: std::path::PathBuf,
    migrate: bool,
    bootstrap_sandbox: bool,
    keys: Keys,
    reporter: HealthReporter,
    ready: Arc<AtomicBool>,
    store_ready: watch::Sender<bool>,
    /// How long events are kept; `None` keeps them for ever.
    event_retention: Option<time::Duration>,
}

async fn become_ready(r: Readiness) {
    let Readiness {
        store,
        data_dir,
        migrate,
        bootstrap_sandbox,
        keys,
        reporter,
        ready,
        store_ready,
        event_retention,
    } = r;
    let mut delay = Duration::from_millis(200);
    loop {
        match prepare(&*store, &data_dir, migrate, bootstrap_sandbox, &keys).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "store not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    set_health(&reporter, ServingStatus::Serving).await;
    ready.store(true, Ordering::SeqCst);
    let _ = store_ready.send(true);
    println!("keygate: ready (store: {})", store.backend_name());
    tokio::spawn(purge_old_records(store.clone(), event_retention));

    watch_store(&*store, PING_POLICY, &reporter, &ready).await;
}

/// Pings the store for ever; turns health NOT_SERVING and `ready` off when `policy.failures`
/// pings in a row failed or did not answer within `policy.timeout`, and back on when it answers.
pub(crate) async fn watch_store(
    store: &dyn Store,
    policy: PingPolicy,
    reporter: &HealthReporter,
    ready: &AtomicBool,
) {
    let mut failures = 0;
    loop {
        tokio::time::sleep(policy.every).await;
        let outcome = match tokio::time::timeout(policy.timeout, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                policy.timeout.as_millis()
            )),
        };
        match outcome {
            Ok(()) => {
                if failures >= policy.failures {
                    tracing::info!("store answers again: SERVING");
                    set_health(reporter, ServingStatus::Serving).await;
                    ready.store(true, Ordering::SeqCst);
                }
                failures = 0;
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, failures, "store ping failed");
                if failures == policy.failures {
                    tracing::warn!("store not answering: NOT_SERVING");
                    set_health(reporter, ServingStatus::NotServing).await;
                    ready.store(false, Ordering::SeqCst);
                }
            }
        }
    }
}

/// How long a `request_id` replays its first result. After this a retry creates anew.
const IDEMPOTENCY_RETENTION: time::Duration = time::Duration::hours(24);

/// How long a finished job is kept (for inspection) before the hourly purge deletes it.
const FINISHED_JOB_RETENTION: time::Duration = time::Duration::days(7);

/// Deletes expired idempotency records, old finished jobs and events past their retention once
/// an hour (every replica may run it; it is idempotent).
async fn purge_old_records(store: Arc<dyn Store>, event_retention: Option<time::Duration>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let before = keygate_domain::model::now() - IDEMPOTENCY_RETENTION;
        match store.purge_idempotency(before).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "expired idempotency records deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "idempotency purge failed; retrying next hour"),
        }
        if let Some(keep) = event_retention {
            match store
                .purge_events(keygate_domain::model::now() - keep)
                .await
            {
                Ok(n) if n > 0 => tracing::info!(purged = n, "events past their retention deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "event purge failed; retrying next hour"),
            }
        }
        let done_before = keygate_domain::model::now() - FINISHED_JOB_RETENTION;
        match store.purge_finished_jobs(done_before).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "finished jobs deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "job purge failed; retrying next hour"),
        }
    }
}

async fn prepare(
    store: &dyn Store,
    data_dir: &std::path::Path,
    migrate: bool,
    bootstrap_sandbox: bool,
    keys: &Keys,
) -> anyhow::Result<()> {
    let version = if migrate {
        store.migrate().await?
    } else {
        store.schema_version().await?
    };
    anyhow::ensure!(
        version >= SCHEMA_VERSION,
        "schema is at version {version}, this build needs {SCHEMA_VERSION}: run `keygate migrate`"
    );
    store.ping().await?;
    keys.load(Some(store)).await?;
    if bootstrap_sandbox {
        match bootstrap::sandbox(store, data_dir).await? {
            bootstrap::Outcome::Created {
                workspace_id,
                token,
                key_file,
            } => {
                println!(
                    "keygate: created sandbox workspace {workspace_id} with five virtual access systems"
                );
                println!("keygate: sandbox API key (shown once): {token}");
                if let Some(seam) = keygate_app::tokens::seam_api_key(&token, true) {
                    // The same key in the form Seam's SDKs accept (docs/seam-compatibility.md).
                    println!("keygate: the same key for the Seam-compatible API: {seam}");
                }
                if let Some(path) = key_file {
                    println!(
                        "keygate: the key is also in {} (owner-only)",
                        path.display()
                    );
                }
            }
            bootstrap::Outcome::Existing { workspace_id } => {
                println!(
                    "keygate: using sandbox workspace {workspace_id}; its API key is in {}",
                    data_dir.join(bootstrap::KEY_FILE).display()
                );
            }
        }
    }
    Ok(())
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tower::ServiceExt as _;

    /// A TCP proxy that forwards until paused, then holds every byte: a database that hangs.
    struct Proxy {
        addr: std::net::SocketAddr,
        paused: watch::Sender<bool>,
    }

    impl Proxy {
        async fn start(upstream: String) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (paused, rx) = watch::channel(false);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, rx.clone()));
                    tokio::spawn(pump(sr, cw, rx.clone()));
                }
            });
            Self { addr, paused }
        }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut paused: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if paused.wait_for(|p| !*p).await.is_err() {
                return;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// `postgres://user@host:port/db` with `host:port` replaced.
    fn through(url: &str, addr: std::net::SocketAddr) -> (String, String) {
        let (scheme, rest) = url.split_once("://").expect("scheme");
        let (authority, path) = rest.split_once('/').expect("database");
        let (user, host) = authority
            .rsplit_once('@')
            .map_or(("", authority), |(u, h)| (u, h));
        let at = if user.is_empty() { "" } else { "@" };
        (
            format!("{scheme}://{user}{at}{addr}/{path}"),
            host.to_owned(),
        )
    }

    async fn readyz(router: &axum::Router) -> StatusCode {
        router
            .clone()
            .oneshot(
                Request::get("/readyz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answer")
            .status()
    }

    /// Polls /readyz until it answers `want`; returns how long that took.
    async fn until(router: &axum::Router, want: StatusCode, within: Duration) -> Duration {
        let started = std::time::Instant::now();
        loop {
            let got = readyz(router).await;
            if got == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "/readyz still {got} after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn readiness_fails_within_seconds_when_the_store_hangs() {
        let url = keygate_store::testdb::create_postgres_database().await;
        let (_, upstream) = through(&url, "127.0.0.1:1".parse().expect("addr"));
        let proxy = Proxy::start(upstream).await;
        let (proxied, _) = through(&url, proxy.addr);
        let store = keygate_store::open(&proxied).expect("open");
        store.ping().await.expect("answers through the proxy");

        let ready = Arc::new(AtomicBool::new(true));
        let router = crate::http::router(ready.clone(), None);
        let flag = ready.clone();
        let (reporter, _health) = tonic_health::server::health_reporter();
        let watcher =
            tokio::spawn(async move { watch_store(&*store, PING_POLICY, &reporter, &flag).await });
        tokio::time::sleep(PING_POLICY.every * 2).await;
        assert_eq!(
            readyz(&router).await,
            StatusCode::OK,
            "a store that answers"
        );

        // The database stops answering (nothing is refused: every byte is held).
        proxy.paused.send_replace(true);
        let took = until(
            &router,
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(15),
        )
        .await;
        let bound = (PING_POLICY.every + PING_POLICY.timeout) * PING_POLICY.failures
            + Duration::from_secs(1);
        eprintln!("readiness turned off {took:?} after the store hung (bound {bound:?})");
        assert!(took <= bound, "not ready after {took:?}, bound {bound:?}");

        // It answers again: ready again.
        proxy.paused.send_replace(false);
        until(&router, StatusCode::OK, Duration::from_secs(15)).await;
        watcher.abort();
    }
}
