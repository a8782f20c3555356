//! A profile's string table: every string once, in one text arena, found through a hash
//! chain over the arena (the same shape as the profile's stack table).
//!
//! One arena instead of a `Box<str>` per string plus a boxed map key: a new string costs no
//! allocation of its own (interning was 1.8× libdatadog's instructions with two allocations
//! per new string), and a lookup hashes the bytes once and compares them in place, without
//! validating UTF-8 again (names recorded as text arrive as bytes).

use std::hash::Hasher;

use crate::hash::{fast_map, FastHasher, FastMap};

const NONE: u32 = u32::MAX;

pub(crate) struct StringTable {
    text: String,
    /// (start, len) in `text`, by index.
    spans: Vec<(u32, u32)>,
    /// Chain per hash: the newest index, then `next[index]`.
    heads: FastMap<u64, u32>,
    next: Vec<u32>,
    /// Invalid UTF-8 byte strings seen, by the index of their lossy replacement (rare).
    invalid: FastMap<Box<[u8]>, u32>,
}

fn hash(b: &[u8]) -> u64 {
    let mut h = FastHasher::default();
    h.write(b);
    h.finish()
}

impl StringTable {
    pub fn new() -> Self {
        StringTable {
            text: String::new(),
            spans: Vec::new(),
            heads: fast_map(),
            next: Vec::new(),
            invalid: fast_map(),
        }
    }

    fn bytes(&self, i: u32) -> &[u8] {
        let (start, len) = self.spans[i as usize];
        &self.text.as_bytes()[start as usize..(start + len) as usize]
    }

    pub fn get(&self, i: u32) -> &str {
        let (start, len) = self.spans[i as usize];
        &self.text[start as usize..(start + len) as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.spans.len() as u32).map(move |i| self.get(i))
    }

    fn find(&self, b: &[u8], h: u64) -> Option<u32> {
        let mut cur = self.heads.get(&h).copied().unwrap_or(NONE);
        while cur != NONE {
            if self.bytes(cur) == b {
                return Some(cur);
            }
            cur = self.next[cur as usize];
        }
        None
    }

    fn push(&mut self, s: &str, h: u64) -> u32 {
        let i = self.spans.len() as u32;
        self.spans.push((self.text.len() as u32, s.len() as u32));
        self.text.push_str(s);
        let head = self.heads.insert(h, i).unwrap_or(NONE);
        self.next.push(head);
        i
    }

    pub fn intern(&mut self, s: &str) -> u32 {
        let h = hash(s.as_bytes());
        match self.find(s.as_bytes(), h) {
            Some(i) => i,
            None => self.push(s, h),
        }
    }

    /// Interns bytes, replacing invalid UTF-8 lossily; valid text is validated only when new.
    pub fn intern_bytes(&mut self, b: &[u8]) -> u32 {
        let h = hash(b);
        if let Some(i) = self.find(b, h) {
            return i;
        }
        match std::str::from_utf8(b) {
            Ok(s) => self.push(s, h),
            Err(_) => {
                if let Some(&i) = self.invalid.get(b) {
                    return i;
                }
                let i = self.intern(&String::from_utf8_lossy(b));
                self.invalid.insert(b.into(), i);
                i
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_string_same_index_and_order_kept() {
        let mut t = StringTable::new();
        assert_eq!(t.intern(""), 0);
        let a = t.intern("alpha");
        let b = t.intern_bytes(b"beta");
        assert_eq!(t.intern_bytes(b"alpha"), a);
        assert_eq!(t.intern("beta"), b);
        let bad = t.intern_bytes(b"x\xffy");
        assert_eq!(t.get(bad), "x\u{fffd}y");
        assert_eq!(t.intern_bytes(b"x\xffy"), bad);
        assert_eq!(t.intern("x\u{fffd}y"), bad);
        assert_eq!(
            t.iter().collect::<Vec<_>>(),
            vec!["", "alpha", "beta", "x\u{fffd}y"]
        );
    }

    #[test]
    fn many_strings_with_shared_prefixes() {
        let mut t = StringTable::new();
        let ids: Vec<u32> = (0..5000).map(|i| t.intern(&format!("fn_{i}"))).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.get(*id), format!("fn_{i}"));
            assert_eq!(t.intern_bytes(format!("fn_{i}").as_bytes()), *id);
        }
    }
}
