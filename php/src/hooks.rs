//! The engine hooks: `zend_interrupt_function` (the VM noticed the tick), `zend_execute_internal`
//! (an internal function such as `usleep` returned: the time it blocked is sampled with it on
//! top), and the `pcntl_fork` handler wrapped with forkprof's fork calls. Each hook chains to
//! what was installed before it, and each is installed at MINIT, when the engine runs no PHP
//! code and no other thread exists.
//!
//! No Rust panic may unwind into the engine: every piece of Rust work in a hook runs under
//! [`guard`]. The calls back into the engine (the previous hook, the original handler) are
//! made outside it, from frames that own nothing to drop, because a PHP fatal error inside
//! them leaves by `longjmp`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use ext_php_rs::ffi::{
    ext_php_rs_compiler_globals, zend_execute_data, zend_function, zend_hash_str_find_ptr_lc,
    zend_interrupt_function, zval, ZEND_INTERNAL_FUNCTION,
};

use crate::timer::SAMPLE_DUE;

type InterruptFn = unsafe extern "C" fn(*mut zend_execute_data);
type HandlerFn = unsafe extern "C" fn(*mut zend_execute_data, *mut zval);

extern "C" {
    /// `ZEND_API void (*zend_execute_internal)(zend_execute_data *, zval *)`: null unless an
    /// extension hooks internal calls (ext-php-rs does not bind it).
    static mut zend_execute_internal: Option<HandlerFn>;
}

// Written once at MINIT (and restored at MSHUTDOWN) on the engine's thread, before and after
// any PHP code runs; read by value from the hooks.
static mut PREV_INTERRUPT: Option<InterruptFn> = None;
static mut PREV_EXECUTE_INTERNAL: Option<HandlerFn> = None;
static mut ORIG_PCNTL_FORK: Option<HandlerFn> = None;
static mut PCNTL_FORK: *mut zend_function = std::ptr::null_mut();

/// Panics caught at a hook boundary (each one is a bug; PHP carries on).
pub static PANICS: AtomicU64 = AtomicU64::new(0);
/// `pcntl_fork` calls seen in this process.
pub static FORKS: AtomicU64 = AtomicU64::new(0);

/// Runs `f`, turning a panic into a count.
pub fn guard<R>(f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(_) => {
            PANICS.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[inline]
fn take_due() -> bool {
    SAMPLE_DUE.load(Ordering::Relaxed) && SAMPLE_DUE.swap(false, Ordering::AcqRel)
}

unsafe extern "C" fn on_interrupt(execute_data: *mut zend_execute_data) {
    if take_due() {
        // SAFETY: the engine passes the running frame of this thread.
        guard(|| unsafe { crate::sampler::sample(execute_data, false) });
    }
    // SAFETY: set at MINIT; the previous hook expects exactly this call.
    if let Some(prev) = unsafe { PREV_INTERRUPT } {
        // SAFETY: as above.
        unsafe { prev(execute_data) };
    }
}

unsafe extern "C" fn on_execute_internal(execute_data: *mut zend_execute_data, rv: *mut zval) {
    // SAFETY: the engine's own call, forwarded unchanged. Without a previous hook this does
    // what the engine's `execute_internal` does (call the function's handler), one call
    // shallower: this runs for every internal function call.
    unsafe {
        match PREV_EXECUTE_INTERNAL {
            Some(prev) => prev(execute_data, rv),
            None => {
                if let Some(handler) = (*(*execute_data).func).internal_function.handler {
                    handler(execute_data, rv);
                }
            }
        }
    }
    if take_due() {
        // SAFETY: EG(current_execute_data) is still the internal function's frame here, and
        // `execute_data` is it.
        guard(|| unsafe { crate::sampler::sample(execute_data, true) });
    }
}

unsafe extern "C" fn on_pcntl_fork(execute_data: *mut zend_execute_data, rv: *mut zval) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let paired = guard(crate::before_fork).unwrap_or(false);
    // SAFETY: MINIT stored the handler it replaced; it runs with the engine's own arguments.
    if let Some(orig) = unsafe { ORIG_PCNTL_FORK } {
        unsafe { orig(execute_data, rv) };
    }
    // SAFETY: as above.
    if unsafe { libc::getpid() } != parent {
        guard(|| crate::after_fork_child(paired));
    } else {
        guard(|| crate::after_fork_parent(paired));
    }
}

/// Installs the interrupt and internal-call hooks.
///
/// # Safety
/// Call at MINIT, on the engine's thread.
pub unsafe fn install() {
    // SAFETY: MINIT: nothing else reads or writes these yet.
    unsafe {
        PREV_INTERRUPT = zend_interrupt_function;
        zend_interrupt_function = Some(on_interrupt);
        PREV_EXECUTE_INTERNAL = zend_execute_internal;
        zend_execute_internal = Some(on_execute_internal);
    }
}

/// Wraps `pcntl_fork` if the function table has it (pcntl is compiled into Debian's CLI; a
/// shared pcntl loaded after forkprof is found at the first request). Returns whether it is
/// wrapped now.
///
/// # Safety
/// Call at MINIT or RINIT, on the engine's thread.
pub unsafe fn wrap_pcntl_fork() -> bool {
    // SAFETY: single-threaded engine phase; the compiler globals and the function table live
    // as long as the engine. The function found is an internal function (checked), whose
    // handler field the engine reads at every call.
    unsafe {
        if !PCNTL_FORK.is_null() {
            return true;
        }
        let cg = ext_php_rs_compiler_globals();
        if cg.is_null() || (*cg).function_table.is_null() {
            return false;
        }
        let name = b"pcntl_fork";
        let f = zend_hash_str_find_ptr_lc((*cg).function_table, name.as_ptr().cast(), name.len())
            as *mut zend_function;
        if f.is_null() || u32::from((*f).common.type_) != ZEND_INTERNAL_FUNCTION {
            return false;
        }
        let handler = (*f).internal_function.handler;
        if handler.is_none() {
            return false;
        }
        ORIG_PCNTL_FORK = handler;
        (*f).internal_function.handler = Some(on_pcntl_fork);
        PCNTL_FORK = f;
        true
    }
}

pub fn pcntl_fork_wrapped() -> bool {
    // SAFETY: a by-value read of a pointer written only in single-threaded engine phases.
    unsafe { !PCNTL_FORK.is_null() }
}

/// Puts back what [`install`] and [`wrap_pcntl_fork`] replaced, where nothing hooked after
/// forkprof (a later hook that chains to ours keeps working: this library stays loaded until
/// the engine unloads every extension).
///
/// # Safety
/// Call at MSHUTDOWN, on the engine's thread.
pub unsafe fn uninstall() {
    // SAFETY: single-threaded engine phase; see `install`.
    unsafe {
        if zend_interrupt_function
            .is_some_and(|f| std::ptr::fn_addr_eq(f, on_interrupt as InterruptFn))
        {
            zend_interrupt_function = PREV_INTERRUPT;
        }
        if zend_execute_internal
            .is_some_and(|f| std::ptr::fn_addr_eq(f, on_execute_internal as HandlerFn))
        {
            zend_execute_internal = PREV_EXECUTE_INTERNAL;
        }
        let f = PCNTL_FORK;
        if !f.is_null()
            && (*f)
                .internal_function
                .handler
                .is_some_and(|h| std::ptr::fn_addr_eq(h, on_pcntl_fork as HandlerFn))
        {
            (*f).internal_function.handler = ORIG_PCNTL_FORK;
        }
        PCNTL_FORK = std::ptr::null_mut();
    }
}
