//! Seam smart locks (`devices = "locks"`): a Keygate access system whose entrances are the
//! locks of a Seam workspace (or of one of its connected accounts), reached through Seam's
//! device routes: `/locks/list`, `/access_codes/*`, `/access_grants/*`, `/locks/unlock_door` and
//! `/action_attempts/get` (reference: <https://docs.seam.co/latest/api>).
//!
//! - **Entrances**: the locks `/locks/list` answers (filtered by `connected_account_id` when the
//!   setting is given; kept only when they match it, in case a filter is ignored), the Seam
//!   `device_id` as `external_id`, named by the device's `display_name` (else
//!   `properties.name`).
//! - **Permission model**: credential based, doors assigned directly (the job's locks).
//! - **Modes**:
//!   - `code` on locks that program access codes online (`can_program_online_access_codes`,
//!     else the `access_code` capability in `capabilities_supported`), except those whose
//!     `properties.code_constraints` say `cannot_specify_pin_code`: Keygate chooses the PIN,
//!     one PIN per access method on all its locks, one access code per lock.
//!   - `cloud_key` on locks that unlock remotely (`can_remotely_unlock`, else the `lock`
//!     capability): an **access grant** (`/access_grants/create`) of the access method's user
//!     identity (`user_identity_key`, as for access systems) to the job's locks
//!     (`device_ids`), with one requested access method of mode `cloud_key` and the window.
//!     It is Seam's record of who may unlock which lock when; the unlock itself is
//!     `/locks/unlock_door`, sent by Keygate once its own checks allow it. Access grants are
//!     marked "early access" in Seam's reference, and their `cloud_key` mode is recent.
//! - **Remote unlock**: where any lock unlocks remotely (`can_remote_unlock`; those locks'
//!   `can_unlock_with_cloud_key`): `/locks/unlock_door` with the `device_id`, sent only before
//!   the unlock's deadline, its action attempt polled (`/action_attempts/get`) to `success` or
//!   `error` until the deadline (`settle` in the parent module, shared with access systems);
//!   still pending then is `unlock_not_confirmed`, never sent again.
//! - **PIN rules**: Keygate generates, lengths the intersection of the code locks'
//!   `properties.supported_code_lengths` (4 to 8 where a lock gives none): from the shortest
//!   common length up to the longest with every length in between common. When the code locks
//!   share no length, codes are not offered. Other `code_constraints` (`no_zeros`, ...) are
//!   not expressible in Keygate's rules: Seam refuses such a PIN, a Permanent error with
//!   Seam's type.
//! - **Schedules**: `starts_at`/`ends_at` on the access code (a `time_bound` code) and on the
//!   access grant. A holder without an end is an `ongoing` code when the start has come; an
//!   open-ended code window starting later is refused (`schedule_not_supported`: Seam's access
//!   codes take both ends or none).
//! - **Not supported**: cards and mobile keys on locks, card encoding, locks whose PIN Seam
//!   must choose (`cannot_specify_pin_code`), other device types (thermostats, sensors).
//!
//! ## The idempotency keys
//!
//! Every access code Keygate makes carries `common_code_key` = `keygate-access-method-<id>`
//! (the access method's id). It is the one client-chosen key `/access_codes/create` takes and
//! every access code returns (Seam: "any two access codes with the same `common_code_key` are
//! guaranteed to have the same code", which is what one PIN per access method across its locks
//! is); `/access_codes/list` has no filter by it, so the codes of a lock are listed by
//! `device_id` and matched here by lock and key. A repeat finds the code again and creates
//! nothing; a changed PIN or window is an `/access_codes/update` of the same code; codes of the
//! key on a lock the method no longer opens (`removed_entrance_ids`) are deleted. The `name` is
//! the holder's name (what the lock's own app shows), never a Keygate id.
//!
//! A cloud key's access grant carries `access_grant_key` = the same key (unique in the
//! workspace, `/access_grants/get` by it). Its locks are read back through its access methods
//! per lock (`/access_methods/list` by `access_grant_key` and `device_id`: the grant itself
//! lists spaces, not devices). A window change is `/access_grants/update`; other locks make the
//! grant anew (Seam changes no grant's devices); a create refused because the key is taken is
//! Transient (made meanwhile, or still being deleted).
//!
//! Revoke deletes every code of the key on the system's locks (`/access_codes/delete`) and the
//! key's access grant (`/access_grants/delete`); one already gone is success. Read back lists
//! the codes of each lock and keeps those of the key that are not being removed (`status`
//! `removing`), else the access grant.
//!
//! Errors are classed by the adapter's one classifier (`provider_error` in the parent module),
//! unlocks and their action attempts by its `attempt_failure` and `settle`. Seam's published
//! limits per device (10 access code creations, 10 updates, 20 deletions, 15 unlocks a
//! minute) answer 429 beyond them: Transient, retried by the orchestrator.

