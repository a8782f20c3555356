//! Timeline events: garbage-collection runs and file compilations, each recorded when it ends
//! as one sample with its duration (`timeline`, nanoseconds), its end time, an `event` label
//! saying what it was (`gc`, `compilation`), and a frame of its own (`[gc]`, `[compile]`).
//! Per-sample timestamps of the other types are [`crate::sampler`]'s.
//!
//! Hooks: `gc_collect_cycles` (the engine's pointer, which both the PHP function and the
//! automatic collection when the root buffer fills go through) and `zend_compile_file`,
//! both installed at MINIT when the timeline is on, so that opcache, whose start-up comes
//! after every MINIT, wraps ours: a file opcache serves from memory never reaches us, and what
//! is recorded is compilation with opcache off or missing. Each chains to what it replaced;
//! MSHUTDOWN puts them back. They run on the PHP thread only, never in the fork path.

use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ext_php_rs::ffi::{
    ext_php_rs_executor_globals, zend_file_handle, zend_op_array, ZEND_INTERNAL_FUNCTION,
};
use forkprof::{Frame, Label, Sample};

use crate::sampler;

type GcFn = unsafe extern "C" fn() -> c_int;
type CompileFn = unsafe extern "C" fn(*mut zend_file_handle, c_int) -> *mut zend_op_array;

extern "C" {
    /// `ZEND_API int (*gc_collect_cycles)(void)`.
    static mut gc_collect_cycles: Option<GcFn>;
    /// `ZEND_API zend_op_array *(*zend_compile_file)(zend_file_handle *, int)`.
    static mut zend_compile_file: Option<CompileFn>;
}

// Written at MINIT and MSHUTDOWN, single-threaded engine phases.
static mut PREV_GC: Option<GcFn> = None;
static mut PREV_COMPILE: Option<CompileFn> = None;

/// Events recorded in this process.
pub static GC_RUNS: AtomicU64 = AtomicU64::new(0);
pub static COMPILATIONS: AtomicU64 = AtomicU64::new(0);

/// The label saying what a timeline event is.
pub const EVENT: &str = "event";

pub fn reset_counters() {
    GC_RUNS.store(0, Relaxed);
    COMPILATIONS.store(0, Relaxed);
}

/// Records one event that took `duration` ns and ended now.
fn record(frame: &str, labels: &[Label<'_>], duration: u64) -> bool {
    let Some(profiler) = sampler::PROFILER.get() else {
        return false;
    };
    let t = sampler::types();
    if !t.timeline {
        return false;
    }
    let mut values = [0i64; sampler::MAX_TYPES];
    values[t.count - 1] = duration as i64; // `timeline` is the last type
    let frames = [Frame::new(frame, "", 0)];
    let sample = Sample::new(&frames, &values[..t.count])
        .labels(labels)
        .timestamp_ns(sampler::unix_ns());
    if profiler.record(&sample).is_err() {
        sampler::RECORD_ERRORS.fetch_add(1, Relaxed);
        return false;
    }
    true
}

/// Whether the PHP function `gc_collect_cycles()` is what runs now (else the engine collects
/// on its own, its root buffer full).
fn induced() -> bool {
    // SAFETY: the executor globals live as long as the engine; the frame and its function are
    // alive while the collection they called runs.
    unsafe {
        let eg = ext_php_rs_executor_globals();
        if eg.is_null() || (*eg).current_execute_data.is_null() {
            return false;
        }
        let func = (*(*eg).current_execute_data).func;
        if func.is_null() || u32::from((*func).common.type_) != ZEND_INTERNAL_FUNCTION {
            return false;
        }
        let name = (*func).common.function_name;
        !name.is_null()
            && std::slice::from_raw_parts((*name).val.as_ptr() as *const u8, (*name).len)
                == b"gc_collect_cycles"
    }
}

unsafe extern "C" fn on_gc() -> c_int {
    let t0 = forkprof::monotonic_ns();
    // SAFETY: the collector this replaced (the engine's own at least), as the engine calls it.
    let collected = unsafe {
        match PREV_GC {
            Some(prev) => prev(),
            None => 0,
        }
    };
    let d = forkprof::monotonic_ns().saturating_sub(t0);
    crate::hooks::guard(|| {
        let reason = if induced() { "induced" } else { "engine" };
        let labels = [
            Label::str(EVENT, "gc"),
            Label::str("gc reason", reason),
            Label::num("gc collected", i64::from(collected)),
        ];
        if record("[gc]", &labels, d) {
            GC_RUNS.fetch_add(1, Relaxed);
        }
    });
    collected
}

unsafe extern "C" fn on_compile(fh: *mut zend_file_handle, ty: c_int) -> *mut zend_op_array {
    let t0 = forkprof::monotonic_ns();
    // SAFETY: the compiler this replaced, with the engine's arguments. A compile error leaves
    // by longjmp from inside it: nothing of ours is on the stack to unwind.
    let op = unsafe {
        match PREV_COMPILE {
            Some(prev) => prev(fh, ty),
            None => std::ptr::null_mut(),
        }
    };
    let d = forkprof::monotonic_ns().saturating_sub(t0);
    crate::hooks::guard(|| {
        // SAFETY: the op array just compiled (or null), alive for this call.
        let file = unsafe {
            if op.is_null() || (*op).filename.is_null() {
                ""
            } else {
                let f = (*op).filename;
                std::str::from_utf8(std::slice::from_raw_parts(
                    (*f).val.as_ptr() as *const u8,
                    (*f).len,
                ))
                .unwrap_or("")
            }
        };
        let labels = [
            Label::str(EVENT, "compilation"),
            Label::str("filename", file),
        ];
        if record("[compile]", &labels, d) {
            COMPILATIONS.fetch_add(1, Relaxed);
        }
    });
    op
}

/// Installs the GC and compilation hooks.
///
/// # Safety
/// MINIT, on the engine's thread.
pub unsafe fn install() {
    // SAFETY: MINIT: nothing else reads or writes these yet.
    unsafe {
        let gc = gc_collect_cycles;
        if gc.is_some() {
            PREV_GC = gc;
            gc_collect_cycles = Some(on_gc);
        }
        let compile = zend_compile_file;
        if compile.is_some() {
            PREV_COMPILE = compile;
            zend_compile_file = Some(on_compile);
        }
    }
}

/// Puts back what [`install`] replaced, where nothing hooked over ours.
///
/// # Safety
/// MSHUTDOWN, on the engine's thread.
pub unsafe fn uninstall() {
    // SAFETY: single-threaded engine phase.
    unsafe {
        if gc_collect_cycles.is_some_and(|f| std::ptr::fn_addr_eq(f, on_gc as GcFn)) {
            gc_collect_cycles = PREV_GC;
        }
        if zend_compile_file.is_some_and(|f| std::ptr::fn_addr_eq(f, on_compile as CompileFn)) {
            zend_compile_file = PREV_COMPILE;
        }
    }
}

/// How many of the two hooks (GC, compilation) are ours now (for `forkprof_stats()`).
pub fn installed() -> i64 {
    // SAFETY: by-value reads of the engine's pointers, on its thread.
    let (gc, compile) = unsafe { (gc_collect_cycles, zend_compile_file) };
    i64::from(gc.is_some_and(|f| std::ptr::fn_addr_eq(f, on_gc as GcFn)))
        + i64::from(compile.is_some_and(|f| std::ptr::fn_addr_eq(f, on_compile as CompileFn)))
}
