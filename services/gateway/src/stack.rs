//! The gRPC middleware stack, in one fixed and named order (outermost first):
//!
//! 1. `request_id`  — takes `x-request-id` or makes one; echoes it on the response.
//! 2. `trace`       — one span per RPC with method, request id, workspace and gRPC code; it
//!    continues the caller's trace when the call carries a W3C `traceparent`.
//! 3. `metrics`     — the RPC latency histogram, by method and gRPC code.
//! 4. `auth_failures` — per client address, a budget of failed authentications; a client that
//!    spent it is refused (RESOURCE_EXHAUSTED with `RetryInfo`) before its credentials are read.
//! 5. `auth`        — API key → workspace (or admin token → operator); refuses with UNAUTHENTICATED.
//! 6. `rate_limit`  — per-workspace token bucket; RESOURCE_EXHAUSTED with `RetryInfo`.
//! 7. `deadline`    — the shorter of the client's `grpc-timeout` and the server maximum.
//! 8. `load_shed`   — an in-flight limit that adapts to latency (`keygate_app::overload`) and
//!    refuses at once (RESOURCE_EXHAUSTED, `SERVER_OVERLOADED`, `RetryInfo`) rather than queue.
//!
//! Bounded message sizes come last, in each service's codec (see `server.rs`). The failed-auth
//! limit runs before auth so that a client sending made-up keys reaches neither the cache nor
//! the store once it has spent its budget; it counts only calls auth refused, so a busy client
//! with a good key is never limited by it. Auth runs before the rate limit because the bucket is
//! per workspace; load shedding sits after the deadline so a shed call never waits. Metrics sit
//! outside auth so refused calls are counted too, and inside the trace span so their time is the
//! call's, not the span's bookkeeping.

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use keygate_app::overload::ConcurrencyLimit;
use keygate_cache::SharedRate;
use keygate_domain::Error;
use keygate_domain::ErrorReason;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument as _;

use crate::auth::{Authenticator, Principal};
use crate::error::to_status;

// The limiters live in the application layer, so every surface applies the same ones.
pub use keygate_app::throttle::{AuthFailureLimiter, Limiters, RateLimiter, client_key};

/// The stack's stages, outermost first. `build` follows this order and a test asserts it.
pub const ORDER: [&str; 9] = [
    RequestId::NAME,
    Trace::NAME,
    Metrics::NAME,
    AuthFailures::NAME,
    Auth::NAME,
    RateLimit::NAME,
    Deadline::NAME,
    LoadShed::NAME,
    DecodeErrors::NAME,
];

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a stage can wrap: the rest of the stack, as tonic hands it over.
pub trait Inner:
    Service<Request<Body>, Response = Response<Body>, Future: Send + 'static, Error: Send + 'static>
    + Send
    + 'static
{
}

impl<S> Inner for S
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
}

/// One stage of the stack.
pub trait Middleware: Clone + Send + Sync + 'static {
    const NAME: &'static str;

    fn handle<S: Inner>(
        &self,
        req: Request<Body>,
        next: Next<S>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>>;
}

/// The rest of the stack, ready to take exactly one request.
pub struct Next<S>(S);

impl<S> Next<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    pub fn run(mut self, req: Request<Body>) -> S::Future {
        self.0.call(req)
    }
}

/// Records the stages a request passed through, when present (tests only attach it).
#[derive(Clone, Default)]
pub struct Trail(pub Arc<Mutex<Vec<&'static str>>>);

/// A service running middleware `M` in front of `S`.
#[derive(Clone)]
pub struct Stage<M, S> {
    middleware: M,
    inner: S,
}

impl<M: Middleware, S> Layer<S> for StageLayer<M> {
    type Service = Stage<M, S>;
    fn layer(&self, inner: S) -> Self::Service {
        Stage {
            middleware: self.0.clone(),
            inner,
        }
    }
}

/// The layer of one stage.
#[derive(Clone)]
pub struct StageLayer<M>(pub M);

impl<M, S> Service<Request<Body>> for Stage<M, S>
where
    M: Middleware,
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let Some(Ok(mut t)) = req.extensions().get::<Trail>().map(|t| t.0.lock()) {
            t.push(M::NAME);
        }
        // The service that was polled ready is the one that must be called; leave a fresh
        // clone behind for the next request (tower's documented idiom).
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        self.middleware.handle(req, Next(ready))
    }
}

