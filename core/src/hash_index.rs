//! A hash index over a table's dense ids (0, 1, 2, … in insertion order): the key lives in the
//! table, the index keeps only chains of ids, so a lookup hashes once and compares in place.
//!
//! It grows by linear hashing: every insert that brings the load above its limit splits exactly
//! one bucket (the next in order) into two, so no insert ever rehashes the whole table. An
//! insert costs one chain walk and one bucket split whatever the size: what lets the
//! process-wide string table (held by the fork prepare handler) keep every critical section
//! short with a million names in it, and what spares the collector the pauses, and the
//! double-sized transient buffers, of a map that rehashes all at once.
//!
//! Per entry: 4 bytes of chain link and 2 or 4 bytes of bucket head (two ids per bucket for the
//! big tables, one for those looked up per frame); no hash is stored (a
//! split hashes the few keys of the bucket it splits again), so the index of a profile with
//! 100,000 stacks and 100,000 samples costs 1.2 MB, where a `HashMap<u64, u32>` costs 3-6 MB
//! at its load factor and twice that while it resizes.

use crate::region_vec::{Memory, OutOfMemory, RegionVec};

const NONE: u32 = u32::MAX;
const START_LEVEL: u32 = 4;

pub(crate) struct HashIndex {
    /// The newest id of each bucket's chain; `(1 << level) + split` buckets.
    heads: RegionVec<u32>,
    /// Per id: the next id in its chain.
    next: RegionVec<u32>,
    level: u32,
    /// Buckets below this have been split at this level.
    split: u32,
    /// Average ids per bucket before the next split.
    load: u32,
}

impl HashIndex {
    /// Two ids per bucket: 6 bytes per id, for the largest tables (stacks, samples).
    pub const fn new(mem: Memory) -> Self {
        HashIndex {
            heads: RegionVec::new(mem),
            next: RegionVec::new(mem),
            level: START_LEVEL,
            split: 0,
            load: 2,
        }
    }

    /// One id per bucket: 8 bytes per id and shorter chains, for the tables looked up once
    /// per frame (strings, locations), which are small next to the stacks.
    pub const fn dense(mem: Memory) -> Self {
        HashIndex {
            heads: RegionVec::new(mem),
            next: RegionVec::new(mem),
            level: START_LEVEL,
            split: 0,
            load: 1,
        }
    }

    /// An index of at most `max` ids whose memory is mapped once, at its first insert, and
    /// never moved: an insert makes no system call after that.
    pub const fn fixed(max: usize, mem: Memory) -> Self {
        HashIndex {
            heads: RegionVec::fixed(max + (1 << START_LEVEL), mem),
            next: RegionVec::fixed(max, mem),
            level: START_LEVEL,
            split: 0,
            load: 1,
        }
    }

