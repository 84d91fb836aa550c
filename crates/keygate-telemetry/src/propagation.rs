//! W3C trace context (`traceparent`, `tracestate`), in and out of requests and jobs.
//!
//! - Incoming gRPC calls: [`set_parent_from_headers`] makes the RPC span a child of the
//!   caller's span (the gateway's `trace` stage does it).
//! - Jobs: the store saves [`current_traceparent`] with every job it queues, and the
//!   orchestrator makes the job's span a child of it with [`set_parent_from_traceparent`].
//! - Outgoing HTTP calls (vendor adapters, webhooks): [`inject`] the current span's context
//!   into the request headers, for example with reqwest:
//!
//!   ```ignore
//!   let mut headers = http::HeaderMap::new();
//!   keygate_telemetry::propagation::inject(&mut headers);
//!   client.post(url).headers(headers).body(body).send().await
//!   ```
//!
//! Everything here is a no-op when no OTLP exporter is configured: spans then carry no
//! OpenTelemetry context, nothing is injected and jobs store no context.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header (and job column) name of the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The remote context in `headers` (`traceparent` and `tracestate`), if it is valid.
pub fn extract(headers: &http::HeaderMap) -> Option<Context> {
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of the caller's span named in `headers`. Call it before the span is
/// first entered; without a valid `traceparent` the span stays a root (a new trace).
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if let Some(cx) = extract(headers) {
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of the span a stored `traceparent` names (see
/// [`current_traceparent`]). An invalid value is ignored.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The OpenTelemetry context of the current span. When that span is not exported (a `debug`
/// span inside an exported one), the context of the nearest exported span around it, which the
/// OpenTelemetry layer makes current on every enter.
fn current_context() -> Context {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::current()
    }
}

/// The current span's context as a W3C `traceparent`
/// (`00-<trace id>-<span id>-<flags>`), or `None` when it has none (no exporter configured, or
/// no span). The store saves it with each job it queues.
pub fn current_traceparent() -> Option<String> {
    let cx = current_context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Writes the current span's context (`traceparent`, and `tracestate` when not empty) into
/// `headers` of an outgoing request. Does nothing when the current span has no context.
pub fn inject(headers: &mut http::HeaderMap) {
    let cx = current_context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with_otel<R>(f: impl FnOnce() -> R) -> R {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn a_caller_context_is_continued_and_passed_on() {
        with_otel(|| {
            let mut headers = http::HeaderMap::new();
            headers.insert(TRACEPARENT, http::HeaderValue::from_static(PARENT));
            headers.insert("tracestate", http::HeaderValue::from_static("vendor=1"));
            let span = tracing::info_span!("rpc");
            set_parent_from_headers(&span, &headers);
            let _g = span.enter();
            let tp = current_traceparent().expect("context");
            assert!(
                tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{tp}"
            );
            assert!(!tp.contains("00f067aa0ba902b7"), "a new span id: {tp}");
            assert!(tp.ends_with("-01"), "sampled flag kept: {tp}");

            let mut out = http::HeaderMap::new();
            inject(&mut out);
            assert_eq!(
                out.get(TRACEPARENT).and_then(|v| v.to_str().ok()),
                Some(tp.as_str())
            );
            assert_eq!(
                out.get("tracestate").and_then(|v| v.to_str().ok()),
                Some("vendor=1")
            );
        });
    }

    #[test]
    fn a_stored_traceparent_becomes_the_parent() {
        with_otel(|| {
            let span = tracing::info_span!("job");
            set_parent_from_traceparent(&span, PARENT);
            let _g = span.enter();
            let tp = current_traceparent().expect("context");
            assert!(
                tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{tp}"
            );
        });
    }

    #[test]
    fn an_unexported_span_passes_on_the_context_around_it() {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::filter::LevelFilter;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("test"))
                    .with_filter(LevelFilter::INFO),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::sink)
                    .with_filter(LevelFilter::DEBUG),
            );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc");
            set_parent_from_traceparent(&span, PARENT);
            let _rpc = span.enter();
            let outer = current_traceparent().expect("rpc context");
            let _inner = tracing::debug_span!("store").entered();
            assert_eq!(current_traceparent().as_deref(), Some(outer.as_str()));
        });
    }

    #[test]
    fn garbage_is_ignored() {
        with_otel(|| {
            let span = tracing::info_span!("job");
            set_parent_from_traceparent(&span, "not-a-traceparent");
            let _g = span.enter();
            let tp = current_traceparent().expect("a root context of its own");
            assert!(!tp.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
        });
    }

    #[test]
    fn nothing_without_an_exporter() {
        let _g = tracing::info_span!("rpc").entered();
        assert_eq!(current_traceparent(), None);
        let mut out = http::HeaderMap::new();
        inject(&mut out);
        assert!(out.is_empty());
    }
}
