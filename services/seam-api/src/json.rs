//! Keygate's resources (as `keygate-wire` puts them on the gRPC wire, links filled) in Seam's
//! JSON: Seam's names, fields and enums from its OpenAPI (`@seamapi/types`), times in RFC 3339
//! UTC, absent values as `null` where Seam's schema has them nullable and left out where it
//! has them optional. Each conversion destructures its message, so a field added to the proto
//! does not compile until it is placed (or knowingly dropped) here.

use keygate_proto::v1;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;

/// A time, or `null`.
pub fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(keygate_wire::convert::from_ts)
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

fn opt_str(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_owned())
    }
}

/// Inserts `key` only when `value` is not empty (Seam's optional fields).
fn put_if(m: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        m.insert(key.into(), Value::String(value.to_owned()));
    }
}

pub fn mode(i: i32) -> &'static str {
    match v1::AccessMethodMode::try_from(i).unwrap_or(v1::AccessMethodMode::Unspecified) {
        v1::AccessMethodMode::Card => "card",
        v1::AccessMethodMode::Code => "code",
        v1::AccessMethodMode::MobileKey => "mobile_key",
        v1::AccessMethodMode::CloudKey => "cloud_key",
        v1::AccessMethodMode::Unspecified => "unknown",
    }
}

fn warnings(ws: &[v1::ResourceWarning]) -> Value {
    ws.iter()
        .map(|w| {
            json!({
                "warning_code": w.code,
                "message": w.message,
                "created_at": time(w.created_at.as_ref()),
            })
        })
        .collect()
}

fn errors(es: &[v1::ResourceError]) -> Value {
    es.iter()
        .map(|e| {
            json!({
                "error_code": e.code,
                "message": e.message,
                "created_at": time(e.created_at.as_ref()),
            })
        })
        .collect()
}

/// The times of an `updating_access_times` change (Keygate keeps them as compact JSON).
fn times(raw: &str) -> Value {
    let parsed: Map<String, Value> = serde_json::from_str(raw).unwrap_or_default();
    json!({
        "starts_at": parsed.get("starts_at").cloned().unwrap_or(Value::Null),
        "ends_at": parsed.get("ends_at").cloned().unwrap_or(Value::Null),
    })
}

/// An access method's changes in flight, in Seam's shapes: provisioning and revoking name
/// devices (Keygate's doors are entrances, so the lists are empty), time changes their times.
fn method_mutations(ms: &[v1::PendingMutation]) -> Value {
    ms.iter()
        .map(|m| {
            let (from, to) = if m.mutation_code == "updating_access_times" {
                (times(&m.from), times(&m.to))
            } else {
                (json!({"device_ids": []}), json!({"device_ids": []}))
            };
            json!({
                "mutation_code": m.mutation_code,
                "message": m.message,
                "created_at": time(m.created_at.as_ref()),
                "from": from,
                "to": to,
            })
        })
        .collect()
}

/// A grant's changes in flight: Seam's grants show only time changes (with the methods they
/// touch); provisioning and revoking show on each access method.
fn grant_mutations(ms: &[v1::PendingMutation], method_ids: &[String]) -> Value {
    ms.iter()
        .filter(|m| m.mutation_code == "updating_access_times")
        .map(|m| {
            json!({
                "mutation_code": m.mutation_code,
                "message": m.message,
                "created_at": time(m.created_at.as_ref()),
                "access_method_ids": method_ids,
                "from": times(&m.from),
                "to": times(&m.to),
            })
        })
        .collect()
}

