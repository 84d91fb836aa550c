//! The provider conformance suite: the same scenarios for every [`AccessSystemProvider`]
//! (the virtual systems, the gRPC connector, the vendor adapters), so every adapter is held to
//! the one contract the orchestrator and the reconciler rely on.
//!
//! Behind the `testing` feature. An adapter's test supplies a [`Harness`] (how a discovered
//! system becomes a stored [`Site`] with ids, and how to make its next call fail with a given
//! [`FaultClass`]) and calls each scenario for each of its system types:
//!
//! ```ignore
//! use keygate_providers::conformance::{self, Harness};
//!
//! #[tokio::test]
//! async fn provision_is_idempotent() {
//!     let (provider, harness) = my_adapter_against_its_fake_vendor().await;
//!     for t in provider.system_types() {
//!         conformance::provision_is_idempotent(&provider, &harness, &t).await;
//!     }
//! }
//! ```
//!
//! Scenarios (each `pub async fn`, returning nothing, panicking with the system type on a
//! broken rule):
//!
//! 1. [`discover_is_consistent`]: capabilities and at least one entrance; no entrance claims a
//!    mode its system does not support, nor a cloud key on a system without remote unlock.
//! 2. [`provision_is_idempotent`]: for every supported mode, provisioning twice by the same
//!    access method id returns the same result and leaves one credential, which reads back
//!    with the job's entrances and times, and the PIN where the system makes or programs one.
//! 3. [`revoke_is_idempotent`]: revoke removes (read back `None`); revoking again, or what
//!    was never there, succeeds.
//! 4. [`unlock_follows_capabilities`]: a remote unlock of a cloud-key entrance succeeds where
//!    the system can unlock remotely; elsewhere it fails typed `remote_unlock_not_supported`.
//! 5. [`encode_follows_capabilities`]: a card is encoded where the system requires encoding and
//!    has an encoder; elsewhere the attempt fails typed.
//! 6. [`error_classes_are_honest`]: with the harness's fault hook, a transient fault is
//!    [`ProviderError::Transient`] and applied nothing; an ambiguous one is
//!    [`ProviderError::Ambiguous`] and a repeat of the same call converges to exactly one
//!    credential; a permanent one is [`ProviderError::Permanent`] and applied nothing. Fault
//!    classes the harness cannot produce are skipped (and logged).
//! 7. [`declared_rate_limit_is_usable`]: the declared `rate_limit` is a finite positive rate
//!    with a burst of at least one. **Obedience** to it is the orchestrator's: every provider
//!    call goes through its per-system token bucket (`services/orchestrator/src/
//!    vendor_limits.rs`), so the check that calls per second stay within rate + burst runs
//!    there, through [`Metered`] and [`assert_within_rate`], for the declared limit of each
//!    virtual type. An adapter that also limits itself can reuse both against its own calls.
//!
//! [`run_all`] runs scenarios 1 to 7 for one system type.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use keygate_domain::action::{
    AttemptError, EncodeJob, EncodedCard, RevokeJob, UnlockJob, unlock_errors,
};
use keygate_domain::capability::{
    AccessMethodMode, CapabilityDescriptor, PermissionModel, PinCodeGenerator, ProviderRateLimit,
};
use keygate_domain::grant::ProvisionJob;
use keygate_domain::ids::{
    AccessGrantId, AccessGroupId, AccessMethodId, AccessSystemId, ActionAttemptId, EncoderId,
    EntranceId, UserIdentityId, WorkspaceId,
};
use keygate_domain::model::{
    AccessGroup, AccessSystem, Encoder, Entrance, ExternalIds, NewAccessSystem, now,
};
use keygate_domain::tracker::{DoorOutcome, ProvisionResult};
use time::OffsetDateTime;

use crate::provider::{AccessSystemProvider, Connection, HeldCredential, Holder, ProviderError};

/// The error type of an encoding on a system that does not encode cards (the trait's default).
pub const ENCODING_NOT_SUPPORTED: &str = "credential_cannot_be_reissued";

