//! OTLP export of traces, over gRPC (tonic, the workspace's one version).
//!
//! Configured only by the standard variables: export is on when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set and `OTEL_SDK_DISABLED` is not `true`. The SDK
//! reads the rest itself: `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `_COMPRESSION`,
//! `OTEL_BSP_SCHEDULE_DELAY` and the other batch settings, `OTEL_TRACES_SAMPLER(_ARG)`,
//! `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`.

use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;

use crate::InitError;

/// The service name used unless `OTEL_SERVICE_NAME` (or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`) says otherwise.
pub const SERVICE_NAME: &str = "keygate";

fn set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether an OTLP endpoint is configured (and the SDK not disabled).
pub fn endpoint_configured() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The resource of every exported span: `service.name`, `service.version`, and
/// `keygate.roles` (the roles this process runs, comma separated).
pub fn resource(roles: &[&str]) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    let mut b = Resource::builder().with_attributes([
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("keygate.roles", roles.join(",")),
    ]);
    if !named {
        b = b.with_service_name(SERVICE_NAME);
    }
    b.build()
}

/// Builds the tracer provider: OTLP/gRPC exporter behind the SDK's batch processor. The
/// exporter's connection is made lazily, so a collector that is down at start is not an error;
/// spans queued while it is unreachable are dropped once the queue (2048) is full.
pub(crate) fn provider(roles: &[&str]) -> Result<SdkTracerProvider, InitError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_protocol(opentelemetry_otlp::Protocol::Grpc)
        .build()
        .map_err(|e| InitError::Otlp(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(roles))
        .build())
}

/// Which spans are exported: `info` and above, without the transport libraries' own spans
/// (and never the exporter's, which would feed itself). Independent of `KEYGATE_LOG`, so a quiet
/// log still exports every RPC, job and provider call; health checks are `debug` spans and are
/// not exported.
pub fn span_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("sqlx", LevelFilter::OFF)
}
