//! `keygate probe`: a readiness check for container health checks, so images need no curl or
//! wget (the runtime image has no shell). GET /readyz on the HTTP port, or the gRPC health
//! service; ready is exit 0, anything else (not ready, refused, timed out) exit 1 with one line
//! on stderr.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::config::ProbeArgs;

/// Why the server is not ready.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("not ready: no answer from {addr} within {secs} s")]
    TimedOut { addr: SocketAddr, secs: u64 },
    #[error("not ready: cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("not ready: {addr} answered {status}")]
    HttpStatus { addr: SocketAddr, status: String },
    #[error("not ready: cannot reach the gRPC API at {addr}")]
    GrpcConnect {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
    #[error("not ready: the gRPC health check at {addr} answered {code:?}: {message}")]
    GrpcStatus {
        addr: SocketAddr,
        code: tonic::Code,
        message: String,
    },
    #[error("not ready: the gRPC API at {addr} is {status}")]
    NotServing { addr: SocketAddr, status: String },
}

/// A listen address as a place to connect to: the unspecified address means this host.
fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Checks the server once; `Ok` with what it answered when ready.
pub async fn run(args: &ProbeArgs) -> Result<String, ProbeError> {
    let secs = args.timeout_secs.max(1);
    let addr = dialable(args.grpc_addr.unwrap_or(args.http_addr));
    let fut = async {
        if args.grpc_addr.is_some() {
            grpc_ready(addr, Duration::from_secs(secs)).await
        } else {
            http_ready(addr).await
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .map_err(|_| ProbeError::TimedOut { addr, secs })?
}

async fn http_ready(addr: SocketAddr) -> Result<String, ProbeError> {
    let io = |source| ProbeError::Connect { addr, source };
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    let request = format!(
        "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: keygate-probe\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    // The status line is all that matters; read a little, never the whole of a stray server.
    let mut buf = vec![0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await.map_err(io)?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].contains(&b'\n') {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let status_line = head.lines().next().unwrap_or("").trim().to_owned();
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some("200")) if v.starts_with("HTTP/1.") => Ok(format!("ready ({addr} /readyz)")),
        _ => Err(ProbeError::HttpStatus {
            addr,
            status: if status_line.is_empty() {
                "nothing".into()
            } else {
                status_line.chars().take(80).collect()
            },
        }),
    }
}

async fn grpc_ready(addr: SocketAddr, timeout: Duration) -> Result<String, ProbeError> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| ProbeError::GrpcConnect { addr, source })?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|source| ProbeError::GrpcConnect { addr, source })?;
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|s| ProbeError::GrpcStatus {
            addr,
            code: s.code(),
            message: s.message().to_owned(),
        })?
        .into_inner();
    match ServingStatus::try_from(r.status) {
        Ok(ServingStatus::Serving) => Ok(format!("ready ({addr} grpc.health.v1)")),
        other => Err(ProbeError::NotServing {
            addr,
            status: other
                .map(|s| s.as_str_name().to_owned())
                .unwrap_or_else(|_| format!("status {}", r.status)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_probed_on_loopback() {
        let a: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(dialable(a), "127.0.0.1:8080".parse().expect("addr"));
        let b: SocketAddr = "[::]:8080".parse().expect("addr");
        assert_eq!(dialable(b), "[::1]:8080".parse().expect("addr"));
        let c: SocketAddr = "10.1.2.3:9".parse().expect("addr");
        assert_eq!(dialable(c), c);
    }
}
