//! The resources Keygate stores. Every one belongs to exactly one workspace.

use time::OffsetDateTime;

use crate::capability::CapabilityDescriptor;
use crate::ids::{
    AccessGroupId, AccessSystemId, ApiKeyId, EncoderId, EntranceId, UserIdentityId, WorkspaceId,
};

/// Whether a workspace talks to real doors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkspaceType {
    Sandbox,
    Production,
}

impl WorkspaceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Production => "production",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sandbox" => Some(Self::Sandbox),
            "production" => Some(Self::Production),
            _ => None,
        }
    }
}

/// The tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub workspace_type: WorkspaceType,
    pub created_at: OffsetDateTime,
}

/// An API key as stored: the secret itself is never kept, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub secret_sha256: Vec<u8>,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// An access control system connected to a workspace.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessSystem {
    pub id: AccessSystemId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub external_type: String,
    pub system_type: String,
    pub is_virtual: bool,
    pub time_zone: String,
    pub capabilities: CapabilityDescriptor,
    pub created_at: OffsetDateTime,
    /// Whether Keygate can reach it, as last seen.
    pub health: SystemHealth,
    /// The non-secret settings it was connected with (credentials are kept apart, sealed).
    pub settings: std::collections::BTreeMap<String, String>,
}

/// How a connected system is doing: errors stop it from working (`account_disconnected`,
/// `invalid_credentials`, `provider_unreachable`), warnings do not. Set by connect, sync,
/// disconnect and the adapters' answers; every change is an event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemHealth {
    pub errors: Vec<crate::grant::Notice>,
    pub warnings: Vec<crate::grant::Notice>,
    /// When its entrances, groups and encoders were last read from it.
    pub last_synced_at: Option<OffsetDateTime>,
    /// When it was disconnected: Keygate calls it no more and holds no credentials for it.
    pub disconnected_at: Option<OffsetDateTime>,
}

/// Credentials as stored: sealed (AEAD) by `keygate-app`, with the id of the key that sealed
/// them so keys can rotate. The store never sees them in the clear.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub key_id: String,
    /// Nonce and ciphertext, base64url.
    pub sealed: String,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// How a stored access system is reached: non-secret settings and sealed credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemConnection {
    pub settings: std::collections::BTreeMap<String, String>,
    pub credentials: Option<SealedSecret>,
}

/// The ids an access system itself uses for what Keygate knows by its own ids (removed ones
/// included, so a revoke can still name them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalIds {
    pub entrances: std::collections::BTreeMap<EntranceId, String>,
    pub access_groups: std::collections::BTreeMap<AccessGroupId, String>,
    pub encoders: std::collections::BTreeMap<EncoderId, String>,
}

/// What a sync changed. Entrances, groups and encoders are matched by external id: a new one
/// is added, one the system no longer lists is marked removed (and the grants that use a
/// removed entrance get a warning), one that comes back is restored with its old id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub entrances_added: Vec<EntranceId>,
    pub entrances_removed: Vec<EntranceId>,
    pub entrances_restored: Vec<EntranceId>,
    pub access_groups_added: usize,
    pub access_groups_removed: usize,
    pub encoders_added: usize,
    pub encoders_removed: usize,
    /// Grants that use an entrance removed by this sync.
    pub grants_warned: Vec<crate::ids::AccessGrantId>,
}

/// An entrance of an access system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entrance {
    pub id: EntranceId,
    pub acs_system_id: AccessSystemId,
    pub display_name: String,
    pub can_unlock_with_card: bool,
    pub can_unlock_with_code: bool,
    pub can_unlock_with_mobile_key: bool,
    pub can_unlock_with_cloud_key: bool,
    pub can_belong_to_reservation: bool,
    pub created_at: OffsetDateTime,
    /// When the access system stopped listing it; grants that used it have a warning.
    pub removed_at: Option<OffsetDateTime>,
}

/// An access group and the entrances it opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessGroup {
    pub id: AccessGroupId,
    pub acs_system_id: AccessSystemId,
    pub display_name: String,
    pub entrance_ids: Vec<EntranceId>,
    pub created_at: OffsetDateTime,
}