use std::collections::{BTreeMap, BTreeSet};

use keygate_domain::action::{AttemptError, RevokeJob, UnlockJob, unlock_errors};
use keygate_domain::capability::{
    AccessMethodMode, CapabilityDescriptor, PermissionModel, PinCodeGenerator, PinCodeRules,
};
use keygate_domain::grant::ProvisionJob;
use keygate_domain::ids::{AccessMethodId, EntranceId};
use keygate_domain::model::{NewAccessSystem, NewEntrance};
use keygate_domain::tracker::{DoorOutcome, ProvisionResult};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{
    INVALID_CONNECTION_SETTINGS, Kind, RATE_LIMIT, SYSTEM_TYPE, Target, USER_IDENTITY_KEY_PREFIX,
    attempt, attempt_failure, clip, discover_error, flag, gone_is_fine, parse_ts, provider_error,
    settle, str_of, ts,
};
use crate::provider::{Connection, HeldCredential, Holder, Link, ProviderError};

/// The `external_type` of a locks system.
pub const EXTERNAL_TYPE: &str = "seam_locks";

/// The PIN lengths assumed for a lock that does not list its `supported_code_lengths`.
const DEFAULT_LENGTHS: std::ops::RangeInclusive<u8> = 4..=8;

/// The `common_code_key` of the access codes of an access method.
pub fn access_code_key(access_method_id: AccessMethodId) -> String {
    format!("{USER_IDENTITY_KEY_PREFIX}{access_method_id}")
}

/// What discover keeps of one lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub device_id: String,
    pub name: String,
    /// Keygate may program a PIN of its choosing on it.
    pub codes: bool,
    pub remote_unlock: bool,
    /// Its PIN lengths (`properties.supported_code_lengths`), where it gives them.
    pub code_lengths: Option<BTreeSet<u8>>,
}

fn capability(d: &Value, name: &str) -> bool {
    d.get("capabilities_supported")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|c| c.as_str() == Some(name)))
}

/// A lock from a `/locks/list` (or `/devices/list`) item.
pub fn lock_of(d: &Value) -> Option<Lock> {
    let device_id = str_of(d, "device_id")?.to_owned();
    let props = d.get("properties");
    let name = str_of(d, "display_name")
        .or_else(|| props.and_then(|p| str_of(p, "name")))
        .unwrap_or(&device_id)
        .to_owned();
    let no_pin_choice = props
        .and_then(|p| p.get("code_constraints"))
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| str_of(c, "constraint_type") == Some("cannot_specify_pin_code"))
        });
    let codes = flag(d, "can_program_online_access_codes")
        .unwrap_or_else(|| capability(d, "access_code"))
        && !no_pin_choice;
    let remote_unlock = flag(d, "can_remotely_unlock").unwrap_or_else(|| capability(d, "lock"));
    let code_lengths = props
        .and_then(|p| p.get("supported_code_lengths"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .filter_map(|n| u8::try_from(n).ok())
                .filter(|n| *n >= 1)
                .collect::<BTreeSet<u8>>()
        })
        .filter(|s| !s.is_empty());
    Some(Lock {
        device_id,
        name,
        codes,
        remote_unlock,
        code_lengths,
    })
}

/// The PIN lengths every code lock takes: from the shortest common one up to the longest
/// with every length in between common. `None` when they share none.
pub fn common_lengths(locks: &[Lock]) -> Option<(u8, u8)> {
    let mut common: BTreeSet<u8> = DEFAULT_LENGTHS.collect();
    let mut any = false;
    for l in locks.iter().filter(|l| l.codes) {
        any = true;
        let theirs: BTreeSet<u8> = l
            .code_lengths
            .clone()
            .unwrap_or_else(|| DEFAULT_LENGTHS.collect());
        common = common.intersection(&theirs).copied().collect();
    }
    if !any {
        return None;
    }
    let min = *common.first()?;
    let mut max = min;
    while max < u8::MAX && common.contains(&(max + 1)) {
        max += 1;
    }
    Some((min, max))
}

