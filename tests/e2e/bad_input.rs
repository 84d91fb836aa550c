//! Bad input gets a clear status and reason; the server stays healthy and nothing stored changes.

use keygate_proto::{admin, v1};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;

use crate::harness::*;

fn violations(s: &tonic::Status) -> Vec<String> {
    s.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::with_admin());
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Input", true).await;
    let (_ws_b, key_b) = create_workspace(&ch, "Other", true).await;
    let mut ui = identities(&ch);
    let stored_jane = ui
        .create_user_identity(authed(&key, jane("")))
        .await
        .expect("create")
        .into_inner()
        .user_identity
        .expect("ui");

    // Invalid fields: each reported by name, all at once.
    let bad = v1::CreateUserIdentityRequest {
        full_name: "   ".into(),
        email_address: "jane@".into(),
        phone_number: "555-1000".into(),
        ..jane("")
    };
    let s = assert_fails(
        ui.create_user_identity(authed(&key, bad)).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_eq!(
        violations(&s),
        ["full_name", "email_address", "phone_number"]
    );
    let long = v1::CreateUserIdentityRequest {
        full_name: "x".repeat(201),
        user_identity_key: String::new(),
        ..jane("")
    };
    let s = assert_fails(
        ui.create_user_identity(authed(&key, long)).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_eq!(violations(&s), ["full_name"]);
    let s = assert_fails(
        ui.create_user_identity(authed(
            &key,
            v1::CreateUserIdentityRequest {
                request_id: "r".repeat(101),
                ..jane("")
            },
        ))
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_eq!(violations(&s), ["request_id"]);

    // Duplicate natural key.
    assert_fails(
        ui.create_user_identity(authed(&key, jane(""))).await,
        Code::AlreadyExists,
        "USER_IDENTITY_KEY_TAKEN",
    );

    // Idempotency: same request_id and body replays; another body is refused.
    let john = |rid: &str, name: &str| v1::CreateUserIdentityRequest {
        request_id: rid.into(),
        user_identity_key: String::new(),
        full_name: name.into(),
        email_address: String::new(),
        phone_number: String::new(),
    };
    let first = ui
        .create_user_identity(authed(&key, john("req-1", "John Roe")))
        .await
        .expect("first")
        .into_inner();
    let again = ui
        .create_user_identity(authed(&key, john("req-1", "John Roe")))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(first, again);
    assert_fails(
        ui.create_user_identity(authed(&key, john("req-1", "Someone Else")))
            .await,
        Code::AlreadyExists,
        "IDEMPOTENCY_KEY_REUSED",
    );

    // Unknown, malformed and missing ids.
    for id in [uuid::Uuid::now_v7().to_string(), "not-a-uuid".into()] {
        assert_fails(
            ui.get_user_identity(authed(
                &key,
                v1::GetUserIdentityRequest {
                    user_identity_id: id.clone(),
                },
            ))
            .await,
            Code::NotFound,
            "USER_IDENTITY_NOT_FOUND",
        );
        assert_fails(
            systems(&ch)
                .get_access_system(authed(
                    &key,
                    v1::GetAccessSystemRequest { acs_system_id: id },
                ))
                .await,
            Code::NotFound,
            "ACCESS_SYSTEM_NOT_FOUND",
        );
    }
    let s = assert_fails(
        ui.get_user_identity(authed(&key, v1::GetUserIdentityRequest::default()))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_eq!(violations(&s), ["user_identity_id"]);

    // Updates that would break invariants change nothing.
    let upd = v1::UpdateUserIdentityRequest {
        user_identity_id: stored_jane.user_identity_id.clone(),
        full_name: Some(String::new()),
        email_address: Some("changed@example.com".into()),
        ..Default::default()
    };
    assert_fails(
        ui.update_user_identity(authed(&key, upd)).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );

    // Page sizes and tokens.
    let mut sys = systems(&ch);
    assert_fails(
        sys.list_entrances(authed(
            &key,
            v1::ListEntrancesRequest {
                page_size: -1,
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
        "INVALID_PAGE_SIZE",
    );
    let page = sys
        .list_entrances(authed(
            &key,
            v1::ListEntrancesRequest {
                page_size: 3,
                ..Default::default()
            },
        ))
        .await
        .expect("page")
        .into_inner();
    assert_eq!(page.acs_entrances.len(), 3);
    let token = page.next_page_token.clone();
    assert!(!token.is_empty());
    let mut tampered = token.clone().into_bytes();
    tampered[4] = if tampered[4] == b'A' { b'B' } else { b'A' };
    for forged in [
        "garbage".to_owned(),
        String::from_utf8(tampered).expect("ascii"),
        token[..token.len() / 2].to_owned(),
    ] {
        assert_fails(
            sys.list_entrances(authed(
                &key,
                v1::ListEntrancesRequest {
                    page_size: 3,
                    page_token: forged,
                    ..Default::default()
                },
            ))
            .await,
            Code::InvalidArgument,
            "INVALID_PAGE_TOKEN",
        );
    }
    // Another workspace's token, and the same token with another filter.
    assert_fails(
        sys.list_entrances(authed(
            &key_b,
            v1::ListEntrancesRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
    );
    let some_system = sys
        .list_access_systems(authed(&key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems[0]
        .acs_system_id
        .clone();
    assert_fails(
        sys.list_entrances(authed(
            &key,
            v1::ListEntrancesRequest {
                page_size: 3,
                page_token: token.clone(),
                acs_system_id: some_system,
            },
        ))
        .await,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
    );
    assert_fails(
        ui.list_user_identities(authed(
            &key,
            v1::ListUserIdentitiesRequest {
                page_token: token.clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
    );

    // Following the tokens visits every entrance once.
    let mut seen = Vec::new();
    let mut next = String::new();
    loop {
        let p = sys
            .list_entrances(authed(
                &key,
                v1::ListEntrancesRequest {
                    page_size: 4,
                    page_token: next,
                    ..Default::default()
                },
            ))
            .await
            .expect("page")
            .into_inner();
        seen.extend(p.acs_entrances.into_iter().map(|e| e.acs_entrance_id));
        if p.next_page_token.is_empty() {
            break;
        }
        next = p.next_page_token;
    }
    let all = sys
        .list_entrances(authed(
            &key,
            v1::ListEntrancesRequest {
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .expect("all")
        .into_inner()
        .acs_entrances;
    assert_eq!(seen.len(), all.len());
    assert_eq!(
        seen.iter().collect::<std::collections::HashSet<_>>().len(),
        all.len()
    );

    // A message over the size limit is refused without harm.
    let huge = v1::CreateUserIdentityRequest {
        full_name: "x".repeat(5 * 1024 * 1024),
        ..jane("")
    };
    let err = ui
        .create_user_identity(authed(&key, huge))
        .await
        .expect_err("too large");
    assert!(
        matches!(
            err.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::Internal
        ),
        "{err:?}"
    );

    // Operator input.
    let mut adm = admin_client(&ch);
    let s = assert_fails(
        adm.create_workspace(authed(
            ADMIN_TOKEN,
            admin::CreateWorkspaceRequest {
                name: String::new(),
                workspace_type: 0,
                api_key_name: String::new(),
            },
        ))
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_eq!(violations(&s), ["name", "workspace_type"]);
    let ws_id = adm
        .list_workspaces(authed(ADMIN_TOKEN, admin::ListWorkspacesRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .workspaces[0]
        .workspace_id
        .clone();
    assert_fails(
        adm.connect_access_system(authed(
            ADMIN_TOKEN,
            admin::ConnectAccessSystemRequest {
                workspace_id: ws_id.clone(),
                system_type: "virtual_kisi".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::FailedPrecondition,
        "UNKNOWN_ACCESS_SYSTEM_TYPE",
    );
    assert_fails(
        adm.connect_access_system(authed(
            ADMIN_TOKEN,
            admin::ConnectAccessSystemRequest {
                workspace_id: uuid::Uuid::now_v7().to_string(),
                system_type: "virtual_latch".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
        "WORKSPACE_NOT_FOUND",
    );
    assert_fails(
        adm.list_workspaces(authed(
            ADMIN_TOKEN,
            admin::ListWorkspacesRequest {
                page_size: -5,
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
        "INVALID_PAGE_SIZE",
    );

    // Still healthy, and the stored data is exactly what the valid calls made.
    let health = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let stored = ui
        .get_user_identity(authed(
            &key,
            v1::GetUserIdentityRequest {
                user_identity_id: stored_jane.user_identity_id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .user_identity;
    assert_eq!(stored, Some(stored_jane));
    let everyone = ui
        .list_user_identities(authed(&key, v1::ListUserIdentitiesRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .user_identities;
    assert_eq!(everyone.len(), 2, "Jane and the one idempotent John");
}

#[tokio::test]
async fn rpcs_this_server_does_not_serve_answer_unimplemented() {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::with_admin());
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Later", true).await;
    // Every RPC of keygate.v1 is served; the connector contract is for external connectors to
    // implement, so Keygate answers it as an unknown service.
    let connector = || {
        keygate_proto::connector::access_system_connector_service_client::AccessSystemConnectorServiceClient::new(ch.clone())
    };
    let err = connector()
        .get_capabilities(authed(&key, Default::default()))
        .await
        .expect_err("not served here");
    assert_eq!(err.code(), Code::Unimplemented);
    // Unauthenticated callers learn nothing, not even that the RPC is unimplemented.
    let err = connector()
        .get_capabilities(tonic::Request::new(Default::default()))
        .await
        .expect_err("no key");
    assert_eq!(err.code(), Code::Unauthenticated);
}
