//! Builds the whole gRPC server in one function: services, health, reflection, the stack of
//! `stack.rs`, message limits, and graceful shutdown.

use std::future::Future;
use std::time::Duration;

use keygate_app::App;
use keygate_proto::{admin, v1};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::Authenticator;
use crate::services::access_grants::AccessGrants;
use crate::services::access_methods::{AccessMethods, ActionAttempts};
use crate::services::access_systems::AccessSystems;
use crate::services::acs_users::AcsUsers;
use crate::services::events::{EventServer, Events, KeyChecks, OpenStreams, StreamLimits};
use crate::services::instant_keys::InstantKeys;
use crate::services::user_identities::UserIdentities;
use crate::services::webhooks::Webhooks;
use crate::services::workspaces::Workspaces;
use crate::stack::{self, StackConfig};

/// Every service this server answers, by its full gRPC name. Health is reported per name.
pub const SERVICE_NAMES: [&str; 11] = [
    "keygate.v1.AccessGrantService",
    "keygate.v1.AccessMethodService",
    "keygate.v1.AccessSystemService",
    "keygate.v1.AcsUserService",
    "keygate.v1.UserIdentityService",
    "keygate.v1.InstantKeyService",
    "keygate.v1.EventService",
    "keygate.v1.WebhookService",
    "keygate.v1.ActionAttemptService",
    "keygate.admin.v1.WorkspaceService",
    // The empty name is the server as a whole.
    "",
];

/// What the gateway needs from the rest of the process.
#[derive(Clone)]
pub struct GatewayDeps {
    /// The use cases (and the store, cache, tracker, links and page tokens behind them).
    pub app: App,
    pub admin_token: Option<String>,
    /// Turns true on shutdown; streams end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Limits of the server.
#[derive(Clone)]
pub struct ServerConfig {
    pub stack: StackConfig,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Connections are closed after this age so L4 load balancers can rebalance.
    pub max_connection_age: Duration,
    /// `WatchEvents` streams per workspace, and how often they re-check their key.
    pub streams: StreamLimits,
    /// Limiters shared with the process's other API surfaces (the Seam-compatible HTTP API);
    /// `None`: the stack builds its own from `stack`.
    pub limiters: Option<stack::Limiters>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            stack: StackConfig {
                rate_per_second: 100.0,
                rate_burst: 200,
                max_deadline: Duration::from_secs(30),
                max_in_flight: 1024,
                adaptive_in_flight: true,
                auth_failures_per_minute: 60,
                shared_rate: None,
            },
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_streams: 256,
            max_connection_age: Duration::from_secs(30 * 60),
            streams: StreamLimits::default(),
            limiters: None,
        }
    }
}

/// Marks every service as `status` in the health service.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in SERVICE_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

macro_rules! limited {
    ($server:expr, $cfg:expr) => {
        $server
            .max_decoding_message_size($cfg.max_message_bytes)
            .max_encoding_message_size($cfg.max_message_bytes)
    };
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight calls finish.
/// The caller bounds the drain with its own deadline.
pub async fn serve(
    listener: TcpListener,
    deps: GatewayDeps,
    cfg: ServerConfig,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let app = deps.app.clone();

    let auth = Authenticator::new(
        app.store.clone(),
        app.tracker.reads().cache().clone(),
        deps.admin_token.clone(),
    );

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(keygate_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(keygate_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha();
    let (reflection_v1, reflection_v1alpha) = match (reflection_v1, reflection_v1alpha) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            // The descriptor set is compiled in; failing here means a broken build.
            tracing::error!(error = %e, "reflection descriptor set is invalid");
            return Ok(());
        }
    };

    let access_systems = AccessSystems { app: app.clone() };
    let instant_keys = std::sync::Arc::new(InstantKeys { app: app.clone() });
    let user_identities = UserIdentities {
        app: app.clone(),
        instant_keys: instant_keys.clone(),
    };
    let access_grants = AccessGrants { app: app.clone() };
    let acs_users = AcsUsers { app: app.clone() };
    let access_methods = AccessMethods { app: app.clone() };
    let action_attempts = ActionAttempts { app: app.clone() };
    let events = Events {
        app: app.clone(),
        shutdown: deps.shutdown.clone(),
        auth: auth.clone(),
        key_checks: std::sync::Arc::new(KeyChecks::new(auth.clone(), cfg.streams.recheck_every)),
        streams: std::sync::Arc::new(OpenStreams::new(cfg.streams)),
        // One tail of the event log for every stream of this server.
        tail: keygate_app::event_tail::EventTail::start(
            app.clone(),
            app.store.clone(),
            keygate_app::event_tail::TailConfig {
                buffer: cfg.streams.buffer,
                ..Default::default()
            },
        ),
    };
    let webhooks = Webhooks { app: app.clone() };
    let workspaces = Workspaces { app: app.clone() };

    Server::builder()
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        .max_connection_age(cfg.max_connection_age)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(match cfg.limiters.clone() {
            Some(shared) => stack::build_with(&cfg.stack, auth, shared),
            None => stack::build(&cfg.stack, auth),
        })
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limited!(
            v1::access_system_service_server::AccessSystemServiceServer::new(access_systems),
            cfg
        ))
        .add_service(limited!(
            v1::user_identity_service_server::UserIdentityServiceServer::new(user_identities),
            cfg
        ))
        .add_service(limited!(
            admin::workspace_service_server::WorkspaceServiceServer::new(workspaces),
            cfg
        ))
        .add_service(limited!(
            v1::access_grant_service_server::AccessGrantServiceServer::new(access_grants),
            cfg
        ))
        .add_service(limited!(
            v1::access_method_service_server::AccessMethodServiceServer::new(access_methods),
            cfg
        ))
        .add_service(limited!(
            v1::acs_user_service_server::AcsUserServiceServer::new(acs_users),
            cfg
        ))
        .add_service(limited!(
            v1::instant_key_service_server::InstantKeyServiceServer::from_arc(instant_keys),
            cfg
        ))
        // WatchEvents with a small encode buffer per stream; the other methods as generated.
        .add_service(EventServer::new(events, cfg.max_message_bytes))
        .add_service(limited!(
            v1::webhook_service_server::WebhookServiceServer::new(webhooks),
            cfg
        ))
        .add_service(limited!(
            v1::action_attempt_service_server::ActionAttemptServiceServer::new(action_attempts),
            cfg
        ))
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: a gRPC reply is several small writes (headers, data, trailers); with
            // Nagle on, the later ones wait for the peer's delayed ACK (~40 ms on Linux).
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