/// A card encoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoder {
    pub id: EncoderId,
    pub acs_system_id: AccessSystemId,
    pub display_name: String,
    pub is_online: bool,
    pub created_at: OffsetDateTime,
}

/// Everything needed to connect an access system with its entrances, groups and encoders, in
/// one transaction. Group members are indexes into `entrances`.
#[derive(Clone, Debug)]
pub struct NewAccessSystem {
    pub name: String,
    pub external_type: String,
    pub system_type: String,
    pub is_virtual: bool,
    pub time_zone: String,
    pub capabilities: CapabilityDescriptor,
    pub entrances: Vec<NewEntrance>,
    pub access_groups: Vec<NewAccessGroup>,
    pub encoders: Vec<NewEncoder>,
}

/// An entrance to create with its system.
#[derive(Clone, Debug)]
pub struct NewEntrance {
    /// The access system's own id of the entrance, stable across syncs: what a sync matches on.
    pub external_id: String,
    pub display_name: String,
    pub can_unlock_with_card: bool,
    pub can_unlock_with_code: bool,
    pub can_unlock_with_mobile_key: bool,
    pub can_unlock_with_cloud_key: bool,
    pub can_belong_to_reservation: bool,
}

/// An access group to create with its system; `entrance_indexes` point into `NewAccessSystem::entrances`.
#[derive(Clone, Debug)]
pub struct NewAccessGroup {
    /// The access system's own id of the group, stable across syncs.
    pub external_id: String,
    pub display_name: String,
    pub entrance_indexes: Vec<usize>,
}

/// An encoder to create with its system, or to sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEncoder {
    /// The access system's own id of the encoder, stable across syncs.
    pub external_id: String,
    pub display_name: String,
    pub is_online: bool,
}

/// A person who receives access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIdentity {
    pub id: UserIdentityId,
    pub workspace_id: WorkspaceId,
    pub user_identity_key: Option<String>,
    pub full_name: String,
    pub email_address: Option<String>,
    pub phone_number: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl UserIdentity {
    /// `full_name`, or the email or phone when the name is blank.
    pub fn display_name(&self) -> &str {
        if !self.full_name.trim().is_empty() {
            return &self.full_name;
        }
        self.email_address
            .as_deref()
            .or(self.phone_number.as_deref())
            .unwrap_or("")
    }
}

/// What deleting a person took away, in the transaction that deleted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityDeleted {
    /// Access grants (credentials included) deleted; their revocation is queued.
    pub grants_deleted: u32,
    /// Instant Keys revoked, the grants' keys included.
    pub instant_keys_revoked: u32,
    /// Access system users that were linked to the person and are now unlinked.
    pub acs_users_unlinked: u32,
}

/// A validated request to create a user identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUserIdentity {
    pub user_identity_key: Option<String>,
    pub full_name: String,
    pub email_address: Option<String>,
    pub phone_number: Option<String>,
}

/// A validated partial update. `None` keeps the value; `Some(None)` clears an optional field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserIdentityPatch {
    pub user_identity_key: Option<Option<String>>,
    pub full_name: Option<String>,
    pub email_address: Option<Option<String>>,
    pub phone_number: Option<Option<String>>,
}

/// Filters of `ListUserIdentities`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserIdentityFilter {
    pub user_identity_key: Option<String>,
    pub email_address: Option<String>,
}

/// The current time at the precision Keygate stores (microseconds), so a value returned by a
/// create equals the value read back later.
pub fn now() -> OffsetDateTime {
    truncate_to_micros(OffsetDateTime::now_utc())
}

/// Drops sub-microsecond precision.
pub fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    let nanos = t.nanosecond();
    t.replace_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

/// A credential held by a sandbox virtual access system (its "vendor-side" record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxCredential {
    pub acs_system_id: AccessSystemId,
    pub access_method_id: crate::ids::AccessMethodId,
    pub workspace_id: WorkspaceId,
    pub provider_user_id: String,
    pub credential_id: String,
    pub entrance_ids: Vec<EntranceId>,
    pub code: Option<String>,
    /// The schedule the credential was last given.
    pub starts_at: Option<time::OffsetDateTime>,
    pub ends_at: Option<time::OffsetDateTime>,
}
