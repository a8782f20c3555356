//! The opt-in flush at process exit: [`stop_at_exit`] registers a profiler to be stopped,
//! with a bounded deadline, by an `atexit` handler, so a worker that ends through a normal
//! `exit()` (a gunicorn worker's `sys.exit`, `return` from `main`) still writes its last
//! profile without calling `stop` itself.
//!
//! What it cannot cover: `_exit()`/`_Exit()` and `os._exit()` (no `atexit` handlers run), a
//! death by signal (SIGKILL, an unhandled SIGTERM, a crash), and `exec`. Hosts that end that
//! way must call `stop` first.
//!
//! What it never does:
//! - anything in a forked child whose profiler has not restarted there (the parent's session
//!   is not the child's to stop), nor in a child forked without forkprof's hooks;
//! - deliver messages: at exit the host's logger (or the interpreter behind a C callback) may
//!   already be gone, so messages still pending are dropped;
//! - wait longer than the deadline given at registration, per profiler.
//!
//! The handler is registered once per process, on the first call, with the C library's
//! `atexit`; a forked child inherits it (and the list), which is why the child check above
//! matters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::profiler::Profiler;
use crate::sync::BriefLock;

static REGISTERED: AtomicBool = AtomicBool::new(false);
static ENTRIES: BriefLock<Vec<(Profiler, Duration)>> = BriefLock::new(Vec::new());

/// Tries a lock a bounded number of times: at exit in a forked child it may be held for ever
/// by a parent thread that was registering when the fork happened.
fn entries() -> Option<crate::sync::BriefGuard<'static, Vec<(Profiler, Duration)>>> {
    for _ in 0..1000 {
        if let Some(g) = ENTRIES.try_lock() {
            return Some(g);
        }
        std::thread::yield_now();
    }
    None
}

/// Stops `profiler` (writing its last profile, waiting at most `timeout`) when the process
/// exits normally. Registering again replaces the timeout. The registration keeps the
/// profiler alive until exit or [`cancel_stop_at_exit`].
pub fn stop_at_exit(profiler: &Profiler, timeout: Duration) -> Result<()> {
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: `run_at_exit` is an `extern "C" fn()` that never unwinds.
        if unsafe { libc::atexit(run_at_exit) } != 0 {
            REGISTERED.store(false, Ordering::Release);
            return Err(Error::Os {
                call: "atexit",
                errno: 0,
            });
        }
    }
    let mut list = entries().ok_or(Error::Timeout {
        what: "stop_at_exit: the exit list is locked (a fork landed while it was changing)",
    })?;
    match list.iter_mut().find(|(p, _)| p.same_as(profiler)) {
        Some(entry) => entry.1 = timeout,
        None => list.push((profiler.clone(), timeout)),
    }
    Ok(())
}

/// Undoes [`stop_at_exit`] for `profiler` (no-op if it was not registered).
pub fn cancel_stop_at_exit(profiler: &Profiler) {
    if let Some(mut list) = entries() {
        list.retain(|(p, _)| !p.same_as(profiler));
    }
}

extern "C" fn run_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        crate::messages::mute();
        let todo: Vec<(Profiler, Duration)> = match entries() {
            Some(mut list) => std::mem::take(&mut *list),
            None => return,
        };
        for (p, timeout) in &todo {
            if p.runs_here() {
                let _ = p.stop(*timeout);
            }
        }
        // Not dropped: a profiler inherited from a parent must not be dropped in a child
        // that never restarted it, and nothing needs freeing at exit.
        std::mem::forget(todo);
    });
}

impl Profiler {
    /// See [`stop_at_exit`]: stop this profiler at a normal process exit, within `timeout`.
    pub fn stop_at_exit(&self, timeout: Duration) -> Result<()> {
        stop_at_exit(self, timeout)
    }
}
