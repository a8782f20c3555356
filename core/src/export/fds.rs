//! The file descriptors the exporters hold open (an upload's socket, a profile file being
//! written), kept where a forked child can find them without a lock.
//!
//! A child of `fork()` inherits every descriptor of its parent, including the socket the
//! parent's uploader thread was using at that moment; the thread itself does not exist in the
//! child, so nothing there would ever close it, and an agent would see the connection stay
//! open as long as the child lives. Every descriptor an exporter opens is therefore recorded
//! in a fixed array of atomics from just after the system call that made it until just
//! before the one that closes it, and [`close_inherited_fds`] closes whatever the array holds.
//!
//! Two windows are left, each a few instructions long: between the system call that opens a
//! descriptor and its store here, and between its removal from here and its close. A fork
//! landing there leaves that one descriptor open in that child. Recording before the close
//! instead would let a child close a descriptor number another thread of the parent had
//! reused in between: closing a host's descriptor is worse than leaking one of ours.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// More than the exporters ever hold at once (one upload's socket or one file per running
/// profiler): a full array only means a descriptor is not tracked, never an error.
const SLOTS: usize = 8;
const FREE: i32 = -1;

static OPEN: [AtomicI32; SLOTS] = [const { AtomicI32::new(FREE) }; SLOTS];

/// The record of one descriptor in the array; [`TrackedFd`] forgets it right before the
/// descriptor is closed.
#[derive(Debug)]
struct Tracked {
    slot: Option<usize>,
}

impl Tracked {
    /// Records `fd`; call right after the system call that returned it.
    pub fn new(fd: RawFd) -> Tracked {
        for (i, s) in OPEN.iter().enumerate() {
            if s.compare_exchange(FREE, fd, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Tracked { slot: Some(i) };
            }
        }
        Tracked { slot: None }
    }

    /// Removes the record; call right before the descriptor is closed.
    pub fn forget(&mut self) {
        if let Some(i) = self.slot.take() {
            OPEN[i].store(FREE, Ordering::Release);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.forget();
    }
}

/// An owner of a descriptor (an `OwnedFd`, a `File`), recorded here while it is open: on
/// drop the record goes first, then the owner closes the descriptor.
#[derive(Debug)]
pub struct TrackedFd<T: AsRawFd = OwnedFd> {
    // Declared before `inner`: fields drop in order, so the record goes before the close.
    _tracked: Tracked,
    pub inner: T,
}

impl<T: AsRawFd> TrackedFd<T> {
    /// Records `inner`'s descriptor, which the caller just got from the system call that
    /// made it.
    pub fn new(inner: T) -> TrackedFd<T> {
        TrackedFd {
            _tracked: Tracked::new(inner.as_raw_fd()),
            inner,
        }
    }
}

impl<T: AsRawFd> AsRawFd for TrackedFd<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

/// Closes every descriptor the exporters of the parent process held open when it forked, and
/// forgets them. For a forked child, before it starts its own uploader: the parent's uploader
/// thread does not exist in the child, so its sockets and files would otherwise stay open as
/// long as the child lives.
///
/// Async-signal-safe and lock-free: atomic swaps and `close(2)` only, no allocation. Must not
/// run in a process whose own exporters are running (it would close their descriptors under
/// them): only between `fork()` and the child's first exporter.
pub(crate) fn close_inherited_fds() -> usize {
    let mut closed = 0;
    for s in &OPEN {
        let fd = s.swap(FREE, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: `fd` was an exporter's descriptor in the parent at the fork, so the
            // child's copy is that same open file: no other code of the child knows of it
            // (its owner is a thread the child does not have). close(2) is async-signal-safe.
            unsafe { libc::close(fd) };
            closed += 1;
        }
    }
    closed
}

/// The descriptors recorded now, for tests.
#[doc(hidden)]
pub fn recorded() -> Vec<RawFd> {
    OPEN.iter()
        .map(|s| s.load(Ordering::Acquire))
        .filter(|&fd| fd >= 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_descriptor_is_listed_until_forgotten() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let mut t = Tracked::new(f.as_raw_fd());
        assert!(recorded().contains(&f.as_raw_fd()));
        t.forget();
        assert!(!recorded().contains(&f.as_raw_fd()));
        let t = Tracked::new(f.as_raw_fd());
        drop(t);
        assert!(!recorded().contains(&f.as_raw_fd()));
    }
}
