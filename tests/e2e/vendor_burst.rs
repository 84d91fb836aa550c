//! A burst of grants against a vendor that allows five requests a second (the Kisi simulator's
//! token bucket, `429` with `Retry-After` over it), through the real binary on the embedded
//! default: no caller sees an error, no door fails, and with the account's rate declared
//! (`requests_per_second: 5`) the vendor never answers `429` at all. With a rate declared too
//! high the vendor's `429`s happen, and each waits its `Retry-After` without spending an
//! attempt: still no door fails.
//!
//! `KEYGATE_BURST_GRANTS` sets the burst (default 20, so CI stays short; the figure in
//! docs/providers/kisi.md was taken with 200).

use std::time::{Duration, Instant};

use keygate_proto::v1;
use keygate_simulators::kisi::{KisiSimulator, RateLimit};

use crate::grants::{events, grants};
use crate::harness::*;

const MOBILE: i32 = v1::AccessMethodMode::MobileKey as i32;
/// The vendor's limit.
const VENDOR: RateLimit = RateLimit {
    requests_per_second: 5.0,
    burst: 5,
};

fn burst_size() -> usize {
    std::env::var("KEYGATE_BURST_GRANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(20)
}

/// Events of type `t` in the workspace (its one system is the Kisi simulator).
async fn count(ch: &tonic::transport::Channel, key: &str, t: &str) -> usize {
    let mut n = 0;
    let mut token = String::new();
    loop {
        let page = events(ch)
            .list_events(authed(
                key,
                v1::ListEventsRequest {
                    page_size: 500,
                    page_token: token.clone(),
                    event_types: vec![t.into()],
                    ..Default::default()
                },
            ))
            .await
            .expect("events")
            .into_inner();
        n += page.events.len();
        if page.next_page_token.is_empty() {
            return n;
        }
        token = page.next_page_token;
    }
}

struct Outcome {
    granted: usize,
    failed: usize,
    caller_errors: usize,
    throttled: usize,
    requests: usize,
    elapsed: Duration,
}

async fn burst(declared_rps: &str, n: usize) -> Outcome {
    let sim = KisiSimulator::new();
    let sim_addr = sim.serve().await.expect("simulator");
    let seed = sim.seed().clone();
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            env: production_keys(),
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Burst", false).await;
    let system = systems(&ch)
        .connect_access_system(authed(
            &key,
            v1::ConnectAccessSystemRequest {
                system_type: "kisi".into(),
                settings: [
                    ("endpoint".to_owned(), format!("http://{sim_addr}")),
                    ("place_id".to_owned(), seed.place_id.to_string()),
                    ("requests_per_second".to_owned(), declared_rps.to_owned()),
                ]
                .into(),
                credentials: [(
                    "api_key".to_owned(),
                    keygate_simulators::kisi::API_KEY.to_owned(),
                )]
                .into(),
                ..Default::default()
            },
        ))
        .await
        .expect("connect")
        .into_inner()
        .acs_system
        .expect("system");
    let door = crate::grants::entrance_named(&ch, &key, &system.acs_system_id, "Front Door").await;
    // The vendor's limit starts now: connecting is not part of the burst.
    sim.set_rate_limit(Some(VENDOR));
    let before = sim.requests().len();

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (ch, key, door) = (ch.clone(), key.clone(), door.clone());
        tasks.spawn(async move {
            grants(&ch)
                .create_access_grant(authed(
                    &key,
                    v1::CreateAccessGrantRequest {
                        request_id: format!("burst-{i}"),
                        grantee: Some(v1::create_access_grant_request::Grantee::UserIdentity(
                            v1::NewUserIdentity {
                                full_name: format!("Guest {i}"),
                                email_address: format!("guest{i}@example.com"),
                                ..Default::default()
                            },
                        )),
                        acs_entrance_ids: vec![door],
                        requested_access_methods: vec![v1::NewRequestedAccessMethod {
                            mode: MOBILE,
                            code: String::new(),
                        }],
                        ..Default::default()
                    },
                ))
                .await
                .is_err()
        });
    }
    let mut caller_errors = 0;
    while let Some(r) = tasks.join_next().await {
        if r.expect("task") {
            caller_errors += 1;
        }
    }
    let deadline = Duration::from_secs(60 + 2 * n as u64);
    let (granted, failed) = loop {
        let granted = count(&ch, &key, "access_grant.access_granted_to_all_doors").await;
        let failed = count(&ch, &key, "access_method.failed_to_issue").await;
        if granted + failed >= n || started.elapsed() > deadline {
            break (granted, failed);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    Outcome {
        granted,
        failed,
        caller_errors,
        throttled: sim.throttled(),
        requests: sim.requests().len() - before,
        elapsed: started.elapsed(),
    }
}

fn report(what: &str, n: usize, o: &Outcome) {
    eprintln!(
        "figure: {what}: {n} grants, {} granted, {} failed, {} caller errors, {} vendor requests, {} vendor 429s, all granted in {:.1} s",
        o.granted,
        o.failed,
        o.caller_errors,
        o.requests,
        o.throttled,
        o.elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn a_burst_at_the_declared_rate_meets_no_429_and_fails_no_door() {
    let n = burst_size();
    let o = burst("5", n).await;
    report("declared 5 requests/s, vendor 5/s", n, &o);
    assert_eq!(o.caller_errors, 0, "no caller saw an error");
    assert_eq!(o.failed, 0, "no door failed");
    assert_eq!(o.granted, n, "every grant reached its door");
    assert_eq!(o.throttled, 0, "the vendor never answered 429");
}

#[tokio::test]
async fn a_burst_with_the_rate_declared_too_high_still_fails_no_door() {
    let n = burst_size();
    let o = burst("40", n).await;
    report("declared 40 requests/s, vendor 5/s", n, &o);
    assert_eq!(o.caller_errors, 0, "no caller saw an error");
    assert_eq!(o.failed, 0, "a 429 fails no door");
    assert_eq!(o.granted, n, "every grant reached its door");
}
