//! The macOS fork strategy: interception, plus a child-only handler for unintercepted forks.
//! Portable: it compiles on Linux under the `portable-strategy` feature for the tests that run
//! it under macOS atfork semantics.
//!
//! Why no prepare handler: Libsystem takes dyld's dlopen lock and then `pthread_atfork_lock`
//! (non-recursive) before the first prepare handler, and releases them only after the parent
//! handlers. Any thread that meanwhile calls `dlopen` or `pthread_atfork` (Libinfo's
//! `getaddrinfo` does both on its first lookups) blocks until the fork ends, so a prepare
//! handler that waits for such a thread never returns. forkprof's prepare never waits, but the
//! host's fork entry points are the safer place anyway: `before_fork` runs before Libsystem
//! takes any lock, so nothing forkprof does can ever meet them.
//!
//! Unintercepted forks: the child-only handler marks the child, and profiling turns itself off
//! there on its next call without touching anything inherited. A fork that skips even the
//! child handlers (a raw `fork` syscall) is caught by core's pid comparison every 64 records.
//!
//! No wipe-on-fork sentinel: XNU has no equivalent of Linux's `MADV_WIPEONFORK`. `minherit`
//! exists, but `mach/vm_inherit.h` only has SHARE, COPY, NONE and DONATE_COPY, and
//! `vm_inherit` rejects anything above `VM_INHERIT_LAST_VALID` (= NONE). The zero-fill mode
//! (`INHERIT_ZERO`) is FreeBSD/OpenBSD only, and NONE leaves the page unmapped in the child,
//! so reading it would fault instead of reading 0.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use forkprof_backend_posix::atfork;
use forkprof_core::{ForkStrategy, Platform, Result};

use crate::{clock, fork_memory};

/// Setting this to `1` in the environment before the first profiler starts makes [`PLATFORM`]
/// use prepare/parent/child atfork handlers, like glibc and musl, instead of interception.
///
/// What it buys: children of forks the host does not intercept are profiled (under `Restart`)
/// instead of disabled. The risk: forkprof's prepare then runs while Libsystem holds
/// `pthread_atfork_lock` and dyld's lock. forkprof's prepare only takes forkprof's own brief
/// locks, which none of its threads holds across `dlopen`, `pthread_atfork` or the resolver,
/// so it cannot deadlock by itself; but every other library's prepare handler runs under the
/// same locks, and the fork is exposed to whatever they wait for. Prefer interception.
pub const ATFORK_OPT_IN_ENV: &str = "FORKPROF_MACOS_ATFORK";

/// How a [`Macos`] platform learns about forks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Interception unless [`ATFORK_OPT_IN_ENV`] is `1` when the profiler is installed.
    FromEnv,
    /// Always prepare/parent/child atfork handlers.
    Atfork,
}

pub struct Macos {
    mode: Mode,
}

/// The default platform: interception (the env opt-in can switch it to atfork handlers).
pub static PLATFORM: Macos = Macos {
    mode: Mode::FromEnv,
};

/// The atfork strategy chosen in code rather than by the environment; see
/// [`ATFORK_OPT_IN_ENV`] for what it costs. Start the first profiler of the process on it.
pub static PLATFORM_ATFORK: Macos = Macos { mode: Mode::Atfork };

const UNDECIDED: u8 = 0;
const DECIDED_INTERCEPTION: u8 = 1;
const DECIDED_ATFORK: u8 = 2;

/// The env decision, made once: core asks for the strategy and then installs the hooks, and
/// both answers must agree even if the environment changes in between.
static ENV_DECISION: AtomicU8 = AtomicU8::new(UNDECIDED);

fn env_wants_atfork() -> bool {
    match ENV_DECISION.load(Ordering::Acquire) {
        DECIDED_ATFORK => true,
        DECIDED_INTERCEPTION => false,
        _ => {
            // Read on the thread that starts the profiler (core's `install`), never from a
            // fork handler: the environment lock is not fork-safe.
            let on = std::env::var_os(ATFORK_OPT_IN_ENV).is_some_and(|v| v == "1");
            let decided = if on {
                DECIDED_ATFORK
            } else {
                DECIDED_INTERCEPTION
            };
            match ENV_DECISION.compare_exchange(
                UNDECIDED,
                decided,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => on,
                Err(earlier) => earlier == DECIDED_ATFORK,
            }
        }
    }
}

impl Macos {
    fn strategy(&self) -> ForkStrategy {
        match self.mode {
            Mode::Atfork => ForkStrategy::Atfork,
            Mode::FromEnv if env_wants_atfork() => ForkStrategy::Atfork,
            Mode::FromEnv => ForkStrategy::Interception,
        }
    }
}

impl Platform for Macos {
    fn name(&self) -> &'static str {
        "macos"
    }
    fn fork_strategy(&self) -> ForkStrategy {
        self.strategy()
    }
    fn install_fork_hooks(&self) -> Result<()> {
        match self.strategy() {
            ForkStrategy::Interception => atfork::register_once(atfork::Handlers::ChildOnly),
            ForkStrategy::Atfork => atfork::register_once(atfork::Handlers::All),
        }
    }
    fn fork_sentinel(&self) -> Option<&'static AtomicU64> {
        None // see the module documentation
    }
    fn thread_cpu_time_ns(&self) -> Option<u64> {
        clock::thread_cpu_time_ns()
    }
    fn monotonic_ns(&self) -> u64 {
        clock::monotonic_ns()
    }
    fn name_current_thread(&self, name: &std::ffi::CStr) {
        crate::thread_name::set(name)
    }
    unsafe fn exclude_from_fork(&self, addr: *mut u8, len: usize) -> bool {
        // SAFETY: the caller's contract is `fork_memory::exclude`'s.
        unsafe { fork_memory::exclude(addr, len) }
    }
    unsafe fn include_in_fork(&self, addr: *mut u8, len: usize) {
        // SAFETY: the caller's contract is `fork_memory::include`'s.
        unsafe { fork_memory::include(addr, len) }
    }
}
