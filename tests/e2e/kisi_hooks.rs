//! Kisi's event webhooks into the real binary: a production workspace connects the Kisi
//! simulator (with the signature key of its Event Webhook integration as `webhook_secret`), a
//! grant gives Jane a mobile key, and the simulator posts her unlock to
//! `/hooks/{acs_system_id}` twice: exactly one `access_method.used` appears, attributed to the
//! grant, its method and the door. A delivery signed with another key is `401` and records
//! nothing; an unknown system is `404`.

use std::time::{Duration, Instant};

use keygate_proto::v1;
use keygate_simulators::kisi::KisiSimulator;

use crate::grants::{entrance_named, events, grants, jane_grant, methods};
use crate::harness::*;
use crate::instant_keys::http;

const MOBILE: i32 = v1::AccessMethodMode::MobileKey as i32;
const SECRET: &str = "kisi-integration-signature-key";

async fn used(ch: &tonic::transport::Channel, key: &str) -> Vec<v1::Event> {
    events(ch)
        .list_events(authed(
            key,
            v1::ListEventsRequest {
                page_size: 100,
                event_types: vec!["access_method.used".into()],
                ..Default::default()
            },
        ))
        .await
        .expect("events")
        .into_inner()
        .events
}

#[tokio::test]
async fn a_duplicated_kisi_unlock_becomes_one_event_of_its_grant() {
    duplicated_unlock(Options {
        env: production_keys(),
        ..Options::with_admin()
    })
    .await;
}

#[tokio::test]
async fn a_duplicated_kisi_unlock_becomes_one_event_of_its_grant_on_postgres_and_redis() {
    duplicated_unlock(Options::postgres_redis().await).await;
}

