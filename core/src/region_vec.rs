//! A vector in a mapping of its own: the storage of every table of a profile being built.
//!
//! Why not `Vec` in the ordinary heap: a forked child never reads its parent's profile, yet
//! heap pages are inherited, so each `fork()` copied the page tables of the whole profile (3×
//! slower forks with 100,000 stacks in progress) and the parent then took a copy-on-write
//! fault on every table page it wrote. A `RegionVec` is an anonymous mapping that the
//! platform excludes from children ([`Platform::exclude_from_fork`]), so neither its pages
//! nor their page-table entries are copied.
//!
//! Why a mapping per table rather than a general allocator over regions (`allocator-api2`
//! with `hashbrown`): tables only ever grow until the profile is written, then start again
//! empty. A mapping grows in place or is moved by the kernel without copying
//! ([`Platform::grow_mapping`], Linux `mremap`), so no table is ever resident twice (a heap
//! `Vec` or hash map holds its old and new buffers at once while it grows), and
//! [`RegionVec::clear`] keeps the pages: the next profile writes into memory that is already
//! faulted in, and the collector's steady state makes no `mmap`, `munmap` or first-touch
//! fault (a `fork()` holds the parent's mmap lock for writing and would wait for them).
//!
//! Growth never aborts: a mapping the kernel refuses is an [`OutOfMemory`] that the profile
//! turns into a dropped, counted sample.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::platform::Platform;
use crate::region::{map_anonymous, page_size};

/// The smallest mapping a table makes: pages that are never written cost no memory, and
/// fewer, larger steps mean fewer calls into the kernel while a profile grows.
const MIN_MAP: usize = 64 << 10;

/// Where a table's memory comes from.
#[derive(Clone, Copy)]
pub struct Memory {
    platform: Option<&'static dyn Platform>,
}

impl Memory {
    /// Excluded from forked children where the platform can, and grown without copying
    /// where it can: what the collector uses. The memory must never be touched by a child.
    pub const fn fork_local(platform: &'static dyn Platform) -> Memory {
        Memory {
            platform: Some(platform),
        }
    }

    /// Ordinary memory from the global allocator, inherited by children.
    pub const fn inherited() -> Memory {
        Memory { platform: None }
    }
}

/// A table could not get the memory it needed (the kernel refused a mapping, or a fixed
/// capacity is used up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory;

pub(crate) struct RegionVec<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    /// Elements the mapping holds.
    cap: usize,
    /// Bytes mapped (or allocated, for inherited memory); 0 before the first push.
    map_len: usize,
    /// At most this many elements; a fixed table maps all of them at its first push.
    limit: usize,
    fixed: bool,
    excluded: bool,
    mem: Memory,
    _owns: PhantomData<T>,
}

// SAFETY: the vector owns its mapping exclusively, like `Vec<T>`.
unsafe impl<T: Copy + Send> Send for RegionVec<T> {}
// SAFETY: shared access only reads, like `Vec<T>`.
unsafe impl<T: Copy + Sync> Sync for RegionVec<T> {}

impl<T: Copy> RegionVec<T> {
    /// An empty vector that maps nothing until its first push and grows without bound.
    pub const fn new(mem: Memory) -> Self {
        Self::with_limit(usize::MAX, false, mem)
    }

    /// An empty vector of at most `limit` elements, mapped (allocated) whole at its first
    /// push (pages fault in as they are written) and never moved afterwards: growing it costs no system
    /// call, which bounds the time of a critical section that pushes to it.
    pub const fn fixed(limit: usize, mem: Memory) -> Self {
        Self::with_limit(limit, true, mem)
    }

    const fn with_limit(limit: usize, fixed: bool, mem: Memory) -> Self {
        RegionVec {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
            map_len: 0,
            limit,
            fixed,
            excluded: false,
            mem,
            _owns: PhantomData,
        }
    }

    #[inline]
    pub fn push(&mut self, v: T) -> Result<(), OutOfMemory> {
        if self.len == self.cap {
            self.grow(1)?;
        }
        // SAFETY: `len < cap`, within the mapping.
        unsafe { self.ptr.as_ptr().add(self.len).write(v) };
        self.len += 1;
        Ok(())
    }

    /// A push after [`RegionVec::reserve`] made room for it.
    #[inline]
    pub fn push_reserved(&mut self, v: T) {
        debug_assert!(self.len < self.cap);
        if self.len < self.cap {
            // SAFETY: `len < cap`, within the mapping.
            unsafe { self.ptr.as_ptr().add(self.len).write(v) };
            self.len += 1;
        }
    }

