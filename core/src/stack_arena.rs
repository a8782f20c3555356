//! The location ids of every stack in a profile, back to back: two bytes each while every
//! location id fits in 16 bits (most profiles have far fewer than 65,535 locations), four
//! once one does not.
//!
//! The arena is the largest table of a profile with many unique stacks (18 ids per stack):
//! narrow ids halve it (100,000 unique 18-frame stacks: 3.6 MB instead of 7.2 MB). Widening
//! copies the arena once and is sticky across [`StackArena::clear`], so a collector whose
//! profiles need wide ids widens once, not every profile.

use crate::region_vec::{Memory, OutOfMemory, RegionVec};

pub(crate) struct StackArena {
    narrow: RegionVec<u16>,
    wide: RegionVec<u32>,
    is_wide: bool,
    mem: Memory,
}

/// One stack's location ids.
#[derive(Clone, Copy)]
pub(crate) enum StackIds<'a> {
    Narrow(&'a [u16]),
    Wide(&'a [u32]),
}

impl StackArena {
    pub fn new(mem: Memory) -> Self {
        StackArena {
            narrow: RegionVec::new(mem),
            wide: RegionVec::new(mem),
            is_wide: false,
            mem,
        }
    }

    pub fn len(&self) -> usize {
        if self.is_wide {
            self.wide.len()
        } else {
            self.narrow.len()
        }
    }

    /// Empties the arena, keeping its memory (and its width).
    pub fn clear(&mut self) {
        self.narrow.clear();
        self.wide.clear();
    }

    #[inline]
    pub fn get(&self, start: u32, len: u32) -> StackIds<'_> {
        let r = start as usize..(start + len) as usize;
        if self.is_wide {
            StackIds::Wide(&self.wide[r])
        } else {
            StackIds::Narrow(&self.narrow[r])
        }
    }

    #[inline]
    pub fn eq(&self, start: u32, len: u32, ids: &[u32]) -> bool {
        match self.get(start, len) {
            StackIds::Wide(s) => s == ids,
            StackIds::Narrow(s) => {
                s.len() == ids.len() && s.iter().zip(ids).all(|(&a, &b)| a as u32 == b)
            }
        }
    }

    /// Appends `ids`, widening the arena first if one of them needs it.
    pub fn push(&mut self, ids: &[u32]) -> Result<(), OutOfMemory> {
        if !self.is_wide && ids.iter().any(|&i| i > u16::MAX as u32) {
            self.widen(ids.len())?;
        }
        if self.is_wide {
            self.wide.extend_from_slice(ids)
        } else {
            self.narrow.reserve(ids.len())?;
            for &i in ids {
                self.narrow.push_reserved(i as u16);
            }
            Ok(())
        }
    }

    #[cold]
    fn widen(&mut self, more: usize) -> Result<(), OutOfMemory> {
        self.wide.clear();
        self.wide.reserve(self.narrow.len() + more)?;
        for &i in self.narrow.iter() {
            self.wide.push_reserved(i as u32);
        }
        // The narrow arena's memory goes back: a wide arena stays wide.
        self.narrow = RegionVec::new(self.mem);
        self.is_wide = true;
        Ok(())
    }

    pub fn mapped_bytes(&self) -> usize {
        self.narrow.mapped_bytes() + self.wide.mapped_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(a: &StackArena, start: u32, len: u32) -> Vec<u32> {
        match a.get(start, len) {
            StackIds::Narrow(s) => s.iter().map(|&x| x as u32).collect(),
            StackIds::Wide(s) => s.to_vec(),
        }
    }

    #[test]
    fn narrow_until_an_id_needs_more_then_wide_for_good() {
        let mut a = StackArena::new(Memory::inherited());
        a.push(&[1, 2, 65535]).unwrap();
        assert!(!a.is_wide);
        assert!(a.eq(0, 3, &[1, 2, 65535]));
        assert!(!a.eq(0, 3, &[1, 2, 65536]));
        a.push(&[70_000, 3]).unwrap();
        assert!(a.is_wide);
        assert_eq!(a.len(), 5);
        assert_eq!(ids(&a, 0, 3), [1, 2, 65535]);
        assert_eq!(ids(&a, 3, 2), [70_000, 3]);
        assert!(a.eq(3, 2, &[70_000, 3]));
        a.clear();
        a.push(&[4]).unwrap();
        assert!(a.is_wide, "width is sticky across clear");
        assert_eq!(ids(&a, 0, 1), [4]);
    }
}
