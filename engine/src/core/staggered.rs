//! Hash tables of 128-bit key hashes, split into parts that grow at different times.
//!
//! A hash table doubles in one go when it is full: it allocates twice the room, moves every
//! entry, and faults in the new pages. Split a big map into parts by the top bits of the key
//! and each doubling moves only one part's keys; but keys spread evenly, so every part fills at
//! the same pace and they all double within a few thousand inserts of each other: the same burst
//! of work, only chopped up. At 100,000 keyed movements per second that burst (the server's
//! resident size grew by 150 MB at once near a million keys) came back at every doubling as a
//! spike of 100 to 180 ms in the p99 latency.
//!
//! So a [`StaggeredTable`] grows ahead of need, at a fill of its own between half full and full:
//! part `i` of `n` doubles once it is `1/2 + (i + 1) / 2n` full. The parts' doublings are spread
//! evenly over the whole time the map takes to double, at the price of tables that are on average
//! a little emptier.

use ahash::AHashMap;

/// Below this capacity a table grows when full, as usual: its doubling costs nothing.
const STAGGER_FROM_CAPACITY: usize = 1024;

/// The part of `parts` (a power of two) that `key` belongs to: its top bits.
pub(crate) fn part_of(key: u128, parts: usize) -> usize {
    debug_assert!(parts.is_power_of_two() && parts > 1);
    (key >> (128 - parts.trailing_zeros())) as usize
}

/// One part of a map split by [`part_of`]: a hash table that doubles at its part's own fill.
pub(crate) struct StaggeredTable<V> {
    map: AHashMap<u128, V>,
    /// Its capacity when it last grew. `capacity()` drops later as removed entries leave
    /// tombstones, so growing at a fill of it would grow a table whose size is steady.
    grown_to: usize,
    /// It doubles once it holds this many 256ths of `grown_to` (128 to 256).
    fill_256ths: usize,
}

impl<V> StaggeredTable<V> {
    /// Part `part` of `parts`.
    pub fn new(part: usize, parts: usize) -> StaggeredTable<V> {
        debug_assert!(part < parts);
        StaggeredTable { map: AHashMap::new(), grown_to: 0, fill_256ths: 128 + 128 * (part + 1) / parts }
    }

    /// All of a split map's parts.
    pub fn parts(parts: usize) -> Box<[StaggeredTable<V>]> {
        (0..parts).map(|p| StaggeredTable::new(p, parts)).collect()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get(&self, key: u128) -> Option<&V> {
        self.map.get(&key)
    }

    /// Sets the value of `key`; returns its previous one.
    pub fn insert(&mut self, key: u128, value: V) -> Option<V> {
        self.make_room();
        self.map.insert(key, value)
    }

    /// The value of `key`, first set to `value` if it has none.
    pub fn get_or_insert(&mut self, key: u128, value: V) -> &mut V {
        self.make_room();
        self.map.entry(key).or_insert(value)
    }

    pub fn remove(&mut self, key: u128) -> Option<V> {
        self.map.remove(&key)
    }

    pub fn retain(&mut self, keep: impl FnMut(&u128, &mut V) -> bool) {
        self.map.retain(keep)
    }

    /// Room for one more entry: doubles the table now if it reached its part's fill.
    fn make_room(&mut self) {
        self.grown_to = self.grown_to.max(self.map.capacity());
        if self.grown_to >= STAGGER_FROM_CAPACITY && self.map.len() >= self.grown_to * self.fill_256ths / 256 {
            // Room for `grown_to` more: at least half as much again, which hashbrown rounds up to
            // twice the buckets.
            self.map.reserve(self.grown_to);
            self.grown_to = self.map.capacity();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> u128 {
        crate::core::key_hash(&format!("key-{i}"))
    }

    /// The capacity at which `table` doubled, for each doubling while `keys` went in.
    fn doublings(table: &mut StaggeredTable<u64>, keys: impl Iterator<Item = u128>) -> Vec<(usize, usize)> {
        let mut seen = Vec::new();
        for k in keys {
            let before = table.map.capacity();
            table.insert(k, 0);
            if table.map.capacity() > before {
                seen.push((table.len(), before));
            }
        }
        seen
    }

    /// The first part doubles at a little over half full, the last when full, one in the middle
    /// at three quarters: so the parts of a map do not double together.
    #[test]
    fn each_part_doubles_at_its_own_fill() {
        let fills: Vec<f64> = [0, 31, 63]
            .iter()
            .map(|&part| {
                let mut table = StaggeredTable::new(part, 64);
                let grew = doublings(&mut table, (0..20_000).map(key));
                let &(len, capacity) = grew.iter().find(|&&(_, c)| c >= 4096).expect("it doubled past 4096");
                len as f64 / capacity as f64
            })
            .collect();
        assert!((0.50..0.53).contains(&fills[0]), "first part: {fills:?}");
        assert!((0.74..0.77).contains(&fills[1]), "middle part: {fills:?}");
        assert!(fills[2] > 0.99, "last part: {fills:?}");
    }

    /// A table whose size stays the same while keys come and go (the steady state of expiry)
    /// does not grow, though its removed entries use up `capacity()`.
    #[test]
    fn a_table_of_steady_size_does_not_grow() {
        let mut table = StaggeredTable::new(0, 64);
        for i in 0..3_000 {
            table.insert(key(i), i);
        }
        let capacity = table.map.capacity();
        for i in 3_000..200_000 {
            table.insert(key(i), i);
            assert_eq!(table.remove(key(i - 3_000)), Some(i - 3_000));
        }
        assert_eq!(table.len(), 3_000);
        assert_eq!(table.grown_to, capacity);
    }

    /// Against a plain map: insert, insert again, get_or_insert, remove, retain.
    #[test]
    fn the_table_matches_a_plain_map() {
        let mut table = StaggeredTable::new(3, 8);
        let mut plain = std::collections::HashMap::new();
        for i in 0..10_000 {
            assert_eq!(table.insert(key(i), i), plain.insert(key(i), i));
        }
        for i in (0..12_000).step_by(7) {
            assert_eq!(table.insert(key(i), i + 1), plain.insert(key(i), i + 1));
        }
        for i in (0..12_000).step_by(5) {
            *table.get_or_insert(key(i), 0) += 10;
            *plain.entry(key(i)).or_insert(0) += 10;
        }
        for i in (0..13_000).step_by(3) {
            assert_eq!(table.remove(key(i)), plain.remove(&key(i)));
        }
        table.retain(|_, v| *v % 2 == 0);
        plain.retain(|_, v| *v % 2 == 0);
        assert_eq!(table.len(), plain.len());
        for i in 0..13_000 {
            assert_eq!(table.get(key(i)), plain.get(&key(i)), "key {i}");
        }
    }

    #[test]
    fn parts_are_the_top_bits() {
        assert_eq!(part_of(0, 64), 0);
        assert_eq!(part_of(u128::MAX, 64), 63);
        assert_eq!(part_of(5 << 122, 64), 5);
        assert_eq!(part_of(5 << 121, 128), 5);
    }
}
