//! Test pause points: named places inside the profiler's critical sections where a fork
//! interleaving test can hold a profiler thread.
//!
//! With the `test-hooks` feature a test can arm one point; the next thread to reach it
//! announces its arrival and waits there (inside the critical section) until released, so a
//! test can fork while a profiler thread holds exactly that lock. Without the feature every
//! point compiles to nothing.

/// The places a profiler thread can be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Point {
    /// Collector, holding a sample-buffer shard lock while swapping it out.
    HoldingShardToSwap = 1,
    /// Collector, holding the process-wide string table lock while resolving an id.
    HoldingStringTableToResolve = 2,
    /// Collector, holding the export queue lock while enqueueing a profile.
    HoldingQueueToPush = 3,
    /// Uploader, holding the export queue lock while taking a profile.
    HoldingQueueToPop = 4,
    /// Uploader, inside the exporter (no lock held): where a stalled upload sits.
    InsideExport = 5,
    /// Collector, started but not yet in its loop (as if stuck on a lock inherited across
    /// fork): the session's start-up grace then runs out.
    WorkerBeforeItsLoop = 6,
}

#[cfg(feature = "test-hooks")]
mod imp {
    use super::Point;
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    use std::time::{Duration, Instant};

    static ARMED: AtomicU8 = AtomicU8::new(0);
    static ARRIVED: AtomicBool = AtomicBool::new(false);
    static RELEASED: AtomicBool = AtomicBool::new(false);

    #[inline]
    pub fn pause_point(p: Point) {
        if ARMED.load(Ordering::Relaxed) != p as u8 {
            return;
        }
        if ARMED
            .compare_exchange(p as u8, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        ARRIVED.store(true, Ordering::Release);
        while !RELEASED.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
    }

    /// Arms `p`: the next thread to reach it stops there until [`release`].
    pub fn arm(p: Point) {
        ARRIVED.store(false, Ordering::Release);
        RELEASED.store(false, Ordering::Release);
        ARMED.store(p as u8, Ordering::Release);
    }

    /// Waits until a thread is held at the armed point.
    pub fn wait_arrived(timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while !ARRIVED.load(Ordering::Acquire) {
            if Instant::now() > end {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }

    pub fn release() {
        ARMED.store(0, Ordering::Release);
        RELEASED.store(true, Ordering::Release);
    }
}

#[cfg(feature = "test-hooks")]
pub use imp::{arm, release, wait_arrived};

#[cfg(feature = "test-hooks")]
pub(crate) use imp::pause_point;

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn pause_point(_p: Point) {}
