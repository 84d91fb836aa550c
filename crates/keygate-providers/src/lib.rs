//! Access system providers: the one trait the orchestrator calls, and its implementations.
//! Today: the sandbox virtual systems (catalog in `sandbox`, behaviour in `virtual_system`).
//! HTTP vendor adapters and the external gRPC connector implement the same trait.

pub mod provider;
pub mod sandbox;
pub mod sql_ledger;
pub mod virtual_system;

pub use provider::{AccessSystemProvider, HeldCredential, Holder, ProviderError};
pub use sql_ledger::SqlLedger;
