//! Domain → wire. One function per resource; the proto field names are the seed vocabulary.

use keygate_domain::capability::{
    AccessMethodMode, CapabilityDescriptor, PermissionModel, PinCodeGenerator,
};
use keygate_domain::model::{
    AccessGroup, AccessSystem, ApiKey, Encoder, Entrance, UserIdentity, Workspace, WorkspaceType,
};
use keygate_proto::{admin, v1};
use time::OffsetDateTime;

pub fn ts(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

pub fn mode(m: AccessMethodMode) -> v1::AccessMethodMode {
    match m {
        AccessMethodMode::Card => v1::AccessMethodMode::Card,
        AccessMethodMode::Code => v1::AccessMethodMode::Code,
        AccessMethodMode::MobileKey => v1::AccessMethodMode::MobileKey,
        AccessMethodMode::CloudKey => v1::AccessMethodMode::CloudKey,
    }
}

pub fn capabilities(c: &CapabilityDescriptor) -> v1::CapabilityDescriptor {
    v1::CapabilityDescriptor {
        permission_model: match c.permission_model {
            PermissionModel::AccessGroups => v1::PermissionModel::AccessGroups,
            PermissionModel::CredentialBased => v1::PermissionModel::CredentialBased,
            PermissionModel::ReservationOverride => v1::PermissionModel::ReservationOverride,
        } as i32,
        supported_modes: c.supported_modes.iter().map(|m| mode(*m) as i32).collect(),
        pin_code_rules: c.pin_code_rules.as_ref().map(|p| v1::PinCodeRules {
            generator: match p.generator {
                PinCodeGenerator::Provider => v1::PinCodeGenerator::Provider,
                PinCodeGenerator::Keygate => v1::PinCodeGenerator::Keygate,
            } as i32,
            min_length: i32::from(p.min_length),
            max_length: i32::from(p.max_length),
            can_request_code: p.can_request_code,
            is_code_per_entrance: p.is_code_per_entrance,
        }),
        is_card_encoding_required: c.is_card_encoding_required,
        can_remote_unlock: c.can_remote_unlock,
        can_issue_mobile_keys: c.can_issue_mobile_keys,
        can_assign_entrances_directly: c.can_assign_entrances_directly,
        can_schedule_credentials: c.can_schedule_credentials,
        rate_limit: Some(v1::ProviderRateLimit {
            requests_per_second: c.rate_limit.requests_per_second,
            burst: i32::try_from(c.rate_limit.burst).unwrap_or(i32::MAX),
        }),
    }
}

pub fn access_system(s: &AccessSystem) -> v1::AccessSystem {
    v1::AccessSystem {
        acs_system_id: s.id.to_string(),
        workspace_id: s.workspace_id.to_string(),
        name: s.name.clone(),
        external_type: s.external_type.clone(),
        system_type: s.system_type.clone(),
        is_virtual: s.is_virtual,
        time_zone: s.time_zone.clone(),
        capabilities: Some(capabilities(&s.capabilities)),
        created_at: Some(ts(s.created_at)),
        warnings: s.health.warnings.iter().map(warning).collect(),
        errors: s.health.errors.iter().map(error).collect(),
        settings: s
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        last_synced_at: s.health.last_synced_at.map(ts),
        disconnected_at: s.health.disconnected_at.map(ts),
    }
}

pub fn entrance(e: &Entrance) -> v1::Entrance {
    v1::Entrance {
        acs_entrance_id: e.id.to_string(),
        acs_system_id: e.acs_system_id.to_string(),
        display_name: e.display_name.clone(),
        can_unlock_with_card: e.can_unlock_with_card,
        can_unlock_with_code: e.can_unlock_with_code,
        can_unlock_with_mobile_key: e.can_unlock_with_mobile_key,
        can_unlock_with_cloud_key: e.can_unlock_with_cloud_key,
        can_belong_to_reservation: e.can_belong_to_reservation,
        created_at: Some(ts(e.created_at)),
        removed_at: e.removed_at.map(ts),
    }
}

pub fn access_group(g: &AccessGroup) -> v1::AccessGroup {
    v1::AccessGroup {
        acs_access_group_id: g.id.to_string(),
        acs_system_id: g.acs_system_id.to_string(),
        display_name: g.display_name.clone(),
        acs_entrance_ids: g.entrance_ids.iter().map(ToString::to_string).collect(),
        created_at: Some(ts(g.created_at)),
    }
}

pub fn encoder(e: &Encoder) -> v1::Encoder {
    v1::Encoder {
        acs_encoder_id: e.id.to_string(),
        acs_system_id: e.acs_system_id.to_string(),
        display_name: e.display_name.clone(),
        is_online: e.is_online,
        created_at: Some(ts(e.created_at)),
    }
}

/// A webhook. The secret is never part of it (it is returned once, by `CreateWebhook`).
pub fn webhook(w: &keygate_domain::webhook::Webhook) -> v1::Webhook {
    v1::Webhook {
        webhook_id: w.id.to_string(),
        workspace_id: w.workspace_id.to_string(),
        url: w.url.clone(),
        event_types: w.event_types.clone(),
        is_enabled: w.is_enabled,
        disabled_reason: w.disabled_reason.clone().unwrap_or_default(),
        created_at: Some(ts(w.created_at)),
        last_delivery_at: w.last_delivery_at.map(ts),
        consecutive_failures: i32::try_from(w.consecutive_failures).unwrap_or(i32::MAX),
    }
}

pub fn user_identity(u: &UserIdentity) -> v1::UserIdentity {
    v1::UserIdentity {
        user_identity_id: u.id.to_string(),
        user_identity_key: u.user_identity_key.clone().unwrap_or_default(),
        full_name: u.full_name.clone(),
        email_address: u.email_address.clone().unwrap_or_default(),
        phone_number: u.phone_number.clone().unwrap_or_default(),
        display_name: u.display_name().to_owned(),
        acs_user_ids: Vec::new(),
        created_at: Some(ts(u.created_at)),
        updated_at: Some(ts(u.updated_at)),
        warnings: Vec::new(),
        errors: Vec::new(),
    }
}

/// A person with the access system users linked to it.
pub fn identity_view(v: &keygate_app::identities::IdentityView) -> v1::UserIdentity {
    let mut pb = user_identity(&v.identity);
    pb.acs_user_ids = v.acs_user_ids.iter().map(ToString::to_string).collect();
    pb
}

/// What `DeleteUserIdentity` took away.
pub fn identity_deleted(
    d: &keygate_domain::model::IdentityDeleted,
) -> v1::DeleteUserIdentityResponse {
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    v1::DeleteUserIdentityResponse {
        access_grants_deleted: n(d.grants_deleted),
        instant_keys_revoked: n(d.instant_keys_revoked),
        acs_users_unlinked: n(d.acs_users_unlinked),
    }
}

pub fn workspace(w: &Workspace) -> admin::Workspace {
    admin::Workspace {
        workspace_id: w.id.to_string(),
        name: w.name.clone(),
        workspace_type: match w.workspace_type {
            WorkspaceType::Sandbox => admin::WorkspaceType::Sandbox,
            WorkspaceType::Production => admin::WorkspaceType::Production,
        } as i32,
        is_sandbox: w.workspace_type == WorkspaceType::Sandbox,
        created_at: Some(ts(w.created_at)),
    }
}

pub fn api_key(k: &ApiKey) -> admin::ApiKey {
    admin::ApiKey {
        api_key_id: k.id.as_uuid().simple().to_string(),
        workspace_id: k.workspace_id.to_string(),
        name: k.name.clone(),
        created_at: Some(ts(k.created_at)),
        is_revoked: k.revoked_at.is_some(),
        revoked_at: k.revoked_at.map(ts),
    }
}

use keygate_domain::events::Event;
use keygate_domain::grant::{AccessGrant, AccessMethod, DoorState, Notice, PendingChange};

fn warning(n: &Notice) -> v1::ResourceWarning {
    v1::ResourceWarning {
        code: n.code.clone(),
        message: n.message.clone(),
        created_at: Some(ts(n.created_at)),
    }
}

fn error(n: &Notice) -> v1::ResourceError {
    v1::ResourceError {
        code: n.code.clone(),
        message: n.message.clone(),
        created_at: Some(ts(n.created_at)),
    }
}

pub fn access_grant(g: &AccessGrant) -> v1::AccessGrant {
    v1::AccessGrant {
        access_grant_id: g.id.to_string(),
        workspace_id: g.workspace_id.to_string(),
        access_grant_key: g.access_grant_key.clone().unwrap_or_default(),
        user_identity_id: g.user_identity_id.to_string(),
        name: g.name.clone(),
        display_name: if g.name.is_empty() {
            format!("Access grant {}", g.id)
        } else {
            g.name.clone()
        },
        acs_entrance_ids: g.entrance_ids.iter().map(ToString::to_string).collect(),
        access_method_ids: g
            .access_method_ids
            .iter()
            .map(ToString::to_string)
            .collect(),
        requested_access_methods: g
            .requested
            .iter()
            .map(|r| v1::RequestedAccessMethod {
                mode: mode(r.mode) as i32,
                display_name: r.display_name.clone(),
                created_at: Some(ts(r.created_at)),
                created_access_method_ids: r
                    .created_access_method_ids
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                code: r.code.clone().unwrap_or_default(),
            })
            .collect(),
        starts_at: Some(ts(g.starts_at)),
        ends_at: g.ends_at.map(ts),
        instant_key_url: String::new(),
        instant_key_id: g.instant_key_id.map(|i| i.to_string()).unwrap_or_default(),
        reservation_key: g.reservation_key.clone().unwrap_or_default(),
        created_at: Some(ts(g.created_at)),
        updated_at: Some(ts(g.updated_at)),
        warnings: g.warnings.iter().map(warning).collect(),
        errors: g.errors.iter().map(error).collect(),
        pending_mutations: pending(&g.pending_mutations),
    }
}

pub fn door_state(s: DoorState) -> v1::AccessState {
    match s {
        DoorState::Pending => v1::AccessState::Pending,
        DoorState::Granted => v1::AccessState::Granted,
        DoorState::Failed => v1::AccessState::Failed,
        DoorState::Revoked => v1::AccessState::Revoked,
        DoorState::Unknown => v1::AccessState::Unknown,
    }
}

fn pending(changes: &[PendingChange]) -> Vec<v1::PendingMutation> {
    changes
        .iter()
        .map(|c| v1::PendingMutation {
            mutation_code: c.mutation_code.clone(),
            message: c.message.clone(),
            created_at: Some(ts(c.created_at)),
            from: c.from.clone(),
            to: c.to.clone(),
        })
        .collect()
}

pub fn access_method(m: &AccessMethod) -> v1::AccessMethod {
    v1::AccessMethod {
        access_method_id: m.id.to_string(),
        workspace_id: m.workspace_id.to_string(),
        access_grant_id: m.access_grant_id.to_string(),
        user_identity_id: m.user_identity_id.to_string(),
        mode: mode(m.mode) as i32,
        display_name: m.display_name.clone(),
        created_at: Some(ts(m.created_at)),
        is_issued: m.is_issued,
        issued_at: m.issued_at.map(ts),
        is_card_encoding_required: m.is_card_encoding_required,
        is_ready_for_encoding: m.is_ready_for_encoding,
        code: m.code.clone().unwrap_or_default(),
        client_session_token: String::new(),
        instant_key_url: String::new(),
        instant_key_id: m.instant_key_id.map(|i| i.to_string()).unwrap_or_default(),
        acs_entrance_ids: m.doors.iter().map(|d| d.entrance_id.to_string()).collect(),
        entrances: m
            .doors
            .iter()
            .map(|d| v1::EntranceAccessState {
                acs_entrance_id: d.entrance_id.to_string(),
                acs_system_id: d.acs_system_id.to_string(),
                state: door_state(d.state) as i32,
                reason: d.reason.clone().unwrap_or_default(),
                updated_at: Some(ts(d.updated_at)),
            })
            .collect(),
        warnings: m.warnings.iter().map(warning).collect(),
        errors: m.errors.iter().map(error).collect(),
        pending_mutations: pending(&keygate_domain::grant::pending_mutations(&m.doors)),
    }
}

pub fn event(e: &Event, cursor: String) -> v1::Event {
    let s = |o: Option<String>| o.unwrap_or_default();
    v1::Event {
        event_id: e.id.to_string(),
        event_type: e.event_type.clone(),
        event_description: e.description.clone(),
        workspace_id: e.workspace_id.to_string(),
        created_at: Some(ts(e.created_at)),
        occurred_at: Some(ts(e.occurred_at)),
        access_grant_id: s(e.access_grant_id.map(|i| i.to_string())),
        access_method_id: s(e.access_method_id.map(|i| i.to_string())),
        acs_system_id: s(e.acs_system_id.map(|i| i.to_string())),
        acs_entrance_id: s(e.acs_entrance_id.map(|i| i.to_string())),
        user_identity_id: s(e.user_identity_id.map(|i| i.to_string())),
        instant_key_id: s(e.instant_key_id.map(|i| i.to_string())),
        action_attempt_id: s(e.action_attempt_id.map(|i| i.to_string())),
        cursor,
        ..Default::default()
    }
}

/// Wire → domain time.
pub fn from_ts(t: &prost_types::Timestamp) -> Option<OffsetDateTime> {
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .map(keygate_domain::model::truncate_to_micros)
}

use keygate_domain::action::{ActionAttempt, ActionType, AttemptStatus};

pub fn action_attempt(a: &ActionAttempt) -> v1::ActionAttempt {
    v1::ActionAttempt {
        action_attempt_id: a.id.to_string(),
        workspace_id: a.workspace_id.to_string(),
        action_type: match a.action_type {
            ActionType::EncodeCredential => v1::ActionType::EncodeCredential,
            ActionType::UnlockDoor => v1::ActionType::UnlockDoor,
        } as i32,
        status: match a.status {
            AttemptStatus::Pending => v1::ActionAttemptStatus::Pending,
            AttemptStatus::Success => v1::ActionAttemptStatus::Success,
            AttemptStatus::Error => v1::ActionAttemptStatus::Error,
        } as i32,
        access_method_id: a
            .access_method_id
            .map(|i| i.to_string())
            .unwrap_or_default(),
        acs_encoder_id: a.acs_encoder_id.map(|i| i.to_string()).unwrap_or_default(),
        acs_entrance_id: a.acs_entrance_id.map(|i| i.to_string()).unwrap_or_default(),
        created_at: Some(ts(a.created_at)),
        completed_at: a.completed_at.map(ts),
        result: a.result.as_ref().map(|r| v1::ActionAttemptResult {
            acs_credential_id: r.acs_credential_id.clone(),
            card_number: r.card_number.clone(),
        }),
        error: a.error.as_ref().map(|e| v1::ActionAttemptError {
            r#type: e.error_type.clone(),
            message: e.message.clone(),
        }),
    }
}

use keygate_domain::acs::{AcsCredential, AcsUser};

pub fn acs_user(u: &AcsUser) -> v1::AcsUser {
    v1::AcsUser {
        acs_user_id: u.id.to_string(),
        acs_system_id: u.acs_system_id.to_string(),
        workspace_id: u.workspace_id.to_string(),
        full_name: u.full_name.clone(),
        email_address: u.email_address.clone().unwrap_or_default(),
        phone_number: u.phone_number.clone().unwrap_or_default(),
        access_schedule: (u.access_starts_at.is_some() || u.access_ends_at.is_some()).then(|| {
            v1::AccessSchedule {
                starts_at: u.access_starts_at.map(ts),
                ends_at: u.access_ends_at.map(ts),
            }
        }),
        user_identity_id: u
            .user_identity_id
            .map(|i| i.to_string())
            .unwrap_or_default(),
        is_suspended: u.is_suspended,
        acs_access_group_ids: u.access_group_ids.iter().map(ToString::to_string).collect(),
        created_at: Some(ts(u.created_at)),
        // The user is a record in Keygate; what reaches the access system is its credentials.
        warnings: Vec::new(),
        errors: Vec::new(),
        pending_mutations: Vec::new(),
    }
}

/// A credential: the access method that implements it, with its grant's schedule. Entrances
/// are listed only where the access system assigns them to credentials directly.
pub fn credential(c: &AcsCredential, m: &AccessMethod, direct_entrances: bool) -> v1::Credential {
    v1::Credential {
        acs_credential_id: c.id.to_string(),
        workspace_id: c.workspace_id.to_string(),
        acs_user_id: c.acs_user_id.to_string(),
        acs_system_id: c.acs_system_id.to_string(),
        access_method_id: c.access_method_id.to_string(),
        access_method: mode(m.mode) as i32,
        code: m.code.clone().unwrap_or_default(),
        card_number: String::new(),
        is_issued: m.is_issued,
        issued_at: m.issued_at.map(ts),
        starts_at: Some(ts(c.starts_at)),
        ends_at: c.ends_at.map(ts),
        acs_entrance_ids: if direct_entrances {
            m.doors.iter().map(|d| d.entrance_id.to_string()).collect()
        } else {
            Vec::new()
        },
        is_card_encoding_required: m.is_card_encoding_required,
        created_at: Some(ts(c.created_at)),
        warnings: m.warnings.iter().map(warning).collect(),
        errors: m.errors.iter().map(error).collect(),
        pending_mutations: pending(&keygate_domain::grant::pending_mutations(&m.doors)),
    }
}

/// A delivery on the wire.
pub fn delivery_wire(d: &keygate_domain::delivery::Delivery) -> v1::Delivery {
    v1::Delivery {
        delivery_id: d.id.to_string(),
        instant_key_id: d.instant_key_id.to_string(),
        channel: match d.channel {
            keygate_domain::delivery::Channel::Sms => v1::DeliveryChannel::Sms,
            keygate_domain::delivery::Channel::Email => v1::DeliveryChannel::Email,
        } as i32,
        to: d.to.clone(),
        status: match d.status {
            keygate_domain::delivery::Status::Pending => v1::DeliveryStatus::Pending,
            keygate_domain::delivery::Status::Sent => v1::DeliveryStatus::Sent,
            keygate_domain::delivery::Status::Failed => v1::DeliveryStatus::Failed,
        } as i32,
        attempts: i32::try_from(d.attempts).unwrap_or(i32::MAX),
        last_error: d.last_error.clone().unwrap_or_default(),
        created_at: Some(ts(d.created_at)),
        sent_at: d.sent_at.map(ts),
        sent_to_outbox: d.sent_via == Some(keygate_domain::delivery::SentVia::Outbox),
    }
}

/// The key on the wire, with its link and QR code address; `deliveries` is left empty (see
/// [`key_view`], which fills it).
pub fn instant_key(
    links: &keygate_domain::instant_key::Links,
    k: &keygate_domain::instant_key::InstantKey,
) -> Result<v1::InstantKey, keygate_domain::Error> {
    Ok(v1::InstantKey {
        instant_key_id: k.id.to_string(),
        workspace_id: k.workspace_id.to_string(),
        instant_key_url: links.url(k.id)?,
        user_identity_id: k.user_identity_id.to_string(),
        // The page's client session is the key itself: one per key, whatever device holds it.
        client_session_id: k.id.to_string(),
        access_grant_id: k.access_grant_id.map(|g| g.to_string()).unwrap_or_default(),
        created_at: Some(ts(k.created_at)),
        expires_at: k.expires_at.map(ts),
        max_use_count: i32::try_from(k.max_use_count).unwrap_or(i32::MAX),
        use_count: i32::try_from(k.use_count).unwrap_or(i32::MAX),
        is_revoked: k.revoked_at.is_some(),
        revoked_at: k.revoked_at.map(ts),
        qr_code_url: links.qr_code_url(k.id)?,
        customization: None,
        deliveries: Vec::new(),
    })
}

/// A key with its deliveries.
pub fn key_view(
    links: &keygate_domain::instant_key::Links,
    v: &keygate_app::instant_keys::KeyView,
) -> Result<v1::InstantKey, keygate_domain::Error> {
    let mut w = instant_key(links, &v.key)?;
    w.deliveries = v.deliveries.iter().map(delivery_wire).collect();
    Ok(w)
}
