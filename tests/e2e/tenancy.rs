//! Workspaces are walls: a key sees only its own workspace, and a foreign id is NOT_FOUND.

use keygate_proto::{admin, v1};
use tonic::Code;

use crate::harness::*;

async fn isolation(opts: Options) {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &opts);
    let ch = kg.channel().await;
    let (_ws_a, key_a) = create_workspace(&ch, "Tenant A", true).await;
    let (ws_b, key_b) = create_workspace(&ch, "Tenant B", true).await;

    // B's data.
    let b_person = identities(&ch)
        .create_user_identity(authed(&key_b, jane("b-1")))
        .await
        .expect("create in B")
        .into_inner()
        .user_identity
        .expect("identity");
    let b_systems = systems(&ch)
        .list_access_systems(authed(&key_b, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("list B systems")
        .into_inner()
        .acs_systems;
    assert_eq!(
        b_systems.len(),
        5,
        "a sandbox workspace has the five virtual systems"
    );
    assert!(b_systems.iter().all(|s| s.workspace_id == ws_b));
    let b_system = b_systems[0].acs_system_id.clone();
    let b_entrance = systems(&ch)
        .list_entrances(authed(
            &key_b,
            v1::ListEntrancesRequest {
                acs_system_id: b_system.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list B entrances")
        .into_inner()
        .acs_entrances[0]
        .acs_entrance_id
        .clone();

    // A cannot get, update, delete or list them.
    let id = b_person.user_identity_id.clone();
    assert_fails(
        identities(&ch)
            .get_user_identity(authed(
                &key_a,
                v1::GetUserIdentityRequest {
                    user_identity_id: id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "USER_IDENTITY_NOT_FOUND",
    );
    assert_fails(
        identities(&ch)
            .update_user_identity(authed(
                &key_a,
                v1::UpdateUserIdentityRequest {
                    user_identity_id: id.clone(),
                    full_name: Some("Mallory".into()),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
        "USER_IDENTITY_NOT_FOUND",
    );
    assert_fails(
        identities(&ch)
            .delete_user_identity(authed(
                &key_a,
                v1::DeleteUserIdentityRequest {
                    user_identity_id: id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "USER_IDENTITY_NOT_FOUND",
    );
    let a_people = identities(&ch)
        .list_user_identities(authed(&key_a, v1::ListUserIdentitiesRequest::default()))
        .await
        .expect("list A")
        .into_inner()
        .user_identities;
    assert!(a_people.is_empty(), "A sees none of B's people");
    let by_key = identities(&ch)
        .list_user_identities(authed(
            &key_a,
            v1::ListUserIdentitiesRequest {
                user_identity_key: "guest-1".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("list A by key")
        .into_inner()
        .user_identities;
    assert!(by_key.is_empty());

    assert_fails(
        systems(&ch)
            .get_access_system(authed(
                &key_a,
                v1::GetAccessSystemRequest {
                    acs_system_id: b_system.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ACCESS_SYSTEM_NOT_FOUND",
    );
    assert_fails(
        systems(&ch)
            .list_entrances(authed(
                &key_a,
                v1::ListEntrancesRequest {
                    acs_system_id: b_system.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
        "ACCESS_SYSTEM_NOT_FOUND",
    );
    assert_fails(
        systems(&ch)
            .get_entrance(authed(
                &key_a,
                v1::GetEntranceRequest {
                    acs_entrance_id: b_entrance.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ENTRANCE_NOT_FOUND",
    );
    let a_systems = systems(&ch)
        .list_access_systems(authed(&key_a, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("list A systems")
        .into_inner()
        .acs_systems;
    assert!(
        a_systems
            .iter()
            .all(|s| !b_systems.iter().any(|b| b.acs_system_id == s.acs_system_id))
    );

    // B's person is untouched.
    let still = identities(&ch)
        .get_user_identity(authed(
            &key_b,
            v1::GetUserIdentityRequest {
                user_identity_id: id,
            },
        ))
        .await
        .expect("B still sees it")
        .into_inner()
        .user_identity;
    assert_eq!(still, Some(b_person));
}

async fn credentials(opts: Options) {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &opts);
    let ch = kg.channel().await;
    let (ws, key) = create_workspace(&ch, "Keys", true).await;
    let list = || v1::ListUserIdentitiesRequest::default();

    // Missing key.
    assert_fails(
        identities(&ch)
            .list_user_identities(tonic::Request::new(list()))
            .await,
        Code::Unauthenticated,
        "MISSING_CREDENTIALS",
    );
    // Malformed keys and headers.
    for bad in [
        "nope",
        "kg_",
        "kg_0123_abc",
        &key[..key.len() - 1],
        &format!("{key}x"),
    ] {
        assert_fails(
            identities(&ch)
                .list_user_identities(authed(bad, list()))
                .await,
            Code::Unauthenticated,
            "INVALID_API_KEY",
        );
    }
    let mut basic = tonic::Request::new(list());
    basic.metadata_mut().insert(
        "authorization",
        format!("Basic {key}").parse().expect("header"),
    );
    assert_fails(
        identities(&ch).list_user_identities(basic).await,
        Code::Unauthenticated,
        "INVALID_API_KEY",
    );
    // A valid key works.
    identities(&ch)
        .list_user_identities(authed(&key, list()))
        .await
        .expect("valid key");

    // A second key, revoked, stops working at once; the first keeps working.
    let second = admin_client(&ch)
        .create_api_key(authed(
            ADMIN_TOKEN,
            admin::CreateApiKeyRequest {
                workspace_id: ws.clone(),
                name: "ci".into(),
            },
        ))
        .await
        .expect("create key")
        .into_inner();
    identities(&ch)
        .list_user_identities(authed(&second.api_key_token, list()))
        .await
        .expect("second key works");
    let api_key_id = second.api_key.expect("key").api_key_id;
    let revoked = admin_client(&ch)
        .revoke_api_key(authed(
            ADMIN_TOKEN,
            admin::RevokeApiKeyRequest {
                workspace_id: ws.clone(),
                api_key_id: api_key_id.clone(),
            },
        ))
        .await
        .expect("revoke")
        .into_inner()
        .api_key
        .expect("key");
    assert!(revoked.is_revoked);
    assert_fails(
        identities(&ch)
            .list_user_identities(authed(&second.api_key_token, list()))
            .await,
        Code::Unauthenticated,
        "API_KEY_REVOKED",
    );
    identities(&ch)
        .list_user_identities(authed(&key, list()))
        .await
        .expect("first key unaffected");
    let keys = admin_client(&ch)
        .list_api_keys(authed(
            ADMIN_TOKEN,
            admin::ListApiKeysRequest {
                workspace_id: ws.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list keys")
        .into_inner()
        .api_keys;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k.is_revoked).count(), 1);

    // Wrong admin token, missing admin token, and an API key on the operator API.
    let req = || admin::ListWorkspacesRequest::default();
    assert_fails(
        admin_client(&ch)
            .list_workspaces(authed("wrong", req()))
            .await,
        Code::Unauthenticated,
        "INVALID_ADMIN_TOKEN",
    );
    assert_fails(
        admin_client(&ch).list_workspaces(authed(&key, req())).await,
        Code::Unauthenticated,
        "INVALID_ADMIN_TOKEN",
    );
    assert_fails(
        admin_client(&ch)
            .list_workspaces(tonic::Request::new(req()))
            .await,
        Code::Unauthenticated,
        "MISSING_CREDENTIALS",
    );
    // And the admin token is not an API key.
    assert_fails(
        identities(&ch)
            .list_user_identities(authed(ADMIN_TOKEN, list()))
            .await,
        Code::Unauthenticated,
        "INVALID_API_KEY",
    );
}

#[tokio::test]
async fn workspaces_are_isolated_sqlite() {
    isolation(Options::with_admin()).await;
}

#[tokio::test]
async fn workspaces_are_isolated_postgres_redis() {
    isolation(Options::postgres_redis().await).await;
}

#[tokio::test]
async fn credentials_are_checked_sqlite() {
    credentials(Options::with_admin()).await;
}

#[tokio::test]
async fn credentials_are_checked_postgres_redis() {
    credentials(Options::postgres_redis().await).await;
}

#[tokio::test]
async fn operator_api_is_disabled_without_admin_token() {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::default());
    let ch = kg.channel().await;
    assert_fails(
        admin_client(&ch)
            .list_workspaces(authed("anything", admin::ListWorkspacesRequest::default()))
            .await,
        Code::PermissionDenied,
        "ADMIN_API_DISABLED",
    );
}