/// The capabilities of a locks system.
pub fn capabilities(locks: &[Lock]) -> CapabilityDescriptor {
    let lengths = common_lengths(locks);
    let codes = lengths.is_some();
    let remote = locks.iter().any(|l| l.remote_unlock);
    CapabilityDescriptor {
        permission_model: PermissionModel::CredentialBased,
        supported_modes: [
            (codes, AccessMethodMode::Code),
            (remote, AccessMethodMode::CloudKey),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, m)| m)
        .collect(),
        pin_code_rules: lengths.map(|(min_length, max_length)| PinCodeRules {
            generator: PinCodeGenerator::Keygate,
            min_length,
            max_length,
            can_request_code: true,
            is_code_per_entrance: false,
        }),
        is_card_encoding_required: false,
        can_remote_unlock: remote,
        can_issue_mobile_keys: false,
        can_assign_entrances_directly: true,
        can_schedule_credentials: true,
        rate_limit: RATE_LIMIT,
    }
}

/// Discover: the workspace's locks (of one connected account when given).
pub(super) async fn discover(
    t: &Target,
    connection: &Connection,
    connected_account_id: Option<&str>,
) -> Result<NewAccessSystem, ProviderError> {
    let route = "/locks/list";
    let body = match connected_account_id {
        Some(ca) => json!({ "connected_account_id": ca }),
        None => json!({}),
    };
    let listed = t
        .list_all(route, "locks", body)
        .await
        .map_err(|f| discover_error(route, &f))?;
    let mut seen = BTreeSet::new();
    let mut locks = Vec::new();
    for d in &listed {
        // Seam filters by account; keep only exact matches in case a filter is ignored.
        if let Some(ca) = connected_account_id
            && str_of(d, "connected_account_id").is_some_and(|c| c != ca)
        {
            continue;
        }
        let Some(lock) = lock_of(d) else {
            return Err(ProviderError::Permanent(format!(
                "{route}: a lock without a device_id"
            )));
        };
        if !seen.insert(lock.device_id.clone()) {
            return Err(ProviderError::Permanent(format!(
                "{route}: lock {} listed twice",
                lock.device_id
            )));
        }
        locks.push(lock);
    }
    if locks.is_empty() {
        return Err(ProviderError::Permanent(match connected_account_id {
            Some(ca) => format!(
                "{INVALID_CONNECTION_SETTINGS}: connected_account_id: the Seam connected account {ca} has no lock"
            ),
            None => {
                format!("{INVALID_CONNECTION_SETTINGS}: devices: the Seam workspace has no lock")
            }
        }));
    }
    let capabilities = capabilities(&locks);
    let entrances = locks
        .iter()
        .map(|l| NewEntrance {
            external_id: l.device_id.clone(),
            display_name: l.name.clone(),
            can_unlock_with_card: false,
            can_unlock_with_code: l.codes && capabilities.supports(AccessMethodMode::Code),
            can_unlock_with_mobile_key: false,
            can_unlock_with_cloud_key: l.remote_unlock,
            can_belong_to_reservation: false,
        })
        .collect();
    Ok(NewAccessSystem {
        name: connection
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "Seam locks".to_owned()),
        external_type: EXTERNAL_TYPE.to_owned(),
        system_type: SYSTEM_TYPE.to_owned(),
        is_virtual: false,
        time_zone: connection
            .time_zone
            .clone()
            .filter(|z| !z.trim().is_empty())
            .unwrap_or_else(|| "UTC".to_owned()),
        capabilities,
        entrances,
        access_groups: Vec::new(),
        encoders: Vec::new(),
    })
}

/// The access codes of `key` on one lock, in the order Seam lists them.
async fn codes_on(t: &Target, device_id: &str, key: &str) -> Result<Vec<Value>, ProviderError> {
    let route = "/access_codes/list";
    let all = t
        .list_all(route, "access_codes", json!({ "device_id": device_id }))
        .await
        .map_err(|f| provider_error(route, &f, Kind::Read))?;
    // Listed by lock; matched here by lock and key (the list has no filter by key).
    Ok(all
        .into_iter()
        .filter(|c| {
            str_of(c, "device_id") == Some(device_id)
                && str_of(c, "common_code_key") == Some(key)
                && str_of(c, "status") != Some("removing")
        })
        .collect())
}