fn refuse(err: Error) -> Response<Body> {
    to_status(err).into_http()
}

/// The id of one request, for logs and support.
#[derive(Clone, Debug)]
pub struct RequestIdValue(pub String);

/// Stage 1.
#[derive(Clone)]
pub struct RequestId;

impl Middleware for RequestId {
    const NAME: &'static str = "request_id";

    fn handle<S: Inner>(
        &self,
        mut req: Request<Body>,
        next: Next<S>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>> {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        req.extensions_mut().insert(RequestIdValue(id.clone()));
        let fut = next.run(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            Ok(resp)
        })
    }
}

/// Every RPC served here, as `/package.Service/Method`: the values the `method` label of the
/// latency histogram may take (any other path is `other`, so a caller cannot grow the label set).
static KNOWN_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    use prost::Message as _;
    let mut known: HashSet<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    if let Ok(set) = prost_types::FileDescriptorSet::decode(keygate_proto::FILE_DESCRIPTOR_SET) {
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    known.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    known
});

/// The `method` label of a request path: `package.Service/Method`, or `other`.
pub fn method_label(path: &str) -> &str {
    if KNOWN_METHODS.contains(path) {
        path.trim_start_matches('/')
    } else {
        "other"
    }
}

/// The gRPC status of a response head. Errors carry `grpc-status` in the headers
/// (trailers-only); a success carries it in the trailers, so no header means OK. For a stream
/// this is the status at its start.
pub fn response_code(resp: &Response<Body>) -> tonic::Code {
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Ok)
}

/// The canonical name of a gRPC code (`OK`, `NOT_FOUND`, ...), as metrics label it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Codes that mark a server span as an error (OpenTelemetry's gRPC conventions): the server
/// failed, rather than the caller asking for something it may not have.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code as C;
    matches!(
        code,
        C::Unknown
            | C::DeadlineExceeded
            | C::Unimplemented
            | C::Internal
            | C::Unavailable
            | C::DataLoss
    )
}

/// Stage 2.
#[derive(Clone)]
pub struct Trace;

macro_rules! rpc_span {
    ($level:expr, $name:expr, $service:expr, $method:expr, $request_id:expr) => {
        tracing::span!(
            $level,
            "rpc",
            otel.name = %$name,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %$service,
            rpc.method = %$method,
            request_id = %$request_id,
            workspace_id = tracing::field::Empty,
            grpc.code = tracing::field::Empty,
            rpc.grpc.status_code = tracing::field::Empty,
        )
    };
}

impl Middleware for Trace {
    const NAME: &'static str = "trace";

