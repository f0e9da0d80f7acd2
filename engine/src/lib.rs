//! Perpetua's stock engine.
//!
//! - [`core`]: the stock model as a deterministic state machine (no I/O).
//! - [`wal`]: the write-ahead log, checkpoints and recovery (file formats in `docs/wal.md`).
//! - [`runtime`]: the sharded engine: shard threads, group commit, checkpoints.
//! - [`memory`]: the allocator setting of the binaries (freed memory is kept).

pub mod client;
pub mod core;
pub mod memory;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod wal;