/// A connected system as the store would hold it: the system and what it has, with ids.
#[derive(Clone, Debug)]
pub struct Site {
    pub system: AccessSystem,
    pub entrances: Vec<Entrance>,
    pub access_groups: Vec<AccessGroup>,
    pub encoders: Vec<Encoder>,
    /// The system's own ids of the entrances, groups and encoders above, as a
    /// [`crate::Directory`] would give them to an adapter that calls the system by its ids.
    pub external_ids: ExternalIds,
}

impl Site {
    /// The site `discovered` would become when stored: fresh ids for the system and everything
    /// it has, group members resolved from their indexes. Enough for adapters whose calls
    /// carry Keygate's ids; an adapter that maps them to the vendor's builds its own.
    pub fn from_discovery(discovered: NewAccessSystem, workspace_id: WorkspaceId) -> Self {
        let id = AccessSystemId::new();
        let created_at = now();
        let entrances: Vec<Entrance> = discovered
            .entrances
            .iter()
            .map(|e| Entrance {
                id: EntranceId::new(),
                acs_system_id: id,
                display_name: e.display_name.clone(),
                can_unlock_with_card: e.can_unlock_with_card,
                can_unlock_with_code: e.can_unlock_with_code,
                can_unlock_with_mobile_key: e.can_unlock_with_mobile_key,
                can_unlock_with_cloud_key: e.can_unlock_with_cloud_key,
                can_belong_to_reservation: e.can_belong_to_reservation,
                created_at,
                removed_at: None,
            })
            .collect();
        let mut external_ids = ExternalIds::default();
        for (e, n) in entrances.iter().zip(&discovered.entrances) {
            external_ids.entrances.insert(e.id, n.external_id.clone());
        }
        let access_groups: Vec<AccessGroup> = discovered
            .access_groups
            .iter()
            .map(|g| AccessGroup {
                id: AccessGroupId::new(),
                acs_system_id: id,
                display_name: g.display_name.clone(),
                entrance_ids: g
                    .entrance_indexes
                    .iter()
                    .filter_map(|&i| entrances.get(i).map(|e| e.id))
                    .collect(),
                created_at,
            })
            .collect();
        for (g, n) in access_groups.iter().zip(&discovered.access_groups) {
            external_ids
                .access_groups
                .insert(g.id, n.external_id.clone());
        }
        let encoders: Vec<Encoder> = discovered
            .encoders
            .iter()
            .map(|e| Encoder {
                id: EncoderId::new(),
                acs_system_id: id,
                display_name: e.display_name.clone(),
                is_online: e.is_online,
                created_at,
            })
            .collect();
        for (e, n) in encoders.iter().zip(&discovered.encoders) {
            external_ids.encoders.insert(e.id, n.external_id.clone());
        }
        Self {
            system: AccessSystem {
                id,
                workspace_id,
                name: discovered.name,
                external_type: discovered.external_type,
                system_type: discovered.system_type,
                is_virtual: discovered.is_virtual,
                time_zone: discovered.time_zone,
                capabilities: discovered.capabilities,
                created_at,
                health: Default::default(),
                settings: Default::default(),
            },
            entrances,
            access_groups,
            encoders,
            external_ids,
        }
    }

    fn caps(&self) -> &CapabilityDescriptor {
        &self.system.capabilities
    }
}

/// A class of provider failure the harness can script for the next call to a system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultClass {
    /// Nothing applied (a 503, a refused connection).
    Transient,
    /// Applied, but the caller cannot tell (a 500 after the write).
    AmbiguousApplied,
    /// Not applied, and the caller cannot tell (a timeout before the write).
    AmbiguousNotApplied,
    /// Refused for good (a 400/403); nothing applied.
    Permanent,
}

impl FaultClass {
    pub const ALL: [FaultClass; 4] = [
        FaultClass::Transient,
        FaultClass::AmbiguousApplied,
        FaultClass::AmbiguousNotApplied,
        FaultClass::Permanent,
    ];
}

