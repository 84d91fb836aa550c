//! Access systems through the provider registry, on the real binary: a tenant connects its own
//! systems over `keygate.v1` (sandbox workspaces virtual ones only, production ones real ones
//! only), idempotently; a type no adapter serves is refused with the known types; another
//! workspace sees nothing.

use keygate_proto::{admin, v1};
use tonic::Code;

use crate::harness::*;

fn connect(system_type: &str, request_id: &str) -> v1::ConnectAccessSystemRequest {
    v1::ConnectAccessSystemRequest {
        system_type: system_type.into(),
        name: "Annex".into(),
        time_zone: "Europe/Madrid".into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

async fn count(ch: &tonic::transport::Channel, key: &str) -> usize {
    systems(ch)
        .list_access_systems(authed(key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("systems")
        .into_inner()
        .acs_systems
        .len()
}

#[tokio::test]
async fn a_tenant_connects_its_own_systems_through_the_registry() {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::with_admin());
    let ch = kg.channel().await;
    let (_sandbox, key) = create_workspace(&ch, "Hotel", true).await;
    let (_prod, prod_key) = create_workspace(&ch, "Hotel live", false).await;
    let (_other, other_key) = create_workspace(&ch, "Other", true).await;
    assert_eq!(
        count(&ch, &key).await,
        5,
        "a sandbox starts with five virtual systems"
    );

    let s = systems(&ch)
        .connect_access_system(authed(&key, connect("virtual_latch", "annex-1")))
        .await
        .expect("connect")
        .into_inner()
        .acs_system
        .expect("system");
    assert_eq!(
        (
            s.system_type.as_str(),
            s.name.as_str(),
            s.time_zone.as_str()
        ),
        ("virtual_latch", "Annex", "Europe/Madrid")
    );
    assert!(
        s.capabilities.is_some(),
        "the adapter's capability descriptor"
    );
    let again = systems(&ch)
        .connect_access_system(authed(&key, connect("virtual_latch", "annex-1")))
        .await
        .expect("replay")
        .into_inner()
        .acs_system
        .expect("system");
    assert_eq!(
        again.acs_system_id, s.acs_system_id,
        "a replay connects nothing more"
    );
    assert_eq!(count(&ch, &key).await, 6);
    let doors = systems(&ch)
        .list_entrances(authed(
            &key,
            v1::ListEntrancesRequest {
                acs_system_id: s.acs_system_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("entrances")
        .into_inner()
        .acs_entrances;
    assert!(!doors.is_empty(), "its doors, as the adapter read them");
    // Another workspace sees none of it.
    assert_fails(
        systems(&ch)
            .get_access_system(authed(
                &other_key,
                v1::GetAccessSystemRequest {
                    acs_system_id: s.acs_system_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
        "ACCESS_SYSTEM_NOT_FOUND",
    );
    // Refusals store nothing.
    let unknown = assert_fails(
        systems(&ch)
            .connect_access_system(authed(&key, connect("kisi_cloud", "")))
            .await,
        Code::FailedPrecondition,
        "UNKNOWN_ACCESS_SYSTEM_TYPE",
    );
    assert!(unknown.message().contains("virtual_brivo"), "{unknown:?}");
    assert_fails(
        systems(&ch)
            .connect_access_system(authed(&prod_key, connect("virtual_latch", "")))
            .await,
        Code::FailedPrecondition,
        "WORKSPACE_TYPE_MISMATCH",
    );
    assert_fails(
        systems(&ch)
            .connect_access_system(authed(
                &key,
                v1::ConnectAccessSystemRequest {
                    time_zone: "Mars/Olympus".into(),
                    ..connect("virtual_latch", "")
                },
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    // The same request_id with another body.
    assert_fails(
        systems(&ch)
            .connect_access_system(authed(&key, connect("virtual_brivo", "annex-1")))
            .await,
        Code::AlreadyExists,
        "IDEMPOTENCY_KEY_REUSED",
    );
    assert_eq!(count(&ch, &key).await, 6);
    assert_eq!(count(&ch, &prod_key).await, 0);
    // The operator's path goes through the same rule.
    let ws_prod = admin_client(&ch)
        .list_workspaces(authed(ADMIN_TOKEN, admin::ListWorkspacesRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .workspaces
        .into_iter()
        .find(|w| w.name == "Hotel live")
        .expect("production workspace")
        .workspace_id;
    assert_fails(
        admin_client(&ch)
            .connect_access_system(authed(
                ADMIN_TOKEN,
                admin::ConnectAccessSystemRequest {
                    workspace_id: ws_prod,
                    system_type: "virtual_brivo".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::FailedPrecondition,
        "WORKSPACE_TYPE_MISMATCH",
    );
}
