//! Exception profiling: the engine's `zend_throw_exception_hook` sees every throw (PHP's
//! `throw` and internal functions' exceptions alike); one throw in
//! `forkprof.exception_sampling_distance` on average (a geometric countdown, so every throw is
//! equally likely to be picked) is recorded with the throwing stack and an `exception type`
//! label holding the class, as `exception-samples` upscaled by the distance: the totals are
//! unbiased counts of throws per stack and class.
//!
//! Installed at the first request of a process that has it on, chained to the hook that was
//! there; put back at MSHUTDOWN. The hook runs on the PHP thread, never in the fork path; a
//! forked child redraws its countdown in its restart hook (atomics only).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use ext_php_rs::ffi::{ext_php_rs_executor_globals, zend_object, zend_throw_exception_hook};

use crate::sampler;

type ThrowHook = unsafe extern "C" fn(*mut zend_object);

/// The label Datadog's views read an exception's class from.
pub const EXCEPTION_TYPE: &str = "exception type";

/// Mean throws between two samples; 0: off.
static DISTANCE: AtomicU64 = AtomicU64::new(0);
/// Throws left before the next sample.
static LEFT: AtomicU64 = AtomicU64::new(1);
static RNG: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);
// Written at the first request and at MSHUTDOWN on the engine's thread.
static mut PREV: Option<ThrowHook> = None;
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Throws sampled in this process.
pub static SAMPLED: AtomicU64 = AtomicU64::new(0);

fn uniform() -> f64 {
    let mut x = RNG.load(Relaxed);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    RNG.store(x, Relaxed);
    ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// Throws until the next sample: geometric with mean `distance` (each throw is picked with
/// probability 1 / distance), at least 1.
fn next_countdown(distance: u64) -> u64 {
    if distance <= 1 {
        return 1;
    }
    let q = 1.0 - 1.0 / distance as f64;
    (uniform().ln() / q.ln()).floor() as u64 + 1
}

/// Redraws the countdown and zeroes the counters: at the first request and in each forked
/// child (its restart hook: atomics, getpid and the monotonic clock only).
pub fn reseed() {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    RNG.store(
        (forkprof::monotonic_ns() ^ pid.rotate_left(17)) | 1,
        Relaxed,
    );
    LEFT.store(next_countdown(DISTANCE.load(Relaxed)), Relaxed);
    SAMPLED.store(0, Relaxed);
}

unsafe extern "C" fn on_throw(ex: *mut zend_object) {
    crate::hooks::guard(|| {
        let left = LEFT.load(Relaxed);
        if left > 1 {
            LEFT.store(left - 1, Relaxed);
            return;
        }
        let distance = DISTANCE.load(Relaxed);
        LEFT.store(next_countdown(distance), Relaxed);
        // SAFETY: the engine passes the exception being thrown, alive for this call.
        unsafe { sample(ex, distance) };
    });
    // SAFETY: the hook ours replaced, with the engine's argument.
    if let Some(prev) = unsafe { PREV } {
        unsafe { prev(ex) };
    }
}

/// # Safety
/// `ex` is null or the live exception object being thrown, on the PHP thread.
unsafe fn sample(ex: *mut zend_object, distance: u64) {
    let Some(profiler) = sampler::PROFILER.get() else {
        return;
    };
    let t = sampler::types();
    let Some(at) = t.exception else {
        return;
    };
    // SAFETY: the object, its class and the class's name live for this call; the executor
    // globals live as long as the engine.
    let (class, frame) = unsafe {
        let class = if ex.is_null() || (*ex).ce.is_null() || (*(*ex).ce).name.is_null() {
            ""
        } else {
            let name = (*(*ex).ce).name;
            let bytes = std::slice::from_raw_parts((*name).val.as_ptr() as *const u8, (*name).len);
            std::str::from_utf8(bytes).unwrap_or("")
        };
        let eg = ext_php_rs_executor_globals();
        let frame = if eg.is_null() {
            std::ptr::null_mut()
        } else {
            (*eg).current_execute_data
        };
        (class, frame)
    };
    let mut values = [0i64; sampler::MAX_TYPES];
    values[at] = distance.max(1) as i64;
    let labels = [forkprof::Label::str(EXCEPTION_TYPE, class)];
    let ts = t.timeline.then(sampler::unix_ns);
    // SAFETY: the throwing frame of the PHP thread, inside the engine's throw.
    match unsafe { sampler::record_stack(profiler, frame, &values[..t.count], &labels, ts) } {
        Ok(()) => {
            SAMPLED.fetch_add(1, Relaxed);
        }
        Err(()) => {
            sampler::RECORD_ERRORS.fetch_add(1, Relaxed);
        }
    }
}

/// At the first request of a process that samples throws: installs the hook.
///
/// # Safety
/// RINIT, on the engine's thread.
pub unsafe fn install(distance: u64) {
    DISTANCE.store(distance.max(1), Relaxed);
    reseed();
    if INSTALLED.swap(true, Relaxed) {
        return;
    }
    // SAFETY: RINIT: no PHP code runs; the engine reads the hook only when throwing.
    unsafe {
        PREV = zend_throw_exception_hook;
        zend_throw_exception_hook = Some(on_throw);
    }
}

/// Puts the previous hook back, unless another was installed over ours.
///
/// # Safety
/// MSHUTDOWN, on the engine's thread.
pub unsafe fn uninstall() {
    if !INSTALLED.load(Relaxed) {
        return;
    }
    // SAFETY: MSHUTDOWN: single-threaded engine phase.
    unsafe {
        if zend_throw_exception_hook.is_some_and(|h| std::ptr::fn_addr_eq(h, on_throw as ThrowHook))
        {
            zend_throw_exception_hook = PREV;
            INSTALLED.store(false, Relaxed);
        }
    }
}

/// Whether ours is the engine's throw hook now (for `forkprof_stats()`).
pub fn installed() -> bool {
    // SAFETY: a by-value read of the hook pointer, on the engine's thread.
    unsafe { zend_throw_exception_hook }
        .is_some_and(|h| std::ptr::fn_addr_eq(h, on_throw as ThrowHook))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdowns_are_geometric_with_the_configured_mean() {
        assert_eq!(next_countdown(1), 1);
        assert_eq!(next_countdown(0), 1);
        RNG.store(987_654_321, Relaxed);
        let n = 200_000;
        let draws: Vec<u64> = (0..n).map(|_| next_countdown(100)).collect();
        let mean = draws.iter().sum::<u64>() as f64 / n as f64;
        assert!((mean / 100.0 - 1.0).abs() < 0.01, "mean {mean}");
        assert!(draws.iter().all(|&d| d >= 1));
        // P(countdown == 1) is 1 / distance.
        let ones = draws.iter().filter(|&&d| d == 1).count() as f64 / n as f64;
        assert!((ones - 0.01).abs() < 0.002, "{ones}");
    }
}
