//! `rediss://`: Keygate on PostgreSQL with a Redis that only speaks TLS, its certificate signed
//! by a private CA that Keygate trusts the way it trusts every outbound TLS peer (the system's
//! roots, here extended with `SSL_CERT_FILE`). The cache and the shared rate limits land in that
//! Redis; a Keygate that does not trust the CA still serves, from the store, with its own limits.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keygate_proto::v1;

use crate::harness::*;

fn run(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (Debian package openssl) must be installed");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA and a server certificate for `localhost` / 127.0.0.1, in `dir`.
fn certificates(dir: &Path) {
    run(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=keygate-test-ca",
        ],
    );
    run(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("san");
    run(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

struct TlsRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

impl TlsRedis {
    fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                "server.crt",
                "--tls-key-file",
                "server.key",
                "--tls-ca-cert-file",
                "ca.crt",
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        let r = Self {
            port,
            dir: dir.to_owned(),
            child,
        };
        for _ in 0..100 {
            if r.cli(&["PING"]) == "PONG" {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server with TLS did not start on port {port}");
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["--tls", "--cacert", "ca.crt", "-p", &self.port.to_string()])
            .args(args)
            .current_dir(&self.dir)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn a_few_calls(kg: &Keygate) -> String {
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "TLS", true).await;
    for _ in 0..3 {
        systems(&ch)
            .list_access_systems(authed(&key, v1::ListAccessSystemsRequest::default()))
            .await
            .expect("systems");
    }
    key
}

#[tokio::test]
async fn rediss_carries_the_cache_and_the_shared_rate_limits_over_tls() {
    let certs = DataDir::new();
    certificates(&certs.0);
    let redis = TlsRedis::start(&certs.0);
    let url = format!("rediss://localhost:{}", redis.port);
    let base = Options::postgres_redis().await;

    let dir = DataDir::new();
    let mut env = base.env.clone();
    env.push((
        "SSL_CERT_FILE".into(),
        certs.0.join("ca.crt").display().to_string(),
    ));
    let kg = Keygate::start(
        &dir.0,
        &Options {
            redis_url: Some(url.clone()),
            env,
            ..base.clone()
        },
    );
    a_few_calls(&kg).await;
    let mut keys = String::new();
    for _ in 0..50 {
        keys = redis.cli(&["--scan", "--pattern", "keygate:*"]);
        if keys.contains("keygate:v1:rate:ws:") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        keys.contains("keygate:v1:rate:ws:"),
        "the shared rate limit is in the TLS Redis: {keys:?}"
    );
    drop(kg);

    // Not trusting the CA: the TLS handshake fails, and Keygate serves anyway (the store
    // answers, each replica limits by itself), writing nothing to that Redis.
    redis.cli(&["FLUSHALL"]);
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            redis_url: Some(url),
            ..base
        },
    );
    a_few_calls(&kg).await;
    assert_eq!(
        redis.cli(&["DBSIZE"]),
        "0",
        "nothing reached an untrusted peer"
    );
}
