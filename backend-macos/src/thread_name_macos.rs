//! Naming the calling thread: macOS's `pthread_setname_np` names only the caller.

use std::ffi::CStr;

pub fn set(name: &CStr) {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    unsafe { libc::pthread_setname_np(name.as_ptr()) };
}
