//! Generated code for Keygate's public contract (`keygate.v1`), its operator API
//! (`keygate.admin.v1`) and the connector contract (`keygate.connector.v1`), plus the file
//! descriptor set that server reflection serves. Edit the `.proto` files under `proto/`, never
//! this crate.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Keygate's packages.
pub mod keygate {
    /// The public API.
    pub mod v1 {
        tonic::include_proto!("keygate.v1");
    }
    /// The operator API.
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("keygate.admin.v1");
        }
    }
    /// What an out-of-process access system connector implements.
    pub mod connector {
        pub mod v1 {
            tonic::include_proto!("keygate.connector.v1");
        }
    }
}

pub use keygate::admin::v1 as admin;
pub use keygate::connector::v1 as connector;
pub use keygate::v1;

/// Every Keygate proto file and its imports, encoded, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keygate_descriptor.bin"));
