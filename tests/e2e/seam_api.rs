//! The Seam-compatible HTTP API in the real binary: served under `/seam` on the HTTP port by
//! the gateway role, with the keys the operator API hands out in their `seam_` form
//! (`seam_api_key_token`), and a revoked key refused there as on gRPC.

use keygate_proto::admin;
use serde_json::Value;

use crate::harness::*;
use crate::instant_keys::http;

fn get(kg: &Keygate, path: &str, key: &str) -> (u16, Vec<(String, String)>, Value) {
    let auth = format!("Bearer {key}");
    let (status, headers, body) = http(
        &kg.http_addr,
        "GET",
        &format!("/seam/{path}"),
        &[("authorization", auth.as_str())],
        "",
    );
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, headers, json)
}

#[tokio::test]
async fn operator_keys_work_in_their_seam_form_until_revoked() {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::with_admin());
    let ch = kg.channel().await;
    let created = admin_client(&ch)
        .create_workspace(authed(
            ADMIN_TOKEN,
            admin::CreateWorkspaceRequest {
                name: "Live".into(),
                workspace_type: admin::WorkspaceType::Production as i32,
                api_key_name: String::new(),
            },
        ))
        .await
        .expect("create workspace")
        .into_inner();
    let ws = created.workspace.expect("workspace").workspace_id;
    assert!(
        created.seam_api_key_token.starts_with("seam_kg"),
        "a production workspace's key has no `test` mark"
    );
    assert_eq!(
        created.seam_api_key_token,
        format!("seam_kg{}", &created.api_key_token[3..]),
        "the same id and secret"
    );
    for key in [&created.seam_api_key_token, &created.api_key_token] {
        let (status, headers, body) = get(&kg, "workspaces/get", key);
        assert_eq!(status, 200, "{body}");
        assert!(headers.iter().any(|(k, _)| k == "seam-request-id"));
        assert_eq!(body["workspace"]["workspace_id"], ws.as_str());
        assert_eq!(body["workspace"]["is_sandbox"], false);
    }

    let second = admin_client(&ch)
        .create_api_key(authed(
            ADMIN_TOKEN,
            admin::CreateApiKeyRequest {
                workspace_id: ws.clone(),
                name: "sdk".into(),
            },
        ))
        .await
        .expect("create key")
        .into_inner();
    assert!(second.seam_api_key_token.starts_with("seam_kg"));
    let (status, _, _) = get(&kg, "acs/systems/list", &second.seam_api_key_token);
    assert_eq!(status, 200);
    admin_client(&ch)
        .revoke_api_key(authed(
            ADMIN_TOKEN,
            admin::RevokeApiKeyRequest {
                workspace_id: ws.clone(),
                api_key_id: second.api_key.expect("key").api_key_id,
            },
        ))
        .await
        .expect("revoke");
    let (status, _, body) = get(&kg, "acs/systems/list", &second.seam_api_key_token);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "api_key_revoked");
    assert_eq!(body["ok"], false);

    // The admin token is no workspace key here.
    let (status, _, _) = get(&kg, "workspaces/get", ADMIN_TOKEN);
    assert_eq!(status, 401);
    // The port's own paths are not under /seam.
    assert_eq!(kg.http_status("/readyz"), 200);
}

/// One request budget per workspace for both surfaces: calls over gRPC spend what the
/// Seam-compatible API then lacks (429 with `Retry-After`).
#[tokio::test]
async fn grpc_and_the_seam_api_share_the_workspace_rate_limit() {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: ["--rate-limit-rps", "0.01", "--rate-limit-burst", "3"]
                .map(String::from)
                .to_vec(),
            ..Options::with_admin()
        },
    );
    let ch = kg.channel().await;
    let (_, key) = create_workspace(&ch, "Budget", true).await;
    for _ in 0..3 {
        identities(&ch)
            .list_user_identities(authed(
                &key,
                keygate_proto::v1::ListUserIdentitiesRequest::default(),
            ))
            .await
            .expect("within the burst");
    }
    let (status, headers, body) = get(&kg, "workspaces/get", &key);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limited");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "retry-after" && v.parse::<u64>().is_ok_and(|s| s >= 1)),
        "{headers:?}"
    );
}
