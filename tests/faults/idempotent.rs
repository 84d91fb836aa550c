//! Scenario 1: 100 concurrent `CreateAccessGrant` with one `request_id`, spread over both
//! replicas: one grant, identical replies, one provider call per (access method, door).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_proto::v1;
use prost::Message as _;

use crate::cluster::{Cluster, Report, channel, metric_sum};
use crate::harness::authed;

const CALLS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_request_id_over_two_replicas() {
    let cluster = Cluster::start("idempotent", 2, &[]).await;
    let urls = cluster.urls();
    let mut channels = Vec::new();
    for u in &urls {
        channels.push(channel(u).await);
    }
    let req = cluster.grant_request("faults-one-request-id", "Idempotent Guest");
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLS));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CALLS {
        let ch = channels[i % channels.len()].clone();
        let (key, req, barrier) = (cluster.key.clone(), req.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = v1::access_grant_service_client::AccessGrantServiceClient::new(ch);
            barrier.wait().await;
            client
                .create_access_grant(authed(&key, req))
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("join").expect("every call succeeds"));
    }
    let burst = started.elapsed();

    let encoded: HashSet<Vec<u8>> = replies.iter().map(|r| r.encode_to_vec()).collect();
    let grant = replies[0].access_grant.clone().expect("grant");
    assert_eq!(
        encoded.len(),
        1,
        "all {CALLS} replies are byte-for-byte identical"
    );

    // The workspace holds exactly one grant.
    let mut grants =
        v1::access_grant_service_client::AccessGrantServiceClient::new(channels[1].clone());
    let listed = grants
        .list_access_grants(authed(&cluster.key, v1::ListAccessGrantsRequest::default()))
        .await
        .expect("list grants")
        .into_inner()
        .access_grants;
    assert_eq!(listed.len(), 1, "one grant for one request_id");
    assert_eq!(listed[0].access_grant_id, grant.access_grant_id);

    // Wait until every door of every method is granted, then a little longer for stray calls.
    let mut methods =
        v1::access_method_service_client::AccessMethodServiceClient::new(channels[0].clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let pairs: usize = loop {
        let ms = methods
            .list_access_methods(authed(
                &cluster.key,
                v1::ListAccessMethodsRequest {
                    access_grant_id: grant.access_grant_id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list methods")
            .into_inner()
            .access_methods;
        let done = !ms.is_empty()
            && ms.iter().all(|m| {
                m.entrances
                    .iter()
                    .all(|d| d.state == v1::AccessState::Granted as i32)
            });
        if done {
            break ms.iter().map(|m| m.entrances.len()).sum();
        }
        assert!(Instant::now() < deadline, "the grant converges within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Provider calls, from both replicas' /metrics, and the virtual systems' own records.
    let mut provisions = 0.0;
    let mut per_replica = Vec::new();
    for r in &cluster.replicas {
        let text = r.metrics();
        let mut n = 0.0;
        for s in &cluster.systems {
            n += metric_sum(
                &text,
                "keygate_provider_call_duration_seconds_count",
                &[
                    format!("acs_system_id=\"{s}\""),
                    "operation=\"provision\"".into(),
                ],
            );
        }
        per_replica.push(n);
        provisions += n;
    }
    let store = keygate_store::open(&cluster.database_url).expect("open store");
    let ws: keygate_domain::ids::WorkspaceId = cluster.workspace_id.parse().expect("ws id");
    let credentials = keygate_orchestrator::store_ledger(store.as_ref())
        .count_credentials(ws)
        .await
        .expect("count credentials");
    assert!(pairs > 0);
    assert_eq!(
        provisions as usize, pairs,
        "one provision call per (access method, door) ({per_replica:?} per replica)"
    );
    assert_eq!(
        credentials as usize, pairs,
        "one credential per (access method, door) in the access systems"
    );

    let mut report = Report::new(
        "1. One `request_id`, 100 concurrent creates, two replicas",
        "100 `CreateAccessGrant` calls with the same `request_id` and body, released together by a \
         barrier, alternating between the two replicas (50 each). The grant has 2 doors on 2 \
         virtual access systems and asks for card and mobile key.",
    );
    report.row("Calls that succeeded", format!("{}/{CALLS}", replies.len()));
    report.row(
        "Distinct replies (protobuf bytes compared)",
        format!("{} (must be 1)", encoded.len()),
    );
    report.row(
        "Grants in the workspace afterwards",
        format!("{} (must be 1)", listed.len()),
    );
    report.row(
        "Provision calls to access systems (`keygate_provider_call_duration_seconds_count`, both replicas)",
        format!(
            "{provisions} = {pairs} (access method, door) pairs; per replica {per_replica:?}"
        ),
    );
    report.row(
        "Credentials in the virtual systems' ledger",
        format!("{credentials} (must be {pairs})"),
    );
    report.row(
        "Burst wall time (100 calls)",
        format!("{} ms", burst.as_millis()),
    );
    report.write("1-idempotent", "idempotent");
}
