//! Remote unlocks through the real binaries, with the roles as separate processes on PostgreSQL
//! and Redis: taps are answered while no orchestrator runs; an orchestrator that starts 45 s
//! later (past the 30 s default deadline) opens no door; a key revoked while its unlock is queued
//! ends that unlock at once; and with an orchestrator running, `UnlockDoor` and
//! `UnlockEntrance` open the door once each.

use std::time::Duration;

use keygate_proto::v1;
use tonic::Code;

use crate::grants::events;
use crate::harness::*;
use crate::instant_keys::{http, instant_keys, jane_with_a_remote_door, path_of};

type Ch = tonic::transport::Channel;

fn methods(ch: &Ch) -> v1::access_method_service_client::AccessMethodServiceClient<Ch> {
    v1::access_method_service_client::AccessMethodServiceClient::new(ch.clone())
}

fn attempts(ch: &Ch) -> v1::action_attempt_service_client::ActionAttemptServiceClient<Ch> {
    v1::action_attempt_service_client::ActionAttemptServiceClient::new(ch.clone())
}

fn orchestrator(base: &Options) -> Options {
    Options {
        extra_args: [
            "--roles",
            "orchestrator",
            "--sandbox-provision-delay-ms",
            "40",
        ]
        .map(String::from)
        .to_vec(),
        ..base.clone()
    }
}

/// Claims the key of `page` for a new device and taps Unlock on `door`: the attempt's id.
fn tap(http_addr: &str, page: &str, door: &str) -> String {
    let (status, headers, _) = http(http_addr, "POST", &format!("{page}/claim"), &[], "");
    assert_eq!(status, 303, "claim");
    let cookie = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .and_then(|(_, v)| v.split(';').next())
        .expect("device cookie")
        .to_owned();
    let (status, headers, _) = http(
        http_addr,
        "POST",
        &format!("{page}/unlock"),
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("acs_entrance_id={door}"),
    );
    assert_eq!(status, 303, "the tap is answered");
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .expect("redirect");
    location
        .split_once("attempt=")
        .map(|(_, id)| id.to_owned())
        .expect("attempt id in the redirect")
}

async fn attempt(ch: &Ch, key: &str, id: &str) -> v1::ActionAttempt {
    attempts(ch)
        .get_action_attempt(authed(
            key,
            v1::GetActionAttemptRequest {
                action_attempt_id: id.to_owned(),
            },
        ))
        .await
        .expect("attempt")
        .into_inner()
        .action_attempt
        .expect("a")
}

