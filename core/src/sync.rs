//! The profiler's own lock: held only for short, non-blocking critical sections, and
//! re-initialisable in a forked child.
//!
//! Why not `std::sync::Mutex`: a child of `fork()` must be able to reset a lock that the fork
//! prepare handler took on the forking thread, and std offers no way to do that. A spin lock
//! whose state is one atomic can be reset with a store. Every holder keeps it for microseconds
//! (no I/O, no allocation-heavy work, no other lock but the next one in [`crate::fork`]'s order),
//! so spinning with a yielding backoff is cheaper than parking.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

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
    fn try_lock_fails_while_held() {
        let lock = BriefLock::new(());
        let g = lock.lock();
        assert!(lock.try_lock().is_none());
        drop(g);
        assert!(lock.try_lock().is_some());
    }
}