pub fn access_grant(g: &v1::AccessGrant) -> Value {
    let v1::AccessGrant {
        access_grant_id,
        workspace_id,
        access_grant_key,
        user_identity_id,
        name,
        display_name,
        acs_entrance_ids: _, // Seam names places by location/space, not by entrance, here.
        access_method_ids,
        requested_access_methods,
        starts_at,
        ends_at,
        instant_key_url,
        reservation_key,
        created_at,
        updated_at: _,
        warnings: w,
        errors: e,
        pending_mutations,
        instant_key_id: _,
    } = g;
    let requested: Vec<Value> = requested_access_methods
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("mode".into(), mode(r.mode).into());
            m.insert("display_name".into(), r.display_name.clone().into());
            m.insert("created_at".into(), time(r.created_at.as_ref()));
            m.insert(
                "created_access_method_ids".into(),
                json!(r.created_access_method_ids),
            );
            put_if(&mut m, "code", &r.code);
            Value::Object(m)
        })
        .collect();
    let mut m = Map::new();
    m.insert("access_grant_id".into(), access_grant_id.clone().into());
    m.insert("workspace_id".into(), workspace_id.clone().into());
    m.insert("user_identity_id".into(), user_identity_id.clone().into());
    m.insert("location_ids".into(), json!([]));
    m.insert("space_ids".into(), json!([]));
    m.insert("requested_access_methods".into(), Value::Array(requested));
    m.insert("access_method_ids".into(), json!(access_method_ids));
    m.insert("name".into(), opt_str(name));
    m.insert("display_name".into(), display_name.clone().into());
    m.insert("created_at".into(), time(created_at.as_ref()));
    m.insert("starts_at".into(), time(starts_at.as_ref()));
    m.insert("ends_at".into(), time(ends_at.as_ref()));
    let mut w = warnings(w);
    // Seam's grant-level time-change warning names the methods it touches.
    for item in w.as_array_mut().into_iter().flatten() {
        if item["warning_code"] == "updating_access_times"
            && let Some(o) = item.as_object_mut()
        {
            o.insert("access_method_ids".into(), json!(access_method_ids));
        }
    }
    m.insert("warnings".into(), w);
    m.insert("errors".into(), errors(e));
    m.insert(
        "pending_mutations".into(),
        grant_mutations(pending_mutations, access_method_ids),
    );
    put_if(&mut m, "instant_key_url", instant_key_url);
    put_if(&mut m, "access_grant_key", access_grant_key);
    put_if(&mut m, "reservation_key", reservation_key);
    Value::Object(m)
}

pub fn access_method(a: &v1::AccessMethod) -> Value {
    let v1::AccessMethod {
        access_method_id,
        workspace_id,
        access_grant_id: _,
        user_identity_id: _,
        mode: md,
        display_name,
        created_at,
        is_issued,
        issued_at,
        is_card_encoding_required,
        is_ready_for_encoding,
        code,
        client_session_token,
        instant_key_url,
        acs_entrance_ids: _,
        entrances: _,
        warnings: w,
        errors: e,
        pending_mutations,
        instant_key_id: _,
    } = a;
    let mut m = Map::new();
    m.insert("access_method_id".into(), access_method_id.clone().into());
    m.insert("workspace_id".into(), workspace_id.clone().into());
    m.insert("display_name".into(), display_name.clone().into());
    m.insert("mode".into(), mode(*md).into());
    m.insert("created_at".into(), time(created_at.as_ref()));
    m.insert("issued_at".into(), time(issued_at.as_ref()));
    m.insert("is_issued".into(), (*is_issued).into());
    if *md == v1::AccessMethodMode::Card as i32 {
        m.insert(
            "is_encoding_required".into(),
            (*is_card_encoding_required).into(),
        );
        m.insert(
            "is_ready_for_encoding".into(),
            (*is_ready_for_encoding).into(),
        );
    }
    if *md == v1::AccessMethodMode::Code as i32 {
        m.insert("code".into(), opt_str(code));
    }
    put_if(&mut m, "client_session_token", client_session_token);
    put_if(&mut m, "instant_key_url", instant_key_url);
    m.insert("warnings".into(), warnings(w));
    m.insert("errors".into(), errors(e));
    m.insert(
        "pending_mutations".into(),
        method_mutations(pending_mutations),
    );
    Value::Object(m)
}

pub fn acs_system(s: &v1::AccessSystem) -> Value {
    let v1::AccessSystem {
        acs_system_id,
        workspace_id,
        name,
        external_type,
        system_type: _,
        is_virtual: _,
        time_zone,
        capabilities: _,
        created_at,
        warnings: w,
        errors: e,
        settings: _,
        last_synced_at: _,
        disconnected_at: _,
    } = s;
    // Keygate connects a system directly, without Seam's connected accounts: the system stands
    // for its own account.
    json!({
        "acs_system_id": acs_system_id,
        "workspace_id": workspace_id,
        "name": name,
        "external_type": external_type,
        "external_type_display_name": name,
        "system_type": external_type,
        "system_type_display_name": name,
        "is_credential_manager": false,
        "location": {"time_zone": opt_str(time_zone)},
        "connected_account_id": acs_system_id,
        "connected_account_ids": [acs_system_id],
        "image_url": "",
        "image_alt_text": name,
        "created_at": time(created_at.as_ref()),
        "warnings": warnings(w),
        "errors": errors(e),
    })
}

