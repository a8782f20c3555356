//! Allocation profiling: the Zend memory manager's custom handlers (`emalloc`, `efree`,
//! `erealloc` of the request heap) count the bytes PHP code allocates, and every time a
//! Poisson process with a mean distance of `forkprof.allocation_sampling_distance` bytes
//! falls inside an allocation, that allocation's stack is recorded with `alloc-samples` and
//! `alloc-size` upscaled to what it stands for: an allocation of `s` bytes is sampled with
//! probability `1 - exp(-s / distance)`, so it counts `1 / (1 - exp(-s / distance))`
//! allocations and `s` times that in bytes, which makes the totals unbiased.
//!
//! Installed at each request's start and removed at its end (RSHUTDOWN), before the engine
//! shuts the request heap down: the engine skips that clean-up on a heap that has custom
//! handlers. Handlers already installed (another profiler, `USE_ZEND_ALLOC=0`) are chained to:
//! ours call them instead of the heap. Off (`forkprof.allocation_enabled=0`), nothing is
//! installed. This is PHP 8.2's interface (three handlers, no per-call heap argument); 8.4
//! added `zend_mm_set_custom_handlers_ex`, not built here.
//!
//! Fork safety: the handlers run on the PHP thread only (they are the engine's allocator),
//! never in forkprof's fork path; a forked child inherits them installed, and with them its
//! parent's countdown, which the child's restart hook redraws.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, Ordering::Relaxed};

use ext_php_rs::ffi::ext_php_rs_executor_globals;

use crate::sampler;

type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;

extern "C" {
    // The engine's allocator header, release builds (no file/line arguments; ZEND_FASTCALL is the plain C
    // convention on x86-64 and aarch64).
    fn zend_mm_get_heap() -> *mut c_void;
    fn zend_mm_is_custom_heap(heap: *mut c_void) -> bool;
    fn zend_mm_set_custom_handlers(
        heap: *mut c_void,
        malloc: Option<MallocFn>,
        free: Option<FreeFn>,
        realloc: Option<ReallocFn>,
    );
    fn zend_mm_get_custom_handlers(
        heap: *mut c_void,
        malloc: *mut Option<MallocFn>,
        free: *mut Option<FreeFn>,
        realloc: *mut Option<ReallocFn>,
    );
    fn _zend_mm_alloc(heap: *mut c_void, size: usize) -> *mut c_void;
    fn _zend_mm_free(heap: *mut c_void, ptr: *mut c_void);
    fn _zend_mm_realloc(heap: *mut c_void, ptr: *mut c_void, size: usize) -> *mut c_void;
}

/// The mean sampling distance in bytes; 0: allocation profiling is off.
static DISTANCE: AtomicU64 = AtomicU64::new(0);
/// Bytes left before the next sample.
static LEFT: AtomicI64 = AtomicI64::new(0);
static RNG: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

