//! How a profiler carries on in a forked child.
//!
//! The sequence, run once per child on its only thread, from the atfork child handler or from
//! [`super::after_fork_child`] (`handlers::restart_in_child`):
//! 1. every registered profiler whose session belongs to an older fork generation restarts;
//! 2. under `Disable`, it turns off; under `Restart`, [`start_child_session`] builds a new
//!    session and its threads (`workers.rs` lists every call it makes and the inherited locks
//!    each could meet);
//! 3. the new session is installed under [`CONTROL`] unless the profiler was stopped (then the
//!    new session is stopped at once); the parent's session is overwritten, never dropped.
//!
//! Nothing in it waits for another thread: a thread that never starts is found later by the
//! session's grace period (`session.rs`), and profiling turns off with that reason.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use crate::config::Config;
use crate::platform::Platform;
use crate::session::Session;
use crate::stats::Disabled;
use crate::sync::ForkLock;

/// Something that must hear about a fork outside the atfork handler: a running profiler.
pub(crate) trait ForkAware: Send + Sync {
    /// Gives back what the child inherited of the parent's session and never uses. Runs for
    /// every profiler before any of them restarts (see [`restart_all`]).
    fn release_parent_session(&self);
    fn restart_after_fork(&self);
}

/// The registry of running profilers, and the lock that orders start/stop/restart against
/// fork. First in the fork prepare handler's lock order.
pub(crate) static CONTROL: ForkLock<Vec<Weak<dyn ForkAware>>> = ForkLock::new(Vec::new());

pub(crate) fn register(p: Weak<dyn ForkAware>) -> crate::error::Result<()> {
    let mut reg = CONTROL.lock()?;
    reg.retain(|w| w.strong_count() > 0);
    reg.push(p);
    Ok(())
}

pub(crate) fn unregister(p: *const ()) -> crate::error::Result<()> {
    let mut reg = CONTROL.lock()?;
    reg.retain(|w| w.strong_count() > 0 && w.as_ptr() as *const () != p);
    Ok(())
}

/// Restarts every registered profiler now (`after_fork_child`).
pub(crate) fn restart_all() {
    if super::UNOBSERVED.load(Ordering::Relaxed) {
        return;
    }
    // In a child the lock was re-initialised by the child's half of the fork protocol; an
    // error means a before_fork was never paired (interception), and then nothing restarts.
    let Ok(reg) = CONTROL.lock() else {
        return;
    };
    // First every parent session gives back its inherited stacks and descriptors, before this
    // child makes any mapping of its own (no allocation in this pass): a stack's part excluded
    // from children is a hole here, and a mapping made first could land in it.
    for p in reg.iter().filter_map(Weak::upgrade) {
        p.release_parent_session();
    }
    let profilers: Vec<Arc<dyn ForkAware>> = reg.iter().filter_map(Weak::upgrade).collect();
    drop(reg);
    for p in profilers {
        p.restart_after_fork();
    }
}

/// Builds the child's own session for fork `generation` (step 3). A failure turns profiling
/// off in this child with [`Disabled::RestartFailed`].
pub(crate) fn start_child_session(
    config: &Arc<Config>,
    platform: &'static dyn Platform,
    generation: u64,
) -> Result<Arc<Session>, Disabled> {
    // getpid: a system call, no lock.
    crate::workers::start(
        config.clone(),
        platform,
        generation,
        std::process::id(),
        super::has_sentinel(),
        true,
    )
    .map_err(|e| {
        crate::messages::restart_failed(&e);
        Disabled::RestartFailed
    })
}
