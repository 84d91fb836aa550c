//! [`init`]: the subscriber, log layer and OTLP exporter, set up once by the binary.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::logs::{self, LogFormat};
use crate::otel;

/// What [`init`] sets up.
#[derive(Clone, Debug)]
pub struct Config<'a> {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info,keygate=debug`; `RUST_LOG` wins when set.
    pub filter: &'a str,
    /// The roles this process runs (`gateway`, `orchestrator`, `delivery`): the
    /// `keygate.roles` resource attribute of exported spans. `None` never exports (used by
    /// one-shot commands such as `keygate migrate`).
    pub roles: Option<&'a [&'a str]>,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("OTLP trace exporter: {0}")]
    Otlp(String),
}

/// What was set up. Call [`Telemetry::shutdown`] before the process exits so that spans still
/// queued for export are sent.
#[must_use = "call shutdown() before exit to flush spans"]
pub struct Telemetry {
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.tracer.is_some()
    }

    /// Flushes and stops the OTLP exporter (a no-op when nothing is exported). Waits at most
    /// the exporter's own timeout (`OTEL_BSP_EXPORT_TIMEOUT`, 30 s by default).
    pub async fn shutdown(self) {
        let Some(provider) = self.tracer else { return };
        // The SDK's shutdown blocks its caller until the batch thread has exported: keep it off
        // the async workers, which must stay free to drive the exporter's connection.
        let joined = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("keygate: flushing spans at exit failed: {e}"),
            Err(e) => eprintln!("keygate: flushing spans at exit failed: {e}"),
        }
    }
}

/// Installs the global subscriber: the log layer (filtered by `cfg.filter`) and, when
/// configured, the OTLP layer (its own fixed filter, [`otel::span_filter`], so that
/// `KEYGATE_LOG=warn` still exports every RPC, job and provider call span). Must run inside the
/// Tokio runtime when OTLP is on. Calling it again keeps the first subscriber.
pub fn init(cfg: &Config<'_>) -> Result<Telemetry, InitError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(cfg.filter));
    let tracer = match cfg.roles {
        Some(roles) if otel::endpoint_configured() => Some(otel::provider(roles)?),
        _ => None,
    };
    let otel_layer = tracer.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("keygate"))
            .with_threads(false)
            .with_filter(otel::span_filter())
    });
    let result = tracing_subscriber::registry()
        .with(logs::layer(cfg.format).with_filter(filter))
        .with(otel_layer)
        .try_init();
    // Already initialised (tests start several servers in one process): keep the first, and
    // do not leave a second exporter running.
    if result.is_err() {
        if let Some(p) = tracer {
            let _ = p.shutdown();
        }
        return Ok(Telemetry { tracer: None });
    }
    if let Some(p) = &tracer {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(Telemetry { tracer })
}
