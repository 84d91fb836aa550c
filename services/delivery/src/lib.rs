//! The delivery role: what Keygate sends out and serves to people. Webhooks: the dispatcher that
//! fans events out to subscribed endpoints and POSTs them, signed the Standard Webhooks way.
//! Instant Keys: the pages behind the links, and `notify`, which sends the links by SMS or email
//! (or puts them in the outbox).

pub mod instant_keys;
mod leases;
pub mod notify;
pub mod webhooks;
