//! The tick thread blocks every asynchronous signal, as forkprof's own threads do. A signal
//! sent to a PHP process is meant for its PHP thread: the kernel delivers a process-directed
//! signal to any thread that does not block it, and a host that reads its signals from a
//! `signalfd` (Swoole, by default) blocks them on its own thread only, so a thread that left
//! SIGTERM unblocked would take its default action instead and kill the process outright
//! (a Swoole master or worker told to stop gracefully). A new thread inherits its creator's
//! mask, so the mask is set for the creation and put back.

/// Raised by a fault of the thread itself: blocking them would turn a crash into a silent
/// kill, so they stay with the host's handlers.
const SYNCHRONOUS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
];

/// Runs `f` (which starts a thread) with every asynchronous signal blocked on the calling
/// thread. sigfillset, sigdelset and pthread_sigmask take no lock: usable in a forked child's
/// atfork handler.
pub fn blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: zeroed sigset_t values are written by sigfillset / pthread_sigmask before they
    // are read; only this thread's mask changes.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for s in SYNCHRONOUS {
            libc::sigdelset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    // The mask is restored even if `f` panics (the caller's guard catches the panic).
    struct Restore(libc::sigset_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: the mask this thread had, saved by pthread_sigmask above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        }
    }
    let _restore = Restore(old);
    f()
}
