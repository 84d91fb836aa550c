//! Access system providers. Today this crate holds the catalog of sandbox virtual access systems
//! (their capability descriptors and seed data); the `AccessSystemProvider` trait the
//! orchestrator calls, and the HTTP vendor adapters, join it with access grant orchestration.

pub mod sandbox;
