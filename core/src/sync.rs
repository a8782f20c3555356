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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
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

/// How long a call waits for one of the two fork locks before it gives up with an error. Their
/// holders keep them for microseconds; only a `before_fork` never paired with
/// `after_fork_parent`/`after_fork_child` holds them longer, and then for ever.
pub const FORK_LOCK_LIMIT: Duration = Duration::from_secs(5);

/// One of the two process-wide locks the fork prepare handler takes (the profiler registry and
/// the string table). A [`BriefLock`] with two more promises:
/// - **a fork is never starved**: while a fork waits for it, other callers do not take it, so
///   threads interning names in a loop cannot keep a fork waiting;
/// - **every wait is bounded** ([`FORK_LOCK_LIMIT`]): a caller that cannot have it by then
///   gets an error naming the likely cause (an unpaired `before_fork`) instead of spinning for
///   ever.
pub struct ForkLock<T> {
    lock: BriefLock<T>,
    /// Fork prepares waiting for the lock right now.
    forks_waiting: AtomicU32,
}

impl<T> ForkLock<T> {
    pub const fn new(value: T) -> Self {
        ForkLock {
            lock: BriefLock::new(value),
            forks_waiting: AtomicU32::new(0),
        }
    }

    /// For every caller but a fork: waits while a fork waits, and at most [`FORK_LOCK_LIMIT`].
    pub fn lock(&self) -> Result<BriefGuard<'_, T>, crate::error::Error> {
        let got = wait_bounded(FORK_LOCK_LIMIT, || {
            self.forks_waiting.load(Ordering::Acquire) == 0 && self.lock.try_lock_raw()
        });
        if got {
            Ok(BriefGuard { lock: &self.lock })
        } else {
            Err(crate::error::Error::ForkOrder {
                reason: "forkprof's fork locks have been held for 5 s: a before_fork was not followed by after_fork_parent or after_fork_child on its thread; pair every before_fork with one of them",
            })
        }
    }

    /// For a fork's prepare: goes before every other waiter. False if the lock could not be had
    /// within [`FORK_LOCK_LIMIT`] (then it is not held).
    pub fn lock_for_fork(&self) -> bool {
        self.forks_waiting.fetch_add(1, Ordering::AcqRel);
        let got = wait_bounded(FORK_LOCK_LIMIT, || self.lock.try_lock_raw());
        self.forks_waiting.fetch_sub(1, Ordering::AcqRel);
        got
    }

    /// Releases a lock taken with [`ForkLock::lock_for_fork`].
    ///
    /// # Safety
    /// The caller took it with `lock_for_fork`, or is the only thread of a freshly forked child
    /// whose prepare handler took it.
    pub unsafe fn unlock_raw(&self) {
        // SAFETY: per this function's contract.
        unsafe { self.lock.unlock_raw() }
    }

    /// In a forked child, on its only thread: forgets the forks that parent threads were
    /// waiting with (they do not exist here). The lock's own state is left as it is.
    pub fn forget_waiting_forks(&self) {
        self.forks_waiting.store(0, Ordering::Relaxed);
    }

    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }
}

/// Spins (then yields) until `acquire` succeeds or `limit` has passed; the clock is read only
/// once the spinning is done, so an uncontended or briefly contended lock costs no clock read.
fn wait_bounded(limit: Duration, mut acquire: impl FnMut() -> bool) -> bool {
    let backoff = Backoff::new();
    let mut deadline = None;
    loop {
        if acquire() {
            return true;
        }
        if backoff.is_completed() {
            let now = Instant::now();
            if now >= *deadline.get_or_insert(now + limit) {
                return false;
            }
            // sched_yield: a system call, no lock.
            std::thread::yield_now();
        } else {
            backoff.snooze();
        }
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
    fn a_waiting_fork_goes_first_and_a_held_fork_lock_is_a_bounded_wait() {
        let lock = Arc::new(ForkLock::new(0u32));
        let held = lock.lock().unwrap();
        // A fork waits; a plain caller arriving after it must not get the lock before it.
        let fork = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                assert!(lock.lock_for_fork());
                // SAFETY: taken just above on this thread.
                unsafe { lock.unlock_raw() };
            })
        };
        while lock.forks_waiting.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        drop(held);
        // Either the fork got it first, or (if it already released) nobody waits any more:
        // the plain caller may take it only when no fork waits.
        let g = lock.lock().unwrap();
        assert_eq!(lock.forks_waiting.load(Ordering::Acquire), 0);
        drop(g);
        fork.join().unwrap();

        // A lock held for good (an unpaired before_fork): lock() returns an error in bounded
        // time instead of spinning for ever.
        assert!(lock.lock_for_fork());
        let t0 = Instant::now();
        let err = lock.lock().err().expect("a held fork lock was taken again");
        assert!(t0.elapsed() >= FORK_LOCK_LIMIT);
        assert!(err.to_string().contains("before_fork"), "{err}");
        // SAFETY: taken above on this thread.
        unsafe { lock.unlock_raw() };
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