pub fn acs_entrance(e: &v1::Entrance) -> Value {
    let v1::Entrance {
        acs_entrance_id,
        acs_system_id,
        display_name,
        can_unlock_with_card,
        can_unlock_with_code,
        can_unlock_with_mobile_key,
        can_unlock_with_cloud_key,
        can_belong_to_reservation,
        created_at,
        removed_at: _,
    } = e;
    json!({
        "acs_entrance_id": acs_entrance_id,
        "acs_system_id": acs_system_id,
        "connected_account_id": acs_system_id,
        "display_name": display_name,
        "space_ids": [],
        "created_at": time(created_at.as_ref()),
        "can_unlock_with_card": can_unlock_with_card,
        "can_unlock_with_code": can_unlock_with_code,
        "can_unlock_with_mobile_key": can_unlock_with_mobile_key,
        "can_unlock_with_cloud_key": can_unlock_with_cloud_key,
        "can_belong_to_reservation": can_belong_to_reservation,
        "errors": [],
        "warnings": [],
    })
}

pub fn acs_encoder(e: &v1::Encoder) -> Value {
    let v1::Encoder {
        acs_encoder_id,
        acs_system_id,
        display_name,
        is_online: _,
        created_at,
    } = e;
    json!({
        "acs_encoder_id": acs_encoder_id,
        "acs_system_id": acs_system_id,
        "connected_account_id": acs_system_id,
        "display_name": display_name,
        "created_at": time(created_at.as_ref()),
        "errors": [],
    })
}

/// Seam's access group type for a system's vendor type.
fn group_type(system_external_type: &str) -> String {
    match system_external_type {
        "salto_ks_site" => "salto_ks_access_group".into(),
        "salto_space_system" => "salto_space_group".into(),
        "brivo_account" => "brivo_group".into(),
        "kisi_organization" => "kisi_access_group".into(),
        "pti_site" => "pti_access_level".into(),
        "avigilon_alta_org" => "avigilon_alta_group".into(),
        "dormakaba_community_site" => "dormakaba_community_access_group".into(),
        "dormakaba_ambiance_site" => "dormakaba_ambiance_access_group".into(),
        other => format!("{other}_group"),
    }
}

/// An access group of a system of vendor type `system_external_type`.
pub fn acs_access_group(g: &v1::AccessGroup, system_external_type: &str) -> Value {
    let v1::AccessGroup {
        acs_access_group_id,
        acs_system_id,
        display_name,
        acs_entrance_ids: _,
        created_at,
    } = g;
    json!({
        "acs_access_group_id": acs_access_group_id,
        "acs_system_id": acs_system_id,
        "connected_account_id": acs_system_id,
        "name": display_name,
        "display_name": display_name,
        "created_at": time(created_at.as_ref()),
        "is_managed": true,
        "access_group_type": group_type(system_external_type),
        "access_group_type_display_name": display_name,
        "external_type": group_type(system_external_type),
        "external_type_display_name": display_name,
        "pending_mutations": [],
        "warnings": [],
        "errors": [],
    })
}

