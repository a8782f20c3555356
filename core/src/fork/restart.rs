//! How a profiler carries on in a forked child (rules 4, 5, 8 and 9 of the fork protocol).
//!
//! The sequence, on the first profiler call in the child (`record`, `flush`, `stop`, `stats`)
//! or from [`super::after_fork_child`]:
//! 1. the call sees a fork generation newer than its session's (`fork::generation`);
//! 2. one thread of the child wins the [`RestartGate`] for that generation; the others carry
//!    on without waiting (their samples are counted as ignored until the restart is done);
//! 3. under `Disable`, the profiler turns off; under `Restart`, [`start_child_session`] builds a
//!    new session and its threads (`workers.rs` lists every call it makes and the inherited
//!    locks each could meet);
//! 4. the new session is installed under [`CONTROL`] unless `stop()` ran meanwhile (then the
//!    new session is stopped at once); the parent's session is overwritten, never dropped.
//!
//! Nothing in it waits for another thread: a thread that never starts is found later by the
//! session's grace period (`session.rs`), and profiling turns off with that reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::config::Config;
use crate::platform::Platform;
use crate::session::Session;
use crate::stats::Disabled;
use crate::sync::BriefLock;

/// Something that must hear about a fork outside the atfork handler: a running profiler.
pub(crate) trait ForkAware: Send + Sync {
    fn restart_after_fork(&self);
}

/// The registry of running profilers, and the lock that orders start/stop/restart against
/// fork. First in the fork prepare handler's lock order.
pub(crate) static CONTROL: BriefLock<Vec<Weak<dyn ForkAware>>> = BriefLock::new(Vec::new());

pub(crate) fn register(p: Weak<dyn ForkAware>) {
    let mut reg = CONTROL.lock();
    reg.retain(|w| w.strong_count() > 0);
    reg.push(p);
}

pub(crate) fn unregister(p: *const ()) {
    let mut reg = CONTROL.lock();
    reg.retain(|w| w.strong_count() > 0 && w.as_ptr() as *const () != p);
}

/// Restarts every registered profiler now (`after_fork_child`).
pub(crate) fn restart_all() {
    if super::UNOBSERVED.load(Ordering::Relaxed) {
        return;
    }
    let profilers: Vec<Arc<dyn ForkAware>> = {
        let reg = CONTROL.lock();
        reg.iter().filter_map(Weak::upgrade).collect()
    };
    for p in profilers {
        p.restart_after_fork();
    }
}

/// Which fork generation a thread is restarting a profiler for: 1 + the generation, 0 when
/// none. Tagged with the generation rather than a boolean: a grandchild forked while its parent
/// was mid-restart inherits the mark, and must not mistake it for a restart of its own.
#[derive(Default)]
pub(crate) struct RestartGate(AtomicU64);

/// Held by the one thread restarting a profiler; opens the gate again when dropped.
pub(crate) struct RestartTicket<'a>(&'a RestartGate);

impl RestartGate {
    /// `None` if another thread of this process is already restarting for `generation`.
    pub fn enter(&self, generation: u64) -> Option<RestartTicket<'_>> {
        let tag = generation + 1;
        let prev = self.0.load(Ordering::Acquire);
        if prev == tag {
            return None;
        }
        self.0
            .compare_exchange(prev, tag, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| RestartTicket(self))
    }
}

impl Drop for RestartTicket<'_> {
    fn drop(&mut self) {
        self.0 .0.store(0, Ordering::Release);
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
    crate::workers::start(config.clone(), platform, generation, std::process::id()).map_err(|e| {
        crate::messages::restart_failed(&e);
        Disabled::RestartFailed
    })
}
