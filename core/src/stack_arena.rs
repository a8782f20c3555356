//! The location ids of every stack in a profile, back to back, and where each stack starts
//! (its end is the next one's start): two bytes per id while every location id fits in 16
//! bits (profiles with fewer than 65,535 locations), four once one does not.
//!
//! The arena is the largest table of a profile with many unique stacks (18 ids per stack):
//! narrow ids halve it (100,000 unique 18-frame stacks: 3.6 MB instead of 7.2 MB). Widening
//! copies the arena once and is sticky across [`StackArena::clear`], so a collector whose
//! profiles need wide ids widens once, not every profile.

use crate::region_vec::{Memory, OutOfMemory, RegionVec};

pub(crate) struct StackArena {
    /// Stack id → its first id's position.
    starts: RegionVec<u32>,
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
            starts: RegionVec::new(mem),
            narrow: RegionVec::new(mem),
            wide: RegionVec::new(mem),
            is_wide: false,
            mem,
        }
    }

    /// Stacks held.
    pub fn count(&self) -> usize {
        self.starts.len()
    }

    /// Location ids held.
    fn len(&self) -> usize {
        if self.is_wide {
            self.wide.len()
        } else {
            self.narrow.len()
        }
    }

    /// Empties the arena, keeping its memory (and its width).
    pub fn clear(&mut self) {
        self.starts.clear();
        self.narrow.clear();
        self.wide.clear();
    }

    /// The location ids of stack `id`.
    #[inline]
    pub fn get(&self, id: u32) -> StackIds<'_> {
        let i = id as usize;
        let start = self.starts[i] as usize;
        let end = match self.starts.get(i + 1) {
            Some(&e) => e as usize,
            None => self.len(),
        };
        let r = start..end;
        if self.is_wide {
            StackIds::Wide(&self.wide[r])
        } else {
            StackIds::Narrow(&self.narrow[r])
        }
    }

    #[inline]
    pub fn eq(&self, id: u32, ids: &[u32]) -> bool {
        match self.get(id) {
            StackIds::Wide(s) => s == ids,
            StackIds::Narrow(s) => {
                s.len() == ids.len() && s.iter().zip(ids).all(|(&a, &b)| a as u32 == b)
            }
        }
    }

    /// Appends a stack of `ids` and returns its id, widening the arena first if one of them
    /// needs it. On error nothing is added.
    pub fn push(&mut self, ids: &[u32]) -> Result<u32, OutOfMemory> {
        let start = self.len();
        if start + ids.len() > u32::MAX as usize || self.starts.len() >= u32::MAX as usize {
            return Err(OutOfMemory);
        }
        self.starts.reserve(1)?;
        if !self.is_wide && ids.iter().any(|&i| i > u16::MAX as u32) {
            self.widen(ids.len())?;
        }
        if self.is_wide {
            self.wide.extend_from_slice(ids)?;
        } else {
            self.narrow.reserve(ids.len())?;
            for &i in ids {
                self.narrow.push_reserved(i as u16);
            }
        }
        self.starts.push_reserved(start as u32);
        Ok((self.starts.len() - 1) as u32)
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
        self.starts.mapped_bytes() + self.narrow.mapped_bytes() + self.wide.mapped_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(a: &StackArena, id: u32) -> Vec<u32> {
        match a.get(id) {
            StackIds::Narrow(s) => s.iter().map(|&x| x as u32).collect(),
            StackIds::Wide(s) => s.to_vec(),
        }
    }

    #[test]
    fn narrow_until_an_id_needs_more_then_wide_for_good() {
        let mut a = StackArena::new(Memory::inherited());
        assert_eq!(a.push(&[1, 2, 65535]), Ok(0));
        assert_eq!(a.push(&[]), Ok(1));
        assert!(!a.is_wide);
        assert!(a.eq(0, &[1, 2, 65535]));
        assert!(!a.eq(0, &[1, 2, 65536]));
        assert!(a.eq(1, &[]));
        assert_eq!(a.push(&[70_000, 3]), Ok(2));
        assert!(a.is_wide);
        assert_eq!(a.count(), 3);
        assert_eq!(ids(&a, 0), [1, 2, 65535]);
        assert_eq!(ids(&a, 1), Vec::<u32>::new());
        assert_eq!(ids(&a, 2), [70_000, 3]);
        assert!(a.eq(2, &[70_000, 3]));
        a.clear();
        assert_eq!(a.push(&[4]), Ok(0));
        assert!(a.is_wide, "width is sticky across clear");
        assert_eq!(ids(&a, 0), [4]);
    }
}
