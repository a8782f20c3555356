//! `pthread_atfork` registration, once per process however often profilers start.
//!
//! The handlers only forward to `forkprof_core::fork`, whose functions say what they may call:
//! atomics and forkprof's own brief locks, no allocation, no waiting for threads, no I/O.
//! They are `extern "C"`: a panic there would abort, and none of them can panic.

use std::sync::atomic::{AtomicBool, Ordering};

use forkprof_core::error::{Error, Result};
use forkprof_core::fork;

static REGISTERED: AtomicBool = AtomicBool::new(false);

extern "C" fn prepare() {
    fork::atfork_prepare();
}

extern "C" fn parent() {
    fork::atfork_parent();
}

extern "C" fn child() {
    fork::atfork_child();
}

extern "C" fn child_unintercepted() {
    fork::atfork_child_unintercepted();
}

/// Which handlers to register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handlers {
    /// prepare, parent and child: the glibc and musl strategy.
    All,
    /// Only a child handler that flags forks nobody intercepted: the macOS strategy, which
    /// must have no prepare handler.
    ChildOnly,
}

/// Registers forkprof's handlers unless already done in this process. Called from
/// `Profiler::start` on the host's thread, never from a profiler thread (on musl and macOS
/// `pthread_atfork` waits for any fork in progress).
pub fn register_once(which: Handlers) -> Result<()> {
    if REGISTERED.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    // SAFETY: the handlers are `extern "C"` functions with 'static lifetime that never unwind.
    let rc = unsafe {
        match which {
            Handlers::All => libc::pthread_atfork(Some(prepare), Some(parent), Some(child)),
            Handlers::ChildOnly => libc::pthread_atfork(None, None, Some(child_unintercepted)),
        }
    };
    if rc != 0 {
        REGISTERED.store(false, Ordering::Release);
        return Err(Error::Os {
            call: "pthread_atfork",
            errno: rc,
        });
    }
    Ok(())
}