    fn handle<S: Inner>(
        &self,
        req: Request<Body>,
        next: Next<S>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>> {
        let path = req.uri().path().to_owned();
        let request_id = req
            .extensions()
            .get::<RequestIdValue>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let name = path.trim_start_matches('/');
        let (service, method) = name.split_once('/').unwrap_or((name, ""));
        // Health checks (probes, every few seconds) are debug: out of the default log and of
        // the exported traces.
        let is_health = path.starts_with("/grpc.health.");
        let span = if is_health {
            rpc_span!(tracing::Level::DEBUG, name, service, method, request_id)
        } else {
            rpc_span!(tracing::Level::INFO, name, service, method, request_id)
        };
        // A caller's `traceparent` makes this span its child, so its trace continues here.
        keygate_telemetry::propagation::set_parent_from_headers(&span, req.headers());
        let started = Instant::now();
        let fut = next.run(req);
        Box::pin(
            async move {
                let resp = fut.await?;
                let code = response_code(&resp);
                let span = tracing::Span::current();
                span.record("grpc.code", tracing::field::debug(code));
                span.record("rpc.grpc.status_code", code as i64);
                if is_server_error(code) {
                    span.record("otel.status_code", "ERROR");
                }
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                if is_health {
                    tracing::debug!(latency_ms, "rpc finished");
                } else {
                    tracing::info!(latency_ms, "rpc finished");
                }
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

/// Stage 3: `keygate_rpc_duration_seconds{method, code}`.
#[derive(Clone)]
pub struct Metrics;

impl Middleware for Metrics {
    const NAME: &'static str = "metrics";

    fn handle<S: Inner>(
        &self,
        req: Request<Body>,
        next: Next<S>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>> {
        let method = method_label(req.uri().path()).to_owned();
        let started = Instant::now();
        let fut = next.run(req);
        Box::pin(async move {
            let resp = fut.await?;
            keygate_telemetry::metrics::rpc(
                &method,
                code_name(response_code(&resp)),
                started.elapsed(),
            );
            Ok(resp)
        })
    }
}

/// The address of the peer of a call, as tonic's TCP accept loop attached it. The gRPC port
/// has no trusted-proxy setting: behind an L7 proxy every call is the proxy's (see
/// docs/limits.md).
pub fn peer_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .map(|a| a.ip())
}

/// Stage 4.
#[derive(Clone)]
pub struct AuthFailures(pub Arc<AuthFailureLimiter>);

impl Middleware for AuthFailures {
    const NAME: &'static str = "auth_failures";

    fn handle<S: Inner>(
        &self,
        req: Request<Body>,
        next: Next<S>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>> {
        // Health checks and reflection need no credentials: nothing to fail, nothing to limit
        // (probes keep working from an address that is over its budget).
        let open = crate::auth::guard_for(req.uri().path()) == crate::auth::Guard::None;
        let Some(client) = peer_ip(&req).filter(|_| !open) else {
            return Box::pin(next.run(req));
        };
        if let Err(wait) = self.0.check(client) {
            keygate_telemetry::metrics::limit_refused("auth_failures");
            tracing::debug!(%client, "refused: too many failed authentications");
            return Box::pin(async move {
                Ok(refuse(Error::LimitReached {
                    reason: ErrorReason::AuthFailuresLimited,
                    message: "too many failed authentications from this address; retry later"
                        .into(),
                    retry_after: Some(wait),
                }))
            });
        }
        let limiter = self.0.clone();
        let fut = next.run(req);
        Box::pin(async move {
            let resp = fut.await?;
            // The head of a refused call; a stream that ends UNAUTHENTICATED later (its key
            // revoked) carries it in its trailers and is not counted.
            if response_code(&resp) == tonic::Code::Unauthenticated {
                limiter.failed(client);
            }
            Ok(resp)
        })
    }
}

/// Stage 5.
#[derive(Clone)]
pub struct Auth(pub Authenticator);

impl Middleware for Auth {
    const NAME: &'static str = "auth";

    fn handle<S: Inner>(
        &self,
        mut req: Request<Body>,
        next: Next<S>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>> {
        let auth = self.0.clone();
        Box::pin(async move {
            if req.extensions().get::<Principal>().is_some() {
                // A principal must come from this layer only, never from upstream.
                return Ok(refuse(Error::Internal {
                    message: "principal set twice".into(),
                }));
            }
            match auth.authenticate(req.uri().path(), req.headers()).await {
                Ok(p) => {
                    req.extensions_mut().insert(p);
                    next.run(req).await
                }
                Err(e) => Ok(refuse(e)),
            }
        })
    }
}

/// Stage 6.
#[derive(Clone)]
pub struct RateLimit(pub Arc<RateLimiter>);

impl Middleware for RateLimit {
    const NAME: &'static str = "rate_limit";

    fn handle<S: Inner>(
        &self,
        req: Request<Body>,
        next: Next<S>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>> {
        let Some(Principal::Workspace { workspace_id, .. }) =
            req.extensions().get::<Principal>().cloned()
        else {
            return Box::pin(next.run(req));
        };
        let limiter = self.0.clone();
        Box::pin(async move {
            if let Err(retry_after) = limiter.check(workspace_id).await {
                return Ok(refuse(Error::RateLimited { retry_after }));
            }
            next.run(req).await
        })
    }
}

/// Parses a `grpc-timeout` header value (`<up to 8 digits><H|M|S|m|u|n>`).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Stage 7.
#[derive(Clone)]
pub struct Deadline {
    pub max: Duration,
}

impl Middleware for Deadline {
    const NAME: &'static str = "deadline";

    fn handle<S: Inner>(
        &self,
        req: Request<Body>,
        next: Next<S>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>> {
        let asked = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let deadline = asked.map_or(self.max, |a| a.min(self.max));
        let fut = next.run(req);
        // Bounds the time to the response head: a stream, once started, is not cut by this.
        // The call itself runs to its end in a task of its own: the deadline (or a caller that
        // went away) answers the caller, but never cuts the call's work between two statements
        // (a store transaction dropped halfway, its BEGIN sent and no ROLLBACK, would go back
        // to the pool still open and fail the next calls that get its connection).
        Box::pin(async move {
            let mut call = tokio::spawn(fut.in_current_span());
            match tokio::time::timeout(deadline, &mut call).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the call's task failed");
                    Ok(refuse(Error::Internal {
                        message: "the call failed".into(),
                    }))
                }
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "deadline of {deadline:?} exceeded"
                ))
                .into_http()),
            }
        })
    }
}

/// Stage 8: load shedding. A call past the concurrency limit (adaptive, at most
/// `max_in_flight`; `keygate_app::overload`) is refused at once with `RESOURCE_EXHAUSTED`,
/// `SERVER_OVERLOADED` and a `RetryInfo`, before it does any work. Health checks are never
/// shed: an overloaded replica is not a dead one.
#[derive(Clone)]
pub struct LoadShed(pub Arc<ConcurrencyLimit>);

impl Middleware for LoadShed {
    const NAME: &'static str = "load_shed";

    fn handle<S: Inner>(
        &self,
        req: Request<Body>,
        next: Next<S>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>> {
        let path = req.uri().path();
        if path.starts_with("/grpc.health.v1.Health/") {
            return Box::pin(next.run(req));
        }
        let place = match self.0.try_acquire(method_label(path)) {
            Ok(place) => place,
            Err(retry_after) => {
                keygate_telemetry::metrics::overload_refused();
                return Box::pin(async move {
                    Ok(refuse(Error::LimitReached {
                        reason: ErrorReason::ServerOverloaded,
                        message: "server overloaded; retry after the delay in RetryInfo, or on another replica".into(),
                        retry_after: Some(retry_after),
                    }))
                });
            }
        };
        let fut = next.run(req);
        Box::pin(async move {
            let r = fut.await;
            drop(place);
            r
        })
    }
}

/// What tonic's protobuf codec says when a request body is not the method's message.
const UNDECODABLE: &str = "failed to decode Protobuf message";

/// Stage 9: a request body that is not the method's protobuf message is the caller's error, but
/// tonic's codec answers it with INTERNAL ("failed to decode Protobuf message: ..."), before any
/// handler runs. This stage, next to the services, answers INVALID_ARGUMENT (`INVALID_FIELD`)
/// instead, through the one error mapping, so every stage outside it (metrics, trace) sees the
/// code the caller gets.
#[derive(Clone)]
pub struct DecodeErrors;

impl Middleware for DecodeErrors {
    const NAME: &'static str = "decode_errors";

    fn handle<S: Inner>(
        &self,
        req: Request<Body>,
        next: Next<S>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>> {
        let fut = next.run(req);
        Box::pin(async move { fut.await.map(undecodable_is_invalid) })
    }
}

/// `resp`, or INVALID_ARGUMENT when it is tonic's INTERNAL for a request body it could not
/// decode (always a trailers-only response: the codec fails before the handler).
pub fn undecodable_is_invalid(resp: Response<Body>) -> Response<Body> {
    if response_code(&resp) != tonic::Code::Internal {
        return resp;
    }
    let Some(status) = tonic::Status::from_header_map(resp.headers()) else {
        return resp;
    };
    let Some(detail) = status.message().strip_prefix(UNDECODABLE) else {
        return resp;
    };
    // prost names the field it failed in: `ListAcsUsersRequest.page_token: invalid wire type`.
    let detail = detail.trim_start_matches(':').trim();
    let field = detail
        .split_once(": ")
        .and_then(|(path, _)| path.split_once('.'))
        .map_or("", |(_, field)| field);
    let field = if field.is_empty()
        || !field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        "request"
    } else {
        field
    };
    refuse(Error::invalid(
        field,
        format!("the request body is not a valid protobuf message for this method: {detail}"),
    ))
}

/// Settings of the stack.
#[derive(Clone)]
pub struct StackConfig {
    pub rate_per_second: f64,
    pub rate_burst: u32,
    pub max_deadline: Duration,
    pub max_in_flight: usize,
    /// Whether the in-flight limit adapts to latency below `max_in_flight` (load shedding).
    pub adaptive_in_flight: bool,
    /// Failed authentications per minute per client address before it is refused; 0: no limit.
    pub auth_failures_per_minute: u32,
    /// Where the per-workspace rate limits are shared by replicas (Redis); `None`: per process.
    pub shared_rate: Option<Arc<dyn SharedRate>>,
}

/// The composed layer type of [`build`], outermost stage last in the nesting.
pub type Stack = Nest<
    DecodeErrors,
    Nest<
        LoadShed,
        Nest<
            Deadline,
            Nest<
                RateLimit,
                Nest<
                    Auth,
                    Nest<AuthFailures, Nest<Metrics, Nest<Trace, Nest<RequestId, Identity>>>>,
                >,
            >,
        >,
    >,
>;
type Nest<M, Inner> = tower::layer::util::Stack<StageLayer<M>, Inner>;
type Identity = tower::layer::util::Identity;

/// The whole stack as one layer, in [`ORDER`], with limiters of its own built from `cfg`.
pub fn build(cfg: &StackConfig, auth: Authenticator) -> Stack {
    let limiters = Limiters::new(
        cfg.rate_per_second,
        cfg.rate_burst,
        cfg.auth_failures_per_minute,
        cfg.shared_rate.clone(),
    );
    build_with(cfg, auth, limiters)
}

/// The whole stack as one layer, in [`ORDER`], with `limiters` shared with other surfaces (the
/// per-workspace rate and failed-authentication settings of `cfg` are then theirs).
pub fn build_with(cfg: &StackConfig, auth: Authenticator, limiters: Limiters) -> Stack {
    tower::ServiceBuilder::new()
        .layer(StageLayer(RequestId))
        .layer(StageLayer(Trace))
        .layer(StageLayer(Metrics))
        .layer(StageLayer(AuthFailures(limiters.auth_failures)))
        .layer(StageLayer(Auth(auth)))
        .layer(StageLayer(RateLimit(limiters.rate)))
        .layer(StageLayer(Deadline {
            max: cfg.max_deadline,
        }))
        .layer(StageLayer(LoadShed(ConcurrencyLimit::new(
            cfg.max_in_flight,
            cfg.adaptive_in_flight,
        ))))
        .layer(StageLayer(DecodeErrors))
        .into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tonic-prost's answer to a body it cannot decode: INTERNAL with prost's error as message.
    fn undecodable(bytes: &[u8]) -> Response<Body> {
        use prost::Message as _;
        let err = keygate_proto::v1::ListAcsUsersRequest::decode(bytes)
            .expect_err("the bytes are not a ListAcsUsersRequest");
        tonic::Status::internal(err.to_string()).into_http()
    }

    #[test]
    fn an_undecodable_body_is_invalid_argument_naming_the_field() {
        // Field 2 (`page_token`, a string) sent with wire type 5 (32-bit), as the fuzzer found.
        let resp = undecodable_is_invalid(undecodable(&[0x15, 1, 2, 3, 4]));
        let status = tonic::Status::from_header_map(resp.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        use tonic_types::StatusExt as _;
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("INVALID_FIELD")
        );
        let violations = details
            .bad_request()
            .expect("bad request")
            .field_violations
            .clone();
        assert_eq!(violations[0].field, "page_token");
        assert!(violations[0].description.contains("invalid wire type"));
    }

    #[test]
    fn a_truncated_body_is_invalid_argument() {
        // A length that claims more bytes than follow.
        let resp = undecodable_is_invalid(undecodable(&[0x12, 0xff, 0xff, 0x03, b'a']));
        let status = tonic::Status::from_header_map(resp.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }

    #[test]
    fn other_answers_pass_through_unchanged() {
        let internal = tonic::Status::internal("database unreachable").into_http();
        let resp = undecodable_is_invalid(internal);
        let status = tonic::Status::from_header_map(resp.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "database unreachable");
        let ok = undecodable_is_invalid(Response::new(Body::empty()));
        assert!(ok.headers().get("grpc-status").is_none());
    }

    #[test]
    fn grpc_timeout_parsing() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("123456789m"), None, "more than 8 digits");
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
    }

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(
            method_label("/keygate.v1.AccessGrantService/CreateAccessGrant"),
            "keygate.v1.AccessGrantService/CreateAccessGrant"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/keygate.v1.AccessGrantService/Nope"), "other");
        assert_eq!(method_label("/anything/else"), "other");
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
    }
}
