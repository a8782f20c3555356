//! A page of counters shared between the master and its forked workers (an anonymous
//! `MAP_SHARED` mapping made before forking), so the master can print progress and the
//! workers' final profiler stats without pipes or parsing.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// One worker's counters. Zero until the worker writes them.
#[repr(C)]
pub struct Slot {
    /// Samples the worker's sampler handed to the profiler so far (progress).
    pub samples: AtomicU64,
    /// Set by the worker after `stop()`: what its profiler accepted, dropped and wrote.
    pub recorded: AtomicU64,
    pub dropped: AtomicU64,
    pub profiles: AtomicU64,
    pub requests: AtomicU64,
    /// 1 once the worker has stopped its profiler cleanly.
    pub stopped: AtomicU64,
}

pub struct Board {
    slots: NonNull<Slot>,
    len: usize,
}

// SAFETY: the mapping holds only atomics, valid to share between threads (and processes).
unsafe impl Sync for Board {}
// SAFETY: as above; the pointer is owned by the Board.
unsafe impl Send for Board {}

impl Board {
    /// Maps `len` zeroed slots, shared with every child forked afterwards. The mapping lives
    /// for the rest of the process (the master and workers read it until they exit).
    pub fn new(len: usize) -> std::io::Result<&'static Board> {
        let bytes = (len.max(1) * std::mem::size_of::<Slot>()).next_multiple_of(4096);
        // SAFETY: an anonymous mapping has no preconditions; the result is checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let slots = NonNull::new(addr as *mut Slot).ok_or(std::io::ErrorKind::OutOfMemory)?;
        Ok(Box::leak(Box::new(Board { slots, len })))
    }

    pub fn slot(&self, i: usize) -> &Slot {
        assert!(i < self.len, "worker slot {i} out of {}", self.len);
        // SAFETY: `i < len` slots were mapped, zero-filled (a valid `Slot`: all atomics),
        // page-aligned, and never unmapped.
        unsafe { &*self.slots.as_ptr().add(i) }
    }
}
