//! Redis stopped mid-test: reads keep answering from the store, writes still succeed, and the
//! cache is used again once Redis is back. The test runs its own redis-server on a free port so
//! the machine's Redis (and other tests) are untouched.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keygate_proto::v1;

use crate::harness::*;

struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        let r = Self {
            port,
            child: Some(child),
        };
        for _ in 0..100 {
            if r.cli(&["PING"]) == "PONG" {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {port}");
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn issued_method(ch: &tonic::transport::Channel, key: &str, id: &str) -> v1::AccessMethod {
    let mut last = None;
    for _ in 0..100 {
        let m = v1::access_method_service_client::AccessMethodServiceClient::new(ch.clone())
            .get_access_method(authed(
                key,
                v1::GetAccessMethodRequest {
                    access_method_id: id.into(),
                },
            ))
            .await
            .expect("get answers")
            .into_inner()
            .access_method
            .expect("m");
        if m.is_issued {
            return m;
        }
        last = Some(m);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not issued: {last:?}");
}

async fn grant(ch: &tonic::transport::Channel, key: &str, doors: &[String]) -> String {
    let req = v1::CreateAccessGrantRequest {
        grantee: Some(v1::create_access_grant_request::Grantee::UserIdentity(
            v1::NewUserIdentity {
                full_name: "Sam Roe".into(),
                ..Default::default()
            },
        )),
        acs_entrance_ids: doors.to_vec(),
        requested_access_methods: vec![v1::NewRequestedAccessMethod {
            mode: v1::AccessMethodMode::MobileKey as i32,
            code: String::new(),
        }],
        ..Default::default()
    };
    v1::access_grant_service_client::AccessGrantServiceClient::new(ch.clone())
        .create_access_grant(authed(key, req))
        .await
        .expect("create works")
        .into_inner()
        .access_grant
        .expect("g")
        .requested_access_methods[0]
        .created_access_method_ids[0]
        .clone()
}

#[tokio::test]
async fn reads_and_writes_survive_a_redis_outage() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let base = Options::postgres_redis().await;
    let opts = Options {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        extra_args: ["--sandbox-provision-delay-ms", "50"]
            .map(String::from)
            .to_vec(),
        ..base
    };
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &opts);
    let ch = kg.channel().await;
    let (ws, key) = create_workspace(&ch, "Outage", true).await;
    let all = systems(&ch)
        .list_access_systems(authed(&key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems;
    let ks = all
        .iter()
        .find(|s| s.system_type == "virtual_salto_ks")
        .expect("ks");
    let doors: Vec<String> = systems(&ch)
        .list_entrances(authed(
            &key,
            v1::ListEntrancesRequest {
                acs_system_id: ks.acs_system_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("entrances")
        .into_inner()
        .acs_entrances
        .into_iter()
        .filter(|e| e.display_name == "Main Entrance" || e.display_name == "Side Door")
        .map(|e| e.acs_entrance_id)
        .collect();

    let first = grant(&ch, &key, &doors).await;
    let issued = issued_method(&ch, &key, &first).await;
    let cache_key = format!("keygate:v1:access_method:{ws}:{first}");
    assert_eq!(
        redis.cli(&["EXISTS", &cache_key]),
        "1",
        "the status is cached in Redis"
    );

    redis.stop();
    // The client session token is minted per read (stable within a minute), not stored.
    let without_token = |m: v1::AccessMethod| v1::AccessMethod {
        client_session_token: String::new(),
        ..m
    };
    let issued = without_token(issued);
    for _ in 0..5 {
        let again = without_token(issued_method(&ch, &key, &first).await);
        assert_eq!(again, issued, "reads fall back to the store");
    }
    let second = grant(&ch, &key, &doors).await;
    assert!(
        issued_method(&ch, &key, &second).await.is_issued,
        "writes and fan-out go on without Redis"
    );

    let redis = Redis::start(port);
    let second_key = format!("keygate:v1:access_method:{ws}:{second}");
    let mut refilled = false;
    for _ in 0..50 {
        issued_method(&ch, &key, &second).await;
        if redis.cli(&["EXISTS", &second_key]) == "1" {
            refilled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refilled, "the cache is used again once Redis is back");
}
