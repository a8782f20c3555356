//! Fork interception for hosts that own their fork entry points (PHP's `pcntl_fork`, Ruby's
//! `Process._fork`, Python's `os.register_at_fork`), forkprof's own `fork()` wrapper, and the
//! clocks a host needs to fill samples the same way on every platform.
//!
//! On Linux the `pthread_atfork` handlers do the work and these hooks are harmless; on macOS
//! they are required (no prepare handler is registered there).

use crate::status::{forkprof_status, guard, guard_with, FfiError};

/// Call right before the host forks. Pairs with exactly one `forkprof_after_fork_parent` (in
/// the parent, also when the fork failed) or `forkprof_after_fork_child` (in the child).
/// Cheap: it never waits for a profiler thread.
#[no_mangle]
pub extern "C" fn forkprof_before_fork() -> forkprof_status {
    guard(|| Ok(forkprof::fork::before_fork()?))
}

/// Call in the parent after the fork returned, whether it succeeded or failed.
#[no_mangle]
pub extern "C" fn forkprof_after_fork_parent() -> forkprof_status {
    guard(|| Ok(forkprof::fork::after_fork_parent()?))
}

/// Call in the child right after the fork: restarts profilers under FORKPROF_CHILD_RESTART now
/// rather than on their next call. Not async-signal-safe: call it from the host's after-fork
/// hook, not from a pthread_atfork handler.
#[no_mangle]
pub extern "C" fn forkprof_after_fork_child() -> forkprof_status {
    guard(|| Ok(forkprof::fork::after_fork_child()?))
}

/// `fork()` with forkprof's hooks around it. Returns the child's pid in the parent, 0 in the
/// child, and -1 on failure (`forkprof_last_error()` says why; errno is as fork left it when
/// the fork itself failed).
#[no_mangle]
pub extern "C" fn forkprof_fork() -> i32 {
    guard_with(-1, || Ok(forkprof::fork::fork()?)).0
}

/// CPU time used so far by the calling thread, in nanoseconds, or -1 if the platform cannot
/// tell (see `forkprof_last_error()`).
#[no_mangle]
pub extern "C" fn forkprof_thread_cpu_time_ns() -> i64 {
    guard_with(-1, || {
        forkprof::thread_cpu_time_ns()
            .and_then(|ns| i64::try_from(ns).ok())
            .ok_or_else(|| {
                FfiError::invalid("the per-thread CPU clock is unavailable on this platform".into())
            })
    })
    .0
}

/// A monotonic clock in nanoseconds (for durations, e.g. wall-time sample values).
#[no_mangle]
pub extern "C" fn forkprof_monotonic_ns() -> u64 {
    guard_with(0, || Ok(forkprof::monotonic_ns())).0
}
