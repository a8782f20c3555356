//! The trait a backend implements: everything forkprof needs that differs between glibc, musl
//! and macOS. The facade picks one implementation at compile time; core only sees the trait.

use std::sync::atomic::AtomicU64;

use crate::error::Result;

/// How a platform learns about forks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ForkStrategy {
    /// prepare / parent / child handlers registered with `pthread_atfork` (glibc, musl).
    Atfork = 0,
    /// No prepare handler: the host calls `before_fork` / `after_fork_*` from its own fork
    /// entry points; a child-only handler flags forks nobody intercepted (macOS).
    Interception = 1,
}

pub trait Platform: Sync + 'static {
    /// Short name for diagnostics: "linux-glibc", "linux-musl", "macos".
    fn name(&self) -> &'static str;

    fn fork_strategy(&self) -> ForkStrategy;

    /// Registers the fork handlers. Called once per process by [`crate::fork::install`];
    /// the handlers must forward to the functions in [`crate::fork`].
    fn install_fork_hooks(&self) -> Result<()>;

    /// A word in memory the kernel zeroes in every child, however it was forked (Linux
    /// `MADV_WIPEONFORK`, macOS `VM_INHERIT_ZERO`), so an unobserved fork is noticed with one
    /// load. `None` where unavailable: forkprof then compares pids every 64 records.
    fn fork_sentinel(&self) -> Option<&'static AtomicU64>;

    /// CPU time consumed by the calling thread, in nanoseconds.
    fn thread_cpu_time_ns(&self) -> Option<u64>;

    /// A monotonic clock in nanoseconds (arbitrary origin).
    fn monotonic_ns(&self) -> u64;

    /// Asks the kernel not to map `len` bytes at `addr` into children at all (Linux
    /// `MADV_DONTFORK`, macOS `VM_INHERIT_NONE`), so forks do not copy the sample buffer.
    /// Returns false where unsupported (the memory then stays inherited, which is correct,
    /// only slower to fork).
    ///
    /// # Safety
    /// `addr..addr + len` is a page-aligned allocation owned by the caller, which no forked
    /// child will ever touch, and on which `include_in_fork` is called before it is freed.
    unsafe fn exclude_from_fork(&self, _addr: *mut u8, _len: usize) -> bool {
        false
    }

    /// Names the calling thread for debuggers and `top -H` (forkprof's own threads call it
    /// first thing). A no-op where the platform has no way.
    fn name_current_thread(&self, _name: &std::ffi::CStr) {}

    /// Joins `thread` if it has ended, without waiting (`pthread_tryjoin_np` where the libc
    /// has it); false if it still runs or the platform cannot tell without waiting. A forked
    /// child's `stop` joins its threads this way, within a bound, so their stacks are freed
    /// even if a thread's exit were to block on a lock inherited from the parent.
    ///
    /// # Safety
    /// `thread` is a joinable thread of this process, not joined or detached before; once this
    /// returns true it must not be used again.
    unsafe fn try_join(&self, _thread: libc::pthread_t) -> bool {
        false
    }

    /// Whether [`Platform::try_join`] can ever return true here.
    fn can_try_join(&self) -> bool {
        false
    }

    /// Undoes [`Platform::exclude_from_fork`].
    ///
    /// # Safety
    /// Called with a range previously excluded, before it is freed.
    unsafe fn include_in_fork(&self, _addr: *mut u8, _len: usize) {}

    /// Grows a private anonymous mapping from `old_len` to `new_len` bytes, moving it if it
    /// must, without copying its pages (Linux `mremap`), and keeping how it is inherited.
    /// Returns the (possibly new) address, or `None` if the platform cannot or the kernel
    /// refuses: forkprof then maps a new region and copies. Lets a profile table grow with no
    /// second copy of it resident at any moment.
    ///
    /// # Safety
    /// `addr..addr + old_len` is a page-aligned mapping owned by the caller (made by `mmap`);
    /// on `Some` the old range must no longer be used, on `None` it is unchanged.
    unsafe fn grow_mapping(
        &self,
        _addr: *mut u8,
        _old_len: usize,
        _new_len: usize,
    ) -> Option<*mut u8> {
        None
    }
}

/// A platform with no fork hooks and no sentinel, for unit tests of code that only needs
/// memory and threads.
#[cfg(test)]
pub(crate) struct Plain;

#[cfg(test)]
impl Platform for Plain {
    fn name(&self) -> &'static str {
        "test"
    }
    fn fork_strategy(&self) -> ForkStrategy {
        ForkStrategy::Atfork
    }
    fn install_fork_hooks(&self) -> Result<()> {
        Ok(())
    }
    fn fork_sentinel(&self) -> Option<&'static AtomicU64> {
        None
    }
    fn thread_cpu_time_ns(&self) -> Option<u64> {
        None
    }
    fn monotonic_ns(&self) -> u64 {
        0
    }
}
