//! Crash safety: SIGKILL in the middle of a fan-out, restart, and everything converges with no
//! duplicate credential in the access systems and no event lost or repeated.

use std::collections::HashSet;
use std::time::Duration;

use keygate_proto::v1;

use crate::harness::*;

const CARD: i32 = v1::AccessMethodMode::Card as i32;
const MOBILE: i32 = v1::AccessMethodMode::MobileKey as i32;

async fn crash_and_recover(opts: Options, db_url: impl Fn(&DataDir) -> String) {
    let dir = DataDir::new();
    // Each provider call applies its change after 600 ms and confirms after 1200 ms; leases
    // last 2 s, so the restarted process takes the dead one's jobs over quickly.
    let opts = Options {
        extra_args: [
            "--sandbox-provision-delay-ms",
            "1200",
            "--job-lease-secs",
            "2",
        ]
        .map(String::from)
        .to_vec(),
        ..opts
    };
    let mut kg = Keygate::start(&dir.0, &opts);
    let ch = kg.channel().await;
    let (ws, key) = create_workspace(&ch, "Crash", true).await;
    let all = systems(&ch)
        .list_access_systems(authed(&key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems;
    let mut doors = Vec::new();
    for t in ["virtual_salto_space", "virtual_visionline"] {
        let s = all.iter().find(|s| s.system_type == t).expect("system");
        let e = systems(&ch)
            .list_entrances(authed(
                &key,
                v1::ListEntrancesRequest {
                    acs_system_id: s.acs_system_id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("e")
            .into_inner()
            .acs_entrances;
        doors.push(
            e.into_iter()
                .find(|e| e.can_unlock_with_card && e.can_unlock_with_mobile_key)
                .expect("door")
                .acs_entrance_id,
        );
    }
    let mut grant_ids = Vec::new();
    for i in 0..4 {
        let req = v1::CreateAccessGrantRequest {
            request_id: format!("crash-{i}"),
            grantee: Some(v1::create_access_grant_request::Grantee::UserIdentity(
                v1::NewUserIdentity {
                    full_name: format!("Guest {i}"),
                    ..Default::default()
                },
            )),
            acs_entrance_ids: doors.clone(),
            requested_access_methods: [CARD, MOBILE]
                .map(|m| v1::NewRequestedAccessMethod {
                    mode: m,
                    code: String::new(),
                })
                .to_vec(),
            ..Default::default()
        };
        let g = v1::access_grant_service_client::AccessGrantServiceClient::new(ch.clone())
            .create_access_grant(authed(&key, req))
            .await
            .expect("create")
            .into_inner()
            .access_grant
            .expect("g");
        grant_ids.push(g.access_grant_id);
    }
    // Kill mid fan-out, once every provider call has applied its change and none has been
    // confirmed: the window where a naive retry would create duplicates.
    let store = keygate_store::open(&db_url(&dir)).expect("open store");
    let ws_id: keygate_domain::ids::WorkspaceId = ws.parse().expect("workspace id");
    let ledger = keygate_orchestrator::store_ledger(store.as_ref());
    let mut applied = 0;
    for _ in 0..100 {
        applied = ledger.count_credentials(ws_id).await.expect("count");
        if applied == 4 * 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kg.kill9();
    assert_eq!(
        applied,
        4 * 4,
        "every provider call had applied its change before the kill"
    );
    let confirmed = store
        .list_events(ws_id, &Default::default(), 0, 1000)
        .await
        .expect("events")
        .iter()
        .filter(|e| e.event_type == "access_grant.access_granted_to_door")
        .count();
    assert_eq!(confirmed, 0, "and none of them had been recorded");

    let kg = Keygate::start(&dir.0, &opts);
    let ch = kg.channel().await;
    let methods = v1::access_method_service_client::AccessMethodServiceClient::new(ch.clone());
    let mut converged = false;
    for _ in 0..150 {
        let mut done = true;
        for g in &grant_ids {
            let ms = methods
                .clone()
                .list_access_methods(authed(
                    &key,
                    v1::ListAccessMethodsRequest {
                        access_grant_id: g.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("list")
                .into_inner()
                .access_methods;
            done &= ms.len() == 3
                && ms.iter().all(|m| {
                    m.entrances
                        .iter()
                        .all(|d| d.state == v1::AccessState::Granted as i32)
                });
        }
        if done {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(converged, "every door of every grant ends granted");

    // No duplicate credential in the virtual systems: one per (access method, system).
    assert_eq!(ledger.count_credentials(ws_id).await.expect("count"), 4 * 4);

    // No event lost or repeated.
    let events = v1::event_service_client::EventServiceClient::new(ch.clone())
        .list_events(authed(
            &key,
            v1::ListEventsRequest {
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .expect("events")
        .into_inner()
        .events;
    let ids: HashSet<_> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), events.len(), "no event twice");
    let count = |t: &str| events.iter().filter(|e| e.event_type == t).count();
    assert_eq!(count("access_grant.created"), 4);
    assert_eq!(
        count("access_grant.access_granted_to_door"),
        4 * 4,
        "each (method, door) once"
    );
    assert_eq!(count("access_grant.access_granted_to_all_doors"), 4);
    assert_eq!(count("access_method.issued"), 4, "one mobile key per grant");
    assert_eq!(count("access_method.card_encoding_required"), 4 * 2);
}

#[tokio::test]
async fn sigkill_mid_fan_out_converges_sqlite() {
    crash_and_recover(Options::with_admin(), |dir| {
        format!("sqlite://{}", dir.0.join("keygate.db").display())
    })
    .await;
}

#[tokio::test]
async fn sigkill_mid_fan_out_converges_postgres_redis() {
    let opts = Options::postgres_redis().await;
    let url = opts.database_url.clone().expect("url");
    crash_and_recover(opts, move |_| url.clone()).await;
}
