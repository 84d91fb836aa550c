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
    pub encoders: Vec<String>,
}

/// An entrance to create with its system.
#[derive(Clone, Debug)]
pub struct NewEntrance {
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
    pub display_name: String,
    pub entrance_indexes: Vec<usize>,
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
