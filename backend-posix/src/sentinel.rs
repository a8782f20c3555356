//! A word the Linux kernel zeroes in every child, observed or not (`MADV_WIPEONFORK`, Linux
//! 4.14+). forkprof keeps it non-zero; a zero read means "this is a child nobody told us
//! about".

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

// Not every libc version exports the constant for every Linux target; the value is ABI.
const MADV_WIPEONFORK: libc::c_int = 18;

struct Page(&'static AtomicU64);

static PAGE: OnceLock<Option<Page>> = OnceLock::new();

fn map() -> Option<Page> {
    // SAFETY: an anonymous private mapping has no preconditions; the result is checked.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `addr` is the page just mapped.
    if unsafe { libc::madvise(addr, 4096, MADV_WIPEONFORK) } != 0 {
        // SAFETY: unmapping the page we mapped, which nothing else references.
        unsafe { libc::munmap(addr, 4096) };
        return None;
    }
    // SAFETY: the page is mapped for the life of the process, page-aligned (so aligned for
    // AtomicU64) and zero-initialised, a valid AtomicU64 bit pattern.
    Some(Page(unsafe { &*(addr as *const AtomicU64) }))
}

/// The wipe-on-fork word, or `None` on kernels without `MADV_WIPEONFORK`.
pub fn word() -> Option<&'static AtomicU64> {
    PAGE.get_or_init(map).as_ref().map(|p| p.0)
}