/// The code's window as Seam takes it: both ends (`time_bound`) or none (`ongoing`).
fn window(holder: &Holder) -> Result<Option<(OffsetDateTime, OffsetDateTime)>, ProviderError> {
    match holder.ends_at {
        Some(end) => Ok(Some((holder.starts_at, end))),
        None if holder.starts_at <= OffsetDateTime::now_utc() => Ok(None),
        None => Err(ProviderError::Permanent(
            "schedule_not_supported: a Seam access code that starts later needs an end too".into(),
        )),
    }
}

fn same_window(code: &Value, w: Option<(OffsetDateTime, OffsetDateTime)>) -> bool {
    let (s, e) = (
        parse_ts(code.get("starts_at")),
        parse_ts(code.get("ends_at")),
    );
    match w {
        Some((start, end)) => s == Some(start) && e == Some(end),
        None => s.is_none() && e.is_none(),
    }
}

fn with_window(mut body: Value, w: Option<(OffsetDateTime, OffsetDateTime)>) -> Value {
    if let (Some((start, end)), Some(o)) = (w, body.as_object_mut()) {
        o.insert("starts_at".into(), Value::String(ts(start)));
        o.insert("ends_at".into(), Value::String(ts(end)));
    }
    body
}

fn device_of(link: &Link, id: &EntranceId) -> Result<String, ProviderError> {
    link.entrances
        .get(id)
        .cloned()
        .ok_or_else(|| ProviderError::Permanent(format!("entrance_not_synced: entrance {id}")))
}

/// Deletes every code of `key` on a lock (gone is success).
async fn delete_codes(t: &Target, device_id: &str, key: &str) -> Result<(), ProviderError> {
    for c in codes_on(t, device_id, key).await? {
        if let Some(id) = str_of(&c, "access_code_id") {
            let route = "/access_codes/delete";
            gone_is_fine(
                route,
                t.post(
                    route,
                    &json!({ "access_code_id": id, "device_id": device_id }),
                )
                .await,
            )?;
        }
    }
    Ok(())
}

pub(super) async fn provision(
    t: &Target,
    link: &Link,
    job: &ProvisionJob,
    holder: &Holder,
) -> Result<ProvisionResult, ProviderError> {
    match job.mode {
        AccessMethodMode::Code => {}
        AccessMethodMode::CloudKey => return provision_cloud_key(t, link, job, holder).await,
        other => {
            return Err(ProviderError::Permanent(format!(
                "mode_not_supported: Seam locks take access codes and cloud keys, not {other:?}"
            )));
        }
    }
    let Some(pin) = job.requested_code.clone() else {
        return Err(ProviderError::Permanent(
            "code_required: Seam programs the PIN Keygate chooses; the job has none".into(),
        ));
    };
    let devices = job
        .entrance_ids
        .iter()
        .map(|id| device_of(link, id))
        .collect::<Result<Vec<_>, _>>()?;
    let w = window(holder)?;
    let key = access_code_key(job.access_method_id);
    let name = clip(&holder.full_name);
    let name = if name.is_empty() {
        "Keygate".to_owned()
    } else {
        name
    };

    // The locks it no longer opens first: their codes go.
    for id in &job.removed_entrance_ids {
        if let Some(device) = link.entrances.get(id)
            && !devices.contains(device)
        {
            delete_codes(t, device, &key).await?;
        }
    }
    for device in &devices {
        let mut ours = codes_on(t, device, &key).await?.into_iter();
        match ours.next() {
            Some(code) => {
                let id = str_of(&code, "access_code_id")
                    .unwrap_or_default()
                    .to_owned();
                if str_of(&code, "code") != Some(pin.as_str()) || !same_window(&code, w) {
                    let route = "/access_codes/update";
                    let body = with_window(
                        json!({
                            "access_code_id": id,
                            "device_id": device,
                            "code": pin,
                            "type": if w.is_some() { "time_bound" } else { "ongoing" },
                        }),
                        w,
                    );
                    t.post(route, &body)
                        .await
                        .map_err(|f| provider_error(route, &f, Kind::Change))?;
                }
                // A second code of the key on one lock (two creates raced): one stays.
                for extra in ours {
                    if let Some(x) = str_of(&extra, "access_code_id") {
                        let route = "/access_codes/delete";
                        gone_is_fine(
                            route,
                            t.post(route, &json!({ "access_code_id": x, "device_id": device }))
                                .await,
                        )?;
                    }
                }
            }
            None => {
                let route = "/access_codes/create";
                let body = with_window(
                    json!({
                        "device_id": device,
                        "name": name,
                        "code": pin,
                        "common_code_key": key,
                    }),
                    w,
                );
                let r = t
                    .post(route, &body)
                    .await
                    .map_err(|f| provider_error(route, &f, Kind::Change))?;
                if r.get("access_code")
                    .and_then(|c| str_of(c, "access_code_id"))
                    .is_none()
                {
                    return Err(ProviderError::Ambiguous(format!(
                        "{route}: no access_code in the answer"
                    )));
                }
            }
        }
    }
    Ok(ProvisionResult {
        doors: job
            .entrance_ids
            .iter()
            .map(|e| (*e, DoorOutcome::Granted))
            .collect(),
        code: Some(pin),
        card_encoding_required: false,
        client_session_token: None,
    })
}