/// What an adapter's test supplies to run the suite.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Connects a system of `system_type` through `provider.discover` and returns it as stored.
    /// The default stores nothing and uses [`Site::from_discovery`].
    async fn connect(&self, provider: &dyn AccessSystemProvider, system_type: &str) -> Site {
        let discovered = provider
            .discover(system_type, &Connection::default())
            .await
            .unwrap_or_else(|e| panic!("{system_type}: discover failed: {e}"));
        Site::from_discovery(discovered, WorkspaceId::new())
    }

    /// Makes the next write call (provision, revoke, unlock, encode) to `system` fail with
    /// `class`. Returns `false` when this adapter's test cannot produce that class: the
    /// scenarios using it are then skipped.
    fn inject(&self, system: &AccessSystem, class: FaultClass) -> bool;

    /// How many credentials `system` holds on the vendor side, where the test can see it: lets
    /// the suite prove a repeated call created nothing new. `None` skips those checks.
    async fn held_count(&self, system: &AccessSystem) -> Option<usize> {
        let _ = system;
        None
    }
}

/// A person to provision for. Times are whole seconds, since many vendors keep no less.
pub fn holder() -> Holder {
    let start = now().replace_nanosecond(0).unwrap_or_else(|_| now());
    Holder {
        user_identity_id: UserIdentityId::new(),
        full_name: "Conformance Tester".into(),
        email_address: Some("conformance@example.com".into()),
        phone_number: None,
        starts_at: start,
        ends_at: Some(start + time::Duration::days(1)),
    }
}

fn can_open(e: &Entrance, mode: AccessMethodMode) -> bool {
    match mode {
        AccessMethodMode::Card => e.can_unlock_with_card,
        AccessMethodMode::Code => e.can_unlock_with_code,
        AccessMethodMode::MobileKey => e.can_unlock_with_mobile_key,
        AccessMethodMode::CloudKey => e.can_unlock_with_cloud_key,
    }
}

/// A provision job for `mode` as the planner would make it: on an access-group system, a group
/// whose every door takes the mode; elsewhere up to two doors that take it. `None` when no door
/// of the site takes the mode.
pub fn provision_job(site: &Site, mode: AccessMethodMode) -> Option<ProvisionJob> {
    let caps = site.caps();
    let opens = |id: &EntranceId| {
        site.entrances
            .iter()
            .any(|e| e.id == *id && can_open(e, mode))
    };
    let (entrance_ids, access_group_ids) = match caps.permission_model {
        PermissionModel::AccessGroups => {
            let g = site
                .access_groups
                .iter()
                .find(|g| !g.entrance_ids.is_empty() && g.entrance_ids.iter().all(opens))?;
            (g.entrance_ids.clone(), vec![g.id])
        }
        _ => {
            let doors: Vec<EntranceId> = site
                .entrances
                .iter()
                .filter(|e| can_open(e, mode))
                .take(2)
                .map(|e| e.id)
                .collect();
            if doors.is_empty() {
                return None;
            }
            (doors, Vec::new())
        }
    };
    let requested_code = (mode == AccessMethodMode::Code)
        .then_some(caps.pin_code_rules.as_ref())
        .flatten()
        .filter(|r| r.generator == PinCodeGenerator::Keygate)
        .map(|r| {
            let len = usize::from(r.min_length.max(4));
            "2468013579".chars().cycle().take(len).collect::<String>()
        });
    Some(ProvisionJob {
        access_grant_id: AccessGrantId::new(),
        access_method_id: AccessMethodId::new(),
        acs_system_id: site.system.id,
        mode,
        entrance_ids,
        access_group_ids,
        requested_code,
        removed_entrance_ids: Vec::new(),
        update: false,
    })
}

/// A job for the first supported mode that some door takes.
fn any_job(site: &Site) -> ProvisionJob {
    site.caps()
        .supported_modes
        .iter()
        .find_map(|m| provision_job(site, *m))
        .unwrap_or_else(|| {
            panic!(
                "{}: no supported mode has a door that takes it",
                site.system.system_type
            )
        })
}

fn revoke_job(job: &ProvisionJob) -> RevokeJob {
    RevokeJob {
        access_grant_id: job.access_grant_id,
        access_method_id: job.access_method_id,
        acs_system_id: job.acs_system_id,
        entrance_ids: job.entrance_ids.clone(),
    }
}

