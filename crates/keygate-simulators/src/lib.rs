//! Simulators of vendor access control APIs, faithful to what the vendors publish, for the
//! adapters' tests: each is an axum `Router` over in-memory state that a test serves on
//! 127.0.0.1:0, with the vendor's authentication, permission model, paging, rate limit and error
//! bodies, plus fault injection (slow answers, 503 before applying, 500 after applying).
//!
//! Today: [`kisi`], [`brivo`].

pub mod brivo;
pub mod kisi;
