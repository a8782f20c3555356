//! The handlers a backend registers with `pthread_atfork` (rules 1–5 of docs/fork-protocol.md),
//! and the child-only handler of the interception strategy. Each says what it may call: prepare
//! and parent touch only atomics and forkprof's two locks; the child's half then restarts the
//! profilers ([`restart_in_child`]). None waits for a thread, logs, resolves or calls
//! `pthread_atfork`.

use std::sync::atomic::Ordering;

use super::{
    child_hooks, flag_get, flag_replace, flag_set, getpid, restart, strategy, CONTROL, EXPLICIT,
    FORKS_SEEN, GENERATION, IN_FLIGHT, LOCKED_HERE, PID, SENTINEL, UNOBSERVED, USERS,
};
use crate::platform::ForkStrategy;

/// Takes forkprof's two process-wide locks, in the one order every thread uses, ahead of any
/// other waiter. False (and nothing held) when one is held beyond the bounded wait: only a
/// `before_fork` that was never paired does that.
pub(super) fn lock_all() -> bool {
    IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
    if CONTROL.lock_for_fork() {
        if crate::intern::TABLE.lock_for_fork() {
            return true;
        }
        // SAFETY: taken just above on this thread.
        unsafe { CONTROL.unlock_raw() };
    }
    IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    false
}

/// # Safety
/// The calling thread took the locks with `lock_all` (or is the only thread of the child).
pub(super) unsafe fn unlock_all() {
    // SAFETY: per this function's contract.
    unsafe {
        crate::intern::TABLE.unlock_raw();
        CONTROL.unlock_raw();
    }
}

/// The child's half, shared by the atfork child handler and `after_fork_child`.
/// Only atomics and lock re-initialisation: no allocation, no I/O, no thread.
pub(super) fn reinit_child(locked_here: bool) {
    if locked_here {
        // SAFETY: after fork the calling thread is the only one, and its own prepare took
        // both locks (rule 1 orders every observed fork through them).
        unsafe { unlock_all() };
    } else if CONTROL.is_locked() || crate::intern::TABLE.is_locked() {
        // No profiler ran at prepare time, yet a vanished thread held a lock (a `start()` or
        // `intern()` racing the fork). Its data may be half-updated: stay off in this child.
        UNOBSERVED.store(true, Ordering::Relaxed);
    }
    CONTROL.forget_waiting_forks();
    crate::intern::TABLE.forget_waiting_forks();
    IN_FLIGHT.store(0, Ordering::Relaxed);
    PID.store(getpid(), Ordering::Relaxed);
    crate::collector::reset_sequence_in_child();
    let sentinel = SENTINEL.load(Ordering::Relaxed);
    if !sentinel.is_null() {
        // SAFETY: a `&'static AtomicU64` from the backend; the kernel zeroed it in this child.
        unsafe { (*sentinel).store(1, Ordering::Relaxed) };
    }
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// atfork prepare. May call: atomics, `ForkLock::lock_for_fork` on forkprof's two locks.
/// May not: wait for a thread, allocate, log, resolve, or call `pthread_atfork`.
pub fn atfork_prepare() {
    if USERS.load(Ordering::Acquire) == 0 || UNOBSERVED.load(Ordering::Relaxed) {
        return;
    }
    // Without TLS the parent half could not know to unlock: skip, and the child will find
    // the locks as they were (see `reinit_child`). Likewise when the locks cannot be had.
    if flag_set(&LOCKED_HERE) && !lock_all() {
        flag_replace(&LOCKED_HERE, false);
    }
}

/// atfork parent (also reached when `fork()` fails). May call: atomics and unlocking.
pub fn atfork_parent() {
    if flag_replace(&LOCKED_HERE, false) {
        FORKS_SEEN.fetch_add(1, Ordering::Relaxed);
        // SAFETY: this thread's prepare took the locks.
        unsafe { unlock_all() };
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// atfork child. May call: atomics, lock re-initialisation, then the child's restart
/// ([`restart_in_child`]). May not: join, signal or drop anything inherited, wait for a
/// thread, log, or take a lock that a thread the child does not have could hold.
pub fn atfork_child() {
    if flag_get(&EXPLICIT) && strategy() == ForkStrategy::Interception {
        return; // after_fork_child does the work
    }
    reinit_child(flag_replace(&LOCKED_HERE, false));
    if strategy() == ForkStrategy::Atfork {
        restart_in_child();
    }
}

/// The child's restart, on its only thread, before the code that forked runs again: every
/// running profiler gets its own session and threads, then the integrations' hooks run
/// ([`child_hooks`]). So a child has a running profiler before `fork()` returns in it, and
/// `record` (which may run in a signal handler) never has to start one.
///
/// Why this is safe here, inside libc's fork: glibc and musl re-initialise their allocator,
/// stdio-list, loader and thread-list locks in the child before they run any atfork child
/// handler, and the restart path meets no other lock a vanished parent thread could hold
/// (`workers.rs` lists each call). Every signal is blocked meanwhile: a host's `SIGPROF`
/// handler that records waits until the new session exists, so its sample is kept.
pub(super) fn restart_in_child() {
    // The parent's upload sockets and files (an upload in flight at the fork): this child
    // never uses them. Atomics and close(2).
    crate::export::close_inherited_fds();
    if UNOBSERVED.load(Ordering::Relaxed) {
        return;
    }
    let _blocked = crate::signals::Blocked::all();
    restart::restart_all();
    child_hooks::run();
}

/// The child-only handler of [`ForkStrategy::Interception`] (macOS): a fork reached here
/// without `before_fork` on this thread was not intercepted, so the child cannot trust any
/// lock it inherited. Only atomics.
pub fn atfork_child_unintercepted() {
    if !flag_get(&EXPLICIT) && USERS.load(Ordering::Acquire) != 0 {
        UNOBSERVED.store(true, Ordering::Relaxed);
    }
}
