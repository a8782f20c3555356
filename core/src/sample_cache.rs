//! The samples a profile has seen more than once, by the bytes the host recorded them in:
//! what lets a repeated sample skip every per-frame lookup.
//!
//! A profile resolves a sample frame by frame: each name through the string table, each frame
//! to a location, the locations to a stack, the labels to a label set, then the (stack, label
//! set) row. That is ~20 hash lookups for an 18-frame stack, and most samples repeat a stack
//! the profile already holds. This cache maps a sample's encoded frames and labels (the wire
//! record minus its header and values) straight to the stack, label set and row they resolved
//! to: one hash of the bytes, one probe, one comparison.
//!
//! Rules that keep it exact and bounded:
//! - **Only samples seen before are remembered**: a sample is added to the cache when its
//!   full resolution found both its stack and its label set already in the profile. A flood of
//!   unique stacks therefore costs the cache nothing (no bytes copied, no memory), and the
//!   stacks that do repeat enter on their second sight.
//! - **A hit is exact**: the whole key is compared, never only its hash, so a cached answer is
//!   the one the full resolution would give (a profile's ids are a pure function of the bytes
//!   for its whole life: its tables only grow).
//! - **Bounded**: at most [`MAX_KEY_BYTES`] of keys and [`MAX_ENTRIES`] entries; when either
//!   is reached the cache empties and refills from the samples that keep coming. Its memory is
//!   fork-local like the profile's, cleared with the profile (ids are per profile), so a forked
//!   child starts with an empty one.

use crate::hash::{bytes_eq, hash_bytes};
use crate::hash_index::HashIndex;
use crate::region_vec::{Memory, RegionVec};

/// Bytes of keys held at most: about 2,000 samples of 18 text frames with long PHP-style
/// names (~2 KB each), 18,000 of 18 interned frames.
pub(crate) const MAX_KEY_BYTES: usize = 4 << 20;
/// Entries held at most.
pub(crate) const MAX_ENTRIES: usize = 1 << 15;

/// A sample as recorded, minus its values and timestamp: what identifies its stack and labels.
#[derive(Clone, Copy)]
pub(crate) struct Key<'a> {
    /// How `bytes` splits into frames and labels (frame count, label count, frame kind) and
    /// the frames truncation omitted: the same bytes under another shape are another sample.
    shape: u64,
    omitted: u32,
    bytes: &'a [u8],
    hash: u64,
}

impl<'a> Key<'a> {
    pub fn new(n_frames: u16, n_labels: u16, ids: bool, omitted: u32, bytes: &'a [u8]) -> Self {
        let shape = n_frames as u64 | (n_labels as u64) << 16 | (ids as u64) << 32;
        let meta = (shape ^ (omitted as u64) << 33).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Key {
            shape,
            omitted,
            bytes,
            hash: hash_bytes(bytes) ^ meta.rotate_left(32),
        }
    }
}

/// What a sample resolved to in the profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub stack: u32,
    pub labelset: u32,
    /// Its aggregated row, once it has one (`u32::MAX` until then: the sample may so far have
    /// come only with timestamps).
    pub row: u32,
}

#[derive(Clone, Copy)]
struct Entry {
    hash: u64,
    shape: u64,
    omitted: u32,
    start: u32,
    len: u32,
    resolved: Resolved,
}

pub(crate) struct SampleCache {
    entries: RegionVec<Entry>,
    keys: RegionVec<u8>,
    index: HashIndex,
    max_key_bytes: usize,
    max_entries: usize,
}

impl SampleCache {
    pub fn new(mem: Memory) -> Self {
        Self::with_limits(MAX_KEY_BYTES, MAX_ENTRIES, mem)
    }

    /// A cache that remembers nothing: every sample is resolved in full (tests compare the
    /// two paths).
    #[cfg(test)]
    pub fn disabled(mem: Memory) -> Self {
        Self::with_limits(0, 0, mem)
    }

    fn with_limits(max_key_bytes: usize, max_entries: usize, mem: Memory) -> Self {
        SampleCache {
            entries: RegionVec::new(mem),
            keys: RegionVec::new(mem),
            index: HashIndex::new(mem),
            max_key_bytes,
            max_entries,
        }
    }

