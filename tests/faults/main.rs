//! The fault suite (docs/reliability.md): two `keygate serve` replicas on PostgreSQL and Redis on
//! loopback, under faults. Run it with `tools/faults`, which writes the figures into
//! docs/reliability.md; each test asserts its properties and fails the run when one does not hold.

#[allow(dead_code)]
#[path = "../e2e/harness.rs"]
mod harness;

mod cluster;

mod load;

mod blackhole;
mod fuzz;
mod idempotent;
mod kill9;
mod redis_down;
mod sigterm;
mod tenancy;
