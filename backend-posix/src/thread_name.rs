//! Naming the calling thread (Linux: `pthread_setname_np` on itself, which is a `prctl`).

use std::ffi::CStr;

/// The kernel keeps 15 bytes of a thread's name (plus the NUL).
const MAX: usize = 15;

/// Names the calling thread, cut to the 15 bytes the kernel keeps: a longer name is refused
/// whole (`ERANGE`), which would leave the thread under its parent's name in `top -H` and
/// `/proc/<pid>/task/*/comm`. Cut on the stack, no allocation (this runs first thing in a
/// thread started in a forked child).
pub fn set(name: &CStr) {
    let bytes = name.to_bytes();
    let mut buf = [0u8; MAX + 1];
    let n = bytes.len().min(MAX);
    buf[..n].copy_from_slice(&bytes[..n]);
    // SAFETY: `buf` is NUL-terminated (its last byte, at least, stays 0) and outlives the
    // call; naming oneself has no other precondition.
    unsafe { libc::pthread_setname_np(libc::pthread_self(), buf.as_ptr().cast()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_name() -> String {
        std::fs::read_to_string("/proc/thread-self/comm")
            .expect("read /proc/thread-self/comm")
            .trim_end()
            .to_string()
    }

    #[test]
    fn a_long_name_is_cut_to_what_the_kernel_keeps_and_a_short_one_is_kept_whole() {
        std::thread::spawn(|| {
            set(c"forkprof-collector-thread");
            assert_eq!(own_name(), "forkprof-collec");
            set(c"short");
            assert_eq!(own_name(), "short");
        })
        .join()
        .unwrap();
    }
}