    /// Forgets every sample, keeping the memory (for the next profile).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.keys.clear();
        self.index.clear();
    }

    /// The entry of a sample recorded with exactly `key`'s bytes, if remembered.
    #[inline]
    pub fn find(&self, key: &Key<'_>) -> Option<u32> {
        let (entries, keys) = (&self.entries, &self.keys);
        self.index.find(key.hash, |i| {
            let e = &entries[i as usize];
            e.hash == key.hash
                && e.shape == key.shape
                && e.omitted == key.omitted
                && bytes_eq(
                    &keys[e.start as usize..(e.start + e.len) as usize],
                    key.bytes,
                )
        })
    }

    #[inline]
    pub fn get(&self, entry: u32) -> Resolved {
        self.entries[entry as usize].resolved
    }

    #[inline]
    pub fn set_row(&mut self, entry: u32, row: u32) {
        self.entries[entry as usize].resolved.row = row;
    }

    /// Remembers what `key` resolved to. Best effort: a key too long to cache, or memory the
    /// kernel refuses, leaves the cache as it was (the sample is resolved in full next time).
    pub fn remember(&mut self, key: &Key<'_>, resolved: Resolved) {
        if key.bytes.len() > self.max_key_bytes / 4 {
            return;
        }
        if self.keys.len() + key.bytes.len() > self.max_key_bytes
            || self.entries.len() >= self.max_entries
        {
            self.clear();
        }
        let start = self.keys.len();
        if self.keys.reserve(key.bytes.len()).is_err()
            || self.entries.reserve(1).is_err()
            || self.index.reserve_one().is_err()
            || self.keys.extend_from_slice(key.bytes).is_err()
        {
            self.keys.truncate(start);
            return;
        }
        self.entries.push_reserved(Entry {
            hash: key.hash,
            shape: key.shape,
            omitted: key.omitted,
            start: start as u32,
            len: key.bytes.len() as u32,
            resolved,
        });
        let entries = &self.entries;
        self.index.insert(key.hash, |i| entries[i as usize].hash);
    }

    pub fn mapped_bytes(&self) -> usize {
        self.entries.mapped_bytes() + self.keys.mapped_bytes() + self.index.mapped_bytes()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(stack: u32) -> Resolved {
        Resolved {
            stack,
            labelset: 7,
            row: u32::MAX,
        }
    }

    #[test]
    fn finds_only_the_exact_key() {
        let mut c = SampleCache::new(Memory::inherited());
        let a = b"frames of a".to_vec();
        let k = Key::new(2, 0, false, 0, &a);
        assert_eq!(c.find(&k), None);
        c.remember(&k, resolved(1));
        let hit = c.find(&Key::new(2, 0, false, 0, &a)).expect("remembered");
        assert_eq!(c.get(hit), resolved(1));
        c.set_row(hit, 3);
        assert_eq!(c.get(hit).row, 3);
        // Same bytes, another shape: another sample.
        assert_eq!(c.find(&Key::new(1, 1, false, 0, &a)), None);
        assert_eq!(c.find(&Key::new(2, 0, true, 0, &a)), None);
        assert_eq!(c.find(&Key::new(2, 0, false, 5, &a)), None);
        assert_eq!(c.find(&Key::new(2, 0, false, 0, b"frames of b")), None);
        c.clear();
        assert_eq!(c.find(&k), None);
    }

    #[test]
    fn stays_within_its_limits_and_keeps_working() {
        let mut c = SampleCache::with_limits(1000, 8, Memory::inherited());
        let keys: Vec<Vec<u8>> = (0..100u32)
            .map(|i| format!("stack number {i:04} ").repeat(3).into_bytes())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            c.remember(&Key::new(1, 0, false, 0, k), resolved(i as u32));
            assert!(c.len() <= 8, "{} entries", c.len());
            assert!(c.keys.len() <= 1000, "{} key bytes", c.keys.len());
            // The newest is always found, with what it resolved to.
            let hit = c
                .find(&Key::new(1, 0, false, 0, k))
                .expect("just remembered");
            assert_eq!(c.get(hit).stack, i as u32);
        }
        // A key longer than a quarter of the budget is not cached at all.
        let long = vec![b'x'; 400];
        c.remember(&Key::new(1, 0, false, 0, &long), resolved(0));
        assert_eq!(c.find(&Key::new(1, 0, false, 0, &long)), None);
    }
}
