//! The one domain error. The gateway maps it to `tonic::Status` in a single exhaustive match.

use std::time::Duration;

/// Stable machine-readable reasons, mirrored one to one by `keygate.v1.ErrorReason` in
/// `proto/keygate/v1/errors.proto`. The wire form is [`ErrorReason::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorReason {
    MissingCredentials,
    InvalidApiKey,
    ApiKeyRevoked,
    InvalidAdminToken,
    AdminApiDisabled,
    InvalidField,
    InvalidPageToken,
    InvalidPageSize,
    WorkspaceNotFound,
    AccessSystemNotFound,
    EntranceNotFound,
    UserIdentityNotFound,
    ApiKeyNotFound,
    UserIdentityKeyTaken,
    IdempotencyKeyReused,
    AccessGrantKeyTaken,
    AccessGrantNotFound,
    AccessMethodNotFound,
    AcsUserNotFound,
    AccessGroupNotFound,
    CredentialNotFound,
    AcsUserAlreadyLinked,
    AcsUserNotLinked,
    AcsUserNotInAccessGroup,
    EventNotFound,
    InvalidCursor,
    ModeNotSupported,
    NotReadyForEncoding,
    ResourceInactive,
    ConcurrentModification,
    PinCodeTaken,
    EncoderNotFound,
    ActionAttemptNotFound,
    WebhookNotFound,
    InstantKeyNotFound,
    CapabilityNotSupported,
    AccessWindowClosed,
    WorkspaceTypeMismatch,
    InvalidConnectionSettings,
    InvalidCredentials,
    ProviderUnreachable,
    AccessSystemDisconnected,
    EntranceRemoved,
    CredentialsKeyMissing,
    UnknownAccessSystemType,
    RateLimited,
    AuthFailuresLimited,
    WatchStreamLimitReached,
    WatchTooSlow,
    WebhookLimitReached,
    ServerOverloaded,
    NotImplemented,
    StoreUnavailable,
    ServerDraining,
    Internal,
}

impl ErrorReason {
    /// The reason as sent in `google.rpc.ErrorInfo.reason`: the proto enum value name without
    /// its `ERROR_REASON_` prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingCredentials => "MISSING_CREDENTIALS",
            Self::InvalidApiKey => "INVALID_API_KEY",
            Self::ApiKeyRevoked => "API_KEY_REVOKED",
            Self::InvalidAdminToken => "INVALID_ADMIN_TOKEN",
            Self::AdminApiDisabled => "ADMIN_API_DISABLED",
            Self::InvalidField => "INVALID_FIELD",
            Self::InvalidPageToken => "INVALID_PAGE_TOKEN",
            Self::InvalidPageSize => "INVALID_PAGE_SIZE",
            Self::WorkspaceNotFound => "WORKSPACE_NOT_FOUND",
            Self::AccessSystemNotFound => "ACCESS_SYSTEM_NOT_FOUND",
            Self::EntranceNotFound => "ENTRANCE_NOT_FOUND",
            Self::UserIdentityNotFound => "USER_IDENTITY_NOT_FOUND",
            Self::ApiKeyNotFound => "API_KEY_NOT_FOUND",
            Self::UserIdentityKeyTaken => "USER_IDENTITY_KEY_TAKEN",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::AccessGrantKeyTaken => "ACCESS_GRANT_KEY_TAKEN",
            Self::AccessGrantNotFound => "ACCESS_GRANT_NOT_FOUND",
            Self::AccessMethodNotFound => "ACCESS_METHOD_NOT_FOUND",
            Self::AcsUserNotFound => "ACS_USER_NOT_FOUND",
            Self::AccessGroupNotFound => "ACCESS_GROUP_NOT_FOUND",
            Self::CredentialNotFound => "CREDENTIAL_NOT_FOUND",
            Self::AcsUserAlreadyLinked => "ACS_USER_ALREADY_LINKED",
            Self::AcsUserNotLinked => "ACS_USER_NOT_LINKED",
            Self::AcsUserNotInAccessGroup => "ACS_USER_NOT_IN_ACCESS_GROUP",
            Self::EventNotFound => "EVENT_NOT_FOUND",
            Self::InvalidCursor => "INVALID_CURSOR",
            Self::ModeNotSupported => "MODE_NOT_SUPPORTED",
            Self::NotReadyForEncoding => "NOT_READY_FOR_ENCODING",
            Self::ResourceInactive => "RESOURCE_INACTIVE",
            Self::ConcurrentModification => "CONCURRENT_MODIFICATION",
            Self::PinCodeTaken => "PIN_CODE_TAKEN",
            Self::EncoderNotFound => "ENCODER_NOT_FOUND",
            Self::ActionAttemptNotFound => "ACTION_ATTEMPT_NOT_FOUND",
            Self::WebhookNotFound => "WEBHOOK_NOT_FOUND",
            Self::InstantKeyNotFound => "INSTANT_KEY_NOT_FOUND",
            Self::CapabilityNotSupported => "CAPABILITY_NOT_SUPPORTED",
            Self::AccessWindowClosed => "ACCESS_WINDOW_CLOSED",
            Self::WorkspaceTypeMismatch => "WORKSPACE_TYPE_MISMATCH",
            Self::InvalidConnectionSettings => "INVALID_CONNECTION_SETTINGS",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::ProviderUnreachable => "PROVIDER_UNREACHABLE",
            Self::AccessSystemDisconnected => "ACCESS_SYSTEM_DISCONNECTED",
            Self::EntranceRemoved => "ENTRANCE_REMOVED",
            Self::CredentialsKeyMissing => "CREDENTIALS_KEY_MISSING",
            Self::UnknownAccessSystemType => "UNKNOWN_ACCESS_SYSTEM_TYPE",
            Self::RateLimited => "RATE_LIMITED",
            Self::AuthFailuresLimited => "AUTH_FAILURES_LIMITED",
            Self::WatchStreamLimitReached => "WATCH_STREAM_LIMIT_REACHED",
            Self::WatchTooSlow => "WATCH_TOO_SLOW",
            Self::WebhookLimitReached => "WEBHOOK_LIMIT_REACHED",
            Self::ServerOverloaded => "SERVER_OVERLOADED",
            Self::NotImplemented => "NOT_IMPLEMENTED",
            Self::StoreUnavailable => "STORE_UNAVAILABLE",
            Self::ServerDraining => "SERVER_DRAINING",
            Self::Internal => "INTERNAL",
        }
    }
}

