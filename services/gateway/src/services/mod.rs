//! The tonic service implementations, one module per service.

pub mod access_grants;
pub mod access_methods;
pub mod access_systems;
pub mod acs_users;
pub mod events;
pub mod instant_keys;
pub mod user_identities;
pub mod webhooks;
pub mod workspaces;
