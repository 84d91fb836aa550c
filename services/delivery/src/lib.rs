//! The delivery role: what Keygate sends out and serves to people. Webhooks: the dispatcher that
//! fans events out to subscribed endpoints and POSTs them, signed the Standard Webhooks way.
//! Instant Keys: the pages behind the links, and `notify`, which sends the links by SMS or email
//! (or puts them in the outbox). Vendor hooks: the inbound webhooks of access systems
//! (`/hooks/{acs_system_id}`), received through `keygate_app::vendor_hooks`.

pub mod instant_keys;
mod leases;
pub mod notify;
pub mod vendor_hooks;
pub mod webhooks;
