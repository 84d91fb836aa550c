//! End-to-end tests: each starts the real `keygate` binary and speaks gRPC to it.
//! PostgreSQL and Redis variants use the servers on loopback (`KEYGATE_TEST_DATABASE_URL`,
//! `KEYGATE_TEST_REDIS_URL`), which `tools/test` starts.

mod harness;

mod bad_input;
mod browser;
mod cli;
mod connector;
mod console;
mod console_flow;
mod crash;
mod deliveries;
mod docs;
mod embedded;
mod grants;
mod instant_keys;
mod kisi_hooks;
mod lifecycle;
mod providers;
mod redis_outage;
mod redis_tls;
mod roles;
mod sandbox_vendors;
mod seam;
mod seam_api;
mod secrets;
mod telemetry;
mod tenancy;
mod unlink_and_hook_updates;
mod unlocks;
mod updates;
mod vendor_burst;
mod webhooks;
