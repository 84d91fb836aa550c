//! Telemetry set-up, done once at start, and the small helpers the rest of Keygate records with.
//!
//! - [`logs`]: log lines on stderr, text for people or JSON for log pipelines. Structured fields,
//!   never interpolated secrets.
//! - [`otel`]: OpenTelemetry traces exported over OTLP/gRPC, only when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//! - [`propagation`]: W3C trace context (`traceparent`, `tracestate`) in and out of HTTP/gRPC
//!   headers, and as text stored with a job.
//! - [`metrics`]: the Prometheus recorder, and one function per metric Keygate records, so that
//!   every name and label is declared in this one file.
//!
//! `docs/telemetry.md` is the operator's guide to all of it.

#[cfg(feature = "export")]
pub mod logs;
pub mod metrics;
#[cfg(feature = "export")]
pub mod otel;
pub mod propagation;
#[cfg(feature = "export")]
mod setup;

#[cfg(feature = "export")]
pub use logs::LogFormat;
#[cfg(feature = "export")]
pub use setup::{Config, InitError, Telemetry, init};
