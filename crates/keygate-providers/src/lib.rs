//! Access system providers: the one trait every path that talks to an access system calls, the
//! registry that picks the adapter of each system type, and the adapters. Today: the sandbox
//! virtual systems (catalog in `sandbox`, behaviour in `virtual_system`). HTTP vendor adapters
//! and the external gRPC connector implement the same trait and register in the same registry.

pub mod brivo;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod connector;
pub mod kisi;
pub mod provider;
pub mod registry;
pub mod sandbox;
pub mod seam;
pub mod sql_ledger;
pub mod vendor;
pub mod virtual_system;

pub use provider::{
    AccessSystemProvider, Connection, Credentials, Directory, HeldCredential, Holder, Link,
    ProviderError, VendorEvent, VendorEventKind, WebhookError, WebhookHeaders,
};
pub use registry::Registry;
pub use sql_ledger::SqlLedger;
