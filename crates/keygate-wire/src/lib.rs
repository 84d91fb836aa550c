//! Proto <-> domain, in one place for every adapter: the replies (`convert`), the secrets
//! derived into replies after any cache read (`links`), the JSON of events sent to webhooks
//! (`events`), and the parsing of requests into `keygate-app` commands (`parse`).

pub mod convert;
pub mod events;
pub mod links;
pub mod parse;
pub mod qr;
