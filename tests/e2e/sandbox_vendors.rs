//! Sandbox workspaces try the real vendor adapters against the simulators `keygate serve` runs
//! (`KEYGATE_SIMULATORS`, on by default with the embedded store): connecting `kisi` and `brivo`
//! needs no account, endpoint or credentials, and the seed 004 quick start works across a
//! virtual system and a simulated vendor in one grant. Production workspaces never reach a
//! simulator, and a server without them refuses the sandbox's connection.

use std::collections::HashMap;
use std::time::Duration;

use keygate_proto::v1;
use tonic::Code;

use crate::grants::{CARD, MOBILE, jane_grant, methods, systems_client_entrances};
use crate::harness::*;

fn connect(system_type: &str) -> v1::ConnectAccessSystemRequest {
    v1::ConnectAccessSystemRequest {
        system_type: system_type.into(),
        ..Default::default()
    }
}

async fn connected(
    ch: &tonic::transport::Channel,
    key: &str,
    system_type: &str,
) -> v1::AccessSystem {
    systems(ch)
        .connect_access_system(authed(key, connect(system_type)))
        .await
        .unwrap_or_else(|e| panic!("connect {system_type}: {e:?}"))
        .into_inner()
        .acs_system
        .expect("system")
}

#[tokio::test]
async fn a_sandbox_connects_the_vendor_simulators_and_one_grant_spans_virtual_and_simulated() {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: vec!["--sandbox-provision-delay-ms".into(), "100".into()],
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (_prod, prod_key) = create_workspace(&ch, "Hotel live", false).await;

    // Both simulated vendors connect with nothing but their type, through the real adapters.
    let kisi = connected(&ch, &key, "kisi").await;
    assert!(!kisi.is_virtual, "the real adapter, against its simulator");
    assert_eq!(
        kisi.settings.get("simulator").map(String::as_str),
        Some("true")
    );
    assert!(
        !kisi.settings.contains_key("endpoint"),
        "the simulator's address is not stored: {:?}",
        kisi.settings
    );
    let brivo = connected(&ch, &key, "brivo").await;
    let kisi_doors = systems_client_entrances(&ch, &key, &kisi.acs_system_id).await;
    let names: Vec<&str> = kisi_doors.iter().map(|e| e.display_name.as_str()).collect();
    assert!(names.contains(&"Front Door"), "{names:?}");
    assert!(
        !systems_client_entrances(&ch, &key, &brivo.acs_system_id)
            .await
            .is_empty()
    );
    let synced = systems(&ch)
        .sync_access_system(authed(
            &key,
            v1::SyncAccessSystemRequest {
                acs_system_id: kisi.acs_system_id.clone(),
            },
        ))
        .await
        .expect("a sync reaches the simulator");
    drop(synced);

    // What a sandbox may not do with a simulated vendor, and what production may not do at all.
    for (req, what) in [
        (
            v1::ConnectAccessSystemRequest {
                settings: HashMap::from([("endpoint".into(), "https://api.kisi.io".into())]),
                ..connect("kisi")
            },
            "a sandbox names no vendor endpoint",
        ),
        (
            v1::ConnectAccessSystemRequest {
                credentials: HashMap::from([("api_key".into(), "real-key".into())]),
                ..connect("kisi")
            },
            "a sandbox gives no vendor credentials",
        ),
    ] {
        let e = assert_fails(
            systems(&ch).connect_access_system(authed(&key, req)).await,
            Code::InvalidArgument,
            "INVALID_CONNECTION_SETTINGS",
        );
        assert!(e.message().contains("simulator"), "{what}: {e:?}");
    }
    assert_fails(
        systems(&ch)
            .connect_access_system(authed(
                &prod_key,
                v1::ConnectAccessSystemRequest {
                    settings: HashMap::from([("simulator".into(), "true".into())]),
                    ..connect("kisi")
                },
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_CONNECTION_SETTINGS",
    );

    // Seed 004's grant: Jane, a card and a mobile key, one door of the virtual Salto Space
    // and one Kisi lock.
    let space = systems(&ch)
        .list_access_systems(authed(&key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems
        .into_iter()
        .find(|s| s.system_type == "virtual_salto_space")
        .expect("Salto Space");
    let salto_door = systems_client_entrances(&ch, &key, &space.acs_system_id)
        .await
        .into_iter()
        .find(|e| e.can_unlock_with_card && e.can_unlock_with_mobile_key)
        .expect("a Salto door")
        .acs_entrance_id;
    let kisi_door = kisi_doors
        .iter()
        .find(|e| e.display_name == "Front Door")
        .expect("Front Door")
        .acs_entrance_id
        .clone();
    let doors = vec![salto_door.clone(), kisi_door.clone()];
    let grant = crate::grants::grants(&ch)
        .create_access_grant(authed(&key, jane_grant("mixed-1", &doors, &[CARD, MOBILE])))
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("grant");
    let ids: Vec<String> = grant
        .requested_access_methods
        .iter()
        .flat_map(|r| r.created_access_method_ids.clone())
        .collect();
    let started = std::time::Instant::now();
    let mut last = Vec::new();
    let done = loop {
        last.clear();
        for id in &ids {
            last.push(
                methods(&ch)
                    .get_access_method(authed(
                        &key,
                        v1::GetAccessMethodRequest {
                            access_method_id: id.clone(),
                        },
                    ))
                    .await
                    .expect("get")
                    .into_inner()
                    .access_method
                    .expect("method"),
            );
        }
        let granted_mobile_doors: Vec<&str> = last
            .iter()
            .filter(|m| m.mode == MOBILE)
            .flat_map(|m| m.entrances.iter())
            .filter(|d| d.state == v1::AccessState::Granted as i32)
            .map(|d| d.acs_entrance_id.as_str())
            .collect();
        if granted_mobile_doors.contains(&kisi_door.as_str())
            && granted_mobile_doors.contains(&salto_door.as_str())
        {
            break true;
        }
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(done, "the mobile key opens both doors: {last:#?}");
    // The card is Salto's (Kisi issues no cards): it waits for encoding, and the Kisi door says
    // why it has no card.
    let card = last
        .iter()
        .find(|m| m.mode == CARD && m.entrances.iter().any(|d| d.acs_entrance_id == salto_door))
        .expect("a card for the Salto door");
    assert!(card.is_card_encoding_required, "{card:?}");
    eprintln!(
        "figure: one grant across virtual_salto_space and the simulated kisi: mobile key granted on both in {} ms",
        started.elapsed().as_millis()
    );
}

#[tokio::test]
async fn without_simulators_a_sandbox_cannot_connect_a_vendor_type() {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: vec!["--simulators".into(), "none".into()],
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Hotel", true).await;
    let e = assert_fails(
        systems(&ch)
            .connect_access_system(authed(
                &key,
                v1::ConnectAccessSystemRequest {
                    settings: HashMap::from([("endpoint".into(), "http://127.0.0.1:9".into())]),
                    credentials: HashMap::from([("api_key".into(), "k".into())]),
                    ..connect("kisi")
                },
            ))
            .await,
        Code::FailedPrecondition,
        "WORKSPACE_TYPE_MISMATCH",
    );
    assert!(
        e.message().contains("simulators this server runs (none)"),
        "{e:?}"
    );
}
