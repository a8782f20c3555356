//! The process-wide string table behind [`StrId`]: a host interns its function and file names
//! once and records samples with ids from then on.
//!
//! It is process-wide rather than per profiler so that ids survive a profiler restart and a
//! fork: a runtime interns at start-up in the parent, and its forked workers keep using those
//! ids. Strings are leaked on purpose (bounded by [`MAX_STRINGS`] / [`MAX_BYTES`]): an id, once
//! handed out, must resolve for the life of the process.
//!
//! Locking: `TABLE` is a [`BriefLock`]; the fork prepare handler takes it (see `fork.rs`) so a
//! child never inherits it half-updated.

use crate::error::{Error, Result};
use crate::hash::{fast_map, FastMap};
use crate::sample::StrId;
use crate::sync::BriefLock;

pub const MAX_STRINGS: usize = 1 << 20;
pub const MAX_BYTES: usize = 64 << 20;

#[derive(Default)]
pub(crate) struct Table {
    by_name: Option<FastMap<&'static str, u32>>,
    by_id: Vec<&'static str>,
    bytes: usize,
}

pub(crate) static TABLE: BriefLock<Table> = BriefLock::new(Table {
    by_name: None,
    by_id: Vec::new(),
    bytes: 0,
});

/// Interns `name` (invalid UTF-8 replaced lossily) and returns its id.
pub fn intern(name: &[u8]) -> Result<StrId> {
    let text = String::from_utf8_lossy(name);
    // Allocate outside the lock: the lock is held only for the lookup and the push.
    let mut table = TABLE.lock();
    let table = &mut *table;
    let map = table.by_name.get_or_insert_with(fast_map);
    if let Some(&id) = map.get(&*text) {
        return Ok(StrId(id));
    }
    if table.by_id.len() >= MAX_STRINGS || table.bytes + text.len() > MAX_BYTES {
        return Err(Error::InternerFull {
            capacity: MAX_STRINGS,
        });
    }
    let leaked: &'static str = Box::leak(text.into_owned().into_boxed_str());
    let id = table.by_id.len() as u32;
    table.by_id.push(leaked);
    table.bytes += leaked.len();
    map.insert(leaked, id);
    Ok(StrId(id))
}

/// Resolves an id; `None` for an id never handed out.
pub fn resolve(id: StrId) -> Option<&'static str> {
    let table = TABLE.lock();
    // Inside the lock, so a test held here really holds the string table across a fork.
    crate::pause_points::pause_point(crate::pause_points::Point::HoldingStringTableToResolve);
    table.by_id.get(id.0 as usize).copied()
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