/// Checks a successful provision's result and what reads back against the job.
fn check_provisioned(
    site: &Site,
    job: &ProvisionJob,
    holder: &Holder,
    result: &ProvisionResult,
    held: &HeldCredential,
) {
    let t = &site.system.system_type;
    let caps = site.caps();
    let mode = job.mode;
    let mut doors: Vec<EntranceId> = result.doors.iter().map(|(e, _)| *e).collect();
    doors.sort();
    let mut wanted = job.entrance_ids.clone();
    wanted.sort();
    assert_eq!(doors, wanted, "{t} {mode:?}: one outcome per job door");
    assert!(
        result
            .doors
            .iter()
            .all(|(_, o)| matches!(o, DoorOutcome::Granted)),
        "{t} {mode:?}: every door granted: {:?}",
        result.doors
    );
    let mut held_doors = held.entrance_ids.clone();
    held_doors.sort();
    assert_eq!(
        held_doors, wanted,
        "{t} {mode:?}: read back the job's doors"
    );
    if caps.can_schedule_credentials {
        assert_eq!(
            held.starts_at,
            Some(holder.starts_at),
            "{t} {mode:?}: starts_at"
        );
        assert_eq!(held.ends_at, holder.ends_at, "{t} {mode:?}: ends_at");
    }
    let encoding = mode == AccessMethodMode::Card && caps.is_card_encoding_required;
    assert_eq!(
        result.card_encoding_required, encoding,
        "{t} {mode:?}: card_encoding_required in the result"
    );
    if mode == AccessMethodMode::Code {
        let rules = caps
            .pin_code_rules
            .as_ref()
            .unwrap_or_else(|| panic!("{t}: code mode without PIN rules"));
        let code = result
            .code
            .as_deref()
            .unwrap_or_else(|| panic!("{t}: a code credential came back without its PIN"));
        assert_eq!(
            held.code.as_deref(),
            Some(code),
            "{t}: the PIN reads back as issued"
        );
        match rules.generator {
            PinCodeGenerator::Provider => {
                let len = code.chars().count();
                assert!(
                    (usize::from(rules.min_length)..=usize::from(rules.max_length)).contains(&len)
                        && code.chars().all(|c| c.is_ascii_digit()),
                    "{t}: generated PIN {code:?} breaks the declared rules {rules:?}"
                );
            }
            PinCodeGenerator::Keygate => assert_eq!(
                Some(code),
                job.requested_code.as_deref(),
                "{t}: the system programs the PIN Keygate chose"
            ),
        }
    }
}

async fn read_back(
    provider: &dyn AccessSystemProvider,
    site: &Site,
    method: AccessMethodId,
) -> Option<HeldCredential> {
    provider
        .read_back(&site.system, method)
        .await
        .unwrap_or_else(|e| panic!("{}: read_back failed: {e}", site.system.system_type))
}

