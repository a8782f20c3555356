//! forkprof on macOS: no prepare handler (Libsystem holds its atfork and dyld locks around
//! prepare handlers). Hosts call `before_fork` / `after_fork_parent` / `after_fork_child` from
//! their own fork entry points; a child-only atfork handler flags forks nobody intercepted.
//!
//! The strategy itself ([`strategy`]) is portable: under the `portable-strategy` feature it
//! compiles on Linux, where the tests run it under a simulation of macOS's atfork semantics.
//! What only exists on macOS (the Mach clocks, `minherit`) lives in `mach_clock` and
//! `fork_memory_macos`, compiled only there; the Linux build of the strategy uses the POSIX
//! clocks and `MADV_DONTFORK` instead.
#![cfg(any(target_os = "macos", feature = "portable-strategy"))]

#[cfg(not(target_os = "macos"))]
mod fork_memory_host;
#[cfg(target_os = "macos")]
mod fork_memory_macos;
#[cfg(target_os = "macos")]
mod mach_clock;
mod strategy;
#[cfg(target_os = "macos")]
mod thread_name_macos;

#[cfg(not(target_os = "macos"))]
use forkprof_backend_posix::clock;
#[cfg(target_os = "macos")]
use mach_clock as clock;

#[cfg(not(target_os = "macos"))]
use forkprof_backend_posix::thread_name;
#[cfg(target_os = "macos")]
use thread_name_macos as thread_name;

#[cfg(not(target_os = "macos"))]
use fork_memory_host as fork_memory;
#[cfg(target_os = "macos")]
use fork_memory_macos as fork_memory;

pub use strategy::{Macos, ATFORK_OPT_IN_ENV, PLATFORM, PLATFORM_ATFORK};

#[cfg(test)]
mod tests {
    use forkprof_core::Platform;

    use super::PLATFORM;

    #[test]
    fn monotonic_clock_never_goes_back_and_advances() {
        let a = PLATFORM.monotonic_ns();
        let b = PLATFORM.monotonic_ns();
        assert!(b >= a, "{b} < {a}");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let c = PLATFORM.monotonic_ns();
        assert!(c - a >= 2_000_000, "2 ms sleep measured as {} ns", c - a);
    }

    #[test]
    fn thread_cpu_time_counts_this_threads_work_only() {
        let cpu0 = PLATFORM.thread_cpu_time_ns().expect("thread CPU clock");
        let wall0 = PLATFORM.monotonic_ns();
        // Spin until this thread has used 20 ms of CPU (however long a loaded machine takes
        // to give it that much, up to 10 s of wall time).
        let mut x = 0u64;
        let mut cpu = cpu0;
        while cpu - cpu0 < 20_000_000 && PLATFORM.monotonic_ns() - wall0 < 10_000_000_000 {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            cpu = PLATFORM.thread_cpu_time_ns().unwrap();
        }
        let busy = cpu - cpu0;
        let wall = PLATFORM.monotonic_ns() - wall0;
        assert!(
            busy >= 20_000_000,
            "spinning for {wall} ns counted {busy} ns of CPU"
        );
        // One thread cannot use more CPU than time passed (1 ms slack: THREAD_BASIC_INFO
        // counts in microseconds and the two clocks are read at different instants).
        assert!(busy <= wall + 1_000_000, "{busy} ns of CPU in {wall} ns");
        // A thread that only sleeps has used almost no CPU, whatever this one did.
        let idle = std::thread::spawn(|| {
            let a = PLATFORM.thread_cpu_time_ns().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            PLATFORM.thread_cpu_time_ns().unwrap() - a
        })
        .join()
        .unwrap();
        assert!(
            idle < busy,
            "sleeping thread {idle} ns >= busy thread {busy} ns"
        );
    }
}
