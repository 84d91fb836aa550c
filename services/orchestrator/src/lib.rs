//! The orchestrator role: leases provisioning jobs from the store, calls the access systems
//! concurrently, and records each outcome (status, events) in the same transaction that ends the
//! job. A crashed worker's leases expire and another worker takes the jobs over; a stale worker's
//! late result is refused by the store (fencing), so no outcome is applied twice.

mod breaker;
mod calls;
mod ledger;
mod queue_metrics;
mod reconciler;
mod vendor_limits;
mod worker;

pub use ledger::store_ledger;
pub use queue_metrics::sample_queue;
pub use reconciler::{PassReport, Reconciler};
pub use worker::{Orchestrator, OrchestratorConfig};
