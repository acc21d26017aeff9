//! Fabric's wire protocol: the versioned `.proto` files (package `fabric.v1`, under
//! `proto/fabric/v1/`), the code tonic and prost generate from them ([`v1`]), and the
//! conversions between those messages and fabric-core's types.
//!
//! Two planes, on separate ports:
//! - the **control plane**, the `Scheduler` service ([`v1::scheduler_server`],
//!   [`v1::scheduler_client`]): clients submit graphs, upload components, watch jobs and
//!   manage datasets; workers register and keep one bidirectional `Session` stream of
//!   batched events (compute, release / finished, failed, heartbeat...);
//! - the **data plane**, the `WorkerData` service every worker serves
//!   ([`v1::worker_data_server`], [`v1::worker_data_client`]): peers and clients fetch
//!   values by key, streamed in chunks ([`chunk`]).
//!
//! Generated types stay at the edge: the scheduler, worker and client shells convert them
//! to fabric-core's types with the `From`/`TryFrom` impls here (for [`Value`], `Bulk`,
//! `WorkerSpec`, `JobProgress`, `Failure`, `GraphError`...) and never hand them to the core.
//! Conversions from the wire check everything and return [`ProtoError`], never panic.
//!
//! Every peer states [`PROTOCOL_VERSION`]; see [`check_version`].
//!
//! [`Value`]: fabric_core::Value

#![warn(missing_docs)]

pub mod auth;
pub mod chunk;
pub mod convert;
mod encode;
mod error;
mod step;
pub mod transport;
pub mod value;
mod version;

/// The generated messages, clients and servers of package `fabric.v1`. Their docs are the
/// comments of the `.proto` files.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("fabric.v1");
}

pub use chunk::{
    CHUNK_SIZE, Reassembler, ReceiveError, ValueChunks, ValueReceiver, receive_value, value_chunks,
};
pub use convert::{check_component_hash, component_map, decode_type, encode_type};
pub use error::{ProtoError, ValueError};
pub use value::{decode_value, encode_value};
pub use version::{PROTOCOL_VERSION, VersionMismatch, check_version};