    /// Room for `n` more elements.
    #[inline]
    pub fn reserve(&mut self, n: usize) -> Result<(), OutOfMemory> {
        if self.cap - self.len < n {
            self.grow(n)?;
        }
        Ok(())
    }

    #[inline]
    pub fn extend_from_slice(&mut self, s: &[T]) -> Result<(), OutOfMemory> {
        self.reserve(s.len())?;
        // SAFETY: room for `s.len()` more elements was just made; `s` cannot alias our
        // uninitialised tail.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), self.ptr.as_ptr().add(self.len), s.len())
        };
        self.len += s.len();
        Ok(())
    }

    /// Appends `n` copies of `v`.
    pub fn extend_with(&mut self, n: usize, v: T) -> Result<(), OutOfMemory> {
        self.reserve(n)?;
        for i in 0..n {
            // SAFETY: room for `n` more elements was just made.
            unsafe { self.ptr.as_ptr().add(self.len + i).write(v) };
        }
        self.len += n;
        Ok(())
    }

    /// Empties the vector and keeps its mapping and pages for the next profile.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The start of the mapping, for memory handed to C code as a workspace (after
    /// [`RegionVec::reserve`]; the elements past `len` are not initialised).
    pub fn spare_ptr(&mut self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// Bytes of address space mapped (an upper bound on what is resident).
    pub fn mapped_bytes(&self) -> usize {
        self.map_len
    }

    #[cold]
    fn grow(&mut self, n: usize) -> Result<(), OutOfMemory> {
        let elem = size_of::<T>().max(1);
        let need = self.len.checked_add(n).ok_or(OutOfMemory)?;
        if need > self.limit {
            return Err(OutOfMemory);
        }
        let heap = self.mem.platform.is_none();
        let want = if self.fixed {
            self.limit.checked_mul(elem).ok_or(OutOfMemory)?
        } else {
            let need_bytes = need.checked_mul(elem).ok_or(OutOfMemory)?;
            let floor = if heap { 64 } else { MIN_MAP };
            need_bytes.max(self.map_len.saturating_mul(2)).max(floor)
        };
        let unit = if heap { align_of::<T>() } else { page_size() };
        let want = want
            .checked_next_multiple_of(unit)
            .filter(|&w| w <= isize::MAX as usize)
            .ok_or(OutOfMemory)?;
        if heap {
            self.grow_heap(want)?;
        } else if self.map_len == 0 {
            let p = map_anonymous(want).ok_or(OutOfMemory)?;
            self.excluded = self.exclude(p, want);
            self.ptr = p.cast();
        } else {
            let grown = self.mem.platform.and_then(|pf| {
                // SAFETY: our own page-aligned mapping of `map_len` bytes; on success we use
                // only the returned range.
                unsafe { pf.grow_mapping(self.ptr.as_ptr().cast(), self.map_len, want) }
            });
            match grown.and_then(NonNull::new) {
                Some(p) => self.ptr = p.cast(),
                None => {
                    let p = map_anonymous(want).ok_or(OutOfMemory)?;
                    let excluded = self.exclude(p, want);
                    // SAFETY: both ranges are ours and distinct; `len` elements are initialised.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            self.ptr.as_ptr(),
                            p.as_ptr().cast::<T>(),
                            self.len,
                        )
                    };
                    let len = self.len;
                    self.release();
                    self.ptr = p.cast();
                    self.len = len;
                    self.excluded = excluded;
                }
            }
        }
        self.map_len = want;
        self.cap = (want / elem).min(self.limit);
        Ok(())
    }

    /// Inherited memory comes from the global allocator: as cheap as a `Vec` for the short
    /// builders of tools and tests, and what the allocator does with large blocks (glibc
    /// grows them with `mremap`) applies.
    fn grow_heap(&mut self, want: usize) -> Result<(), OutOfMemory> {
        let layout =
            std::alloc::Layout::from_size_align(want, align_of::<T>()).map_err(|_| OutOfMemory)?;
        let p = if self.map_len == 0 {
            // SAFETY: `want` is non-zero (at least 64 bytes or a fixed table's size).
            unsafe { std::alloc::alloc(layout) }
        } else {
            let old = std::alloc::Layout::from_size_align(self.map_len, align_of::<T>())
                .map_err(|_| OutOfMemory)?;
            // SAFETY: our block, allocated with `old`; `want` is non-zero and fits isize.
            unsafe { std::alloc::realloc(self.ptr.as_ptr().cast(), old, want) }
        };
        self.ptr = NonNull::new(p).ok_or(OutOfMemory)?.cast();
        Ok(())
    }

    fn exclude(&self, p: NonNull<u8>, len: usize) -> bool {
        match self.mem.platform {
            // SAFETY: a fresh page-aligned mapping we own, which no child touches (the owner
            // of a fork-local table never reads it after a fork), re-included in `release`.
            Some(pf) => unsafe { pf.exclude_from_fork(p.as_ptr(), len) },
            None => false,
        }
    }

    fn release(&mut self) {
        if self.map_len == 0 {
            return;
        }
        let p = self.ptr.as_ptr().cast::<u8>();
        match self.mem.platform {
            None => {
                if let Ok(layout) =
                    std::alloc::Layout::from_size_align(self.map_len, align_of::<T>())
                {
                    // SAFETY: our block, allocated with this layout, freed once.
                    unsafe { std::alloc::dealloc(p, layout) };
                }
            }
            Some(pf) => {
                if self.excluded {
                    // SAFETY: the range we excluded, re-included before it is unmapped so that
                    // whatever the kernel maps there next is ordinary memory.
                    unsafe { pf.include_in_fork(p, self.map_len) };
                }
                // SAFETY: our mapping of `map_len` bytes, unmapped once (the caller forgets it).
                unsafe { libc::munmap(p.cast(), self.map_len) };
            }
        }
        self.map_len = 0;
        self.cap = 0;
        self.len = 0;
        self.ptr = NonNull::dangling();
    }
}