pub(super) async fn revoke(t: &Target, link: &Link, job: &RevokeJob) -> Result<(), ProviderError> {
    let key = access_code_key(job.access_method_id);
    // Every lock of the system, not only the job's: a code left on a lock since removed from
    // the grant goes too.
    let devices: BTreeSet<&String> = link.entrances.values().collect();
    for device in devices {
        delete_codes(t, device, &key).await?;
    }
    // And the cloud key's access grant.
    if let Some(grant) = grant_of(t, &key).await?
        && let Some(id) = str_of(&grant, "access_grant_id")
    {
        let route = "/access_grants/delete";
        gone_is_fine(
            route,
            t.post(route, &json!({ "access_grant_id": id })).await,
        )?;
    }
    Ok(())
}

pub(super) async fn read_back(
    t: &Target,
    link: &Link,
    access_method_id: AccessMethodId,
) -> Result<Option<HeldCredential>, ProviderError> {
    let key = access_code_key(access_method_id);
    let mut by_device: BTreeMap<&String, Vec<EntranceId>> = BTreeMap::new();
    for (id, device) in &link.entrances {
        by_device.entry(device).or_default().push(*id);
    }
    let mut entrance_ids = Vec::new();
    let mut first: Option<Value> = None;
    for (device, ids) in by_device {
        let codes = codes_on(t, device, &key).await?;
        if let Some(c) = codes.into_iter().next() {
            entrance_ids.extend(ids);
            first.get_or_insert(c);
        }
    }
    let Some(code) = first else {
        // No code: a cloud key's access grant, or nothing.
        let Some(grant) = grant_of(t, &key).await? else {
            return Ok(None);
        };
        let covered = grant_devices(t, link, &key).await?;
        let entrance_ids = link
            .entrances
            .iter()
            .filter(|(_, d)| covered.contains(*d))
            .map(|(id, _)| *id)
            .collect();
        return Ok(Some(HeldCredential {
            entrance_ids,
            starts_at: parse_ts(grant.get("starts_at")),
            ends_at: parse_ts(grant.get("ends_at")),
            code: None,
            card_encoding_required: false,
        }));
    };
    Ok(Some(HeldCredential {
        entrance_ids,
        starts_at: parse_ts(code.get("starts_at")),
        ends_at: parse_ts(code.get("ends_at")),
        code: str_of(&code, "code").map(str::to_owned),
        card_encoding_required: false,
    }))
}

/// The access method's Seam user identity (`user_identity_key`, as for access systems), made
/// when missing.
async fn identity(
    t: &Target,
    method: AccessMethodId,
    holder: &Holder,
) -> Result<String, ProviderError> {
    let key = super::user_identity_key(method);
    let get = |route: &'static str| {
        let body = json!({ "user_identity_key": key });
        async move {
            match t.post(route, &body).await {
                Ok(v) => Ok(v
                    .get("user_identity")
                    .and_then(|u| str_of(u, "user_identity_id"))
                    .map(str::to_owned)),
                Err(f) if f.is_not_found() => Ok(None),
                Err(f) => Err(provider_error(route, &f, Kind::Read)),
            }
        }
    };
    if let Some(id) = get("/user_identities/get").await? {
        return Ok(id);
    }
    match super::create_identity(t, method, holder).await? {
        Some(id) => Ok(id),
        // Made meanwhile (a concurrent repeat): find it again.
        None => get("/user_identities/get")
            .await?
            .ok_or_else(super::identity_key_taken),
    }
}

