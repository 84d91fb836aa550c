//! The console flow of seed 000 end to end, through the real binary: an access system user in
//! Salto KS (access groups, remote unlock), a user identity linked to it, an access group, a
//! mobile key credential, then `GenerateInstantKey` and an unlock from the Instant Key page. Also
//! a credential-based system (entrances on the credential), bad input, tenancy, idempotent
//! creates, and deletes that revoke in the virtual access system.

use std::time::Duration;

use keygate_proto::v1;
use tonic::Code;

use crate::grants::{MOBILE, events, methods, systems_client_entrances, ts};
use crate::harness::*;
use crate::instant_keys::{http, path_of};

type Ch = tonic::transport::Channel;

const CARD: i32 = v1::AccessMethodMode::Card as i32;
const CODE: i32 = v1::AccessMethodMode::Code as i32;
const CLOUD: i32 = v1::AccessMethodMode::CloudKey as i32;

pub(crate) fn acs(ch: &Ch) -> v1::acs_user_service_client::AcsUserServiceClient<Ch> {
    v1::acs_user_service_client::AcsUserServiceClient::new(ch.clone())
}

/// The workspace's access systems by `system_type`.
pub(crate) async fn system(ch: &Ch, key: &str, system_type: &str) -> String {
    systems(ch)
        .list_access_systems(authed(key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems
        .into_iter()
        .find(|s| s.system_type == system_type)
        .expect("system")
        .acs_system_id
}

pub(crate) async fn group(ch: &Ch, key: &str, system: &str, name: &str) -> v1::AccessGroup {
    systems(ch)
        .list_access_groups(authed(
            key,
            v1::ListAccessGroupsRequest {
                acs_system_id: system.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("groups")
        .into_inner()
        .acs_access_groups
        .into_iter()
        .find(|g| g.display_name == name)
        .expect("group")
}

async fn entrance_named(ch: &Ch, key: &str, system: &str, name: &str) -> String {
    systems_client_entrances(ch, key, system)
        .await
        .into_iter()
        .find(|e| e.display_name == name)
        .expect("entrance")
        .acs_entrance_id
}

pub(crate) fn new_user(request_id: &str, system: &str, name: &str) -> v1::CreateAcsUserRequest {
    v1::CreateAcsUserRequest {
        request_id: request_id.into(),
        acs_system_id: system.into(),
        full_name: name.into(),
        email_address: format!("{}@example.com", name.to_lowercase().replace(' ', ".")),
        phone_number: String::new(),
        access_schedule: Some(v1::AccessSchedule {
            starts_at: Some(ts(Duration::from_secs(600), true)),
            ends_at: Some(ts(Duration::from_secs(3 * 86_400), false)),
        }),
    }
}

pub(crate) async fn create_user(ch: &Ch, key: &str, req: v1::CreateAcsUserRequest) -> v1::AcsUser {
    acs(ch)
        .create_acs_user(authed(key, req))
        .await
        .expect("create acs user")
        .into_inner()
        .acs_user
        .expect("user")
}

pub(crate) async fn create_identity(ch: &Ch, key: &str, name: &str) -> v1::UserIdentity {
    identities(ch)
        .create_user_identity(authed(
            key,
            v1::CreateUserIdentityRequest {
                full_name: name.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create identity")
        .into_inner()
        .user_identity
        .expect("identity")
}

pub(crate) async fn link(
    ch: &Ch,
    key: &str,
    identity: &str,
    user: &str,
) -> Result<v1::UserIdentity, tonic::Status> {
    identities(ch)
        .link_acs_user(authed(
            key,
            v1::LinkAcsUserRequest {
                user_identity_id: identity.into(),
                acs_user_id: user.into(),
            },
        ))
        .await
        .map(|r| r.into_inner().user_identity.expect("identity"))
}

pub(crate) async fn add_to_group(
    ch: &Ch,
    key: &str,
    user: &str,
    group: &str,
) -> Result<v1::AcsUser, tonic::Status> {
    acs(ch)
        .add_user_to_access_group(authed(
            key,
            v1::AddUserToAccessGroupRequest {
                acs_user_id: user.into(),
                acs_access_group_id: group.into(),
            },
        ))
        .await
        .map(|r| r.into_inner().acs_user.expect("user"))
}

pub(crate) fn credential_req(
    user: &str,
    mode: i32,
    entrances: &[String],
) -> v1::CreateCredentialRequest {
    v1::CreateCredentialRequest {
        acs_user_id: user.into(),
        access_method: mode,
        acs_entrance_ids: entrances.to_vec(),
        ..Default::default()
    }
}

pub(crate) async fn create_credential(
    ch: &Ch,
    key: &str,
    req: v1::CreateCredentialRequest,
) -> Result<v1::Credential, tonic::Status> {
    acs(ch)
        .create_credential(authed(key, req))
        .await
        .map(|r| r.into_inner().acs_credential.expect("credential"))
}

pub(crate) async fn credentials_of(ch: &Ch, key: &str, user: &str) -> Vec<v1::Credential> {
    acs(ch)
        .list_credentials(authed(
            key,
            v1::ListCredentialsRequest {
                acs_user_id: user.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("list credentials")
        .into_inner()
        .acs_credentials
}

/// Polls until the user's credential is issued.
pub(crate) async fn issued(ch: &Ch, key: &str, user: &str, id: &str) -> v1::Credential {
    for _ in 0..200 {
        if let Some(c) = credentials_of(ch, key, user)
            .await
            .into_iter()
            .find(|c| c.acs_credential_id == id && c.is_issued)
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("credential {id} was not issued");
}

/// Whether the virtual access system holds the credential's access method.
pub(crate) async fn held(store: &dyn keygate_store::Store, system: &str, method: &str) -> bool {
    use keygate_providers::virtual_system::Ledger as _;
    keygate_orchestrator::store_ledger(store)
        .get(
            system.parse().expect("system id"),
            method.parse().expect("method id"),
        )
        .await
        .expect("ledger")
        .is_some()
}

/// Polls until the virtual system no longer holds the credential.
pub(crate) async fn revoked(store: &dyn keygate_store::Store, system: &str, method: &str) {
    for _ in 0..200 {
        if !held(store, system, method).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the access system still holds {method}");
}

async fn console_flow(opts: Options, db_url: impl Fn(&DataDir) -> String) {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: vec!["--sandbox-provision-delay-ms".into(), "40".into()],
            ..opts
        },
    );
    let store = keygate_store::open(&db_url(&dir)).expect("open store");
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Riverside", true).await;
    let (_other_ws, other_key) = create_workspace(&ch, "Other", true).await;
    let salto_ks = system(&ch, &key, "virtual_salto_ks").await;
    let residents = group(&ch, &key, &salto_ks, "All Residents").await;

    // 1. The access system user, with its access schedule.
    let first = new_user("console-jane", &salto_ks, "Jane Doe");
    let jane = create_user(&ch, &key, first.clone()).await;
    assert_eq!(
        (
            jane.full_name.as_str(),
            jane.email_address.as_str(),
            jane.acs_system_id.as_str()
        ),
        ("Jane Doe", "jane.doe@example.com", salto_ks.as_str())
    );
    assert!(jane.user_identity_id.is_empty() && jane.acs_access_group_ids.is_empty());
    let schedule = jane.access_schedule.expect("schedule");
    assert_eq!(
        schedule.ends_at.map(|t| t.seconds),
        first
            .access_schedule
            .as_ref()
            .and_then(|s| s.ends_at)
            .map(|t| t.seconds)
    );
    // Idempotent: the same request again is the same user; another body is refused.
    assert_eq!(
        create_user(&ch, &key, first.clone()).await.acs_user_id,
        jane.acs_user_id
    );
    assert_fails(
        acs(&ch)
            .create_acs_user(authed(
                &key,
                v1::CreateAcsUserRequest {
                    full_name: "Jane Roe".into(),
                    ..first.clone()
                },
            ))
            .await,
        Code::AlreadyExists,
        "IDEMPOTENCY_KEY_REUSED",
    );

    // A credential needs a linked user identity first.
    let err = assert_fails(
        create_credential(&ch, &key, credential_req(&jane.acs_user_id, MOBILE, &[])).await,
        Code::FailedPrecondition,
        "ACS_USER_NOT_LINKED",
    );
    assert!(err.message().contains("LinkAcsUser"), "{err:?}");

    // 2 and 3. The user identity, linked: it lists the access system user.
    let identity = create_identity(&ch, &key, "Jane Doe").await;
    assert!(identity.acs_user_ids.is_empty());
    let linked = link(&ch, &key, &identity.user_identity_id, &jane.acs_user_id)
        .await
        .expect("link");
    assert_eq!(linked.acs_user_ids, vec![jane.acs_user_id.clone()]);
    let again = link(&ch, &key, &identity.user_identity_id, &jane.acs_user_id)
        .await
        .expect("linking again changes nothing");
    assert_eq!(again.acs_user_ids, vec![jane.acs_user_id.clone()]);
    let got = identities(&ch)
        .get_user_identity(authed(
            &key,
            v1::GetUserIdentityRequest {
                user_identity_id: identity.user_identity_id.clone(),
            },
        ))
        .await
        .expect("get identity")
        .into_inner()
        .user_identity
        .expect("identity");
    assert_eq!(got.acs_user_ids, vec![jane.acs_user_id.clone()]);
    let by_identity = acs(&ch)
        .list_acs_users(authed(
            &key,
            v1::ListAcsUsersRequest {
                user_identity_id: identity.user_identity_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list users")
        .into_inner()
        .acs_users;
    assert_eq!(by_identity.len(), 1);
    assert_eq!(by_identity[0].user_identity_id, identity.user_identity_id);
    // Linked to one identity only.
    let someone_else = create_identity(&ch, &key, "Someone Else").await;
    assert_fails(
        link(&ch, &key, &someone_else.user_identity_id, &jane.acs_user_id).await,
        Code::FailedPrecondition,
        "ACS_USER_ALREADY_LINKED",
    );

    // On an access-groups system a credential needs a group, and takes no entrances.
    assert_fails(
        create_credential(&ch, &key, credential_req(&jane.acs_user_id, MOBILE, &[])).await,
        Code::FailedPrecondition,
        "ACS_USER_NOT_IN_ACCESS_GROUP",
    );

    // 4. The access group (idempotent); a group of another access system is refused.
    let member = add_to_group(&ch, &key, &jane.acs_user_id, &residents.acs_access_group_id)
        .await
        .expect("add to group");
    assert_eq!(
        member.acs_access_group_ids,
        vec![residents.acs_access_group_id.clone()]
    );
    let member = add_to_group(&ch, &key, &jane.acs_user_id, &residents.acs_access_group_id)
        .await
        .expect("add again");
    assert_eq!(member.acs_access_group_ids.len(), 1);
    let space = system(&ch, &key, "virtual_salto_space").await;
    let floor_1 = group(&ch, &key, &space, "Guests Floor 1").await;
    assert_fails(
        add_to_group(&ch, &key, &jane.acs_user_id, &floor_1.acs_access_group_id).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    let gym = entrance_named(&ch, &key, &salto_ks, "Gym").await;
    assert_fails(
        create_credential(
            &ch,
            &key,
            credential_req(&jane.acs_user_id, MOBILE, std::slice::from_ref(&gym)),
        )
        .await,
        Code::FailedPrecondition,
        "CAPABILITY_NOT_SUPPORTED",
    );
    assert_fails(
        create_credential(&ch, &key, credential_req(&jane.acs_user_id, CARD, &[])).await,
        Code::FailedPrecondition,
        "MODE_NOT_SUPPORTED",
    );
    assert_fails(
        create_credential(&ch, &key, credential_req(&jane.acs_user_id, CLOUD, &[])).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_fails(
        create_credential(
            &ch,
            &key,
            v1::CreateCredentialRequest {
                code: "123456".into(),
                ..credential_req(&jane.acs_user_id, CODE, &[])
            },
        )
        .await,
        Code::FailedPrecondition,
        "CAPABILITY_NOT_SUPPORTED",
    );

    // 5. The mobile key credential: an access grant behind the scenes, on the group's doors.
    let request = v1::CreateCredentialRequest {
        request_id: "console-jane-key".into(),
        ..credential_req(&jane.acs_user_id, MOBILE, &[])
    };
    let credential = create_credential(&ch, &key, request.clone())
        .await
        .expect("create credential");
    assert_eq!(credential.access_method, MOBILE);
    assert_eq!(credential.acs_user_id, jane.acs_user_id);
    assert!(!credential.access_method_id.is_empty());
    assert!(
        credential.acs_entrance_ids.is_empty(),
        "a group system's credential carries no entrances"
    );
    assert_eq!(
        credential.ends_at.map(|t| t.seconds),
        schedule.ends_at.map(|t| t.seconds),
        "the user's access schedule"
    );
    let replay = create_credential(&ch, &key, request.clone())
        .await
        .expect("replay");
    assert_eq!(replay.acs_credential_id, credential.acs_credential_id);
    assert_fails(
        create_credential(
            &ch,
            &key,
            v1::CreateCredentialRequest {
                ends_at: Some(ts(Duration::from_secs(86_400), false)),
                ..request.clone()
            },
        )
        .await,
        Code::AlreadyExists,
        "IDEMPOTENCY_KEY_REUSED",
    );
    let credential = issued(&ch, &key, &jane.acs_user_id, &credential.acs_credential_id).await;
    assert!(credential.issued_at.is_some() && credential.pending_mutations.is_empty());
    let method = methods(&ch)
        .get_access_method(authed(
            &key,
            v1::GetAccessMethodRequest {
                access_method_id: credential.access_method_id.clone(),
            },
        ))
        .await
        .expect("method")
        .into_inner()
        .access_method
        .expect("method");
    let mut doors = method.acs_entrance_ids.clone();
    doors.sort();
    let mut group_doors = residents.acs_entrance_ids.clone();
    group_doors.sort();
    assert_eq!(doors, group_doors, "the doors of All Residents");
    assert_eq!(method.user_identity_id, identity.user_identity_id);
    assert!(held(&*store, &salto_ks, &credential.access_method_id).await);

    // 6. The Instant Key: its page lists the group's doors, and one unlocks.
    let generated = identities(&ch)
        .generate_instant_key(authed(
            &key,
            v1::GenerateInstantKeyRequest {
                request_id: "console-jane-ik".into(),
                user_identity_id: identity.user_identity_id.clone(),
                max_use_count: 1,
                expires_at: Some(ts(Duration::from_secs(86_400), false)),
            },
        ))
        .await
        .expect("generate instant key")
        .into_inner();
    assert!(generated.qr_code_svg.contains("<svg"));
    let instant_key = generated.instant_key.expect("key");
    assert!(instant_key.instant_key_url.contains("/ik/"));
    assert!(instant_key.expires_at.is_some());
    let page = path_of(&instant_key.instant_key_url);
    let (status, headers, body) = http(&kg.http_addr, "GET", &page, &[], "");
    assert_eq!(status, 200, "{body}");
    for door in ["Main Entrance", "Side Door", "Bike Storage"] {
        assert!(body.contains(door), "{door} missing: {body}");
    }
    assert!(
        !body.contains("Gym") && !body.contains("Parking Gate"),
        "only the group's doors: {body}"
    );
    assert!(
        !headers.iter().any(|(k, _)| k == "set-cookie"),
        "opening the link claims nothing"
    );
    // "Use this key on this phone": the claim that gives the device its cookie.
    let (status, headers, _) = http(&kg.http_addr, "POST", &format!("{page}/claim"), &[], "");
    assert_eq!(status, 303);
    let cookie = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.split(';').next().unwrap_or_default().to_owned())
        .expect("device cookie");
    let main = entrance_named(&ch, &key, &salto_ks, "Main Entrance").await;
    let (status, headers, _) = http(
        &kg.http_addr,
        "POST",
        &format!("{page}/unlock"),
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("acs_entrance_id={main}"),
    );
    assert_eq!(status, 303);
    let back = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .expect("redirect");
    let (status, _, body) = http(&kg.http_addr, "GET", &back, &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    assert!(body.contains("Main Entrance is unlocked."), "{body}");
    let unlocked = events(&ch)
        .list_events(authed(
            &key,
            v1::ListEventsRequest {
                event_types: vec!["acs_entrance.unlocked".into()],
                acs_entrance_id: main.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("events")
        .into_inner()
        .events;
    assert_eq!(unlocked.len(), 1, "{unlocked:?}");
    assert_eq!(unlocked[0].user_identity_id, identity.user_identity_id);

    // A credential-based system (Visionline): entrances on the credential itself.
    let visionline = system(&ch, &key, "virtual_visionline").await;
    let john = create_user(
        &ch,
        &key,
        v1::CreateAcsUserRequest {
            access_schedule: None,
            ..new_user("", &visionline, "John Smith")
        },
    )
    .await;
    let john_identity = create_identity(&ch, &key, "John Smith").await;
    link(
        &ch,
        &key,
        &john_identity.user_identity_id,
        &john.acs_user_id,
    )
    .await
    .expect("link john");
    assert_fails(
        add_to_group(&ch, &key, &john.acs_user_id, &residents.acs_access_group_id).await,
        Code::FailedPrecondition,
        "CAPABILITY_NOT_SUPPORTED",
    );
    assert_fails(
        create_credential(&ch, &key, credential_req(&john.acs_user_id, MOBILE, &[])).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_fails(
        create_credential(
            &ch,
            &key,
            credential_req(&john.acs_user_id, MOBILE, std::slice::from_ref(&main)),
        )
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    let rooms = vec![
        entrance_named(&ch, &key, &visionline, "Room 301").await,
        entrance_named(&ch, &key, &visionline, "Room 302").await,
    ];
    let ends = ts(Duration::from_secs(2 * 86_400), false);
    let room_key = create_credential(
        &ch,
        &key,
        v1::CreateCredentialRequest {
            ends_at: Some(ends),
            ..credential_req(&john.acs_user_id, MOBILE, &rooms)
        },
    )
    .await
    .expect("visionline credential");
    assert_eq!(room_key.acs_entrance_ids, rooms);
    assert_eq!(room_key.ends_at.map(|t| t.seconds), Some(ends.seconds));
    let card = create_credential(
        &ch,
        &key,
        credential_req(&john.acs_user_id, CARD, &rooms[..1]),
    )
    .await
    .expect("card");
    let room_key = issued(&ch, &key, &john.acs_user_id, &room_key.acs_credential_id).await;
    assert!(held(&*store, &visionline, &room_key.access_method_id).await);
    let listed = acs(&ch)
        .list_credentials(authed(
            &key,
            v1::ListCredentialsRequest {
                user_identity_id: john_identity.user_identity_id.clone(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(listed.acs_credentials.len(), 1);
    assert!(!listed.next_page_token.is_empty());

    // DeleteCredential deletes the grant: NOT_FOUND at once, then revoked in the access system.
    acs(&ch)
        .delete_credential(authed(
            &key,
            v1::DeleteCredentialRequest {
                acs_credential_id: room_key.acs_credential_id.clone(),
            },
        ))
        .await
        .expect("delete credential");
    assert_fails(
        acs(&ch)
            .delete_credential(authed(
                &key,
                v1::DeleteCredentialRequest {
                    acs_credential_id: room_key.acs_credential_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "CREDENTIAL_NOT_FOUND",
    );
    let left: Vec<String> = credentials_of(&ch, &key, &john.acs_user_id)
        .await
        .into_iter()
        .map(|c| c.acs_credential_id)
        .collect();
    assert_eq!(left, vec![card.acs_credential_id.clone()]);
    revoked(&*store, &visionline, &room_key.access_method_id).await;

    // Another workspace sees none of it, and its ids are NOT_FOUND here.
    assert_fails(
        acs(&ch)
            .get_acs_user(authed(
                &other_key,
                v1::GetAcsUserRequest {
                    acs_user_id: jane.acs_user_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ACS_USER_NOT_FOUND",
    );
    let theirs = acs(&ch)
        .list_acs_users(authed(&other_key, v1::ListAcsUsersRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert!(theirs.acs_users.is_empty());
    let theirs = acs(&ch)
        .list_credentials(authed(&other_key, v1::ListCredentialsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert!(theirs.acs_credentials.is_empty());
    assert_fails(
        acs(&ch)
            .delete_credential(authed(
                &other_key,
                v1::DeleteCredentialRequest {
                    acs_credential_id: credential.acs_credential_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "CREDENTIAL_NOT_FOUND",
    );
    assert_fails(
        acs(&ch)
            .list_credentials(authed(
                &other_key,
                v1::ListCredentialsRequest {
                    acs_user_id: jane.acs_user_id.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
        "ACS_USER_NOT_FOUND",
    );
    let stranger = create_identity(&ch, &other_key, "Stranger").await;
    assert_fails(
        link(
            &ch,
            &other_key,
            &stranger.user_identity_id,
            &john.acs_user_id,
        )
        .await,
        Code::NotFound,
        "ACS_USER_NOT_FOUND",
    );
    assert_fails(
        link(&ch, &key, &stranger.user_identity_id, &john.acs_user_id).await,
        Code::NotFound,
        "USER_IDENTITY_NOT_FOUND",
    );
    let their_ks = system(&ch, &other_key, "virtual_salto_ks").await;
    let their_group = group(&ch, &other_key, &their_ks, "All Residents").await;
    assert_fails(
        add_to_group(
            &ch,
            &key,
            &jane.acs_user_id,
            &their_group.acs_access_group_id,
        )
        .await,
        Code::NotFound,
        "ACCESS_GROUP_NOT_FOUND",
    );
    assert_fails(
        acs(&ch)
            .create_acs_user(authed(&key, new_user("", &their_ks, "Jane Doe")))
            .await,
        Code::NotFound,
        "ACCESS_SYSTEM_NOT_FOUND",
    );
    let their_room = {
        let vl = system(&ch, &other_key, "virtual_visionline").await;
        entrance_named(&ch, &other_key, &vl, "Room 301").await
    };
    assert_fails(
        create_credential(
            &ch,
            &key,
            credential_req(&john.acs_user_id, MOBILE, std::slice::from_ref(&their_room)),
        )
        .await,
        Code::NotFound,
        "ENTRANCE_NOT_FOUND",
    );

    // Bad input.
    for (req, field) in [
        (
            v1::CreateAcsUserRequest {
                full_name: "  ".into(),
                ..new_user("", &salto_ks, "x")
            },
            "full_name",
        ),
        (
            v1::CreateAcsUserRequest {
                email_address: "not-an-email".into(),
                ..new_user("", &salto_ks, "Jane Doe")
            },
            "email_address",
        ),
        (
            v1::CreateAcsUserRequest {
                access_schedule: Some(v1::AccessSchedule {
                    starts_at: Some(ts(Duration::from_secs(86_400), false)),
                    ends_at: Some(ts(Duration::from_secs(3_600), false)),
                }),
                ..new_user("", &salto_ks, "Jane Doe")
            },
            "access_schedule.ends_at",
        ),
    ] {
        let err = assert_fails(
            acs(&ch).create_acs_user(authed(&key, req)).await,
            Code::InvalidArgument,
            "INVALID_FIELD",
        );
        assert!(err.message().contains(field), "{field}: {err:?}");
    }
    assert_fails(
        create_credential(
            &ch,
            &key,
            v1::CreateCredentialRequest {
                card_number: "12345".into(),
                ..credential_req(&john.acs_user_id, MOBILE, &rooms)
            },
        )
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );

    // DeleteAcsUser deletes its credentials the same way, then the user.
    acs(&ch)
        .delete_acs_user(authed(
            &key,
            v1::DeleteAcsUserRequest {
                acs_user_id: jane.acs_user_id.clone(),
            },
        ))
        .await
        .expect("delete user");
    assert_fails(
        acs(&ch)
            .get_acs_user(authed(
                &key,
                v1::GetAcsUserRequest {
                    acs_user_id: jane.acs_user_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ACS_USER_NOT_FOUND",
    );
    revoked(&*store, &salto_ks, &credential.access_method_id).await;
    let after = identities(&ch)
        .get_user_identity(authed(
            &key,
            v1::GetUserIdentityRequest {
                user_identity_id: identity.user_identity_id.clone(),
            },
        ))
        .await
        .expect("identity")
        .into_inner()
        .user_identity
        .expect("identity");
    assert!(after.acs_user_ids.is_empty());
    let (status, _, body) = http(&kg.http_addr, "GET", &page, &[("Cookie", &cookie)], "");
    assert!(
        status != 200 || !body.contains("Main Entrance"),
        "the key opens nothing any more: {status} {body}"
    );
}

fn sqlite_url(dir: &DataDir) -> String {
    format!("sqlite://{}", dir.0.join("keygate.db").display())
}

#[tokio::test]
async fn console_flow_sqlite() {
    console_flow(Options::with_admin(), sqlite_url).await
}

#[tokio::test]
async fn console_flow_postgres_redis() {
    let opts = Options::postgres_redis().await;
    let url = opts.database_url.clone().expect("database url");
    console_flow(opts, move |_| url.clone()).await
}