async fn finished(ch: &Ch, key: &str, id: &str) -> v1::ActionAttempt {
    for _ in 0..300 {
        let a = attempt(ch, key, id).await;
        if a.status != v1::ActionAttemptStatus::Pending as i32 {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("attempt {id} still pending");
}

fn error_type(a: &v1::ActionAttempt) -> String {
    a.error
        .as_ref()
        .map(|e| e.r#type.clone())
        .unwrap_or_default()
}

async fn count(ch: &Ch, key: &str, event_type: &str) -> usize {
    events(ch)
        .list_events(authed(
            key,
            v1::ListEventsRequest {
                event_types: vec![event_type.into()],
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .expect("events")
        .into_inner()
        .events
        .len()
}

async fn unlock_door(ch: &Ch, key: &str, method: &str, door: &str, request_id: &str) -> String {
    methods(ch)
        .unlock_door(authed(
            key,
            v1::UnlockDoorRequest {
                access_method_id: method.into(),
                acs_entrance_id: door.into(),
                request_id: request_id.into(),
            },
        ))
        .await
        .expect("unlock door")
        .into_inner()
        .action_attempt
        .expect("attempt")
        .action_attempt_id
}

async fn unlock_entrance(ch: &Ch, key: &str, door: &str) -> Result<String, tonic::Status> {
    systems(ch)
        .unlock_entrance(authed(
            key,
            v1::UnlockEntranceRequest {
                acs_entrance_id: door.into(),
                request_id: String::new(),
            },
        ))
        .await
        .map(|r| {
            r.into_inner()
                .action_attempt
                .expect("attempt")
                .action_attempt_id
        })
}

#[tokio::test]
async fn no_door_opens_late_or_after_revocation() {
    let base = Options::postgres_redis().await;
    let (gw_dir, o1_dir, o2_dir) = (DataDir::new(), DataDir::new(), DataDir::new());
    let gateway = Keygate::start(
        &gw_dir.0,
        &Options {
            extra_args: ["--roles", "gateway,delivery"].map(String::from).to_vec(),
            ..base.clone()
        },
    );
    let mut first = Keygate::start(&o1_dir.0, &orchestrator(&base));
    let ch = gateway.channel().await;
    let (_ws, key) = create_workspace(&ch, "Late", true).await;
    let (g, mobile, [room, main]) = jane_with_a_remote_door(&ch, &key, "late-1").await;
    // Doors are granted; now no orchestrator runs.
    first.terminate(Duration::from_secs(20));

    // Taps while nobody can send them: each is answered (the page stops waiting after a few
    // seconds; the API answers the pending attempt at once).
    let page = path_of(&g.instant_key_url);
    let from_page = tap(&gateway.http_addr, &page, &main);
    let from_api = unlock_door(&ch, &key, &mobile.access_method_id, &main, "late-tap").await;
    let from_operator = unlock_entrance(&ch, &key, &main).await.expect("operator");
    // A second key, revoked while its unlock is queued: the unlock ends at once.
    let second = identities(&ch)
        .generate_instant_key(authed(
            &key,
            v1::GenerateInstantKeyRequest {
                user_identity_id: g.user_identity_id.clone(),
                max_use_count: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("second key")
        .into_inner()
        .instant_key
        .expect("key");
    let revoked_tap = tap(&gateway.http_addr, &path_of(&second.instant_key_url), &main);
    instant_keys(&ch)
        .revoke_instant_key(authed(
            &key,
            v1::RevokeInstantKeyRequest {
                instant_key_id: second.instant_key_id.clone(),
            },
        ))
        .await
        .expect("revoke");
    let a = attempt(&ch, &key, &revoked_tap).await;
    assert_eq!(
        (a.status, error_type(&a).as_str()),
        (v1::ActionAttemptStatus::Error as i32, "access_revoked"),
        "the revoked key's unlock ended with the revocation"
    );
    for id in [&from_page, &from_api, &from_operator] {
        assert_eq!(
            attempt(&ch, &key, id).await.status,
            v1::ActionAttemptStatus::Pending as i32
        );
    }

    // 45 s later (the deadline is 30 s) an orchestrator starts: no door opens.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let _second = Keygate::start(&o2_dir.0, &orchestrator(&base));
    for id in [&from_page, &from_api, &from_operator] {
        let a = finished(&ch, &key, id).await;
        assert_eq!(
            (a.status, error_type(&a).as_str()),
            (v1::ActionAttemptStatus::Error as i32, "unlock_expired"),
            "{a:?}"
        );
    }
    assert_eq!(
        count(&ch, &key, "acs_entrance.unlocked").await,
        0,
        "no door opened"
    );
    assert_eq!(count(&ch, &key, "action_attempt.failed").await, 4);

    // With an orchestrator running, the API's unlocks open the door once each; a replay of the
    // same request_id answers the same attempt and opens nothing more.
    let a = unlock_door(&ch, &key, &mobile.access_method_id, &main, "now-1").await;
    let again = unlock_door(&ch, &key, &mobile.access_method_id, &main, "now-1").await;
    assert_eq!(a, again);
    assert_eq!(
        finished(&ch, &key, &a).await.status,
        v1::ActionAttemptStatus::Success as i32
    );
    let b = unlock_entrance(&ch, &key, &main).await.expect("operator");
    assert_eq!(
        finished(&ch, &key, &b).await.status,
        v1::ActionAttemptStatus::Success as i32
    );
    assert_eq!(count(&ch, &key, "acs_entrance.unlocked").await, 2);

    // Refusals: a door that cannot be unlocked remotely, another workspace's entrance, a
    // malformed method id.
    let refused = unlock_entrance(&ch, &key, &room)
        .await
        .expect_err("no remote");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "CAPABILITY_NOT_SUPPORTED");
    let (_other, other_key) = create_workspace(&ch, "Other", true).await;
    let foreign = unlock_entrance(&ch, &other_key, &main)
        .await
        .expect_err("foreign");
    assert_eq!(foreign.code(), Code::NotFound);
    let bad = methods(&ch)
        .unlock_door(authed(
            &key,
            v1::UnlockDoorRequest {
                access_method_id: "not-an-id".into(),
                acs_entrance_id: main.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .expect_err("bad id");
    assert_eq!(
        bad.code(),
        Code::NotFound,
        "a malformed id is as unknown as a missing one"
    );
    assert_eq!(reason(&bad), "ACCESS_METHOD_NOT_FOUND");
}
