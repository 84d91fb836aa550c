//! The gateway role: Keygate's gRPC surface. Tonic services over the store, behind one tower
//! stack (request id → trace → auth → rate limit → deadline → load shed).

pub mod auth;
pub mod error;
pub mod server;
pub mod services;
pub mod stack;

pub use server::{GatewayDeps, SERVICE_NAMES, ServerConfig, serve, set_health};
