//! `UpdateAccessGrant` through the real binary: only what changed is revoked or issued, a card
//! whose doors or times change must be encoded again, and bad updates change nothing.

use std::time::Duration;

use keygate_proto::v1;
use tonic::Code;

use crate::grants::{CARD, MOBILE, events, grants, jane_grant, methods, ts, two_doors};
use crate::harness::*;
use crate::instant_keys::entrance;

type Ch = tonic::transport::Channel;

async fn grant(ch: &Ch, key: &str, id: &str) -> v1::AccessGrant {
    grants(ch)
        .get_access_grant(authed(
            key,
            v1::GetAccessGrantRequest {
                access_grant_id: id.into(),
            },
        ))
        .await
        .expect("get grant")
        .into_inner()
        .access_grant
        .expect("grant")
}

async fn method(ch: &Ch, key: &str, id: &str) -> v1::AccessMethod {
    methods(ch)
        .get_access_method(authed(
            key,
            v1::GetAccessMethodRequest {
                access_method_id: id.into(),
            },
        ))
        .await
        .expect("get method")
        .into_inner()
        .access_method
        .expect("method")
}

/// Polls until `done` holds for the grant's methods.
async fn wait_methods(
    ch: &Ch,
    key: &str,
    g: &v1::AccessGrant,
    what: &str,
    done: impl Fn(&[v1::AccessMethod]) -> bool,
) -> Vec<v1::AccessMethod> {
    let ids: Vec<String> = g.access_method_ids.clone();
    let mut ms = Vec::new();
    for _ in 0..300 {
        ms.clear();
        for id in &ids {
            ms.push(method(ch, key, id).await);
        }
        if done(&ms) {
            return ms;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {ms:#?}");
}

async fn encode(
    ch: &Ch,
    key: &str,
    card: &v1::AccessMethod,
    request_id: &str,
) -> v1::ActionAttempt {
    let encoders = systems(ch)
        .list_encoders(authed(
            key,
            v1::ListEncodersRequest {
                acs_system_id: card.entrances[0].acs_system_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("encoders")
        .into_inner()
        .acs_encoders;
    let attempt = methods(ch)
        .encode_access_method(authed(
            key,
            v1::EncodeAccessMethodRequest {
                access_method_id: card.access_method_id.clone(),
                acs_encoder_id: encoders[0].acs_encoder_id.clone(),
                request_id: request_id.into(),
            },
        ))
        .await
        .expect("encode")
        .into_inner()
        .action_attempt
        .expect("attempt");
    for _ in 0..100 {
        let a = v1::action_attempt_service_client::ActionAttemptServiceClient::new(ch.clone())
            .get_action_attempt(authed(
                key,
                v1::GetActionAttemptRequest {
                    action_attempt_id: attempt.action_attempt_id.clone(),
                },
            ))
            .await
            .expect("poll")
            .into_inner()
            .action_attempt
            .expect("attempt");
        if a.status != v1::ActionAttemptStatus::Pending as i32 {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("encoding did not finish");
}

fn state(m: &v1::AccessMethod, entrance: &str) -> Option<i32> {
    m.entrances
        .iter()
        .find(|d| d.acs_entrance_id == entrance)
        .map(|d| d.state)
}

async fn update_changes_only_what_changed(opts: Options) {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: vec!["--sandbox-provision-delay-ms".into(), "50".into()],
            ..opts
        },
    );
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Hotel", true).await;
    let (_other, other_key) = create_workspace(&ch, "Other", true).await;
    let doors = two_doors(&ch, &key).await; // Salto Space Room 101, Visionline Room 301
    let fitness = entrance(&ch, &key, "virtual_visionline", "Fitness Center").await;
    let ks_main = entrance(&ch, &key, "virtual_salto_ks", "Main Entrance").await;
    let created = grants(&ch)
        .create_access_grant(authed(&key, jane_grant("upd-1", &doors, &[CARD, MOBILE])))
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("grant");
    let ready = wait_methods(&ch, &key, &created, "issued", |ms| {
        ms.iter().any(|m| m.mode == MOBILE && m.is_issued)
            && ms
                .iter()
                .filter(|m| m.mode == CARD)
                .all(|m| m.is_ready_for_encoding)
    })
    .await;
    let vision_card = ready
        .iter()
        .find(|m| m.mode == CARD && m.entrances[0].acs_entrance_id == doors[1])
        .expect("Visionline card")
        .clone();
    let first = encode(&ch, &key, &vision_card, "enc-1").await;
    assert_eq!(
        first.status,
        v1::ActionAttemptStatus::Success as i32,
        "{first:?}"
    );
    let before = grant(&ch, &key, &created.access_grant_id).await;
    assert!(
        before.pending_mutations.is_empty(),
        "{:?}",
        before.pending_mutations
    );

    // Bad updates are refused with a reason and change nothing.
    let upd = |r: v1::UpdateAccessGrantRequest| {
        let ch = ch.clone();
        let key = key.clone();
        async move { grants(&ch).update_access_grant(authed(&key, r)).await }
    };
    let base = v1::UpdateAccessGrantRequest {
        access_grant_id: created.access_grant_id.clone(),
        ..Default::default()
    };
    assert_fails(
        upd(v1::UpdateAccessGrantRequest {
            add_acs_entrance_ids: vec![fitness.clone()],
            remove_acs_entrance_ids: vec![fitness.clone()],
            ..base.clone()
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_fails(
        upd(v1::UpdateAccessGrantRequest {
            remove_acs_entrance_ids: doors.clone(),
            ..base.clone()
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_fails(
        upd(v1::UpdateAccessGrantRequest {
            ends_at: Some(ts(Duration::from_secs(3600), true)),
            ..base.clone()
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_fails(
        upd(v1::UpdateAccessGrantRequest {
            ends_at: Some(ts(Duration::from_secs(3600), false)),
            clear_ends_at: true,
            ..base.clone()
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    let foreign_door = two_doors(&ch, &other_key).await.remove(0);
    assert_fails(
        upd(v1::UpdateAccessGrantRequest {
            add_acs_entrance_ids: vec![foreign_door],
            ..base.clone()
        })
        .await,
        Code::NotFound,
        "ENTRANCE_NOT_FOUND",
    );
    assert_fails(
        grants(&ch)
            .update_access_grant(authed(&other_key, base.clone()))
            .await,
        Code::NotFound,
        "ACCESS_GRANT_NOT_FOUND",
    );
    assert_eq!(
        grant(&ch, &key, &created.access_grant_id).await,
        before,
        "nothing changed"
    );

    // Take Room 101 away, add the Fitness Center and a Salto KS door, and extend the stay.
    let new_end = ts(Duration::from_secs(5 * 86_400), false);
    let updated = upd(v1::UpdateAccessGrantRequest {
        add_acs_entrance_ids: vec![fitness.clone(), ks_main.clone()],
        remove_acs_entrance_ids: vec![doors[0].clone()],
        ends_at: Some(new_end),
        name: Some("Jane's longer stay".into()),
        ..base.clone()
    })
    .await
    .expect("update")
    .into_inner()
    .access_grant
    .expect("grant");
    assert_eq!(
        updated.acs_entrance_ids,
        vec![doors[1].clone(), fitness.clone(), ks_main.clone()]
    );
    assert_eq!(
        updated.ends_at.as_ref().map(|t| t.seconds),
        Some(new_end.seconds)
    );
    assert_eq!(updated.name, "Jane's longer stay");
    assert_eq!(
        updated.access_method_ids, before.access_method_ids,
        "no new method was needed"
    );
    let pending: Vec<&str> = updated
        .pending_mutations
        .iter()
        .map(|p| p.mutation_code.as_str())
        .collect();
    assert!(
        pending.contains(&"revoking_access") && pending.contains(&"updating_access_times"),
        "{pending:?}"
    );
    assert!(
        updated
            .warnings
            .iter()
            .any(|w| w.code == "updating_access_times")
    );

    let after = wait_methods(&ch, &key, &updated, "update settled", |ms| {
        ms.iter().all(|m| m.pending_mutations.is_empty())
            && ms.iter().any(|m| {
                m.mode == CARD
                    && m.access_method_id == vision_card.access_method_id
                    && m.is_card_encoding_required
            })
    })
    .await;
    let granted = v1::AccessState::Granted as i32;
    let revoked = v1::AccessState::Revoked as i32;
    let mobile = after.iter().find(|m| m.mode == MOBILE).expect("mobile");
    assert_eq!(state(mobile, &doors[0]), Some(revoked));
    assert_eq!(state(mobile, &doors[1]), Some(granted));
    assert_eq!(state(mobile, &fitness), Some(granted));
    assert_eq!(state(mobile, &ks_main), Some(granted));
    let card = after
        .iter()
        .find(|m| m.access_method_id == vision_card.access_method_id)
        .expect("card");
    assert_eq!(state(card, &fitness), Some(granted));
    assert!(card.is_ready_for_encoding, "{card:?}");
    let space_card = after
        .iter()
        .find(|m| m.mode == CARD && m.access_method_id != vision_card.access_method_id)
        .expect("Space card");
    assert_eq!(state(space_card, &doors[0]), Some(revoked));
    assert!(!space_card.is_issued);
    assert!(
        grant(&ch, &key, &created.access_grant_id)
            .await
            .pending_mutations
            .is_empty()
    );

    // The card carries new doors and times: encoded again, it is reissued.
    let again = encode(&ch, &key, card, "enc-2").await;
    assert_eq!(
        again.status,
        v1::ActionAttemptStatus::Success as i32,
        "{again:?}"
    );
    let card = method(&ch, &key, &vision_card.access_method_id).await;
    assert!(card.is_issued && !card.is_card_encoding_required);

    let log: Vec<String> = events(&ch)
        .list_events(authed(
            &key,
            v1::ListEventsRequest {
                access_grant_id: created.access_grant_id.clone(),
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .expect("events")
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    let from = log
        .iter()
        .position(|t| t == "access_grant.access_times_changed")
        .expect("times changed");
    let tail = &log[from..];
    let count = |t: &str| tail.iter().filter(|e| *e == t).count();
    assert_eq!(count("access_grant.access_to_door_lost"), 2, "{tail:?}");
    assert_eq!(count("access_method.revoked"), 1, "{tail:?}");
    assert_eq!(count("access_grant.access_granted_to_door"), 3, "{tail:?}");
    assert_eq!(count("access_method.card_encoding_required"), 1, "{tail:?}");
    assert_eq!(
        count("access_method.reissued"),
        2,
        "the mobile key, then the re-encoded card: {tail:?}"
    );
    assert_eq!(
        tail.last().map(String::as_str),
        Some("access_method.reissued")
    );

    // A grant with only cards cannot take a door that opens with none of its modes.
    let cards_only = grants(&ch)
        .create_access_grant(authed(&key, jane_grant("upd-2", &doors[1..], &[CARD])))
        .await
        .expect("create")
        .into_inner()
        .access_grant
        .expect("grant");
    assert_fails(
        upd(v1::UpdateAccessGrantRequest {
            access_grant_id: cards_only.access_grant_id.clone(),
            add_acs_entrance_ids: vec![ks_main.clone()],
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "MODE_NOT_SUPPORTED",
    );
    // A deleted grant is gone for updates too.
    grants(&ch)
        .delete_access_grant(authed(
            &key,
            v1::DeleteAccessGrantRequest {
                access_grant_id: cards_only.access_grant_id.clone(),
            },
        ))
        .await
        .expect("delete");
    assert_fails(
        upd(v1::UpdateAccessGrantRequest {
            access_grant_id: cards_only.access_grant_id.clone(),
            name: Some("x".into()),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "ACCESS_GRANT_NOT_FOUND",
    );
}

#[tokio::test]
async fn update_changes_only_what_changed_sqlite() {
    update_changes_only_what_changed(Options::with_admin()).await
}

#[tokio::test]
async fn update_changes_only_what_changed_postgres_redis() {
    update_changes_only_what_changed(Options::postgres_redis().await).await
}
