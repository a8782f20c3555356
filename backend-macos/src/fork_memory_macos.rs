//! Memory children do not inherit, macOS only: `minherit(VM_INHERIT_NONE)` leaves the range
//! unmapped in every child, so a fork neither copies nor write-protects the sample buffer.
//! (Zero-filled inheritance, which would also give a wipe-on-fork sentinel, does not exist on
//! XNU: see `strategy.rs`.)

/// # Safety
/// `addr..addr + len` is a page-aligned range the caller owns and no child will touch.
pub unsafe fn exclude(addr: *mut u8, len: usize) -> bool {
    // SAFETY: per this function's contract; minherit only changes the inheritance attribute.
    unsafe { libc::minherit(addr.cast(), len, libc::VM_INHERIT_NONE) == 0 }
}

/// # Safety
/// `addr..addr + len` was excluded by [`exclude`] and is still owned by the caller.
pub unsafe fn include(addr: *mut u8, len: usize) {
    // SAFETY: per this function's contract; VM_INHERIT_COPY is the default attribute.
    unsafe { libc::minherit(addr.cast(), len, libc::VM_INHERIT_COPY) };
}
