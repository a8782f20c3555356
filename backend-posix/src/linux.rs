//! The Linux platform both libcs share: atfork handlers, `CLOCK_THREAD_CPUTIME_ID`, and the
//! wipe-on-fork sentinel. The glibc and musl backends differ in what they document and test,
//! not in these calls.

use std::sync::atomic::AtomicU64;

use forkprof_core::{ForkStrategy, Platform, Result};

use crate::{atfork, clock, sentinel, thread_name};

pub struct LinuxAtfork {
    name: &'static str,
}

impl LinuxAtfork {
    pub const fn new(name: &'static str) -> Self {
        LinuxAtfork { name }
    }
}

impl Platform for LinuxAtfork {
    fn name(&self) -> &'static str {
        self.name
    }
    fn fork_strategy(&self) -> ForkStrategy {
        ForkStrategy::Atfork
    }
    fn install_fork_hooks(&self) -> Result<()> {
        atfork::register_once(atfork::Handlers::All)
    }
    fn fork_sentinel(&self) -> Option<&'static AtomicU64> {
        sentinel::word()
    }
    fn thread_cpu_time_ns(&self) -> Option<u64> {
        clock::thread_cpu_time_ns()
    }
    fn monotonic_ns(&self) -> u64 {
        clock::monotonic_ns()
    }
    fn name_current_thread(&self, name: &std::ffi::CStr) {
        thread_name::set(name)
    }
    fn can_try_join(&self) -> bool {
        true
    }
    unsafe fn try_join(&self, thread: libc::pthread_t) -> bool {
        // SAFETY: the caller passes a joinable thread of this process, joined at most once:
        // EBUSY leaves it joinable, 0 joins it. Both glibc and musl have the call.
        unsafe { libc::pthread_tryjoin_np(thread, std::ptr::null_mut()) == 0 }
    }
    unsafe fn exclude_from_fork(&self, addr: *mut u8, len: usize) -> bool {
        // SAFETY: the caller guarantees a page-aligned range it owns and that no child touches.
        unsafe { libc::madvise(addr.cast(), len, libc::MADV_DONTFORK) == 0 }
    }
    unsafe fn include_in_fork(&self, addr: *mut u8, len: usize) {
        // SAFETY: the caller passes a range it excluded and still owns.
        unsafe { libc::madvise(addr.cast(), len, libc::MADV_DOFORK) };
    }
    unsafe fn grow_mapping(
        &self,
        addr: *mut u8,
        old_len: usize,
        new_len: usize,
    ) -> Option<*mut u8> {
        // SAFETY: the caller owns the mapping; MREMAP_MAYMOVE moves its page-table entries
        // (and its MADV_DONTFORK flag) to a new range if it cannot grow in place.
        let p = unsafe { libc::mremap(addr.cast(), old_len, new_len, libc::MREMAP_MAYMOVE) };
        (p != libc::MAP_FAILED).then_some(p.cast())
    }
}
