//! The capability model: what an access system type can do. Grants are planned from this;
//! provider adapters only translate.

use serde::{Deserialize, Serialize};

/// How an access system decides who may open which door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionModel {
    /// Users are put into access groups; each group opens a set of entrances.
    AccessGroups,
    /// Each credential carries its own entrances and schedule.
    CredentialBased,
    /// Credential based, and a new credential for a reservation overrides the previous one.
    ReservationOverride,
}

/// How a person opens a door, in the hosted API's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMethodMode {
    Card,
    Code,
    MobileKey,
    CloudKey,
}

impl AccessMethodMode {
    /// The display name the hosted API uses for this mode.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Card => "Plastic Card",
            Self::Code => "PIN Code",
            Self::MobileKey => "Mobile Key",
            Self::CloudKey => "Cloud Key",
        }
    }
}

/// Who chooses the digits of a PIN code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinCodeGenerator {
    Provider,
    Keygate,
}

/// PIN code rules of an access system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinCodeRules {
    pub generator: PinCodeGenerator,
    pub min_length: u8,
    pub max_length: u8,
    pub can_request_code: bool,
    pub is_code_per_entrance: bool,
}

/// A vendor's published request limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderRateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
}

/// What an access system type can do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapabilityDescriptor {
    pub permission_model: PermissionModel,
    pub supported_modes: Vec<AccessMethodMode>,
    pub pin_code_rules: Option<PinCodeRules>,
    pub is_card_encoding_required: bool,
    pub can_remote_unlock: bool,
    pub can_issue_mobile_keys: bool,
    pub can_assign_entrances_directly: bool,
    pub can_schedule_credentials: bool,
    pub rate_limit: ProviderRateLimit,
}

impl CapabilityDescriptor {
    /// Whether the system can issue this mode at all.
    pub fn supports(&self, mode: AccessMethodMode) -> bool {
        self.supported_modes.contains(&mode)
    }
}
