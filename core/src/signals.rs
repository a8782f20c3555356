//! Blocking signals on the calling thread for a while, restored when the guard drops.
//!
//! Two uses: the child's restart after a fork runs with every signal blocked (a host's
//! `SIGPROF` handler that records waits until the new session exists), and forkprof's threads
//! are created while the creating thread blocks every asynchronous signal, so they start with
//! those signals blocked from their first instruction (a new thread inherits its creator's
//! mask) and a host's process-directed `SIGPROF` never lands on them.
//!
//! `pthread_sigmask` is async-signal-safe and takes no lock.

/// Signals raised by a fault of the thread itself: blocking them would turn a crash into a
/// silent kill, so forkprof's threads leave them to the host's handlers.
const SYNCHRONOUS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
];

/// The mask the calling thread had; restored on drop.
pub(crate) struct Blocked {
    old: libc::sigset_t,
}

impl Blocked {
    /// Blocks every signal that can be blocked.
    pub fn all() -> Blocked {
        Self::block(&[])
    }

    /// Blocks every signal but the synchronous fault signals.
    pub fn asynchronous() -> Blocked {
        Self::block(&SYNCHRONOUS)
    }

    fn block(keep: &[libc::c_int]) -> Blocked {
        // SAFETY: sigset_t is plain data, initialised by sigfillset / pthread_sigmask below
        // before it is read.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid for writing; only this thread's mask changes.
        unsafe {
            libc::sigfillset(&mut set);
            for &s in keep {
                libc::sigdelset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        }
        Blocked { old }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: `old` is the mask this thread had when the guard was made.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Whether `sig` is blocked on the calling thread (tests).
#[cfg(test)]
pub(crate) fn is_blocked(sig: libc::c_int) -> bool {
    // SAFETY: plain data, filled by pthread_sigmask before it is read.
    let mut cur: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new set only reads the mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
        libc::sigismember(&cur, sig) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_then_restores() {
        assert!(!is_blocked(libc::SIGPROF));
        {
            let _b = Blocked::asynchronous();
            assert!(is_blocked(libc::SIGPROF));
            assert!(!is_blocked(libc::SIGSEGV));
        }
        assert!(!is_blocked(libc::SIGPROF));
        {
            let _b = Blocked::all();
            assert!(is_blocked(libc::SIGSEGV));
        }
        assert!(!is_blocked(libc::SIGSEGV));
    }
}