/// The kind of resource a `NotFound` is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Workspace,
    ApiKey,
    AccessSystem,
    Entrance,
    UserIdentity,
    AccessGrant,
    AccessMethod,
    AcsUser,
    AccessGroup,
    Credential,
    Event,
    Encoder,
    ActionAttempt,
    Webhook,
    InstantKey,
}

impl Resource {
    /// The reason sent when this resource is not found.
    pub fn not_found_reason(self) -> ErrorReason {
        match self {
            Self::Workspace => ErrorReason::WorkspaceNotFound,
            Self::ApiKey => ErrorReason::ApiKeyNotFound,
            Self::AccessSystem => ErrorReason::AccessSystemNotFound,
            Self::Entrance => ErrorReason::EntranceNotFound,
            Self::UserIdentity => ErrorReason::UserIdentityNotFound,
            Self::AccessGrant => ErrorReason::AccessGrantNotFound,
            Self::AccessMethod => ErrorReason::AccessMethodNotFound,
            Self::AcsUser => ErrorReason::AcsUserNotFound,
            Self::AccessGroup => ErrorReason::AccessGroupNotFound,
            Self::Credential => ErrorReason::CredentialNotFound,
            Self::Event => ErrorReason::EventNotFound,
            Self::Encoder => ErrorReason::EncoderNotFound,
            Self::ActionAttempt => ErrorReason::ActionAttemptNotFound,
            Self::Webhook => ErrorReason::WebhookNotFound,
            Self::InstantKey => ErrorReason::InstantKeyNotFound,
        }
    }

    /// Singular noun for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Workspace => "workspace",
            Self::ApiKey => "api key",
            Self::AccessSystem => "access system",
            Self::Entrance => "entrance",
            Self::UserIdentity => "user identity",
            Self::AccessGrant => "access grant",
            Self::AccessMethod => "access method",
            Self::AcsUser => "access system user",
            Self::AccessGroup => "access group",
            Self::Credential => "credential",
            Self::Event => "event",
            Self::Encoder => "encoder",
            Self::ActionAttempt => "action attempt",
            Self::Webhook => "webhook",
            Self::InstantKey => "instant key",
        }
    }
}

/// One bad input field, reported as a `google.rpc.BadRequest.FieldViolation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The proto field name, such as `phone_number`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Everything that can go wrong, split into expected outcomes (the caller's doing) and
/// unexpected ones (`Unavailable`, `Internal`), which are logged once where they are mapped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {}", summarize(.violations))]
    InvalidArgument { violations: Vec<FieldViolation> },
    #[error("{message}")]
    InvalidToken {
        reason: ErrorReason,
        message: String,
    },
    #[error("{} {id} not found", .resource.noun())]
    NotFound { resource: Resource, id: String },
    #[error("{message}")]
    AlreadyExists {
        reason: ErrorReason,
        message: String,
    },
    #[error("{message}")]
    FailedPrecondition {
        reason: ErrorReason,
        message: String,
    },
    #[error("{message}")]
    Unauthenticated {
        reason: ErrorReason,
        message: String,
    },
    #[error("{message}")]
    PermissionDenied {
        reason: ErrorReason,
        message: String,
    },
    /// Another change of the same resource committed first; the call can be retried as is.
    #[error("{message}")]
    Aborted { message: String },
    #[error("rate limit exceeded; retry in {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// A limit other than the request rate (failed authentications from one client, concurrent
    /// streams or webhooks of one workspace); `retry_after` when waiting is what helps.
    #[error("{message}")]
    LimitReached {
        reason: ErrorReason,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{rpc} is not implemented in this version of Keygate")]
    NotImplemented { rpc: &'static str },
    #[error("store unavailable: {message}")]
    Unavailable { message: String },
    #[error("internal error: {message}")]
    Internal { message: String },
}

fn summarize(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// One invalid field.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument {
            violations: vec![FieldViolation::new(field, description)],
        }
    }

    /// A resource that does not exist in the caller's workspace (or at all: the two are
    /// deliberately indistinguishable).
    pub fn not_found(resource: Resource, id: impl Into<String>) -> Self {
        Self::NotFound {
            resource,
            id: id.into(),
        }
    }

    /// The stable reason for this error.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::InvalidArgument { .. } => ErrorReason::InvalidField,
            Self::InvalidToken { reason, .. }
            | Self::AlreadyExists { reason, .. }
            | Self::FailedPrecondition { reason, .. }
            | Self::Unauthenticated { reason, .. }
            | Self::PermissionDenied { reason, .. }
            | Self::LimitReached { reason, .. } => *reason,
            Self::NotFound { resource, .. } => resource.not_found_reason(),
            Self::Aborted { .. } => ErrorReason::ConcurrentModification,
            Self::RateLimited { .. } => ErrorReason::RateLimited,
            Self::NotImplemented { .. } => ErrorReason::NotImplemented,
            Self::Unavailable { .. } => ErrorReason::StoreUnavailable,
            Self::Internal { .. } => ErrorReason::Internal,
        }
    }
}
