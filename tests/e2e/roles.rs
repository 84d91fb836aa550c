//! The roles as separate processes: a gateway and an orchestrator, sharing only PostgreSQL and
//! Redis, complete a grant together.

use std::time::Duration;

use keygate_proto::v1;
use tokio_stream::StreamExt as _;

use crate::harness::*;

#[tokio::test]
async fn gateway_and_orchestrator_processes_work_together() {
    let base = Options::postgres_redis().await;
    let (gw_dir, orch_dir) = (DataDir::new(), DataDir::new());
    let gateway = Keygate::start(
        &gw_dir.0,
        &Options {
            extra_args: ["--roles", "gateway"].map(String::from).to_vec(),
            ..base.clone()
        },
    );
    let orchestrator = Keygate::start(
        &orch_dir.0,
        &Options {
            extra_args: [
                "--roles",
                "orchestrator",
                "--sandbox-provision-delay-ms",
                "50",
            ]
            .map(String::from)
            .to_vec(),
            ..base.clone()
        },
    );
    assert!(
        orchestrator.grpc_addr.is_empty(),
        "the orchestrator serves no API"
    );
    let ch = gateway.channel().await;
    let (_ws, key) = create_workspace(&ch, "Split", true).await;
    let all = systems(&ch)
        .list_access_systems(authed(&key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems;
    let latch = all
        .iter()
        .find(|s| s.system_type == "virtual_latch")
        .expect("latch");
    let doors: Vec<String> = systems(&ch)
        .list_entrances(authed(
            &key,
            v1::ListEntrancesRequest {
                acs_system_id: latch.acs_system_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("entrances")
        .into_inner()
        .acs_entrances
        .into_iter()
        .filter(|e| e.can_unlock_with_code)
        .take(2)
        .map(|e| e.acs_entrance_id)
        .collect();
    let mut watch = v1::event_service_client::EventServiceClient::new(ch.clone())
        .watch_events(authed(
            &key,
            v1::WatchEventsRequest {
                event_types: vec!["access_method.issued".into()],
                ..Default::default()
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    let req = v1::CreateAccessGrantRequest {
        grantee: Some(v1::create_access_grant_request::Grantee::UserIdentity(
            v1::NewUserIdentity {
                full_name: "Pat Lee".into(),
                ..Default::default()
            },
        )),
        acs_entrance_ids: doors.clone(),
        requested_access_methods: vec![v1::NewRequestedAccessMethod {
            mode: v1::AccessMethodMode::Code as i32,
            code: String::new(),
        }],
        ..Default::default()
    };
    let g = v1::access_grant_service_client::AccessGrantServiceClient::new(ch.clone())
        .create_access_grant(authed(&key, req))
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("g");
    // Latch gives each door its own PIN: one code method per door, each issued by the other process.
    let ids = g.requested_access_methods[0]
        .created_access_method_ids
        .clone();
    assert_eq!(ids.len(), 2);
    let mut issued = Vec::new();
    while issued.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(15), watch.next())
            .await
            .expect("issued in time")
            .expect("open")
            .expect("ok")
            .event
            .expect("e");
        issued.push(e.access_method_id);
    }
    issued.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(issued, want);
    for id in ids {
        let m = v1::access_method_service_client::AccessMethodServiceClient::new(ch.clone())
            .get_access_method(authed(
                &key,
                v1::GetAccessMethodRequest {
                    access_method_id: id,
                },
            ))
            .await
            .expect("get")
            .into_inner()
            .access_method
            .expect("m");
        assert!(m.is_issued);
        assert_eq!(
            m.code.len(),
            7,
            "Latch generates 7-digit PINs: {:?}",
            m.code
        );
        assert!(m.code.bytes().all(|b| b.is_ascii_digit()));
    }
    drop(orchestrator);
}