/// The access grant of `key`, if any.
async fn grant_of(t: &Target, key: &str) -> Result<Option<Value>, ProviderError> {
    let route = "/access_grants/get";
    match t.post(route, &json!({ "access_grant_key": key })).await {
        // One being deleted (Seam's `being_deleted` warning) is gone already.
        Ok(v) => Ok(v.get("access_grant").cloned().filter(|g| {
            str_of(g, "access_grant_id").is_some()
                && !g
                    .get("warnings")
                    .and_then(Value::as_array)
                    .is_some_and(|w| {
                        w.iter()
                            .any(|w| str_of(w, "warning_code") == Some("being_deleted"))
                    })
        })),
        Err(f) if f.is_not_found() => Ok(None),
        Err(f) => Err(provider_error(route, &f, Kind::Read)),
    }
}

/// The system's locks the access grant of `key` covers (its access methods on each lock;
/// the grant itself lists spaces, not devices).
async fn grant_devices(
    t: &Target,
    link: &Link,
    key: &str,
) -> Result<BTreeSet<String>, ProviderError> {
    let route = "/access_methods/list";
    let mut covered = BTreeSet::new();
    let devices: BTreeSet<&String> = link.entrances.values().collect();
    for device in devices {
        let methods = match t
            .list_all(
                route,
                "access_methods",
                json!({ "access_grant_key": key, "device_id": device }),
            )
            .await
        {
            Ok(m) => m,
            // The grant went meanwhile.
            Err(f) if f.is_not_found() => return Ok(BTreeSet::new()),
            Err(f) => return Err(provider_error(route, &f, Kind::Read)),
        };
        if methods
            .iter()
            .any(|m| str_of(m, "mode") == Some("cloud_key"))
        {
            covered.insert(device.clone());
        }
    }
    Ok(covered)
}

/// A cloud key on locks: an access grant (`access_grant_key` = the access method's key) of the
/// method's user identity to the job's locks, with a `cloud_key` access method and the window.
/// The unlock itself is `/locks/unlock_door`; the grant is Seam's record of who may ask it.
async fn provision_cloud_key(
    t: &Target,
    link: &Link,
    job: &ProvisionJob,
    holder: &Holder,
) -> Result<ProvisionResult, ProviderError> {
    let devices = job
        .entrance_ids
        .iter()
        .map(|id| device_of(link, id))
        .collect::<Result<BTreeSet<_>, _>>()?;
    let key = access_code_key(job.access_method_id);
    let ends = holder.ends_at.map(ts);
    let mut existing = grant_of(t, &key).await?;
    if let Some(grant) = &existing {
        let id = str_of(grant, "access_grant_id")
            .unwrap_or_default()
            .to_owned();
        if grant_devices(t, link, &key).await? != devices {
            // Seam changes no grant's devices: the grant is made anew.
            let route = "/access_grants/delete";
            gone_is_fine(
                route,
                t.post(route, &json!({ "access_grant_id": id })).await,
            )?;
            existing = None;
        } else if parse_ts(grant.get("starts_at")) != Some(holder.starts_at)
            || parse_ts(grant.get("ends_at")) != holder.ends_at
        {
            let route = "/access_grants/update";
            t.post(
                route,
                &json!({ "access_grant_id": id, "starts_at": ts(holder.starts_at), "ends_at": ends }),
            )
            .await
            .map_err(|f| provider_error(route, &f, Kind::Change))?;
        }
    }
    if existing.is_none() {
        let user_identity_id = identity(t, job.access_method_id, holder).await?;
        let route = "/access_grants/create";
        let mut body = json!({
            "user_identity_id": user_identity_id,
            "access_grant_key": key,
            "device_ids": devices,
            "requested_access_methods": [{ "mode": "cloud_key" }],
            "starts_at": ts(holder.starts_at),
        });
        if let (Some(e), Some(o)) = (&ends, body.as_object_mut()) {
            o.insert("ends_at".into(), Value::String(e.clone()));
        }
        match t.post(route, &body).await {
            Ok(r)
                if r.get("access_grant")
                    .and_then(|g| str_of(g, "access_grant_id"))
                    .is_some() => {}
            Ok(_) => {
                return Err(ProviderError::Ambiguous(format!(
                    "{route}: no access_grant in the answer"
                )));
            }
            // Made meanwhile by a repeat whose answer was lost: the next attempt finds it.
            Err(super::Failure::Status {
                status: 400 | 409,
                error_type: Some(ty),
                ..
            }) if ty.contains("taken") || ty.contains("exists") => {
                return Err(ProviderError::Transient(format!(
                    "{route}: the access grant key is taken (made meanwhile, or being deleted)"
                )));
            }
            Err(f) => return Err(provider_error(route, &f, Kind::Change)),
        }
    }
    Ok(ProvisionResult {
        doors: job
            .entrance_ids
            .iter()
            .map(|e| (*e, DoorOutcome::Granted))
            .collect(),
        code: None,
        card_encoding_required: false,
        client_session_token: None,
    })
}

