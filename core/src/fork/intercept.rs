//! Explicit interception, for hosts that own their fork entry points (PHP's `pcntl_fork`,
//! Ruby's `Process._fork`, Python's `os.register_at_fork`), and forkprof's own [`fork()`]
//! wrapper. Required on macOS, where no prepare handler may be registered; harmless elsewhere.

use std::sync::atomic::Ordering;

use super::handlers::{lock_all, reinit_child, restart_in_child};
use super::{
    flag_get, flag_replace, flag_set, generation_checked, getpid, strategy, EXPLICIT, LOCKED_HERE,
    PID, UNOBSERVED, USERS,
};
use crate::error::{Error, Result};
use crate::platform::ForkStrategy;

/// Call right before the host forks. Pairs with exactly one `after_fork_parent` (in the
/// parent, also when the fork failed) or `after_fork_child` (in the child).
pub fn before_fork() -> Result<()> {
    if flag_get(&EXPLICIT) {
        return Err(Error::ForkOrder { reason: "before_fork called twice on this thread without after_fork_parent/after_fork_child in between" });
    }
    if !flag_set(&EXPLICIT) {
        return Err(Error::ForkOrder {
            reason: "before_fork called from a thread that is exiting",
        });
    }
    if generation_checked().is_none() {
        // This process came from an unobserved fork: the locks may be held by threads that do
        // not exist here. Take nothing; the child of this fork stays off as well.
        return Ok(());
    }
    // With atfork handlers installed, libc's fork runs them and they do the locking: taking
    // the locks here as well would deadlock where libc holds its atfork lock across prepare
    // (musl, glibc before 2.36) while another thread's prepare waits for ours.
    if strategy() == ForkStrategy::Interception
        && USERS.load(Ordering::Acquire) != 0
        && flag_set(&LOCKED_HERE)
        && !lock_all()
    {
        flag_replace(&LOCKED_HERE, false);
        return Err(Error::ForkOrder {
            reason: "forkprof's fork locks have been held for 5 s by another thread's before_fork that was never paired; this fork's child will not profile",
        });
    }
    Ok(())
}

fn end_explicit(which: &'static str) -> Result<()> {
    if !flag_replace(&EXPLICIT, false) {
        return Err(Error::ForkOrder {
            reason: if which == "parent" {
                "after_fork_parent called without before_fork on this thread"
            } else {
                "after_fork_child called without before_fork on this thread"
            },
        });
    }
    Ok(())
}

/// Call in the parent after the fork returned (whether it succeeded or failed).
pub fn after_fork_parent() -> Result<()> {
    end_explicit("parent")?;
    super::handlers::atfork_parent();
    Ok(())
}

/// Call in the child right after the fork. Under interception this is where profilers restart
/// (and integrations' [`super::on_child_restart`] hooks run); with atfork handlers the child
/// handler has already done both. Not async-signal-safe: call it from the host's own
/// after-fork hook, not from an atfork handler.
pub fn after_fork_child() -> Result<()> {
    end_explicit("child")?;
    match strategy() {
        ForkStrategy::Interception => {
            reinit_child(flag_replace(&LOCKED_HERE, false));
            restart_in_child();
        }
        ForkStrategy::Atfork => {
            if getpid() != PID.load(Ordering::Relaxed) {
                // The atfork child handler did not run: whatever forked skipped it (`_Fork`,
                // `clone`), so locks may be held by threads that do not exist here.
                UNOBSERVED.store(true, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// `fork()` with forkprof's hooks around it, for hosts that fork through forkprof.
/// Returns the child's pid in the parent and 0 in the child.
pub fn fork() -> Result<i32> {
    before_fork()?;
    // SAFETY: fork has no memory-safety preconditions; the child only runs the hooks below and
    // then returns to the caller, who owns what happens next.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = Error::last_os("fork");
        let _ = after_fork_parent();
        return Err(err);
    }
    if pid == 0 {
        after_fork_child()?;
    } else {
        after_fork_parent()?;
    }
    Ok(pid)
}
