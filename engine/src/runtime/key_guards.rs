//! The engine-wide guard of idempotency keys: the first body each key came with (a key sent
//! again with another body is refused before it reaches a shard) and, for a reservation, the
//! hold id its retries reuse.
//!
//! Many submitters take guards at once, so the table is split by the top bits of the key hash
//! into parts, each behind its own lock; the parts grow at different times
//! ([`crate::core::staggered`]), so that millions of keys never move all at once. (It was a
//! `DashMap`, whose shards all fill at the same pace and double together, with no way to grow
//! one early.)

use crate::core::staggered::{part_of, StaggeredTable};
use crate::core::{HoldId, Millis};
use std::sync::{Mutex, MutexGuard};

/// Parts, and so lock stripes.
const GUARD_PARTS: usize = 128;

/// A first-seen idempotency key: the body it came with and, for a reservation, its hold id.
pub(super) struct KeyGuard {
    pub body_hash: u64,
    pub seen_at: Millis,
    pub hold: HoldId,
}

pub(super) struct KeyGuards {
    parts: Box<[Mutex<StaggeredTable<KeyGuard>>]>,
}

impl KeyGuards {
    pub fn new() -> KeyGuards {
        KeyGuards { parts: (0..GUARD_PARTS).map(|p| Mutex::new(StaggeredTable::new(p, GUARD_PARTS))).collect() }
    }

    fn lock(&self, part: usize) -> MutexGuard<'_, StaggeredTable<KeyGuard>> {
        // A panic under the lock leaves a table that is still whole: go on with it.
        self.parts[part].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the guard of `key`, set to `new` first if the key has none; the key's part
    /// stays locked meanwhile.
    pub fn with<R>(&self, key: u128, new: KeyGuard, f: impl FnOnce(&mut KeyGuard) -> R) -> R {
        f(self.lock(part_of(key, GUARD_PARTS)).get_or_insert(key, new))
    }

    pub fn len(&self) -> usize {
        (0..GUARD_PARTS).map(|p| self.lock(p).len()).sum()
    }

    /// Keeps the guards `keep` says yes to, one part at a time.
    pub fn retain(&self, mut keep: impl FnMut(&KeyGuard) -> bool) {
        for p in 0..GUARD_PARTS {
            self.lock(p).retain(|_, g| keep(g));
        }
    }
}