async fn duplicated_unlock(opts: Options) {
    let sim = KisiSimulator::new();
    let sim_addr = sim.serve().await.expect("simulator");
    let seed = sim.seed().clone();

    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &opts);
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Kisi hooks", false).await;
    let system = systems(&ch)
        .connect_access_system(authed(
            &key,
            v1::ConnectAccessSystemRequest {
                system_type: "kisi".into(),
                settings: [
                    ("endpoint".to_owned(), format!("http://{sim_addr}")),
                    ("place_id".to_owned(), seed.place_id.to_string()),
                ]
                .into(),
                credentials: [
                    (
                        "api_key".to_owned(),
                        keygate_simulators::kisi::API_KEY.to_owned(),
                    ),
                    ("webhook_secret".to_owned(), SECRET.to_owned()),
                ]
                .into(),
                ..Default::default()
            },
        ))
        .await
        .expect("connect kisi")
        .into_inner()
        .acs_system
        .expect("system");
    assert!(!format!("{system:?}").contains(SECRET));
    let hook_path = format!("/hooks/{}", system.acs_system_id);
    // The URL registered at Kisi; role assignment events flow from here on too.
    sim.set_webhook(
        Some(&format!("http://{}{hook_path}", kg.http_addr)),
        Some(SECRET),
    );

    let front = entrance_named(&ch, &key, &system.acs_system_id, "Front Door").await;

    let grant = grants(&ch)
        .create_access_grant(authed(
            &key,
            jane_grant("kisi-hook-1", std::slice::from_ref(&front), &[MOBILE]),
        ))
        .await
        .expect("grant")
        .into_inner()
        .access_grant
        .expect("grant");
    let deadline = Instant::now() + Duration::from_secs(60);
    let method = loop {
        let ms = methods(&ch)
            .list_access_methods(authed(
                &key,
                v1::ListAccessMethodsRequest {
                    access_grant_id: grant.access_grant_id.clone(),
                    page_size: 10,
                    ..Default::default()
                },
            ))
            .await
            .expect("methods")
            .into_inner()
            .access_methods;
        if ms.len() == 1 && ms[0].is_issued {
            break ms[0].clone();
        }
        assert!(Instant::now() < deadline, "not issued: {ms:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let jane = sim
        .users()
        .into_iter()
        .find(|u| u.email.eq_ignore_ascii_case("jane.doe@example.com"))
        .expect("Jane is a Kisi user");
    let front_lock = seed.lock_ids[0];

    // Jane opens the front door in the Kisi app; Kisi delivers the event twice.
    sim.set_duplicate_webhooks(true);
    let (event, statuses) = sim.unlock_by_user(jane.id, front_lock).await;
    assert_eq!(statuses, vec![200, 200], "{event}");
    let got = used(&ch, &key).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    let e = &got[0];
    assert_eq!(e.access_grant_id, grant.access_grant_id);
    assert_eq!(e.access_method_id, method.access_method_id);
    assert_eq!(e.acs_system_id, system.acs_system_id);
    assert_eq!(e.acs_entrance_id, front);
    assert_eq!(e.user_identity_id, grant.user_identity_id);

    // Signed with another key: refused, nothing recorded.
    let forged = sim.unlock_event(jane.id, front_lock);
    let sig =
        keygate_simulators::kisi::sign("not the integration's key", forged.to_string().as_bytes());
    assert_eq!(sim.deliver_signed_with(&forged, &sig).await, 401);
    // Unsigned: refused too.
    let body = forged.to_string();
    let (status, _, text) = http(
        &kg.http_addr,
        "POST",
        &hook_path,
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("invalid_signature"), "{text}");
    assert_eq!(used(&ch, &key).await.len(), 1);

    // The same event, correctly signed later, is a duplicate of nothing: it is new.
    assert_eq!(sim.deliver(&forged).await, 200);
    assert_eq!(used(&ch, &key).await.len(), 2);

    // Keygate's own remote unlock: Kisi reports it as the API's user, who holds no method, so
    // it stays `acs_entrance.unlocked` only, never an `access_method.used` too.
    let before = sim.webhook_deliveries().len();
    methods(&ch)
        .unlock_door(authed(
            &key,
            v1::UnlockDoorRequest {
                access_method_id: method.access_method_id.clone(),
                acs_entrance_id: front.clone(),
                request_id: "remote-1".into(),
            },
        ))
        .await
        .expect("unlock door");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.webhook_deliveries().len() < before + 2 {
        assert!(
            Instant::now() < deadline,
            "no webhook of the remote unlock: {:?}",
            sim.webhook_deliveries()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sim.webhook_deliveries()[before..]
            .iter()
            .all(|(_, s)| *s == 200),
        "{:?}",
        sim.webhook_deliveries()
    );
    assert_eq!(used(&ch, &key).await.len(), 2);

    // Fifty more unlocks, one delivery each (an attribution lookup at Kisi and one transaction
    // per event): every one recorded, and how long a delivery takes end to end.
    sim.set_duplicate_webhooks(false);
    let mut took = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let (_, statuses) = sim.unlock_by_user(jane.id, front_lock).await;
        took.push(t.elapsed());
        assert_eq!(statuses, vec![200]);
    }
    took.sort();
    eprintln!(
        "kisi webhook delivery (debug build): p50 {:?}, p95 {:?}, max {:?}",
        took[25], took[47], took[49]
    );
    assert_eq!(used(&ch, &key).await.len(), 52);

    // An unknown system, and an id that is not one.
    let sig = keygate_simulators::kisi::sign(SECRET, body.as_bytes());
    for path in [
        "/hooks/00000000-0000-7000-8000-000000000000".to_owned(),
        "/hooks/not-an-id".to_owned(),
    ] {
        let (status, _, text) = http(
            &kg.http_addr,
            "POST",
            &path,
            &[("Content-Type", "application/json"), ("X-Signature", &sig)],
            &body,
        );
        assert_eq!(status, 404, "{path}: {text}");
    }
    // A body over the limit is refused before it is read.
    let big = "x".repeat(300 * 1024);
    let (status, _, _) = http(
        &kg.http_addr,
        "POST",
        &hook_path,
        &[("Content-Type", "application/json")],
        &big,
    );
    assert_eq!(status, 413);
    // The role assignment event of the grant's provisioning was accepted too.
    assert!(
        sim.webhook_deliveries()
            .iter()
            .all(|(_, s)| *s == 200 || *s == 401),
        "{:?}",
        sim.webhook_deliveries()
    );
}
