//! Memory that forked children do not inherit.
//!
//! The sample buffer is written by every host thread and belongs to one process: a child never
//! reads its parent's (docs/fork-protocol.md, rule 4). Left inheritable, its pages would be copied into every
//! child's page tables and write-protected in the parent, so each `fork()` would pay for them
//! and the next writes would fault (measured: +110 µs per fork with an 8 MiB buffer in use).
//! The backend marks the region "not inherited" (Linux `MADV_DONTFORK`, macOS
//! `VM_INHERIT_NONE`) where it can; elsewhere this is plain memory.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use crate::platform::Platform;

pub(crate) struct ForkLocalRegion {
    ptr: NonNull<MaybeUninit<u8>>,
    size: usize,
    platform: &'static dyn Platform,
    excluded: bool,
}

// SAFETY: the region is plain memory; who may touch which bytes is up to its owner
// (`SampleBuffer`, which serialises access with its shard locks).
unsafe impl Send for ForkLocalRegion {}
// SAFETY: as above.
unsafe impl Sync for ForkLocalRegion {}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// A new private anonymous read-write mapping of `len` bytes (zero pages, resident only once
/// written): every region and table of forkprof's starts as one.
pub(crate) fn map_anonymous(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: a new private anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(p.cast())
}

impl ForkLocalRegion {
    /// `len` bytes (rounded up to whole pages), zeroed, excluded from children if the
    /// platform can. `None` if the allocation fails.
    pub fn new(len: usize, platform: &'static dyn Platform) -> Option<ForkLocalRegion> {
        Self::map(len, platform, true)
    }

    /// Like [`ForkLocalRegion::new`], but inherited by children as ordinary memory is: for
    /// memory a child may still write to before it learns that it is a child.
    pub fn inherited(len: usize, platform: &'static dyn Platform) -> Option<ForkLocalRegion> {
        Self::map(len, platform, false)
    }

    fn map(len: usize, platform: &'static dyn Platform, exclude: bool) -> Option<ForkLocalRegion> {
        let page = page_size();
        let size = len.max(1).div_ceil(page) * page;
        // A fresh anonymous mapping, not `alloc_zeroed`: with page alignment the std allocator
        // zeroes the memory itself, touching every page, so the whole buffer (16 MiB by
        // default) would be resident from `start` on. Mapped pages are zero and cost nothing
        // until written.
        let ptr = map_anonymous(size)?.cast::<MaybeUninit<u8>>();
        // SAFETY: a page-aligned allocation we own, that no child touches (see the module doc),
        // and `Drop` re-includes it before freeing.
        let excluded = exclude && unsafe { platform.exclude_from_fork(ptr.as_ptr().cast(), size) };
        Some(ForkLocalRegion {
            ptr,
            size,
            platform,
            excluded,
        })
    }

    pub fn len(&self) -> usize {
        self.size
    }

    pub fn platform(&self) -> &'static dyn Platform {
        self.platform
    }

    pub fn as_ptr(&self) -> *mut MaybeUninit<u8> {
        self.ptr.as_ptr()
    }
}

impl Drop for ForkLocalRegion {
    fn drop(&mut self) {
        if self.excluded {
            // SAFETY: the region we excluded; re-included so the allocator's next user of these
            // pages has ordinary, inherited memory.
            unsafe {
                self.platform
                    .include_in_fork(self.ptr.as_ptr().cast(), self.size)
            };
        }
        // SAFETY: the mapping made in `new`, of this size, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.size) };
    }
}