/// Scenario 1: what `discover` says is coherent.
pub async fn discover_is_consistent(
    provider: &dyn AccessSystemProvider,
    harness: &dyn Harness,
    system_type: &str,
) {
    assert!(
        provider.system_types().iter().any(|s| s == system_type),
        "{system_type} is not one of the adapter's declared types"
    );
    let site = harness.connect(provider, system_type).await;
    let caps = site.caps();
    let t = system_type;
    assert_eq!(site.system.system_type, t, "discover keeps the type");
    assert!(!caps.supported_modes.is_empty(), "{t}: no supported mode");
    assert!(!site.entrances.is_empty(), "{t}: no entrance");
    assert_eq!(
        caps.supports(AccessMethodMode::Code),
        caps.pin_code_rules.is_some(),
        "{t}: PIN rules exist exactly where codes are supported"
    );
    if let Some(r) = &caps.pin_code_rules {
        assert!(
            r.min_length >= 1 && r.min_length <= r.max_length,
            "{t}: PIN lengths {r:?}"
        );
    }
    if caps.is_card_encoding_required {
        assert!(
            caps.supports(AccessMethodMode::Card),
            "{t}: encodes cards but has no card mode"
        );
    }
    for e in &site.entrances {
        let n = &e.display_name;
        assert!(
            !e.can_unlock_with_card || caps.supports(AccessMethodMode::Card),
            "{t}: {n} takes cards"
        );
        assert!(
            !e.can_unlock_with_code || caps.supports(AccessMethodMode::Code),
            "{t}: {n} takes codes"
        );
        assert!(
            !e.can_unlock_with_mobile_key || caps.supports(AccessMethodMode::MobileKey),
            "{t}: {n} takes mobile keys"
        );
        assert!(
            !e.can_unlock_with_cloud_key || caps.can_remote_unlock,
            "{t}: {n} has a cloud key on a system without remote unlock"
        );
    }
    for g in &site.access_groups {
        assert!(
            g.entrance_ids
                .iter()
                .all(|id| site.entrances.iter().any(|e| e.id == *id)),
            "{t}: group {} names a door the system does not have",
            g.display_name
        );
    }
    if caps.permission_model == PermissionModel::AccessGroups {
        assert!(
            !site.access_groups.is_empty(),
            "{t}: an access-group system with no group"
        );
    }
}

/// Scenario 2: provisioning is idempotent by (access method id, system), for every mode.
pub async fn provision_is_idempotent(
    provider: &dyn AccessSystemProvider,
    harness: &dyn Harness,
    system_type: &str,
) {
    let site = harness.connect(provider, system_type).await;
    let t = system_type;
    let mut provisioned = 0;
    for &mode in &site.caps().supported_modes {
        let Some(job) = provision_job(&site, mode) else {
            tracing::warn!(system_type = t, ?mode, "no door takes this mode; skipped");
            continue;
        };
        let who = holder();
        let before = harness.held_count(&site.system).await;
        let first = provider
            .provision(&site.system, &job, &who)
            .await
            .unwrap_or_else(|e| panic!("{t} {mode:?}: provision failed: {e}"));
        let second = provider
            .provision(&site.system, &job, &who)
            .await
            .unwrap_or_else(|e| panic!("{t} {mode:?}: repeated provision failed: {e}"));
        assert_eq!(
            first, second,
            "{t} {mode:?}: a repeat returns the first result"
        );
        let held = read_back(provider, &site, job.access_method_id)
            .await
            .unwrap_or_else(|| panic!("{t} {mode:?}: nothing reads back after provision"));
        check_provisioned(&site, &job, &who, &first, &held);
        if let (Some(b), Some(a)) = (before, harness.held_count(&site.system).await) {
            assert_eq!(a, b + 1, "{t} {mode:?}: one credential for two calls");
        }
        provisioned += 1;
    }
    assert!(provisioned > 0, "{t}: no mode could be provisioned");
}

/// Scenario 3: revoke removes, and is idempotent.
pub async fn revoke_is_idempotent(
    provider: &dyn AccessSystemProvider,
    harness: &dyn Harness,
    system_type: &str,
) {
    let site = harness.connect(provider, system_type).await;
    let t = system_type;
    let job = any_job(&site);
    provider
        .provision(&site.system, &job, &holder())
        .await
        .unwrap_or_else(|e| panic!("{t}: provision failed: {e}"));
    assert!(
        read_back(provider, &site, job.access_method_id)
            .await
            .is_some()
    );
    let revoke = revoke_job(&job);
    provider
        .revoke(&site.system, &revoke)
        .await
        .unwrap_or_else(|e| panic!("{t}: revoke failed: {e}"));
    assert_eq!(
        read_back(provider, &site, job.access_method_id).await,
        None,
        "{t}: a revoked credential reads back as nothing"
    );
    provider
        .revoke(&site.system, &revoke)
        .await
        .unwrap_or_else(|e| panic!("{t}: revoking again failed: {e}"));
    let never = revoke_job(&any_job(&site));
    provider
        .revoke(&site.system, &never)
        .await
        .unwrap_or_else(|e| panic!("{t}: revoking what was never issued failed: {e}"));
}

