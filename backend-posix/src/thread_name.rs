//! Naming the calling thread (Linux: `pthread_setname_np` on itself, which is a `prctl`).

use std::ffi::CStr;

/// Names the calling thread; names longer than 15 bytes are refused by the kernel and the
/// thread keeps its old name.
pub fn set(name: &CStr) {
    // SAFETY: `name` is NUL-terminated and outlives the call; naming oneself has no other
    // precondition.
    unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
}
