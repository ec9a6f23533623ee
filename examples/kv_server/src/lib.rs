//! The parts of `kv_server`, a Redis-protocol server with one shardloop event loop per
//! core: the wire protocol ([`resp`]) and the sharded keyspace ([`kv`]). Neither does
//! I/O; the binary (`src/main.rs`) puts them on a [`shardloop::Runtime`].
//!
//! This package is an example that lives in shardloop's workspace (`publish = false`),
//! so that the runtime crate compiles no Redis code and its API holds no Redis types.
#![deny(missing_docs)]

pub mod kv;
pub mod resp;
