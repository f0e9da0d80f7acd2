//! Interning of SKU and location strings to dense `u32` ids, storing each string once.

use hashbrown::HashTable;
use std::sync::Arc;

/// Maps strings to dense ids `0..len` and back. Each string is stored once (in `names`); the
/// table holds only ids and finds a string by hashing `names[id]`. Names are shared (`Arc`), so
/// that a checkpoint copies the list without copying the strings.
#[derive(Default)]
pub struct Interner {
    names: Vec<Arc<str>>,
    table: HashTable<u32>,
    hasher: ahash::RandomState,
}

impl Interner {
    pub fn get(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.table.find(hash, |&id| &*self.names[id as usize] == name).copied()
    }

    pub fn intern(&mut self, name: &str) -> u32 {
        let hash = self.hasher.hash_one(name);
        let names = &self.names;
        if let Some(&id) = self.table.find(hash, |&id| &*names[id as usize] == name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("more than 2^32 interned names");
        self.names.push(name.into());
        let (names, hasher) = (&self.names, &self.hasher);
        self.table.insert_unique(hash, id, |&i| hasher.hash_one(&*names[i as usize]));
        id
    }

    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// Every name, by id (a copy of the list; the strings are shared).
    pub fn names(&self) -> Vec<Arc<str>> {
        self.names.clone()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Bytes used beyond the strings themselves (for the memory benchmark).
    pub fn overhead_bytes(&self) -> usize {
        // Each name also carries the two reference counts of its `Arc`.
        self.names.capacity() * std::mem::size_of::<Arc<str>>()
            + self.names.len() * 2 * std::mem::size_of::<usize>()
            + self.table.capacity() * (std::mem::size_of::<u32>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_each_string_once_and_maps_back() {
        let mut i = Interner::default();
        let cases = ["A", "B", "A", "TSHIRT-RED-M", "B", ""];
        let ids: Vec<u32> = cases.iter().map(|s| i.intern(s)).collect();
        assert_eq!(ids, vec![0, 1, 0, 2, 1, 3]);
        assert_eq!(i.len(), 4);
        assert_eq!(i.name(2), "TSHIRT-RED-M");
        assert_eq!(i.get("B"), Some(1));
        assert_eq!(i.get("C"), None);
    }
}
