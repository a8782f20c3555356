//! forkprof's own synchronisation: [`BriefLock`] (held only for short, non-blocking critical
//! sections, re-initialisable in a forked child), [`Parker`] (how a profiler thread sleeps until
//! woken) and [`Latch`] (a counter waited on with a deadline).
//!
//! Each instance belongs to one session, created in the process that uses it: a forked child
//! never waits on one its parent's threads could hold, except the two process-wide
//! [`BriefLock`]s the fork prepare handler takes (and the child re-initialises).
//!
//! ## BriefLock
//!
//! Why not `std::sync::Mutex`: a child of `fork()` must be able to reset a lock that the fork
//! prepare handler took on the forking thread, and std offers no way to do that. A spin lock
//! whose state is one atomic can be reset with a store. Every holder keeps it for microseconds
//! (no I/O, no allocation-heavy work, no other lock but the next one in [`crate::fork`]'s order),
//! so spinning with a yielding backoff is cheaper than parking.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

pub struct BriefLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `locked`, exactly as for a mutex.
unsafe impl<T: Send> Send for BriefLock<T> {}
// SAFETY: as above; `&BriefLock` only hands out `&mut T` through a guard that owns the lock.
unsafe impl<T: Send> Sync for BriefLock<T> {}

impl<T> BriefLock<T> {
    pub const fn new(value: T) -> Self {
        BriefLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    pub fn lock(&self) -> BriefGuard<'_, T> {
        self.lock_raw();
        BriefGuard { lock: self }
    }

    pub fn try_lock(&self) -> Option<BriefGuard<'_, T>> {
        if self.try_lock_raw() {
            Some(BriefGuard { lock: self })
        } else {
            None
        }
    }

    fn try_lock_raw(&self) -> bool {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock without a guard: for the fork prepare handler, which releases it in a
    /// different function (the parent or child handler).
    pub fn lock_raw(&self) {
        let backoff = Backoff::new();
        while !self.try_lock_raw() {
            while self.locked.load(Ordering::Relaxed) {
                backoff.snooze();
            }
        }
    }

    /// Releases a lock taken with [`BriefLock::lock_raw`]; in a forked child, also the way to
    /// re-initialise a lock the forking thread held (the only thread left).
    ///
    /// # Safety
    /// The caller must own the lock (it took it with `lock_raw`, or it is the only thread of a
    /// freshly forked child whose prepare handler took it).
    pub unsafe fn unlock_raw(&self) {
        self.locked.store(false, Ordering::Release);
    }

    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

pub struct BriefGuard<'a, T> {
    lock: &'a BriefLock<T>,
}

impl<T> Deref for BriefGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard owns the lock, so no other reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for BriefGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard owns the lock, so no other reference to the value exists.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for BriefGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard was created by taking the lock.
        unsafe { self.lock.unlock_raw() }
    }
}

/// How a profiler thread sleeps until another thread wakes it, or a timeout passes.
///
/// In place of `std::thread::park`, which needs std's handle of the current thread: forkprof's
/// threads are not std threads (see `thread.rs`), and creating that handle lazily in a forked
/// child could meet an inherited std lock. Waking costs one atomic swap unless the thread is
/// asleep; a wake that comes before the sleep is not lost (the next sleep returns at once).
#[derive(Default)]
pub struct Parker {
    state: AtomicU8,
    lock: Mutex<()>,
    cond: Condvar,
}

const EMPTY: u8 = 0;
const PARKED: u8 = 1;
const NOTIFIED: u8 = 2;

impl Parker {
    /// Sleeps until [`Parker::unpark`] or `timeout`, whichever comes first (spurious returns
    /// are allowed: callers re-check what they wait for).
    pub fn park_timeout(&self, timeout: Duration) {
        if self
            .state
            .compare_exchange(NOTIFIED, EMPTY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .state
            .compare_exchange(EMPTY, PARKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Woken between the two checks.
            self.state.store(EMPTY, Ordering::Release);
            return;
        }
        let guard = match self.cond.wait_timeout(guard, timeout) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
        self.state.store(EMPTY, Ordering::Release);
        drop(guard);
    }

    /// Wakes the sleeping thread, or makes its next sleep return at once.
    pub fn unpark(&self) {
        if self.state.swap(NOTIFIED, Ordering::Release) == PARKED {
            // Taken and released so the wake cannot fall between the sleeper's state change
            // and its wait.
            drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.cond.notify_one();
        }
    }
}

/// A counter that only grows, waited on with a deadline (`stop`, `flush_sync`).
#[derive(Default)]
pub struct Latch {
    value: Mutex<u64>,
    cond: Condvar,
}

impl Latch {
    pub fn raise_to(&self, v: u64) {
        let mut g = self.value.lock().unwrap_or_else(|e| e.into_inner());
        if *g < v {
            *g = v;
        }
        self.cond.notify_all();
    }

    /// True once the value reached `v`; false if `deadline` passed first.
    pub fn wait_for(&self, v: u64, deadline: Instant) -> bool {
        let mut g = self.value.lock().unwrap_or_else(|e| e.into_inner());
        while *g < v {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = match self.cond.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }

    pub fn get(&self) -> u64 {
        *self.value.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_and_counts() {
        let lock = Arc::new(BriefLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 40_000);
    }

    #[test]
    fn an_early_unpark_is_not_lost() {
        let p = Parker::default();
        p.unpark();
        let t0 = Instant::now();
        p.park_timeout(Duration::from_secs(30));
        assert!(t0.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn unpark_wakes_a_sleeper() {
        let p = Arc::new(Parker::default());
        let t = {
            let p = p.clone();
            std::thread::spawn(move || {
                let t0 = Instant::now();
                p.park_timeout(Duration::from_secs(60));
                t0.elapsed()
            })
        };
        while p.state.load(Ordering::Acquire) != PARKED {
            std::thread::yield_now();
        }
        p.unpark();
        assert!(
            t.join().unwrap() < Duration::from_secs(60),
            "the wake was lost"
        );
    }

    #[test]
    fn latch_times_out_then_passes() {
        let l = Latch::default();
        assert!(!l.wait_for(1, Instant::now() + Duration::from_millis(5)));
        l.raise_to(3);
        l.raise_to(2);
        assert_eq!(l.get(), 3);
        assert!(l.wait_for(3, Instant::now()));
    }

    #[test]
    fn try_lock_fails_while_held() {
        let lock = BriefLock::new(());
        let g = lock.lock();
        assert!(lock.try_lock().is_none());
        drop(g);
        assert!(lock.try_lock().is_some());
    }
}
