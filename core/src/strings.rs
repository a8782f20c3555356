//! A profile's string table: every string once, in one text arena, found through a hash
//! chain over the arena (the same shape as the profile's stack table).
//!
//! One arena instead of a `Box<str>` per string plus a boxed map key: a new string costs no
//! allocation of its own (interning was 1.8× libdatadog's instructions with two allocations
//! per new string), and a lookup hashes the bytes once and compares them in place, without
//! validating UTF-8 again (names recorded as text arrive as bytes).

use std::hash::Hasher;

use crate::hash::{fast_map, FastHasher, FastMap};
use crate::hash_index::HashIndex;
use crate::region_vec::{Memory, OutOfMemory, RegionVec};

pub(crate) struct StringTable {
    /// Every string's bytes, valid UTF-8 (only `&str` is ever appended).
    text: RegionVec<u8>,
    /// (start, len) in `text`, by index.
    spans: RegionVec<(u32, u32)>,
    /// The low half of each string's hash: compared before the bytes on lookup, and read by
    /// an index split instead of hashing the string again (strings are few next to stacks,
    /// and the costliest keys to compare and hash).
    hashes: RegionVec<u32>,
    index: HashIndex,
    /// Invalid UTF-8 byte strings seen, by the index of their lossy replacement (rare: in the
    /// ordinary heap).
    invalid: FastMap<Box<[u8]>, u32>,
}

fn hash(b: &[u8]) -> u64 {
    let mut h = FastHasher::default();
    h.write(b);
    h.finish()
}

impl StringTable {
    pub fn new(mem: Memory) -> Self {
        StringTable {
            text: RegionVec::new(mem),
            spans: RegionVec::new(mem),
            hashes: RegionVec::new(mem),
            index: HashIndex::dense(mem),
            invalid: fast_map(),
        }
    }

    /// Empties the table, keeping its memory.
    pub fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
        self.hashes.clear();
        self.index.clear();
        self.invalid.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    fn bytes(&self, i: u32) -> &[u8] {
        let (start, len) = self.spans[i as usize];
        &self.text[start as usize..(start + len) as usize]
    }

    pub fn get(&self, i: u32) -> &str {
        // SAFETY: `text` holds only whole `&str`s appended by `push`, and every span is one
        // of them, so it is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(self.bytes(i)) }
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.spans.len() as u32).map(move |i| self.get(i))
    }

    #[inline]
    fn find(&self, b: &[u8], h: u64) -> Option<u32> {
        // The stored hash first: most chain entries are other strings, rejected without
        // touching their bytes.
        self.index.find(h, |i| {
            self.hashes[i as usize] == h as u32 && self.bytes(i) == b
        })
    }

    fn push(&mut self, s: &str, h: u64) -> Result<u32, OutOfMemory> {
        let start = self.text.len();
        if start + s.len() > u32::MAX as usize || self.spans.len() >= u32::MAX as usize - 1 {
            return Err(OutOfMemory);
        }
        self.text.reserve(s.len())?;
        self.spans.reserve(1)?;
        self.hashes.reserve(1)?;
        self.index.reserve_one()?;
        self.text.extend_from_slice(s.as_bytes())?;
        self.spans.push_reserved((start as u32, s.len() as u32));
        self.hashes.push_reserved(h as u32);
        let hashes = &self.hashes;
        Ok(self.index.insert(h, |i| hashes[i as usize] as u64))
    }

    /// The index of `s` if this table holds it (nothing is added).
    pub fn lookup(&self, s: &str) -> Option<u32> {
        self.find(s.as_bytes(), hash(s.as_bytes()))
    }

    pub fn intern(&mut self, s: &str) -> Result<u32, OutOfMemory> {
        let h = hash(s.as_bytes());
        match self.find(s.as_bytes(), h) {
            Some(i) => Ok(i),
            None => self.push(s, h),
        }
    }

    /// Interns bytes, replacing invalid UTF-8 lossily; valid text is validated only when new.
    pub fn intern_bytes(&mut self, b: &[u8]) -> Result<u32, OutOfMemory> {
        let h = hash(b);
        if let Some(i) = self.find(b, h) {
            return Ok(i);
        }
        match std::str::from_utf8(b) {
            Ok(s) => self.push(s, h),
            Err(_) => {
                if let Some(&i) = self.invalid.get(b) {
                    return Ok(i);
                }
                let i = self.intern(&String::from_utf8_lossy(b))?;
                self.invalid.insert(b.into(), i);
                Ok(i)
            }
        }
    }

    pub fn mapped_bytes(&self) -> usize {
        self.text.mapped_bytes()
            + self.spans.mapped_bytes()
            + self.hashes.mapped_bytes()
            + self.index.mapped_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_string_same_index_and_order_kept() {
        let mut t = StringTable::new(Memory::inherited());
        assert_eq!(t.intern(""), Ok(0));
        let a = t.intern("alpha");
        let b = t.intern_bytes(b"beta");
        let bad = t.intern_bytes(b"x\xffy").unwrap();
        assert_eq!(t.intern_bytes(b"alpha"), a);
        assert_eq!(t.intern("beta"), b);
        assert_eq!(t.get(bad), "x\u{fffd}y");
        assert_eq!(t.intern_bytes(b"x\xffy"), Ok(bad));
        assert_eq!(t.intern("x\u{fffd}y"), Ok(bad));
        assert_eq!(
            t.iter().collect::<Vec<_>>(),
            vec!["", "alpha", "beta", "x\u{fffd}y"]
        );
        t.clear();
        assert_eq!(t.len(), 0);
        assert_eq!(t.intern("beta"), Ok(0));
    }

    #[test]
    fn many_strings_with_shared_prefixes() {
        let mut t = StringTable::new(Memory::inherited());
        let ids: Vec<u32> = (0..5000)
            .map(|i| t.intern(&format!("fn_{i}")).unwrap())
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.get(*id), format!("fn_{i}"));
            assert_eq!(t.intern_bytes(format!("fn_{i}").as_bytes()), Ok(*id));
        }
    }
}
