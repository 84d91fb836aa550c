//! The access grant quick start (seed 004) end to end, through the real binary.

use std::collections::HashSet;
use std::time::Duration;

use keygate_proto::v1;
use tokio_stream::StreamExt as _;
use tonic::Code;

use crate::harness::*;

pub(crate) const CARD: i32 = v1::AccessMethodMode::Card as i32;
pub(crate) const MOBILE: i32 = v1::AccessMethodMode::MobileKey as i32;
const CODE: i32 = v1::AccessMethodMode::Code as i32;

/// One entrance of Salto Space and one of Visionline (access groups vs credential based), both
/// opening with a card and a mobile key.
pub(crate) async fn two_doors(ch: &tonic::transport::Channel, key: &str) -> Vec<String> {
    let systems = systems(ch)
        .list_access_systems(authed(key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems;
    let mut doors = Vec::new();
    for t in ["virtual_salto_space", "virtual_visionline"] {
        let s = systems.iter().find(|s| s.system_type == t).expect("system");
        let e = systems_client_entrances(ch, key, &s.acs_system_id).await;
        doors.push(
            e.into_iter()
                .find(|e| e.can_unlock_with_card && e.can_unlock_with_mobile_key)
                .expect("door")
                .acs_entrance_id,
        );
    }
    doors
}

pub(crate) async fn systems_client_entrances(
    ch: &tonic::transport::Channel,
    key: &str,
    system: &str,
) -> Vec<v1::Entrance> {
    systems(ch)
        .list_entrances(authed(
            key,
            v1::ListEntrancesRequest {
                acs_system_id: system.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("entrances")
        .into_inner()
        .acs_entrances
}

/// The id of the entrance of `system` named `name` (its first page of entrances).
pub(crate) async fn entrance_named(
    ch: &tonic::transport::Channel,
    key: &str,
    system: &str,
    name: &str,
) -> String {
    let doors = systems_client_entrances(ch, key, system).await;
    doors
        .iter()
        .find(|d| d.display_name == name)
        .unwrap_or_else(|| panic!("no entrance {name} in {doors:?}"))
        .acs_entrance_id
        .clone()
}

pub(crate) fn grants(
    ch: &tonic::transport::Channel,
) -> v1::access_grant_service_client::AccessGrantServiceClient<tonic::transport::Channel> {
    v1::access_grant_service_client::AccessGrantServiceClient::new(ch.clone())
}

pub(crate) fn methods(
    ch: &tonic::transport::Channel,
) -> v1::access_method_service_client::AccessMethodServiceClient<tonic::transport::Channel> {
    v1::access_method_service_client::AccessMethodServiceClient::new(ch.clone())
}

pub(crate) fn events(
    ch: &tonic::transport::Channel,
) -> v1::event_service_client::EventServiceClient<tonic::transport::Channel> {
    v1::event_service_client::EventServiceClient::new(ch.clone())
}

pub(crate) fn ts(offset: Duration, past: bool) -> prost_types::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    let t = if past { now - offset } else { now + offset };
    prost_types::Timestamp {
        seconds: i64::try_from(t.as_secs()).expect("secs"),
        nanos: 0,
    }
}

pub(crate) fn jane_grant(
    request_id: &str,
    doors: &[String],
    modes: &[i32],
) -> v1::CreateAccessGrantRequest {
    v1::CreateAccessGrantRequest {
        request_id: request_id.into(),
        grantee: Some(v1::create_access_grant_request::Grantee::UserIdentity(
            v1::NewUserIdentity {
                full_name: "Jane Doe".into(),
                email_address: "jane.doe@example.com".into(),
                phone_number: "+15555551000".into(),
                user_identity_key: String::new(),
            },
        )),
        acs_entrance_ids: doors.to_vec(),
        requested_access_methods: modes
            .iter()
            .map(|m| v1::NewRequestedAccessMethod {
                mode: *m,
                code: String::new(),
            })
            .collect(),
        starts_at: Some(ts(Duration::from_secs(600), true)),
        ends_at: Some(ts(Duration::from_secs(3 * 86_400), false)),
        ..Default::default()
    }
}

async fn quick_start(opts: Options) {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: vec!["--sandbox-provision-delay-ms".into(), "100".into()],
            ..opts
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (_other_ws, other_key) = create_workspace(&ch, "Other", true).await;
    let doors = two_doors(&ch, &key).await;

    let mut watch = events(&ch)
        .watch_events(authed(&key, v1::WatchEventsRequest::default()))
        .await
        .expect("watch")
        .into_inner();

    let first_request = jane_grant("qs-1", &doors, &[CARD, MOBILE]);
    let created = grants(&ch)
        .create_access_grant(authed(&key, first_request.clone()))
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("grant");
    assert!(!created.access_grant_id.is_empty() && !created.user_identity_id.is_empty());
    assert!(
        created.instant_key_url.contains("/ik/"),
        "{}",
        created.instant_key_url
    );
    assert_eq!(created.requested_access_methods.len(), 2);
    assert_eq!(
        created.requested_access_methods[0].display_name,
        "Plastic Card"
    );
    assert_eq!(
        created.requested_access_methods[0]
            .created_access_method_ids
            .len(),
        2,
        "a card per access system"
    );
    assert_eq!(
        created.requested_access_methods[1].display_name,
        "Mobile Key"
    );
    assert_eq!(
        created.requested_access_methods[1]
            .created_access_method_ids
            .len(),
        1
    );
    assert!(
        created
            .warnings
            .iter()
            .any(|w| w.code == "starts_at_in_past"),
        "{:?}",
        created.warnings
    );

    // Poll until the mobile key is issued and the cards need encoding.
    let ids: Vec<String> = created
        .requested_access_methods
        .iter()
        .flat_map(|r| r.created_access_method_ids.clone())
        .collect();
    let mut settled = Vec::new();
    for _ in 0..200 {
        settled.clear();
        for id in &ids {
            let m = methods(&ch)
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
                .expect("m");
            settled.push(m);
        }
        let mobile_issued = settled
            .iter()
            .any(|m| m.mode == MOBILE && m.is_issued && m.issued_at.is_some());
        let cards_ready = settled
            .iter()
            .filter(|m| m.mode == CARD)
            .all(|m| m.is_card_encoding_required && !m.is_issued);
        if mobile_issued && cards_ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mobile = settled.iter().find(|m| m.mode == MOBILE).expect("mobile");
    assert!(mobile.is_issued, "{settled:?}");
    assert_eq!(mobile.instant_key_url, created.instant_key_url);
    assert!(
        mobile
            .entrances
            .iter()
            .all(|d| d.state == v1::AccessState::Granted as i32)
    );
    assert!(
        settled
            .iter()
            .filter(|m| m.mode == CARD)
            .all(|m| m.is_card_encoding_required)
    );

    // The watcher saw the lifecycle in causal order.
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(t, _, _): &(String, String, String)| t == "access_grant.access_granted_to_all_doors")
    {
        let msg = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("ok");
        let e = msg.event.expect("event");
        assert_eq!(e.cursor, msg.cursor);
        seen.push((e.event_type, e.event_id, msg.cursor));
    }
    let types: Vec<&str> = seen.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types[0], "access_grant.created");
    assert_eq!(&types[1..4], ["access_method.created"; 3]);
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "access_grant.access_granted_to_door")
            .count(),
        4
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "access_method.card_encoding_required")
            .count(),
        2
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "access_method.issued")
            .count(),
        1
    );
    assert_eq!(
        *types.last().expect("last"),
        "access_grant.access_granted_to_all_doors"
    );
    let pos = |name: &str| types.iter().position(|t| *t == name).expect("present");
    assert!(pos("access_method.issued") > pos("access_grant.access_granted_to_door"));

    // Reconnecting with a cursor yields exactly the events after it, none twice.
    let (_, _, cursor) = seen[2].clone();
    let mut resumed = events(&ch)
        .watch_events(authed(
            &key,
            v1::WatchEventsRequest {
                cursor,
                ..Default::default()
            },
        ))
        .await
        .expect("resume")
        .into_inner();
    for (t, id, _) in &seen[3..] {
        let e = tokio::time::timeout(Duration::from_secs(5), resumed.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok")
            .event
            .expect("e");
        assert_eq!((&e.event_type, &e.event_id), (t, id));
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), resumed.next())
            .await
            .is_err(),
        "nothing more"
    );
    // ListEvents pages the same log, filterable by type.
    let listed = events(&ch)
        .list_events(authed(
            &key,
            v1::ListEventsRequest {
                event_types: vec!["access_grant.access_granted_to_door".into()],
                access_grant_id: created.access_grant_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner()
        .events;
    assert_eq!(listed.len(), 4);

    // Encode each card on an encoder of its own system; the card is then issued.
    let all_systems = systems(&ch)
        .list_access_systems(authed(&key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems;
    for card in settled.iter().filter(|m| m.mode == CARD) {
        let system = card.entrances[0].acs_system_id.clone();
        let encoders = systems(&ch)
            .list_encoders(authed(
                &key,
                v1::ListEncodersRequest {
                    acs_system_id: system.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("encoders")
            .into_inner()
            .acs_encoders;
        let wrong = all_systems
            .iter()
            .find(|s| {
                s.acs_system_id != system
                    && s.capabilities
                        .as_ref()
                        .is_some_and(|c| c.is_card_encoding_required)
            })
            .expect("other system");
        let wrong_encoder = systems(&ch)
            .list_encoders(authed(
                &key,
                v1::ListEncodersRequest {
                    acs_system_id: wrong.acs_system_id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("encoders")
            .into_inner()
            .acs_encoders[0]
            .acs_encoder_id
            .clone();
        assert_fails(
            methods(&ch)
                .encode_access_method(authed(
                    &key,
                    v1::EncodeAccessMethodRequest {
                        access_method_id: card.access_method_id.clone(),
                        acs_encoder_id: wrong_encoder,
                        request_id: String::new(),
                    },
                ))
                .await,
            Code::InvalidArgument,
            "INVALID_FIELD",
        );
        let encode_req = v1::EncodeAccessMethodRequest {
            access_method_id: card.access_method_id.clone(),
            acs_encoder_id: encoders[0].acs_encoder_id.clone(),
            request_id: format!("enc-{}", card.access_method_id),
        };
        let attempt = methods(&ch)
            .encode_access_method(authed(&key, encode_req.clone()))
            .await
            .expect("encode")
            .into_inner()
            .action_attempt
            .expect("attempt");
        assert_eq!(attempt.status, v1::ActionAttemptStatus::Pending as i32);
        assert_eq!(attempt.action_type, v1::ActionType::EncodeCredential as i32);
        let mut done = attempt.clone();
        for _ in 0..100 {
            done = v1::action_attempt_service_client::ActionAttemptServiceClient::new(ch.clone())
                .get_action_attempt(authed(
                    &key,
                    v1::GetActionAttemptRequest {
                        action_attempt_id: attempt.action_attempt_id.clone(),
                    },
                ))
                .await
                .expect("poll")
                .into_inner()
                .action_attempt
                .expect("attempt");
            if done.status != v1::ActionAttemptStatus::Pending as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            done.status,
            v1::ActionAttemptStatus::Success as i32,
            "{done:?}"
        );
        assert!(
            done.result
                .as_ref()
                .is_some_and(|r| !r.card_number.is_empty())
        );
        let issued = methods(&ch)
            .get_access_method(authed(
                &key,
                v1::GetAccessMethodRequest {
                    access_method_id: card.access_method_id.clone(),
                },
            ))
            .await
            .expect("get")
            .into_inner()
            .access_method
            .expect("m");
        assert!(
            issued.is_issued && !issued.is_card_encoding_required && issued.issued_at.is_some(),
            "{issued:?}"
        );
        // Replaying the encode request returns the first attempt, though the card is done now.
        let again = methods(&ch)
            .encode_access_method(authed(&key, encode_req.clone()))
            .await
            .expect("replay")
            .into_inner()
            .action_attempt
            .expect("attempt");
        assert_eq!(
            again.action_attempt_id, attempt.action_attempt_id,
            "a replay returns the first attempt"
        );
        assert_eq!(again.status, v1::ActionAttemptStatus::Success as i32);
        // Encoding again is refused: the card is no longer waiting for it.
        assert_fails(
            methods(&ch)
                .encode_access_method(authed(
                    &key,
                    v1::EncodeAccessMethodRequest {
                        access_method_id: card.access_method_id.clone(),
                        acs_encoder_id: encoders[0].acs_encoder_id.clone(),
                        request_id: String::new(),
                    },
                ))
                .await,
            Code::FailedPrecondition,
            "NOT_READY_FOR_ENCODING",
        );
    }
    assert_fails(
        methods(&ch)
            .encode_access_method(authed(
                &key,
                v1::EncodeAccessMethodRequest {
                    access_method_id: mobile.access_method_id.clone(),
                    acs_encoder_id: uuid::Uuid::now_v7().to_string(),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::NotFound,
        "ENCODER_NOT_FOUND",
    );
    let issued_events = events(&ch)
        .list_events(authed(
            &key,
            v1::ListEventsRequest {
                event_types: vec!["access_method.issued".into()],
                ..Default::default()
            },
        ))
        .await
        .expect("issued events")
        .into_inner()
        .events;
    assert_eq!(
        issued_events.len(),
        3,
        "the mobile key, then each card once encoded"
    );

    // Idempotency: the same request returns the same grant; another body is refused.
    let again = grants(&ch)
        .create_access_grant(authed(&key, first_request.clone()))
        .await
        .expect("replay")
        .into_inner()
        .access_grant
        .expect("g");
    assert_eq!(again.access_grant_id, created.access_grant_id);
    let other_body = v1::CreateAccessGrantRequest {
        name: "Someone else's stay".into(),
        ..first_request
    };
    assert_fails(
        grants(&ch)
            .create_access_grant(authed(&key, other_body))
            .await,
        Code::AlreadyExists,
        "IDEMPOTENCY_KEY_REUSED",
    );

    // A mode none of the doors supports; a foreign entrance; a bad schedule.
    let s = assert_fails(
        grants(&ch)
            .create_access_grant(authed(&key, jane_grant("", &doors, &[CODE])))
            .await,
        Code::FailedPrecondition,
        "MODE_NOT_SUPPORTED",
    );
    assert!(
        s.message().contains("Code") || s.message().contains("code"),
        "{}",
        s.message()
    );
    let foreign = two_doors(&ch, &other_key).await;
    assert_fails(
        grants(&ch)
            .create_access_grant(authed(&key, jane_grant("", &foreign, &[MOBILE])))
            .await,
        Code::NotFound,
        "ENTRANCE_NOT_FOUND",
    );
    let mut backwards = jane_grant("", &doors, &[MOBILE]);
    backwards.ends_at = Some(ts(Duration::from_secs(3600), true));
    assert_fails(
        grants(&ch)
            .create_access_grant(authed(&key, backwards))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );

    // Another workspace sees none of it.
    assert_fails(
        grants(&ch)
            .get_access_grant(authed(
                &other_key,
                v1::GetAccessGrantRequest {
                    access_grant_id: created.access_grant_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ACCESS_GRANT_NOT_FOUND",
    );
    assert_fails(
        methods(&ch)
            .get_access_method(authed(
                &other_key,
                v1::GetAccessMethodRequest {
                    access_method_id: mobile.access_method_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ACCESS_METHOD_NOT_FOUND",
    );
    assert_fails(
        events(&ch)
            .get_event(authed(
                &other_key,
                v1::GetEventRequest {
                    event_id: seen[0].1.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "EVENT_NOT_FOUND",
    );
    assert!(
        events(&ch)
            .list_events(authed(&other_key, v1::ListEventsRequest::default()))
            .await
            .expect("list")
            .into_inner()
            .events
            .is_empty()
    );
    assert!(
        grants(&ch)
            .list_access_grants(authed(&other_key, v1::ListAccessGrantsRequest::default()))
            .await
            .expect("list")
            .into_inner()
            .access_grants
            .is_empty()
    );
    // Deleting: another workspace cannot; the owner can, once; then everything is revoked.
    assert_fails(
        grants(&ch)
            .delete_access_grant(authed(
                &other_key,
                v1::DeleteAccessGrantRequest {
                    access_grant_id: created.access_grant_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ACCESS_GRANT_NOT_FOUND",
    );
    grants(&ch)
        .delete_access_grant(authed(
            &key,
            v1::DeleteAccessGrantRequest {
                access_grant_id: created.access_grant_id.clone(),
            },
        ))
        .await
        .expect("delete");
    assert_fails(
        grants(&ch)
            .get_access_grant(authed(
                &key,
                v1::GetAccessGrantRequest {
                    access_grant_id: created.access_grant_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ACCESS_GRANT_NOT_FOUND",
    );
    assert_fails(
        methods(&ch)
            .get_access_method(authed(
                &key,
                v1::GetAccessMethodRequest {
                    access_method_id: mobile.access_method_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ACCESS_METHOD_NOT_FOUND",
    );
    assert_fails(
        grants(&ch)
            .delete_access_grant(authed(
                &key,
                v1::DeleteAccessGrantRequest {
                    access_grant_id: created.access_grant_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ACCESS_GRANT_NOT_FOUND",
    );
    let mut revoked = 0;
    for _ in 0..100 {
        revoked = events(&ch)
            .list_events(authed(
                &key,
                v1::ListEventsRequest {
                    event_types: vec!["access_method.revoked".into()],
                    access_grant_id: created.access_grant_id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("events")
            .into_inner()
            .events
            .len();
        if revoked == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(revoked, 3, "the mobile key and both cards revoked");

    let stolen = seen[0].2.clone();
    let err = match events(&ch)
        .watch_events(authed(
            &other_key,
            v1::WatchEventsRequest {
                cursor: stolen,
                ..Default::default()
            },
        ))
        .await
    {
        Err(s) => s,
        Ok(mut st) => st
            .get_mut()
            .next()
            .await
            .expect("item")
            .expect_err("refused"),
    };
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "INVALID_CURSOR");
}

async fn concurrent_identical_creates(opts: Options) {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: ["--rate-limit-rps", "1000", "--rate-limit-burst", "1000"]
                .map(String::from)
                .to_vec(),
            ..opts
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Race", true).await;
    let doors = two_doors(&ch, &key).await;
    let race = jane_grant("race-1", &doors, &[MOBILE]);
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let ch = ch.clone();
            let key = key.clone();
            let req = race.clone();
            tokio::spawn(async move { grants(&ch).create_access_grant(authed(&key, req)).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for c in calls {
        ids.insert(
            c.await
                .expect("join")
                .expect("create")
                .into_inner()
                .access_grant
                .expect("g")
                .access_grant_id,
        );
    }
    assert_eq!(ids.len(), 1, "50 identical creates, one grant");
    let all = grants(&ch)
        .list_access_grants(authed(&key, v1::ListAccessGrantsRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .access_grants;
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn quick_start_sqlite() {
    quick_start(Options::with_admin()).await;
}

#[tokio::test]
async fn quick_start_postgres_redis() {
    quick_start(Options::postgres_redis().await).await;
}

#[tokio::test]
async fn fifty_concurrent_creates_make_one_grant_sqlite() {
    concurrent_identical_creates(Options::with_admin()).await;
}

#[tokio::test]
async fn fifty_concurrent_creates_make_one_grant_postgres() {
    concurrent_identical_creates(Options::postgres_redis().await).await;
}

pub(crate) async fn brivo_doors(ch: &tonic::transport::Channel, key: &str) -> Vec<String> {
    let all = systems(ch)
        .list_access_systems(authed(key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems;
    let brivo = all
        .iter()
        .find(|s| s.system_type == "virtual_brivo")
        .expect("brivo");
    systems_client_entrances(ch, key, &brivo.acs_system_id)
        .await
        .into_iter()
        .filter(|e| e.can_unlock_with_code)
        .map(|e| e.acs_entrance_id)
        .take(2)
        .collect()
}

pub(crate) fn pin_grant(doors: &[String], code: &str) -> v1::CreateAccessGrantRequest {
    v1::CreateAccessGrantRequest {
        grantee: Some(v1::create_access_grant_request::Grantee::UserIdentity(
            v1::NewUserIdentity {
                full_name: "Kim Park".into(),
                ..Default::default()
            },
        )),
        acs_entrance_ids: doors.to_vec(),
        requested_access_methods: vec![v1::NewRequestedAccessMethod {
            mode: CODE,
            code: code.into(),
        }],
        ..Default::default()
    }
}

pub(crate) async fn issued_code(
    ch: &tonic::transport::Channel,
    key: &str,
    id: &str,
) -> v1::AccessMethod {
    for _ in 0..100 {
        let m = methods(ch)
            .get_access_method(authed(
                key,
                v1::GetAccessMethodRequest {
                    access_method_id: id.into(),
                },
            ))
            .await
            .expect("get")
            .into_inner()
            .access_method
            .expect("m");
        if m.is_issued {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("code method not issued");
}

#[tokio::test]
async fn keygate_chosen_pins_never_collide_and_never_appear_in_events() {
    use prost::Message as _;
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: ["--sandbox-provision-delay-ms", "20"]
                .map(String::from)
                .to_vec(),
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Offices", true).await;
    let doors = brivo_doors(&ch, &key).await;

    // Brivo lets the integrator choose: a free requested code is honoured.
    let first = grants(&ch)
        .create_access_grant(authed(&key, pin_grant(&doors, "482913")))
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("g");
    assert!(
        first
            .warnings
            .iter()
            .all(|w| w.code != "requested_code_unavailable")
    );
    let m1 = issued_code(
        &ch,
        &key,
        &first.requested_access_methods[0].created_access_method_ids[0],
    )
    .await;
    assert_eq!(m1.code, "482913");

    // The same code on the same doors is taken: another one is chosen, with a warning.
    let second = grants(&ch)
        .create_access_grant(authed(&key, pin_grant(&doors[..1], "482913")))
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("g");
    assert!(
        second
            .warnings
            .iter()
            .any(|w| w.code == "requested_code_unavailable"),
        "{:?}",
        second.warnings
    );
    let m2 = issued_code(
        &ch,
        &key,
        &second.requested_access_methods[0].created_access_method_ids[0],
    )
    .await;
    assert_ne!(m2.code, m1.code);
    assert!(m2.code.len() >= 4 && m2.code.bytes().all(|b| b.is_ascii_digit()));

    // No event carries a PIN, in any field.
    let log = events(&ch)
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
    assert!(!log.is_empty());
    for e in &log {
        let bytes = e.encode_to_vec();
        for code in [&m1.code, &m2.code] {
            assert!(
                !bytes.windows(code.len()).any(|w| w == code.as_bytes()),
                "event {} carries a PIN",
                e.event_type
            );
        }
    }
}

async fn concurrent_requests_for_one_pin(opts: Options) {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: ["--rate-limit-rps", "1000", "--rate-limit-burst", "1000"]
                .map(String::from)
                .to_vec(),
            ..opts
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "PIN race", true).await;
    let door = brivo_doors(&ch, &key).await[..1].to_vec();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (ch, key, req) = (ch.clone(), key.clone(), pin_grant(&door, "771122"));
            tokio::spawn(async move { grants(&ch).create_access_grant(authed(&key, req)).await })
        })
        .collect();
    let mut codes = Vec::new();
    let mut warned = 0;
    for c in calls {
        let g = c
            .await
            .expect("join")
            .expect("create")
            .into_inner()
            .access_grant
            .expect("g");
        warned += usize::from(
            g.warnings
                .iter()
                .any(|w| w.code == "requested_code_unavailable"),
        );
        let id = g.requested_access_methods[0].created_access_method_ids[0].clone();
        let m = methods(&ch)
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
        codes.push(m.code);
    }
    let unique: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(
        unique.len(),
        10,
        "no two grants share a PIN on the door: {codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "771122").count(),
        1,
        "exactly one got the requested code"
    );
    assert_eq!(warned, 9);
}

#[tokio::test]
async fn concurrent_requests_for_one_pin_sqlite() {
    concurrent_requests_for_one_pin(Options::with_admin()).await;
}

#[tokio::test]
async fn concurrent_requests_for_one_pin_postgres() {
    concurrent_requests_for_one_pin(Options::postgres_redis().await).await;
}
