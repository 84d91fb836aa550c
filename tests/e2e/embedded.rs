//! The embedded default: one command, no setup, and a restart keeps everything.

use keygate_proto::{admin, v1};

use crate::harness::*;

#[tokio::test]
async fn restart_keeps_data_and_the_same_sandbox() {
    let dir = DataDir::new();
    let (key, person, systems_before) = {
        let kg = Keygate::start(&dir.0, &Options::with_admin());
        let key = kg
            .sandbox_key
            .clone()
            .expect("first start prints the sandbox key");

        // The key file holds the same key and only its owner can read it.
        let path = dir.0.join("sandbox-api-key");
        assert_eq!(
            std::fs::read_to_string(&path).expect("key file").trim(),
            key
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "key file mode {mode:o}");
        }

        let ch = kg.channel().await;
        let systems = systems(&ch)
            .list_access_systems(authed(&key, v1::ListAccessSystemsRequest::default()))
            .await
            .expect("list")
            .into_inner()
            .acs_systems;
        let types: Vec<_> = systems.iter().map(|s| s.system_type.as_str()).collect();
        for t in [
            "virtual_salto_ks",
            "virtual_salto_space",
            "virtual_visionline",
            "virtual_latch",
            "virtual_brivo",
        ] {
            assert!(types.contains(&t), "{t} missing from {types:?}");
        }
        let person = identities(&ch)
            .create_user_identity(authed(&key, jane("")))
            .await
            .expect("create")
            .into_inner()
            .user_identity
            .expect("ui");
        (key, person, systems)
    };

    let kg = Keygate::start(&dir.0, &Options::with_admin());
    assert!(
        kg.sandbox_key.is_none(),
        "a second start must not create another sandbox"
    );
    assert!(
        kg.stdout_lines
            .iter()
            .any(|l| l.starts_with("keygate: using sandbox workspace"))
    );
    let ch = kg.channel().await;
    let got = identities(&ch)
        .get_user_identity(authed(
            &key,
            v1::GetUserIdentityRequest {
                user_identity_id: person.user_identity_id.clone(),
            },
        ))
        .await
        .expect("same key works after restart")
        .into_inner()
        .user_identity;
    assert_eq!(got, Some(person));
    let systems_after = systems(&ch)
        .list_access_systems(authed(&key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .acs_systems;
    assert_eq!(systems_after, systems_before);
    let workspaces = admin_client(&ch)
        .list_workspaces(authed(ADMIN_TOKEN, admin::ListWorkspacesRequest::default()))
        .await
        .expect("list workspaces")
        .into_inner()
        .workspaces;
    assert_eq!(workspaces.len(), 1);
    assert!(workspaces[0].is_sandbox);
}

#[tokio::test]
async fn sandbox_systems_describe_their_capabilities() {
    let dir = DataDir::new();
    let kg = Keygate::start(&dir.0, &Options::default());
    let key = kg.sandbox_key.clone().expect("key");
    let ch = kg.channel().await;
    let mut sys = systems(&ch);
    let all = sys
        .list_access_systems(authed(&key, v1::ListAccessSystemsRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .acs_systems;
    let by_type = |t: &str| {
        all.iter()
            .find(|s| s.system_type == t)
            .cloned()
            .expect("system")
    };

    let space = by_type("virtual_salto_space");
    let caps = space.capabilities.clone().expect("caps");
    assert_eq!(
        caps.permission_model,
        v1::PermissionModel::AccessGroups as i32
    );
    assert!(caps.is_card_encoding_required);
    let encoders = sys
        .list_encoders(authed(
            &key,
            v1::ListEncodersRequest {
                acs_system_id: space.acs_system_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("encoders")
        .into_inner()
        .acs_encoders;
    assert_eq!(encoders.len(), 2);
    let groups = sys
        .list_access_groups(authed(
            &key,
            v1::ListAccessGroupsRequest {
                acs_system_id: space.acs_system_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("groups")
        .into_inner()
        .acs_access_groups;
    assert!(!groups.is_empty() && groups.iter().all(|g| !g.acs_entrance_ids.is_empty()));

    let latch = by_type("virtual_latch").capabilities.expect("caps");
    assert_eq!(
        latch.permission_model,
        v1::PermissionModel::CredentialBased as i32
    );
    let rules = latch.pin_code_rules.expect("latch has PIN rules");
    assert!(rules.is_code_per_entrance);
    assert!(!latch.can_remote_unlock);

    let brivo = by_type("virtual_brivo").capabilities.expect("caps");
    assert_eq!(
        brivo.pin_code_rules.expect("rules").generator,
        v1::PinCodeGenerator::Keygate as i32
    );

    let visionline = by_type("virtual_visionline").capabilities.expect("caps");
    assert_eq!(
        visionline.permission_model,
        v1::PermissionModel::ReservationOverride as i32
    );

    // Entrance flags follow the hardware: Salto KS's parking gate has no keypad.
    let ks = by_type("virtual_salto_ks");
    let gates = sys
        .list_entrances(authed(
            &key,
            v1::ListEntrancesRequest {
                acs_system_id: ks.acs_system_id,
                ..Default::default()
            },
        ))
        .await
        .expect("entrances")
        .into_inner()
        .acs_entrances;
    let gate = gates
        .iter()
        .find(|e| e.display_name == "Parking Gate")
        .expect("gate");
    assert!(
        !gate.can_unlock_with_code
            && gate.can_unlock_with_mobile_key
            && gate.can_unlock_with_cloud_key
    );
    let got = sys
        .get_entrance(authed(
            &key,
            v1::GetEntranceRequest {
                acs_entrance_id: gate.acs_entrance_id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.acs_entrance.as_ref(), Some(gate));
}