    /// Ids indexed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.next.len()
    }

    #[inline]
    fn bucket(&self, h: u32) -> usize {
        let low = h & ((1u32 << self.level) - 1);
        if low < self.split {
            (h & ((2u32 << self.level) - 1)) as usize
        } else {
            low as usize
        }
    }

    /// The id whose key `eq` accepts among those in `hash`'s bucket.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.heads.is_empty() {
            return None;
        }
        let mut cur = self.heads[self.bucket(hash as u32)];
        while cur != NONE {
            if eq(cur) {
                return Some(cur);
            }
            cur = self.next[cur as usize];
        }
        None
    }

    /// Room for one more id and the split it may bring; after `Ok`, [`HashIndex::insert`]
    /// cannot fail.
    pub fn reserve_one(&mut self) -> Result<(), OutOfMemory> {
        if self.heads.is_empty() {
            self.heads.extend_with(1 << START_LEVEL, NONE)?;
        }
        self.next.reserve(1)?;
        self.heads.reserve(1)
    }

    /// Indexes the next id (`len()`) under `hash` and returns it; `rehash` gives the hash of
    /// any id already indexed (a split needs those of one bucket). Call
    /// [`HashIndex::reserve_one`] first.
    #[inline]
    pub fn insert(&mut self, hash: u64, rehash: impl FnMut(u32) -> u64) -> u32 {
        let id = self.next.len() as u32;
        let b = self.bucket(hash as u32);
        self.next.push_reserved(self.heads[b]);
        self.heads[b] = id;
        if self.next.len() > self.load as usize * self.heads.len() {
            self.split_one(rehash);
        }
        id
    }

    /// Splits bucket `split` between itself and bucket `split + 2^level` by the next hash bit.
    fn split_one(&mut self, mut rehash: impl FnMut(u32) -> u64) {
        let s = self.split as usize;
        let high = 1usize << self.level;
        debug_assert_eq!(self.heads.len(), high + s);
        self.heads.push_reserved(NONE);
        let bit = 1u32 << self.level;
        let (mut stay, mut moved) = (NONE, NONE);
        let mut cur = self.heads[s];
        while cur != NONE {
            let c = cur as usize;
            let after = self.next[c];
            if (rehash(cur) as u32) & bit != 0 {
                self.next[c] = moved;
                moved = cur;
            } else {
                self.next[c] = stay;
                stay = cur;
            }
            cur = after;
        }
        self.heads[s] = stay;
        self.heads[s + high] = moved;
        self.split += 1;
        if self.split as usize == high {
            self.level += 1;
            self.split = 0;
        }
    }

    /// Empties the index, keeping its memory for the next profile.
    pub fn clear(&mut self) {
        self.heads.clear();
        self.next.clear();
        self.level = START_LEVEL;
        self.split = 0;
    }

    /// The longest chain (tests and benchmarks: the bound on a lookup's walk).
    #[cfg(test)]
    pub fn longest_chain(&self) -> usize {
        (0..self.heads.len())
            .map(|b| {
                let (mut n, mut cur) = (0, self.heads[b]);
                while cur != NONE {
                    n += 1;
                    cur = self.next[cur as usize];
                }
                n
            })
            .max()
            .unwrap_or(0)
    }

    pub fn mapped_bytes(&self) -> usize {
        self.heads.mapped_bytes() + self.next.mapped_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::FastHasher;
    use proptest::prelude::*;
    use std::hash::{Hash, Hasher};

    fn h<T: Hash>(v: T) -> u64 {
        let mut s = FastHasher::default();
        v.hash(&mut s);
        s.finish()
    }

    fn insert(ix: &mut HashIndex, keys: &mut Vec<u64>, k: u64) -> u32 {
        if let Some(id) = ix.find(h(k), |id| keys[id as usize] == k) {
            return id;
        }
        ix.reserve_one().unwrap();
        keys.push(k);
        ix.insert(h(k), |id| h(keys[id as usize]))
    }

    #[test]
    fn finds_every_key_through_many_splits_and_after_clear() {
        let mut ix = HashIndex::new(Memory::inherited());
        let mut keys = Vec::new();
        for round in 0..2 {
            for k in 0..200_000u64 {
                assert_eq!(insert(&mut ix, &mut keys, k * 7 + round), k as u32);
            }
            for k in 0..200_000u64 {
                let key = k * 7 + round;
                assert_eq!(
                    ix.find(h(key), |id| keys[id as usize] == key),
                    Some(k as u32)
                );
            }
            assert_eq!(
                ix.find(h(1u64 << 40), |id| keys[id as usize] == 1 << 40),
                None
            );
            assert!(ix.longest_chain() < 16, "chain {}", ix.longest_chain());
            ix.clear();
            keys.clear();
        }
    }

    #[test]
    fn a_fixed_index_refuses_when_full() {
        let mut ix = HashIndex::fixed(100, Memory::inherited());
        let mut keys = Vec::new();
        for k in 0..100u64 {
            insert(&mut ix, &mut keys, k);
        }
        assert_eq!(ix.reserve_one(), Err(OutOfMemory));
        assert_eq!(ix.len(), 100);
    }

    proptest! {
        /// The index agrees with a std HashMap on any sequence of keys, colliding or not.
        #[test]
        fn agrees_with_a_map(keys in proptest::collection::vec(0u64..500, 0..2000)) {
            let mut ix = HashIndex::new(Memory::inherited());
            let mut stored = Vec::new();
            let mut model = std::collections::HashMap::new();
            for k in keys {
                let next = model.len() as u32;
                let want = *model.entry(k).or_insert(next);
                prop_assert_eq!(insert(&mut ix, &mut stored, k), want);
            }
            prop_assert_eq!(ix.len(), model.len());
        }
    }
}