// The heap and the handlers ours replaced, written at RINIT and RSHUTDOWN on the PHP thread
// (the only thread that allocates from the request heap), read by the handlers on it.
static HEAP: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
static PREV_MALLOC: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
static PREV_FREE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
static PREV_REALLOC: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Allocations sampled, and sampled with no PHP frame running (request start-up and
/// shutdown, outside any PHP code: counted, not recorded).
pub static SAMPLED: AtomicU64 = AtomicU64::new(0);
pub static WITHOUT_STACK: AtomicU64 = AtomicU64::new(0);

/// Turns allocation profiling on with this mean distance (at the first request).
pub fn configure(distance: u64) {
    DISTANCE.store(distance, Relaxed);
    reseed();
}

/// A new random sequence and countdown, and zeroed counters: at start and in each forked
/// child (from its restart hook: atomics, getpid and the monotonic clock only), so a parent
/// and its children do not sample the same allocations.
pub fn reseed() {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let seed = forkprof::monotonic_ns() ^ pid.rotate_left(32) ^ 0x2545_f491_4f6c_dd1d;
    RNG.store(seed | 1, Relaxed);
    LEFT.store(next_distance(), Relaxed);
    SAMPLED.store(0, Relaxed);
    WITHOUT_STACK.store(0, Relaxed);
}

/// An exponentially distributed distance with the configured mean.
fn next_distance() -> i64 {
    // xorshift64*: no lock, no allocation.
    let mut x = RNG.load(Relaxed);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    RNG.store(x, Relaxed);
    let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
    // Uniform in (0, 1]: never ln(0).
    let u = ((r >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let mean = DISTANCE.load(Relaxed) as f64;
    (-u.ln() * mean).min(i64::MAX as f64 / 2.0) as i64
}

/// What one sampled allocation of `size` bytes stands for, with mean distance `distance`:
/// (allocations, bytes).
pub fn upscale(size: u64, distance: u64) -> (i64, i64) {
    let p = 1.0 - (-(size as f64) / distance.max(1) as f64).exp();
    if p <= 0.0 {
        return (0, 0);
    }
    let n = 1.0 / p;
    (n.round() as i64, (n * size as f64).round() as i64)
}

/// Counts `size` bytes; records a sample when the countdown runs out inside them.
#[inline]
fn account(size: usize) {
    let left = LEFT.load(Relaxed) - size as i64;
    if left > 0 {
        LEFT.store(left, Relaxed);
        return;
    }
    LEFT.store(next_distance(), Relaxed);
    crate::hooks::guard(|| sample(size as u64));
}

#[cold]
fn sample(size: u64) {
    let Some(profiler) = sampler::PROFILER.get() else {
        return;
    };
    let t = sampler::types();
    let Some(at) = t.alloc else {
        return;
    };
    SAMPLED.fetch_add(1, Relaxed);
    // SAFETY: the executor globals live as long as the engine; this runs on the PHP thread.
    let ex = unsafe {
        let eg = ext_php_rs_executor_globals();
        if eg.is_null() {
            std::ptr::null_mut()
        } else {
            (*eg).current_execute_data
        }
    };
    if ex.is_null() {
        WITHOUT_STACK.fetch_add(1, Relaxed);
        return;
    }
    let (n, bytes) = upscale(size, DISTANCE.load(Relaxed));
    let mut values = [0i64; sampler::MAX_TYPES];
    values[at] = n;
    values[at + 1] = bytes;
    let ts = t.timeline.then(sampler::unix_ns);
    // SAFETY: the current frame of the PHP thread, inside the engine's allocator: the frames
    // are linked and alive, and the walk allocates nothing from this heap.
    if unsafe { sampler::record_stack(profiler, ex, &values[..t.count], &[], ts) }.is_err() {
        sampler::RECORD_ERRORS.fetch_add(1, Relaxed);
    }
}

unsafe extern "C" fn on_malloc(size: usize) -> *mut c_void {
    let prev = PREV_MALLOC.load(Relaxed);
    // SAFETY: the handler ours replaced, or the heap's own allocator, with the engine's
    // arguments.
    let p = unsafe {
        if prev.is_null() {
            _zend_mm_alloc(HEAP.load(Relaxed), size)
        } else {
            std::mem::transmute::<*mut c_void, MallocFn>(prev)(size)
        }
    };
    account(size);
    p
}

unsafe extern "C" fn on_free(ptr: *mut c_void) {
    let prev = PREV_FREE.load(Relaxed);
    // SAFETY: as in `on_malloc`.
    unsafe {
        if prev.is_null() {
            _zend_mm_free(HEAP.load(Relaxed), ptr)
        } else {
            std::mem::transmute::<*mut c_void, FreeFn>(prev)(ptr)
        }
    }
}

unsafe extern "C" fn on_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    let prev = PREV_REALLOC.load(Relaxed);
    // SAFETY: as in `on_malloc`.
    let p = unsafe {
        if prev.is_null() {
            _zend_mm_realloc(HEAP.load(Relaxed), ptr, size)
        } else {
            std::mem::transmute::<*mut c_void, ReallocFn>(prev)(ptr, size)
        }
    };
    account(size);
    p
}

/// At RINIT: installs the handlers on the request heap, if allocation profiling is on.
///
/// # Safety
/// RINIT, on the engine's thread.
pub unsafe fn install() {
    if DISTANCE.load(Relaxed) == 0 || INSTALLED.load(Relaxed) {
        return;
    }
    // SAFETY: RINIT: no PHP code runs; the heap is this thread's request heap.
    unsafe {
        let heap = zend_mm_get_heap();
        if heap.is_null() {
            return;
        }
        let (mut m, mut f, mut r) = (None, None, None);
        if zend_mm_is_custom_heap(heap) {
            zend_mm_get_custom_handlers(heap, &mut m, &mut f, &mut r);
            if m.is_none() || f.is_none() || r.is_none() {
                return; // a custom heap we cannot chain to (a debug heap): leave it alone
            }
        }
        let raw = |p: Option<*mut c_void>| p.unwrap_or(std::ptr::null_mut());
        PREV_MALLOC.store(raw(m.map(|f| f as *mut c_void)), Relaxed);
        PREV_FREE.store(raw(f.map(|f| f as *mut c_void)), Relaxed);
        PREV_REALLOC.store(raw(r.map(|f| f as *mut c_void)), Relaxed);
        HEAP.store(heap, Relaxed);
        zend_mm_set_custom_handlers(heap, Some(on_malloc), Some(on_free), Some(on_realloc));
        INSTALLED.store(true, Relaxed);
    }
}

/// At RSHUTDOWN: puts back what [`install`] replaced, unless something installed its own
/// handlers over ours since (it then chains to ours, which keep working).
///
/// # Safety
/// RSHUTDOWN, on the engine's thread.
pub unsafe fn uninstall() {
    if !INSTALLED.load(Relaxed) {
        return;
    }
    // SAFETY: RSHUTDOWN, on the PHP thread; the heap is the one `install` saw.
    unsafe {
        let heap = HEAP.load(Relaxed);
        let (mut m, mut f, mut r) = (None, None, None);
        zend_mm_get_custom_handlers(heap, &mut m, &mut f, &mut r);
        if !m.is_some_and(|m| std::ptr::fn_addr_eq(m, on_malloc as MallocFn)) {
            return;
        }
        let prev = |p: *mut c_void| (!p.is_null()).then_some(p);
        let m = prev(PREV_MALLOC.load(Relaxed)).map(|p| std::mem::transmute::<_, MallocFn>(p));
        let f = prev(PREV_FREE.load(Relaxed)).map(|p| std::mem::transmute::<_, FreeFn>(p));
        let r = prev(PREV_REALLOC.load(Relaxed)).map(|p| std::mem::transmute::<_, ReallocFn>(p));
        // All three null: the heap is the engine's own again.
        zend_mm_set_custom_handlers(heap, m, f, r);
        INSTALLED.store(false, Relaxed);
    }
}

/// Whether ours are the request heap's handlers now (for `forkprof_stats()`).
pub fn installed() -> bool {
    // SAFETY: on the PHP thread; a read of the heap's handler fields.
    unsafe {
        let heap = zend_mm_get_heap();
        if heap.is_null() || !zend_mm_is_custom_heap(heap) {
            return false;
        }
        let (mut m, mut f, mut r) = (None, None, None);
        zend_mm_get_custom_handlers(heap, &mut m, &mut f, &mut r);
        m.is_some_and(|m| std::ptr::fn_addr_eq(m, on_malloc as MallocFn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upscaling_is_the_inverse_of_the_sampling_probability() {
        // Small allocations: each sample stands for about distance / size of them.
        let (n, bytes) = upscale(64, 4 << 20);
        assert!((65_000..=65_600).contains(&n), "{n}");
        assert!(
            ((4 << 20) - 64..=(4 << 20) + 64).contains(&bytes),
            "{bytes}"
        );
        // Allocations much larger than the distance are (nearly) always sampled: 1 each.
        let (n, bytes) = upscale(64 << 20, 4 << 20);
        assert_eq!(n, 1);
        assert!((bytes - (64 << 20)).abs() <= 16, "{bytes}"); // exp(-16) of 64 MiB
                                                              // One distance: sampled with probability 1 - 1/e.
        let (n, bytes) = upscale(1000, 1000);
        assert_eq!(n, 2); // 1.582, rounded
        assert_eq!(bytes, 1582);
    }

    #[test]
    fn distances_are_exponential_with_the_configured_mean() {
        DISTANCE.store(1 << 20, Relaxed);
        RNG.store(12345, Relaxed);
        let n = 200_000;
        let draws: Vec<i64> = (0..n).map(|_| next_distance()).collect();
        let mean = draws.iter().sum::<i64>() as f64 / n as f64;
        assert!((mean / (1 << 20) as f64 - 1.0).abs() < 0.01, "mean {mean}");
        // An exponential's median is ln 2 times its mean.
        let mut sorted = draws.clone();
        sorted.sort_unstable();
        let median = sorted[n / 2] as f64 / (1 << 20) as f64;
        assert!(
            (median - std::f64::consts::LN_2).abs() < 0.01,
            "median {median}"
        );
        assert!(draws.iter().all(|&d| d >= 0));
    }
}