impl<T: Copy> Deref for RegionVec<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements at `ptr` (dangling and 0 when nothing is mapped).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for RegionVec<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for RegionVec<T> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::platform::ForkStrategy;

    /// A platform that excludes nothing and grows by copying (the fallback path).
    pub(crate) struct Plain;
    impl Platform for Plain {
        fn name(&self) -> &'static str {
            "test"
        }
        fn fork_strategy(&self) -> ForkStrategy {
            ForkStrategy::Atfork
        }
        fn install_fork_hooks(&self) -> crate::Result<()> {
            Ok(())
        }
        fn fork_sentinel(&self) -> Option<&'static std::sync::atomic::AtomicU64> {
            None
        }
        fn thread_cpu_time_ns(&self) -> Option<u64> {
            None
        }
        fn monotonic_ns(&self) -> u64 {
            0
        }
    }

    #[test]
    fn grows_keeps_contents_and_reuses_after_clear() {
        for mem in [Memory::inherited(), Memory::fork_local(&Plain)] {
            let mut v = RegionVec::<u64>::new(mem);
            assert_eq!(v.mapped_bytes(), 0);
            for i in 0..100_000u64 {
                v.push(i * 3).unwrap();
            }
            assert_eq!(v.len(), 100_000);
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));
            let mapped = v.mapped_bytes();
            assert!(mapped >= 800_000);
            v.clear();
            v.extend_from_slice(&[7; 50_000]).unwrap();
            assert_eq!(v.mapped_bytes(), mapped, "clear keeps the mapping");
            assert_eq!(&v[..3], &[7, 7, 7]);
            v.extend_with(3, 9).unwrap();
            assert_eq!(v.len(), 50_003);
            v.truncate(2);
            assert_eq!(&v[..], &[7, 7]);
        }
    }

    #[test]
    fn a_fixed_vector_refuses_past_its_limit_and_never_moves() {
        let mut v = RegionVec::<u32>::fixed(10_000, Memory::inherited());
        v.push(1).unwrap();
        let first = v.as_ptr();
        for i in 1..10_000 {
            v.push(i).unwrap();
        }
        assert_eq!(v.as_ptr(), first);
        assert_eq!(v.push(0), Err(OutOfMemory));
        assert_eq!(v.reserve(1), Err(OutOfMemory));
        assert_eq!(v.len(), 10_000);
    }

    #[test]
    fn an_impossible_size_is_an_error_not_an_abort() {
        let mut v = RegionVec::<u64>::new(Memory::inherited());
        assert_eq!(v.reserve(usize::MAX / 4), Err(OutOfMemory));
        assert_eq!(v.reserve(1 << 60), Err(OutOfMemory));
        v.push(1).unwrap();
        assert_eq!(&v[..], &[1]);
    }
}
