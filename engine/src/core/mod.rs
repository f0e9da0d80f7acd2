//! The stock model as a deterministic state machine: commands and the current time in, outcomes
//! and effects out. No file, no clock, no thread (see `docs/ARCHITECTURE.md`).

mod interner;
mod key_log;
mod kits;
mod shard;
pub(crate) mod staggered;
mod types;

pub use key_log::KeysSnapshot;
pub use kits::{expand_kit_lines, kit_level};
pub use shard::{
    body_hash, body_hash_of_bytes, check_sizes, key_hash, Applied, HoldLineRecord, HoldRecord, LevelRecord, ShardCopy,
    ShardSnapshot, ShardState, EXPIRE_HOLDS_MAX, ORDER_QTY_MAX,
};
pub use types::*;

/// The shard that owns a SKU among `shards`. Stable across versions and restarts: the log and
/// checkpoints depend on it.
pub fn shard_of(sku: &str, shards: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(sku.as_bytes()) % shards as u64) as usize
}
