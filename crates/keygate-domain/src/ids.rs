//! Typed identifiers. Every id is a UUID (v7, so ids sort by creation time) wrapped in a newtype,
//! so a `WorkspaceId` can never be passed where an `AccessSystemId` is expected.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Hyphenated lowercase: fixed width, so string order equals UUID order.
                write!(f, "{}", self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A workspace (tenant).
    WorkspaceId
);
id_type!(
    /// An API key; also the public part of its token.
    ApiKeyId
);
id_type!(
    /// An access control system connected to a workspace.
    AccessSystemId
);
id_type!(
    /// An entrance of an access system.
    EntranceId
);
id_type!(
    /// An access group of an access system.
    AccessGroupId
);
id_type!(
    /// A card encoder of an access system.
    EncoderId
);
id_type!(
    /// A user identity.
    UserIdentityId
);
id_type!(
    /// A user on one access system (the console flow of seed 000).
    AcsUserId
);
id_type!(
    /// A credential of an access system user: a view of the access grant made for it.
    AcsCredentialId
);
id_type!(
    /// An access grant.
    AccessGrantId
);
id_type!(
    /// An access method of a grant.
    AccessMethodId
);
id_type!(
    /// A durable orchestration job.
    JobId
);
id_type!(
    /// A lifecycle event.
    EventId
);
id_type!(
    /// An asynchronous action (card encoding, unlock).
    ActionAttemptId
);
id_type!(
    /// A webhook: an endpoint the workspace's events are POSTed to.
    WebhookId
);
id_type!(
    /// An Instant Key: a link that opens a person's doors from a web page.
    InstantKeyId
);
id_type!(
    /// One sending of an Instant Key's link by SMS or email.
    DeliveryId
);
