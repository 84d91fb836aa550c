//! The HTTP port: probes and Prometheus metrics. The delivery role merges in the Instant Key
//! pages (`keygate_delivery::instant_keys::router`) and, in outbox mode, `/outbox`; the gateway
//! role the Seam-compatible API under `/seam` (`keygate_seam_api::router`).
//!
//! The port is public (the pages' links lead here), so [`serve`] bounds what a client can hold:
//! HTTP/1 only, a connection limit, a header-read timeout (a client that never finishes its
//! headers, or idles between requests, is cut off), and [`guard`] in front of every route: a
//! request timeout and a limit of requests in flight (503 with `Retry-After`; the probes are
//! exempt), and the client's address for the per-client limits of the pages and of the
//! Seam-compatible API (the peer, or what a trusted proxy says in `X-Forwarded-For`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keygate_app::throttle::ClientAddr;
use keygate_telemetry::metrics::MetricsHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub fn router(ready: Arc<AtomicBool>, metrics: Option<MetricsHandle>) -> Router {
    let router = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(ready);
    match metrics {
        Some(m) => router.route("/metrics", get(move || render(m.clone()))),
        None => router,
    }
}

/// The Prometheus text exposition of this process's metrics.
async fn render(metrics: MetricsHandle) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn readyz(State(ready): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
    if ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// An address or a network (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`) of a trusted proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => match v.to_ipv4_mapped() {
                    Some(v4) => (u128::from(u32::from(v4)), 32),
                    None => (u128::from(v), 128),
                },
            }
        }
        let (net, width) = bits(self.addr);
        let (ip, ip_width) = bits(ip);
        if width != ip_width {
            return false;
        }
        let host_bits = u32::from(width - self.prefix.min(width));
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        net & mask == ip & mask
    }
}

/// The client of a request from `peer`: the peer itself, unless it is a trusted proxy; then the
/// right-most address of `X-Forwarded-For` that is not a trusted proxy (each proxy appends the
/// address it got the request from, so only the entries added by trusted ones can be believed).
pub fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[Network]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// The limits of the HTTP port.
#[derive(Clone, Debug)]
pub struct PortLimits {
    /// Longest time to receive a request's headers (and to wait for the next request on a
    /// kept-alive connection).
    pub header_read_timeout: Duration,
    /// Longest time to answer a request, its body read included.
    pub request_timeout: Duration,
    /// Requests in flight before new ones are refused with 503 (probes are exempt).
    pub max_in_flight: usize,
    /// Open connections; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Network>,
}

/// The peer address of a connection, as accepted.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

#[derive(Clone)]
struct Guard {
    request_timeout: Duration,
    in_flight: Arc<Semaphore>,
    trusted: Arc<[Network]>,
}

/// 503 with `Retry-After: 1`.
fn unavailable(why: &str) -> Response {
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, why.to_owned()).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// In front of every route: the client's address, the in-flight limit and the request timeout.
async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    if let Some(Peer(peer)) = req.extensions().get::<Peer>().copied() {
        let client = client_of(peer.ip(), req.headers(), &g.trusted);
        req.extensions_mut().insert(ClientAddr(client));
    }
    let path = req.uri().path();
    if path == "/livez" || path == "/readyz" {
        return next.run(req).await;
    }
    // The Seam-compatible API's clients read every refusal as Seam's JSON envelope.
    let refuse: fn(&str) -> Response = if keygate_seam_api::is_seam_path(path) {
        keygate_seam_api::unavailable
    } else {
        unavailable
    };
    let Ok(_permit) = g.in_flight.clone().try_acquire_owned() else {
        return refuse("server overloaded; retry in a moment\n");
    };
    match tokio::time::timeout(g.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => refuse("request timed out\n"),
    }
}

/// Serves `routes` on `listener` with the limits of the port until `stop` resolves, then lets
/// the open connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    routes: Router,
    limits: PortLimits,
    stop: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let app = routes.layer(axum::middleware::from_fn_with_state(
        Guard {
            request_timeout: limits.request_timeout,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            trusted: limits.trusted_proxies.into(),
        },
        guard,
    ));
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n: Network = "10.0.0.0/8".parse().expect("net");
        assert!(n.contains("10.1.2.3".parse().expect("ip")));
        assert!(!n.contains("11.0.0.1".parse().expect("ip")));
        assert!(
            n.contains("::ffff:10.9.9.9".parse().expect("ip")),
            "IPv4-mapped"
        );
        let one: Network = "192.0.2.7".parse().expect("host");
        assert!(one.contains("192.0.2.7".parse().expect("ip")));
        assert!(!one.contains("192.0.2.8".parse().expect("ip")));
        let v6: Network = "fd00::/8".parse().expect("v6");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("proxy".parse::<Network>().is_err());
        let all: Network = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains("203.0.113.9".parse().expect("ip")));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<Network> = vec!["10.0.0.0/8".parse().expect("net")];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, 203.0.113.5, 10.0.0.2"),
        );
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let stranger: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(
            client_of(proxy, &h, &trusted),
            "203.0.113.5".parse::<IpAddr>().expect("ip"),
            "the right-most untrusted hop; what the client wrote before it is not believed"
        );
        assert_eq!(client_of(stranger, &h, &trusted), stranger);
        assert_eq!(client_of(proxy, &h, &[]), proxy, "no proxy is trusted");
        assert_eq!(client_of(proxy, &HeaderMap::new(), &trusted), proxy);
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("junk, 10.0.0.3"),
        );
        assert_eq!(
            client_of(proxy, &h, &trusted),
            "10.0.0.3".parse::<IpAddr>().expect("ip")
        );
    }
}