/// An action attempt. `credential` is the encoded card as Seam's `acs_credential`, which a
/// successful `ENCODE_CREDENTIAL` carries as its result (see [`encoded_card`]).
pub fn action_attempt(a: &v1::ActionAttempt, credential: Option<Value>) -> Value {
    let v1::ActionAttempt {
        action_attempt_id,
        workspace_id: _,
        action_type,
        status,
        access_method_id: _,
        acs_encoder_id: _,
        acs_entrance_id: _,
        created_at: _,
        completed_at: _,
        result,
        error,
    } = a;
    let action_type = match v1::ActionType::try_from(*action_type) {
        Ok(v1::ActionType::EncodeCredential) => "ENCODE_CREDENTIAL",
        Ok(v1::ActionType::ScanCredential) => "SCAN_CREDENTIAL",
        Ok(v1::ActionType::AssignCredential) => "ASSIGN_CREDENTIAL",
        Ok(v1::ActionType::UnlockDoor) => "UNLOCK_DOOR",
        _ => "UNKNOWN",
    };
    let status = match v1::ActionAttemptStatus::try_from(*status) {
        Ok(v1::ActionAttemptStatus::Success) => "success",
        Ok(v1::ActionAttemptStatus::Error) => "error",
        _ => "pending",
    };
    let result = match (status, result) {
        ("success", _) if credential.is_some() => credential.unwrap_or_default(),
        ("success", Some(r)) => {
            let mut m = Map::new();
            put_if(&mut m, "acs_credential_id", &r.acs_credential_id);
            put_if(&mut m, "card_number", &r.card_number);
            Value::Object(m)
        }
        ("success", None) => json!({}),
        _ => Value::Null,
    };
    let error = match error {
        Some(e) if status == "error" => json!({"type": e.r#type, "message": e.message}),
        _ => Value::Null,
    };
    json!({
        "action_attempt_id": action_attempt_id,
        "action_type": action_type,
        "status": status,
        "result": result,
        "error": error,
    })
}

pub fn event(e: &v1::Event) -> Value {
    let v1::Event {
        event_id,
        event_type,
        event_description,
        workspace_id,
        created_at,
        occurred_at,
        access_grant_id,
        access_method_id,
        acs_system_id,
        acs_entrance_id,
        acs_user_id,
        acs_credential_id,
        user_identity_id,
        instant_key_id,
        action_attempt_id,
        webhook_id,
        delivery_id,
        cursor: _,
    } = e;
    let mut m = Map::new();
    m.insert("event_id".into(), event_id.clone().into());
    m.insert("event_type".into(), event_type.clone().into());
    m.insert("event_description".into(), event_description.clone().into());
    m.insert("workspace_id".into(), workspace_id.clone().into());
    m.insert("created_at".into(), time(created_at.as_ref()));
    m.insert("occurred_at".into(), time(occurred_at.as_ref()));
    for (k, v) in [
        ("access_grant_id", access_grant_id),
        ("access_method_id", access_method_id),
        ("acs_system_id", acs_system_id),
        ("acs_entrance_id", acs_entrance_id),
        ("acs_user_id", acs_user_id),
        ("acs_credential_id", acs_credential_id),
        ("user_identity_id", user_identity_id),
        ("instant_key_id", instant_key_id),
        ("action_attempt_id", action_attempt_id),
        ("webhook_id", webhook_id),
        ("delivery_id", delivery_id),
    ] {
        put_if(&mut m, k, v);
    }
    // Seam's access method events name their grants as a list.
    if !access_grant_id.is_empty() {
        m.insert("access_grant_ids".into(), json!([access_grant_id]));
    }
    Value::Object(m)
}

pub fn user_identity(u: &v1::UserIdentity, workspace_id: &str) -> Value {
    let v1::UserIdentity {
        user_identity_id,
        user_identity_key,
        full_name,
        email_address,
        phone_number,
        display_name,
        acs_user_ids,
        created_at,
        updated_at: _,
        warnings: w,
        errors: e,
    } = u;
    json!({
        "user_identity_id": user_identity_id,
        "user_identity_key": opt_str(user_identity_key),
        "full_name": opt_str(full_name),
        "email_address": opt_str(email_address),
        "phone_number": opt_str(phone_number),
        "display_name": display_name,
        "acs_user_ids": acs_user_ids,
        "workspace_id": workspace_id,
        "created_at": time(created_at.as_ref()),
        "warnings": warnings(w),
        "errors": errors(e),
    })
}

pub fn instant_key(k: &v1::InstantKey) -> Value {
    let v1::InstantKey {
        instant_key_id,
        workspace_id,
        instant_key_url,
        user_identity_id,
        client_session_id,
        access_grant_id: _,
        created_at,
        expires_at,
        max_use_count: _,
        use_count: _,
        is_revoked: _,
        revoked_at: _,
        qr_code_url: _,
        customization: _,
        deliveries: _,
    } = k;
    json!({
        "instant_key_id": instant_key_id,
        "workspace_id": workspace_id,
        "instant_key_url": instant_key_url,
        "user_identity_id": user_identity_id,
        "client_session_id": client_session_id,
        "created_at": time(created_at.as_ref()),
        "expires_at": time(expires_at.as_ref()),
    })
}

/// A webhook; `secret` only in the reply of its creation (Seam's field).
pub fn webhook(w: &v1::Webhook, secret: &str) -> Value {
    let v1::Webhook {
        webhook_id,
        workspace_id: _,
        url,
        event_types,
        is_enabled: _,
        disabled_reason: _,
        created_at: _,
        last_delivery_at: _,
        consecutive_failures: _,
    } = w;
    let mut m = Map::new();
    m.insert("webhook_id".into(), webhook_id.clone().into());
    m.insert("url".into(), url.clone().into());
    m.insert("event_types".into(), json!(event_types));
    put_if(&mut m, "secret", secret);
    Value::Object(m)
}

pub fn acs_user(u: &v1::AcsUser) -> Value {
    let v1::AcsUser {
        acs_user_id,
        acs_system_id,
        workspace_id,
        full_name,
        email_address,
        phone_number,
        access_schedule,
        user_identity_id,
        is_suspended,
        acs_access_group_ids: _,
        created_at,
        warnings: w,
        errors: e,
        pending_mutations,
    } = u;
    let mut m = Map::new();
    m.insert("acs_user_id".into(), acs_user_id.clone().into());
    m.insert("acs_system_id".into(), acs_system_id.clone().into());
    m.insert("connected_account_id".into(), acs_system_id.clone().into());
    m.insert("workspace_id".into(), workspace_id.clone().into());
    m.insert("display_name".into(), full_name.clone().into());
    m.insert("is_managed".into(), true.into());
    m.insert("is_suspended".into(), (*is_suspended).into());
    m.insert("created_at".into(), time(created_at.as_ref()));
    m.insert("last_successful_sync_at".into(), Value::Null);
    put_if(&mut m, "full_name", full_name);
    put_if(&mut m, "email_address", email_address);
    put_if(&mut m, "phone_number", phone_number);
    put_if(&mut m, "user_identity_id", user_identity_id);
    if let Some(s) = access_schedule {
        m.insert(
            "access_schedule".into(),
            json!({
                "starts_at": time(s.starts_at.as_ref()),
                "ends_at": time(s.ends_at.as_ref()),
            }),
        );
    }
    m.insert("warnings".into(), warnings(w));
    m.insert("errors".into(), errors(e));
    m.insert(
        "pending_mutations".into(),
        method_mutations(pending_mutations),
    );
    Value::Object(m)
}

pub fn acs_credential(c: &v1::Credential) -> Value {
    let v1::Credential {
        acs_credential_id,
        workspace_id,
        acs_user_id,
        acs_system_id,
        access_method_id: _,
        access_method,
        code,
        card_number,
        is_issued,
        issued_at,
        starts_at,
        ends_at,
        acs_entrance_ids: _,
        is_card_encoding_required: _,
        created_at,
        warnings: w,
        errors: e,
        pending_mutations: _,
    } = c;
    let mut m = Map::new();
    m.insert("acs_credential_id".into(), acs_credential_id.clone().into());
    m.insert("workspace_id".into(), workspace_id.clone().into());
    m.insert("acs_system_id".into(), acs_system_id.clone().into());
    m.insert("connected_account_id".into(), acs_system_id.clone().into());
    m.insert("access_method".into(), mode(*access_method).into());
    m.insert(
        "display_name".into(),
        if code.is_empty() {
            mode(*access_method).into()
        } else {
            code.clone().into()
        },
    );
    m.insert("is_managed".into(), true.into());
    m.insert("is_issued".into(), (*is_issued).into());
    m.insert("issued_at".into(), time(issued_at.as_ref()));
    m.insert("created_at".into(), time(created_at.as_ref()));
    m.insert("code".into(), opt_str(code));
    m.insert("card_number".into(), opt_str(card_number));
    put_if(&mut m, "acs_user_id", acs_user_id);
    for (k, t) in [("starts_at", starts_at), ("ends_at", ends_at)] {
        if let Value::String(s) = time(t.as_ref()) {
            m.insert(k.into(), s.into());
        }
    }
    m.insert("warnings".into(), warnings(w));
    m.insert("errors".into(), errors(e));
    Value::Object(m)
}

/// The card a successful encoding wrote, as Seam's `acs_credential`: in Keygate a card is its
/// access method, so the credential's id is the method's; the card number is the vendor's.
pub fn encoded_card(a: &v1::ActionAttempt, m: &v1::AccessMethod, workspace_id: &str) -> Value {
    let system = m
        .entrances
        .first()
        .map(|e| e.acs_system_id.clone())
        .unwrap_or_default();
    let card_number = a
        .result
        .as_ref()
        .map(|r| r.card_number.clone())
        .unwrap_or_default();
    let at = time(a.completed_at.as_ref().or(a.created_at.as_ref()));
    json!({
        "acs_credential_id": m.access_method_id,
        "acs_system_id": system,
        "connected_account_id": system,
        "workspace_id": workspace_id,
        "access_method": "card",
        "display_name": if card_number.is_empty() { m.display_name.clone() } else { card_number.clone() },
        "card_number": opt_str(&card_number),
        "is_managed": true,
        "is_issued": true,
        "issued_at": at,
        "created_at": at,
        "errors": [],
        "warnings": [],
    })
}
