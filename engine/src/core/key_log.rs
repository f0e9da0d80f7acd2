//! The idempotency keys a shard remembers, oldest first, in chunks that a checkpoint shares
//! instead of copying.
//!
//! Keys only come in at the back and leave at the front (expiry by age or by count), and an entry
//! never changes once in. So the log is a queue of fixed-size chunks: a full chunk is frozen
//! behind an `Arc`, and a snapshot is the list of those `Arc`s plus a copy of the partly filled
//! last chunk. Taking one costs the same with 10 keys or 10 million, which keeps the shards'
//! pause at a checkpoint short; the checkpoint writer reads the chunks while the shard goes on
//! (a chunk the shard has since dropped stays alive until the snapshot is done with it).

use super::staggered::{part_of, StaggeredTable};
use super::types::{Millis, Outcome, Seq};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::VecDeque;
use std::sync::Arc;

/// What a shard remembers of a movement with an idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyEntry {
    pub body_hash: u64,
    pub seen_at: Millis,
    pub seq: Seq,
    pub outcome: Outcome,
}

/// Keys (by key hash) with their entries, in the order they came in.
pub(crate) type Keyed = (u128, KeyEntry);

/// Entries per chunk: small enough that copying the last one is nothing, large enough that a
/// checkpoint of millions of keys holds few `Arc`s.
const CHUNK: usize = 16_384;

/// The keys of one shard in arrival order. Each entry has a position that never changes (the
/// number of entries pushed before it), by which the shard's key map finds it.
#[derive(Default)]
pub(crate) struct KeyLog {
    /// Full chunks, frozen.
    full: VecDeque<Arc<Vec<Keyed>>>,
    /// The chunk being filled.
    tail: Vec<Keyed>,
    /// Entries already gone from the first chunk (`full[0]`, or `tail` when `full` is empty).
    head_gone: usize,
    len: usize,
    /// Entries popped so far: the position of the front.
    popped: u64,
}

impl KeyLog {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends an entry; returns its position.
    pub fn push_back(&mut self, key: u128, entry: KeyEntry) -> u64 {
        if self.tail.capacity() == 0 {
            self.tail.reserve_exact(CHUNK);
        }
        self.tail.push((key, entry));
        self.len += 1;
        if self.tail.len() == CHUNK {
            let chunk = std::mem::replace(&mut self.tail, Vec::with_capacity(CHUNK));
            self.full.push_back(Arc::new(chunk));
        }
        self.popped + self.len as u64 - 1
    }

    /// The entry at `position`, if it is still in.
    pub fn get(&self, position: u64) -> Option<&Keyed> {
        let p = usize::try_from(position.checked_sub(self.popped)?).ok().filter(|&p| p < self.len)?;
        // Every full chunk holds CHUNK entries; the first has lost `head_gone` of them.
        let offset = self.head_gone + p;
        match self.full.get(offset / CHUNK) {
            Some(chunk) => chunk.get(offset % CHUNK),
            None => self.tail.get(offset - self.full.len() * CHUNK),
        }
    }

    /// Every entry, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Keyed> + '_ {
        (0..self.len as u64).filter_map(move |p| self.get(self.popped + p))
    }

    /// The oldest key.
    pub fn front(&self) -> Option<&Keyed> {
        match self.full.front() {
            Some(chunk) => chunk.get(self.head_gone),
            None => self.tail.get(self.head_gone),
        }
    }

    /// Forgets the oldest key.
    pub fn pop_front(&mut self) {
        if self.len == 0 {
            return;
        }
        self.len -= 1;
        self.popped += 1;
        self.head_gone += 1;
        match self.full.front() {
            Some(chunk) if self.head_gone == chunk.len() => {
                self.full.pop_front();
                self.head_gone = 0;
            }
            None if self.head_gone == self.tail.len() => {
                self.tail.clear();
                self.head_gone = 0;
            }
            _ => {}
        }
    }

    /// The keys as they are now, for a checkpoint: shares the full chunks, copies the rest.
    pub fn snapshot(&self) -> KeysSnapshot {
        let (skip, tail_from) = if self.full.is_empty() { (0, self.head_gone) } else { (self.head_gone, 0) };
        KeysSnapshot { chunks: self.full.iter().cloned().collect(), skip, tail: self.tail[tail_from..].to_vec() }
    }
}

/// The keys of a shard at one moment, oldest first. Encodes exactly like a
/// `Vec<(u128, KeyEntry)>` (the checkpoint format does not depend on the chunks).
#[derive(Clone, Default)]
pub struct KeysSnapshot {
    chunks: Vec<Arc<Vec<Keyed>>>,
    /// Entries of `chunks[0]` that are not part of the snapshot.
    skip: usize,
    tail: Vec<Keyed>,
}