/// `/locks/unlock_door`, its action attempt polled until `until`.
pub(super) async fn unlock(
    t: &Target,
    link: &Link,
    job: &UnlockJob,
    until: tokio::time::Instant,
) -> Result<(), AttemptError> {
    let Some(device) = link.entrances.get(&job.acs_entrance_id).cloned() else {
        return Err(attempt(
            "entrance_not_synced",
            format!("entrance {} has no Seam device id", job.acs_entrance_id),
        ));
    };
    let route = "/locks/unlock_door";
    let left = until.saturating_duration_since(tokio::time::Instant::now());
    if left.is_zero() {
        return Err(attempt(
            unlock_errors::EXPIRED,
            "the unlock's deadline passed before it was sent",
        ));
    }
    let r = t
        .post_within(route, &json!({ "device_id": device }), left.min(t.timeout))
        .await
        .map_err(|f| attempt_failure(route, &f, "unlock_failed", unlock_errors::NOT_CONFIRMED))?;
    settle(t, r, until, unlock_errors::NOT_CONFIRMED)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_map_to_modes_and_pin_lengths() {
        let a = lock_of(&json!({
            "device_id": "d1",
            "display_name": "Front Door",
            "can_program_online_access_codes": true,
            "can_remotely_unlock": true,
            "properties": { "supported_code_lengths": [4, 5, 6, 8] },
        }))
        .unwrap_or_else(|| panic!("a lock"));
        assert!(a.codes && a.remote_unlock);
        assert_eq!(a.name, "Front Door");
        let b = lock_of(&json!({
            "device_id": "d2",
            "properties": { "name": "Back", "supported_code_lengths": [5, 6, 7] },
            "capabilities_supported": ["access_code"],
        }))
        .unwrap_or_else(|| panic!("a lock"));
        assert!(b.codes && !b.remote_unlock);
        assert_eq!(b.name, "Back");
        assert_eq!(common_lengths(&[a.clone(), b.clone()]), Some((5, 6)));
        assert_eq!(common_lengths(std::slice::from_ref(&a)), Some((4, 6)));
        let caps = capabilities(&[a.clone(), b]);
        assert_eq!(
            caps.supported_modes,
            [AccessMethodMode::Code, AccessMethodMode::CloudKey]
        );
        assert!(caps.can_remote_unlock && caps.can_assign_entrances_directly);
        let no_pin = lock_of(&json!({
            "device_id": "d3",
            "can_program_online_access_codes": true,
            "can_remotely_unlock": false,
            "properties": { "code_constraints": [{ "constraint_type": "cannot_specify_pin_code" }] },
        }))
        .unwrap_or_else(|| panic!("a lock"));
        assert!(!no_pin.codes);
        let caps = capabilities(std::slice::from_ref(&no_pin));
        assert!(caps.supported_modes.is_empty() && caps.pin_code_rules.is_none());
        assert!(!caps.can_remote_unlock);
        let disjoint = Lock {
            code_lengths: Some([4].into()),
            ..a.clone()
        };
        let other = Lock {
            code_lengths: Some([6].into()),
            ..a
        };
        assert_eq!(common_lengths(&[disjoint, other]), None);
    }
}
