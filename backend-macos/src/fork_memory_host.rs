//! The portable strategy's fork exclusion on the host it is tested on (Linux): the same
//! `MADV_DONTFORK` the Linux backends use, so the simulation forks as cheaply as they do.

/// # Safety
/// `addr..addr + len` is a page-aligned range the caller owns and no child will touch.
pub unsafe fn exclude(addr: *mut u8, len: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: per this function's contract; madvise only changes the inheritance.
        unsafe { libc::madvise(addr.cast(), len, libc::MADV_DONTFORK) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (addr, len);
        false
    }
}

/// # Safety
/// `addr..addr + len` was excluded by [`exclude`] and is still owned by the caller.
pub unsafe fn include(addr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: per this function's contract.
        unsafe { libc::madvise(addr.cast(), len, libc::MADV_DOFORK) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (addr, len);
}
