//! Status codes, the thread-local error message and the guard every entry point runs under.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a forkprof call returns. `FORKPROF_OK` is 0; on any other value
/// `forkprof_last_error()` says what went wrong and what to fix.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum forkprof_status {
    FORKPROF_OK = 0,
    /// A required pointer was NULL.
    FORKPROF_ERR_NULL = 1,
    /// An argument is out of range: a length too large, a misaligned array, an unknown
    /// constant.
    FORKPROF_ERR_INVALID = 2,
    /// The configuration was rejected; the message names the field.
    FORKPROF_ERR_CONFIG = 3,
    /// The sample does not match the configuration (e.g. the number of values).
    FORKPROF_ERR_SAMPLE = 4,
    /// The export destination cannot be used.
    FORKPROF_ERR_EXPORT = 5,
    /// An operating-system call failed; the message carries errno.
    FORKPROF_ERR_OS = 6,
    /// The fork hooks were called out of order.
    FORKPROF_ERR_FORK_ORDER = 7,
    /// The profiler is stopped, or disabled in this process.
    FORKPROF_ERR_NOT_RUNNING = 8,
    /// The operation did not finish before its timeout; the profiler keeps going.
    FORKPROF_ERR_TIMEOUT = 9,
    /// The process-wide string table is full.
    FORKPROF_ERR_INTERNER_FULL = 10,
    /// A bug inside forkprof was caught at the ABI boundary; the message has the details.
    FORKPROF_ERR_PANIC = 11,
    /// The caller was built against a newer forkprof.h than this library speaks: a struct
    /// `size` larger than the library knows, or `forkprof_abi_check` with a newer version.
    FORKPROF_ERR_ABI = 12,
}

use forkprof_status::*;

/// An error on its way to the C caller: a status and the message `forkprof_last_error` shows.
pub(crate) struct FfiError {
    pub status: forkprof_status,
    pub message: String,
}

impl FfiError {
    pub(crate) fn null(what: &str) -> Self {
        FfiError {
            status: FORKPROF_ERR_NULL,
            message: format!("`{what}` is NULL"),
        }
    }
    pub(crate) fn invalid(message: String) -> Self {
        FfiError {
            status: FORKPROF_ERR_INVALID,
            message,
        }
    }
    pub(crate) fn abi(message: String) -> Self {
        FfiError {
            status: FORKPROF_ERR_ABI,
            message,
        }
    }
}

impl From<forkprof::Error> for FfiError {
    fn from(e: forkprof::Error) -> Self {
        use forkprof::Error as E;
        let status = match &e {
            E::InvalidConfig { .. } => FORKPROF_ERR_CONFIG,
            E::InvalidSample { .. } => FORKPROF_ERR_SAMPLE,
            E::Export { .. } => FORKPROF_ERR_EXPORT,
            E::Os { .. } => FORKPROF_ERR_OS,
            E::ForkOrder { .. } => FORKPROF_ERR_FORK_ORDER,
            E::NotRunning { .. } => FORKPROF_ERR_NOT_RUNNING,
            E::Timeout { .. } => FORKPROF_ERR_TIMEOUT,
            E::InternerFull { .. } => FORKPROF_ERR_INTERNER_FULL,
            _ => FORKPROF_ERR_INVALID,
        };
        FfiError {
            status,
            message: e.to_string(),
        }
    }
}

thread_local! {
    /// The last failure's message on this thread, NUL-terminated. Reused, so setting it
    /// allocates only when a longer message arrives.
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn set_last_error(message: &str) {
    // `try_with`: during thread teardown the slot may be gone; losing the message beats a panic.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut buf) = slot.try_borrow_mut() {
            buf.clear();
            // An interior NUL would cut the C string short; show it instead.
            buf.extend(message.bytes().map(|b| if b == 0 { b'?' } else { b }));
            buf.push(0);
        }
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// Runs an entry point's body: returns `fallback` with the message set if it panicked.
pub(crate) fn guard_with<T>(
    fallback: T,
    body: impl FnOnce() -> Result<T, FfiError>,
) -> (T, forkprof_status) {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => (v, FORKPROF_OK),
        Ok(Err(e)) => {
            set_last_error(&e.message);
            (fallback, e.status)
        }
        Err(payload) => {
            set_last_error(&format!(
                "internal error in forkprof (please report it): {}",
                panic_message(&*payload)
            ));
            // Dropping the payload runs foreign code that could panic again, outside any
            // catch_unwind; leaking it on this already-broken path keeps the ABI abort-free.
            std::mem::forget(payload);
            (fallback, FORKPROF_ERR_PANIC)
        }
    }
}

/// [`guard_with`] for entry points that return only a status.
#[inline]
pub(crate) fn guard(body: impl FnOnce() -> Result<(), FfiError>) -> forkprof_status {
    guard_with((), body).1
}

/// The message of the most recent failed forkprof call on the calling thread, as a
/// NUL-terminated UTF-8 string; "" if none failed yet. Valid until the next forkprof call on
/// this thread; copy it to keep it. Never NULL.
#[no_mangle]
pub extern "C" fn forkprof_last_error() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    let found = catch_unwind(|| {
        LAST_ERROR
            .try_with(|slot| match slot.try_borrow() {
                Ok(buf) if !buf.is_empty() => buf.as_ptr().cast::<c_char>(),
                _ => EMPTY.as_ptr().cast::<c_char>(),
            })
            .unwrap_or(EMPTY.as_ptr().cast::<c_char>())
    });
    found.unwrap_or(EMPTY.as_ptr().cast::<c_char>())
}

/// The name of a status code ("FORKPROF_ERR_NULL", ...), or "FORKPROF_UNKNOWN_STATUS".
/// Takes an int so any value a caller holds is safe to pass. Never NULL; static storage.
#[no_mangle]
pub extern "C" fn forkprof_status_name(status: i32) -> *const c_char {
    let name: &'static [u8] = match status {
        0 => b"FORKPROF_OK\0",
        1 => b"FORKPROF_ERR_NULL\0",
        2 => b"FORKPROF_ERR_INVALID\0",
        3 => b"FORKPROF_ERR_CONFIG\0",
        4 => b"FORKPROF_ERR_SAMPLE\0",
        5 => b"FORKPROF_ERR_EXPORT\0",
        6 => b"FORKPROF_ERR_OS\0",
        7 => b"FORKPROF_ERR_FORK_ORDER\0",
        8 => b"FORKPROF_ERR_NOT_RUNNING\0",
        9 => b"FORKPROF_ERR_TIMEOUT\0",
        10 => b"FORKPROF_ERR_INTERNER_FULL\0",
        11 => b"FORKPROF_ERR_PANIC\0",
        12 => b"FORKPROF_ERR_ABI\0",
        _ => b"FORKPROF_UNKNOWN_STATUS\0",
    };
    name.as_ptr().cast()
}