fn unlock_job(site: &Site, entrance: EntranceId) -> UnlockJob {
    UnlockJob {
        action_attempt_id: ActionAttemptId::new(),
        acs_system_id: site.system.id,
        acs_entrance_id: entrance,
        user_identity_id: None,
        instant_key_id: None,
        access_grant_id: None,
        access_method_id: None,
        expires_at: Some(OffsetDateTime::now_utc() + time::Duration::seconds(30)),
    }
}

/// Scenario 4: remote unlock where the capabilities say so, a typed refusal elsewhere.
pub async fn unlock_follows_capabilities(
    provider: &dyn AccessSystemProvider,
    harness: &dyn Harness,
    system_type: &str,
) {
    let site = harness.connect(provider, system_type).await;
    let t = system_type;
    let cloud = site.entrances.iter().find(|e| e.can_unlock_with_cloud_key);
    match cloud {
        Some(door) if site.caps().can_remote_unlock => {
            provider
                .unlock(&site.system, &unlock_job(&site, door.id))
                .await
                .unwrap_or_else(|e| panic!("{t}: unlock of {} failed: {e:?}", door.display_name));
        }
        _ if site.caps().can_remote_unlock => {
            tracing::warn!(
                system_type = t,
                "remote unlock declared but no cloud-key door"
            );
        }
        _ => {
            let door = site
                .entrances
                .first()
                .unwrap_or_else(|| panic!("{t}: no entrance"))
                .id;
            let e: AttemptError = provider
                .unlock(&site.system, &unlock_job(&site, door))
                .await
                .expect_err("an unlock on a system without remote unlock must fail");
            assert_eq!(e.error_type, unlock_errors::NOT_SUPPORTED, "{t}: {e:?}");
        }
    }
}

/// Scenario 5: card encoding where the capabilities say so, a typed refusal elsewhere.
pub async fn encode_follows_capabilities(
    provider: &dyn AccessSystemProvider,
    harness: &dyn Harness,
    system_type: &str,
) {
    let site = harness.connect(provider, system_type).await;
    let t = system_type;
    let caps = site.caps();
    let encodes = caps.is_card_encoding_required && !site.encoders.is_empty();
    let job = if encodes {
        provision_job(&site, AccessMethodMode::Card)
            .unwrap_or_else(|| panic!("{t}: encodes cards but no door takes a card"))
    } else {
        any_job(&site)
    };
    provider
        .provision(&site.system, &job, &holder())
        .await
        .unwrap_or_else(|e| panic!("{t}: provision failed: {e}"));
    let encoder = site.encoders.first().map_or_else(EncoderId::new, |e| e.id);
    let encode = EncodeJob {
        action_attempt_id: ActionAttemptId::new(),
        access_method_id: job.access_method_id,
        acs_system_id: site.system.id,
        acs_encoder_id: encoder,
    };
    let r: Result<EncodedCard, AttemptError> = provider.encode(&site.system, &encode).await;
    if encodes {
        let card = r.unwrap_or_else(|e| panic!("{t}: encode failed: {e:?}"));
        assert!(!card.acs_credential_id.is_empty(), "{t}: no credential id");
        assert!(!card.card_number.is_empty(), "{t}: no card number");
    } else {
        let e = r.expect_err("encoding on a system that does not encode must fail");
        assert_eq!(e.error_type, ENCODING_NOT_SUPPORTED, "{t}: {e:?}");
    }
}

