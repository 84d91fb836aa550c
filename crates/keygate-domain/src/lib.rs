//! Keygate's domain: identifiers, resources, validation, the capability model and the one error
//! enum that every layer above maps to a gRPC status exactly once. No I/O lives here.

pub mod acs;
pub mod action;
pub mod applied;
pub mod capability;
pub mod delivery;
pub mod error;
pub mod events;
pub mod grant;
pub mod ids;
pub mod instant_key;
pub mod model;
pub mod page;
pub mod pin;
pub mod rate;
pub mod tracker;
pub mod update;
pub mod validate;
pub mod webhook;

pub use error::{Error, ErrorReason, FieldViolation, Resource};