impl KeysSnapshot {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Keyed> + '_ {
        let chunks =
            self.chunks.iter().enumerate().flat_map(move |(i, c)| c[if i == 0 { self.skip } else { 0 }..].iter());
        chunks.chain(self.tail.iter())
    }

    pub fn len(&self) -> usize {
        let in_chunks: usize = self.chunks.iter().map(|c| c.len()).sum();
        in_chunks - self.skip + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialEq for KeysSnapshot {
    fn eq(&self, other: &KeysSnapshot) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for KeysSnapshot {}

impl std::fmt::Debug for KeysSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for KeysSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for entry in self.iter() {
            seq.serialize_element(entry)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for KeysSnapshot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KeysSnapshot, D::Error> {
        let tail = Vec::<Keyed>::deserialize(deserializer)?;
        Ok(KeysSnapshot { chunks: Vec::new(), skip: 0, tail })
    }
}

/// Tables a [`KeyIndex`] is split into.
const INDEX_PARTS: usize = 64;

/// The position in the [`KeyLog`] of each key, by key hash. One hash table per shard doubled in
/// one go as it filled: at a few million keys that moved them all at once and stalled the shard
/// for hundreds of milliseconds (acknowledgements and checkpoints waited on it). So the index is
/// split by the top bits of the key hash into [`INDEX_PARTS`] tables that each double on their
/// own, at different times (see [`super::staggered`]): the same work in short steps, with
/// movements applied between them.
pub(crate) struct KeyIndex {
    parts: Box<[StaggeredTable<u64>]>,
}

impl Default for KeyIndex {
    fn default() -> KeyIndex {
        KeyIndex { parts: StaggeredTable::parts(INDEX_PARTS) }
    }
}

impl KeyIndex {
    fn part(key: u128) -> usize {
        part_of(key, INDEX_PARTS)
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(StaggeredTable::len).sum()
    }

    pub fn get(&self, key: u128) -> Option<u64> {
        self.parts[Self::part(key)].get(key).copied()
    }

    /// Sets the position of `key`; returns its previous one.
    pub fn insert(&mut self, key: u128, at: u64) -> Option<u64> {
        self.parts[Self::part(key)].insert(key, at)
    }

    pub fn remove(&mut self, key: u128) -> Option<u64> {
        self.parts[Self::part(key)].remove(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Detail;

    /// The index against a plain map, with keys spread over every part (the top bits vary) and
    /// keys that differ only in their top bits (same low bits, different parts).
    #[test]
    fn the_index_matches_a_plain_map() {
        let mut index = KeyIndex::default();
        let mut plain = std::collections::HashMap::new();
        let keys: Vec<u128> = (0..5_000u128)
            .map(|i| crate::core::key_hash(&format!("key-{i}")))
            .chain((0..INDEX_PARTS as u128).map(|p| (p << 122) | 42))
            .collect();
        let parts: std::collections::HashSet<usize> = keys.iter().map(|&k| KeyIndex::part(k)).collect();
        assert_eq!(parts.len(), INDEX_PARTS, "the keys reach every part");
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(index.insert(k, i as u64), plain.insert(k, i as u64));
        }
        // Again: a new position for a key already in.
        for (i, &k) in keys.iter().enumerate().step_by(3) {
            assert_eq!(index.insert(k, 100_000 + i as u64), plain.insert(k, 100_000 + i as u64));
        }
        for &k in keys.iter().step_by(2) {
            assert_eq!(index.remove(k), plain.remove(&k));
            assert_eq!(index.remove(k), None, "a key removed is gone");
        }
        assert_eq!(index.len(), plain.len());
        for &k in &keys {
            assert_eq!(index.get(k), plain.get(&k).copied());
        }
    }

    fn entry(i: u64) -> KeyEntry {
        KeyEntry { body_hash: i * 7, seen_at: i, seq: i + 1, outcome: Ok(Detail::None) }
    }

    /// A plain queue beside the log, through pushes and pops across chunk edges, with snapshots
    /// taken along the way staying as they were.
    #[test]
    fn the_log_and_its_snapshots_match_a_plain_queue() {
        let mut log = KeyLog::default();
        let mut plain: VecDeque<Keyed> = VecDeque::new();
        let mut snapshots: Vec<(KeysSnapshot, Vec<Keyed>)> = Vec::new();
        let mut next = 0u64;
        // Pushes and pops in runs of varying length: the front crosses chunk edges, the log
        // empties entirely once, and snapshots land inside and at the edges of chunks.
        let runs: [(usize, usize); 8] = [
            (CHUNK - 1, 0),
            (1, 0),
            (CHUNK + 5, CHUNK - 3),
            (0, 3),
            (2 * CHUNK, 10),
            (0, 3 * CHUNK + 2),
            (7, 0),
            (3, 5),
        ];
        for (pushes, pops) in runs {
            for _ in 0..pushes {
                assert_eq!(log.push_back(next as u128, entry(next)), next);
                plain.push_back((next as u128, entry(next)));
                next += 1;
            }
            for _ in 0..pops {
                log.pop_front();
                plain.pop_front();
            }
            assert_eq!(log.len(), plain.len());
            assert_eq!(log.front(), plain.front());
            // Positions: the front's is the number popped; those before it and past the back
            // are gone or not yet there.
            let front = next - plain.len() as u64;
            for (i, e) in plain.iter().enumerate() {
                assert_eq!(log.get(front + i as u64), Some(e));
            }
            assert_eq!(log.get(next), None);
            assert_eq!(front.checked_sub(1).and_then(|p| log.get(p)), None);
            assert!(log.iter().eq(plain.iter()));
            let snap = log.snapshot();
            assert_eq!(snap.len(), plain.len());
            snapshots.push((snap, plain.iter().copied().collect()));
        }
        assert_eq!(log.len(), 5);
        for (snap, expected) in &snapshots {
            assert_eq!(snap.iter().copied().collect::<Vec<_>>(), *expected);
            // The encoding is that of the plain list, and it decodes back to an equal snapshot.
            let bytes = postcard::to_allocvec(snap).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(expected).unwrap());
            let back: KeysSnapshot = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(&back, snap);
        }
    }
}