/// Scenario 6: transient / ambiguous / permanent faults are reported as such, and what they
/// leave behind is what their class promises.
pub async fn error_classes_are_honest(
    provider: &dyn AccessSystemProvider,
    harness: &dyn Harness,
    system_type: &str,
) {
    let site = harness.connect(provider, system_type).await;
    let t = system_type;
    for class in FaultClass::ALL {
        let job = any_job(&site);
        let who = holder();
        if !harness.inject(&site.system, class) {
            tracing::warn!(
                system_type = t,
                ?class,
                "the harness cannot script this fault; skipped"
            );
            continue;
        }
        let before = harness.held_count(&site.system).await;
        let r = provider.provision(&site.system, &job, &who).await;
        match class {
            FaultClass::Transient => {
                assert!(
                    matches!(r, Err(ProviderError::Transient(_))),
                    "{t}: transient fault gave {r:?}"
                );
                assert_eq!(
                    read_back(provider, &site, job.access_method_id).await,
                    None,
                    "{t}: a transient failure applied something"
                );
            }
            FaultClass::AmbiguousApplied | FaultClass::AmbiguousNotApplied => {
                assert!(
                    matches!(r, Err(ProviderError::Ambiguous(_))),
                    "{t} {class:?}: gave {r:?}"
                );
                let result = provider
                    .provision(&site.system, &job, &who)
                    .await
                    .unwrap_or_else(|e| panic!("{t} {class:?}: the repeat failed: {e}"));
                let held = read_back(provider, &site, job.access_method_id)
                    .await
                    .unwrap_or_else(|| panic!("{t} {class:?}: nothing after the repeat"));
                check_provisioned(&site, &job, &who, &result, &held);
                if let (Some(b), Some(a)) = (before, harness.held_count(&site.system).await) {
                    assert_eq!(
                        a,
                        b + 1,
                        "{t} {class:?}: the repeat converged to one credential"
                    );
                }
            }
            FaultClass::Permanent => {
                assert!(
                    matches!(r, Err(ProviderError::Permanent(_))),
                    "{t}: permanent fault gave {r:?}"
                );
                assert_eq!(
                    read_back(provider, &site, job.access_method_id).await,
                    None,
                    "{t}: a permanent refusal applied something"
                );
            }
        }
        // Revoke under the same fault: the class holds, and a clean repeat removes it.
        if read_back(provider, &site, job.access_method_id)
            .await
            .is_none()
        {
            provider
                .provision(&site.system, &job, &who)
                .await
                .unwrap_or_else(|e| panic!("{t}: provision failed: {e}"));
        }
        let revoke = revoke_job(&job);
        if harness.inject(&site.system, class) {
            let r = provider.revoke(&site.system, &revoke).await;
            let still = read_back(provider, &site, job.access_method_id).await;
            match class {
                FaultClass::Transient => {
                    assert!(
                        matches!(r, Err(ProviderError::Transient(_))),
                        "{t}: revoke {r:?}"
                    );
                    assert!(
                        still.is_some(),
                        "{t}: a transient revoke removed the credential"
                    );
                }
                FaultClass::AmbiguousApplied | FaultClass::AmbiguousNotApplied => {
                    assert!(
                        matches!(r, Err(ProviderError::Ambiguous(_))),
                        "{t}: revoke {r:?}"
                    );
                }
                FaultClass::Permanent => {
                    assert!(
                        matches!(r, Err(ProviderError::Permanent(_))),
                        "{t}: revoke {r:?}"
                    );
                    assert!(
                        still.is_some(),
                        "{t}: a refused revoke removed the credential"
                    );
                }
            }
        }
        provider
            .revoke(&site.system, &revoke)
            .await
            .unwrap_or_else(|e| panic!("{t} {class:?}: the repeated revoke failed: {e}"));
        assert_eq!(
            read_back(provider, &site, job.access_method_id).await,
            None,
            "{t} {class:?}: revoke converged"
        );
    }
}

/// Scenario 7: the declared rate limit is one the orchestrator can enforce (see the module
/// docs for where it is enforced and tested).
pub async fn declared_rate_limit_is_usable(
    provider: &dyn AccessSystemProvider,
    harness: &dyn Harness,
    system_type: &str,
) {
    let site = harness.connect(provider, system_type).await;
    let l = &site.caps().rate_limit;
    assert!(
        l.requests_per_second.is_finite() && l.requests_per_second > 0.0,
        "{system_type}: requests_per_second {}",
        l.requests_per_second
    );
    assert!(l.burst >= 1, "{system_type}: burst {}", l.burst);
}

