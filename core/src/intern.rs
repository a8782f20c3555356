//! The process-wide string table behind [`StrId`]: a host interns its function and file names
//! once and records samples with ids from then on.
//!
//! It is process-wide rather than per profiler so that ids survive a profiler restart and a
//! fork: a runtime interns at start-up in the parent, and its forked workers keep using those
//! ids. Strings are leaked on purpose (bounded by [`MAX_STRINGS`] / [`MAX_BYTES`]): an id, once
//! handed out, must resolve for the life of the process.
//!
//! Locking: `TABLE` is a [`BriefLock`]; the fork prepare handler takes it (see `fork.rs`) so a
//! child never inherits it half-updated. Every critical section is therefore bounded whatever
//! the table holds: a lookup walks one hash chain; an insert walks one chain, pushes one id and
//! splits one bucket ([`HashIndex`] grows by linear hashing, never rehashing the table). The
//! tables are fixed-capacity regions ([`MAX_STRINGS`] entries) mapped once and never moved, so
//! no insert reallocates or copies under the lock (a `HashMap` here rehashed 1M entries, and a
//! `Vec` copied its 16 MiB, while a fork waited); a string's own copy is made before the lock
//! is taken. The regions are ordinary inherited memory: a forked child keeps every id.

use std::hash::Hasher;

use crate::error::{Error, Result};
use crate::hash::FastHasher;
use crate::hash_index::HashIndex;
use crate::region_vec::{Memory, RegionVec};
use crate::sample::StrId;
use crate::sync::ForkLock;

pub const MAX_STRINGS: usize = 1 << 20;
pub const MAX_BYTES: usize = 64 << 20;

pub(crate) struct Table {
    by_id: RegionVec<&'static str>,
    /// The low half of each name's hash, for index splits (no string is hashed again under
    /// the lock).
    hashes: RegionVec<u32>,
    index: HashIndex,
    bytes: usize,
}

impl Table {
    fn find(&self, text: &str, h: u64) -> Option<u32> {
        self.index.find(h, |i| {
            self.hashes[i as usize] == h as u32 && self.by_id[i as usize] == text
        })
    }
}

pub(crate) static TABLE: ForkLock<Table> = ForkLock::new(Table {
    by_id: RegionVec::fixed(MAX_STRINGS, Memory::inherited()),
    hashes: RegionVec::fixed(MAX_STRINGS, Memory::inherited()),
    index: HashIndex::fixed(MAX_STRINGS, Memory::inherited()),
    bytes: 0,
});

fn hash(b: &[u8]) -> u64 {
    let mut h = FastHasher::default();
    h.write(b);
    h.finish()
}

/// Interns `name` (invalid UTF-8 replaced lossily) and returns its id.
pub fn intern(name: &[u8]) -> Result<StrId> {
    let text = String::from_utf8_lossy(name);
    let h = hash(text.as_bytes());
    if let Some(id) = TABLE.lock()?.find(&text, h) {
        return Ok(StrId(id));
    }
    // A new name: copied with no lock held, then looked up again (another thread may have
    // added it meanwhile) and pushed.
    let owned: Box<str> = text.into_owned().into_boxed_str();
    let mut table = TABLE.lock()?;
    if let Some(id) = table.find(&owned, h) {
        drop(table);
        return Ok(StrId(id));
    }
    if table.by_id.len() >= MAX_STRINGS || table.bytes + owned.len() > MAX_BYTES {
        return Err(Error::InternerFull {
            capacity: MAX_STRINGS,
        });
    }
    if table.by_id.reserve(1).is_err()
        || table.hashes.reserve(1).is_err()
        || table.index.reserve_one().is_err()
    {
        return Err(Error::Os {
            call: "mmap (string table)",
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        });
    }
    let leaked: &'static str = Box::leak(owned);
    table.by_id.push_reserved(leaked);
    table.bytes += leaked.len();
    table.hashes.push_reserved(h as u32);
    let t = &mut *table;
    let hashes = &t.hashes;
    let id = t.index.insert(h, |i| hashes[i as usize] as u64);
    Ok(StrId(id))
}

/// Resolves an id; `None` for an id never handed out.
pub fn resolve(id: StrId) -> Option<&'static str> {
    let table = TABLE.lock().ok()?;
    // Inside the lock, so a test held here really holds the string table across a fork.
    crate::pause_points::pause_point(crate::pause_points::Point::HoldingStringTableToResolve);
    table.by_id.get(id.0 as usize).copied()
}

/// Strings interned so far (benchmarks).
pub fn len() -> usize {
    TABLE.lock().map_or(0, |t| t.by_id.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_id() {
        let a = intern(b"intern_test_fn").unwrap();
        let b = intern(b"intern_test_fn").unwrap();
        let c = intern(b"intern_test_other").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(resolve(a), Some("intern_test_fn"));
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let id = intern(b"bad\xffname").unwrap();
        assert_eq!(resolve(id), Some("bad\u{fffd}name"));
    }

    #[test]
    fn unknown_id_resolves_to_none() {
        assert_eq!(resolve(StrId(u32::MAX)), None);
    }
}