/// Runs every scenario for one system type.
pub async fn run_all(
    provider: &dyn AccessSystemProvider,
    harness: &dyn Harness,
    system_type: &str,
) {
    discover_is_consistent(provider, harness, system_type).await;
    provision_is_idempotent(provider, harness, system_type).await;
    revoke_is_idempotent(provider, harness, system_type).await;
    unlock_follows_capabilities(provider, harness, system_type).await;
    encode_follows_capabilities(provider, harness, system_type).await;
    error_classes_are_honest(provider, harness, system_type).await;
    declared_rate_limit_is_usable(provider, harness, system_type).await;
}

/// Asserts that `calls` (instants, in any order) never exceed `limit`: in every window between
/// two calls, at most `burst + requests_per_second × window` calls (plus one for rounding).
pub fn assert_within_rate(calls: &[Instant], limit: &ProviderRateLimit) {
    let mut calls = calls.to_vec();
    calls.sort();
    for (i, start) in calls.iter().enumerate() {
        for (j, end) in calls.iter().enumerate().skip(i) {
            let n = (j - i + 1) as f64;
            let window = end.duration_since(*start).as_secs_f64();
            let allowed = f64::from(limit.burst) + limit.requests_per_second * window + 1.0;
            assert!(
                n <= allowed,
                "{n} calls in {window:.3}s exceed {} per second with a burst of {}",
                limit.requests_per_second,
                limit.burst
            );
        }
    }
}

/// A provider that records when each call reached the adapter it wraps: the call counter with
/// timestamps of the rate-limit check.
pub struct Metered<P> {
    inner: P,
    calls: Arc<Mutex<Vec<(AccessSystemId, Instant)>>>,
}

impl<P> Metered<P> {
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            calls: Arc::default(),
        }
    }

    /// When each call to `system` arrived, in order.
    pub fn calls_to(&self, system: AccessSystemId) -> Vec<Instant> {
        self.calls
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(s, _)| *s == system)
                    .map(|(_, t)| *t)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn record(&self, system: AccessSystemId) {
        if let Ok(mut c) = self.calls.lock() {
            c.push((system, Instant::now()));
        }
    }
}

#[async_trait]
impl<P: AccessSystemProvider> AccessSystemProvider for Metered<P> {
    fn system_types(&self) -> Vec<String> {
        self.inner.system_types()
    }

    async fn discover(
        &self,
        system_type: &str,
        connection: &Connection,
    ) -> Result<NewAccessSystem, ProviderError> {
        self.inner.discover(system_type, connection).await
    }

    async fn provision(
        &self,
        system: &AccessSystem,
        job: &ProvisionJob,
        holder: &Holder,
    ) -> Result<ProvisionResult, ProviderError> {
        self.record(system.id);
        self.inner.provision(system, job, holder).await
    }

    async fn revoke(&self, system: &AccessSystem, job: &RevokeJob) -> Result<(), ProviderError> {
        self.record(system.id);
        self.inner.revoke(system, job).await
    }

    async fn read_back(
        &self,
        system: &AccessSystem,
        access_method_id: AccessMethodId,
    ) -> Result<Option<HeldCredential>, ProviderError> {
        self.record(system.id);
        self.inner.read_back(system, access_method_id).await
    }

    async fn unlock(&self, system: &AccessSystem, job: &UnlockJob) -> Result<(), AttemptError> {
        self.record(system.id);
        self.inner.unlock(system, job).await
    }

    async fn encode(
        &self,
        system: &AccessSystem,
        job: &EncodeJob,
    ) -> Result<EncodedCard, AttemptError> {
        self.record(system.id);
        self.inner.encode(system, job).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rps: f64, burst: u32) -> ProviderRateLimit {
        ProviderRateLimit {
            requests_per_second: rps,
            burst,
        }
    }

    #[test]
    fn a_burst_within_the_limit_passes() {
        let t0 = Instant::now();
        let calls: Vec<Instant> = (0..5).map(|_| t0).collect();
        assert_within_rate(&calls, &limit(2.0, 5));
    }

    #[test]
    #[should_panic(expected = "exceed")]
    fn a_burst_over_the_limit_fails() {
        let t0 = Instant::now();
        let calls: Vec<Instant> = (0..8).map(|_| t0).collect();
        assert_within_rate(&calls, &limit(2.0, 5));
    }
}
