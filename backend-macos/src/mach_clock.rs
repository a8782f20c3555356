//! Mach clocks, macOS only: `mach_absolute_time` scaled by the timebase, and per-thread CPU
//! time from `thread_info`. macOS has no `pthread_getcpuclockid`, and `CLOCK_THREAD_CPUTIME_ID`
//! goes through the same `thread_info` call with an extra layer around it.
//!
//! Both functions may run in a forked child before anything is re-initialised, so they hold
//! no lock and use no `OnceLock` (one mid-initialisation in a thread that vanished at the fork
//! would block the child forever): the timebase is cached in an atomic, racing initialisers
//! simply store the same value.

use std::sync::atomic::{AtomicU64, Ordering};

use mach2::kern_return::KERN_SUCCESS;
use mach2::mach_time::{mach_absolute_time, mach_timebase_info, mach_timebase_info_data_t};

/// `numer << 32 | denom` of the Mach timebase; 0 until first read.
static TIMEBASE: AtomicU64 = AtomicU64::new(0);

fn timebase() -> (u64, u64) {
    let packed = TIMEBASE.load(Ordering::Relaxed);
    if packed != 0 {
        return (packed >> 32, packed & 0xffff_ffff);
    }
    let mut info = mach_timebase_info_data_t::default();
    // SAFETY: `info` is a valid, writable mach_timebase_info.
    let kr = unsafe { mach_timebase_info(&mut info) };
    let (numer, denom) = if kr == KERN_SUCCESS && info.numer != 0 && info.denom != 0 {
        (info.numer, info.denom)
    } else {
        (1, 1) // ticks are nanoseconds on every Intel Mac; a failure here is not expected
    };
    TIMEBASE.store(
        (u64::from(numer) << 32) | u64::from(denom),
        Ordering::Relaxed,
    );
    (u64::from(numer), u64::from(denom))
}

/// Nanoseconds since boot, not counting time asleep (the Mach absolute clock).
pub fn monotonic_ns() -> u64 {
    let (numer, denom) = timebase();
    // SAFETY: no preconditions.
    let ticks = unsafe { mach_absolute_time() };
    // u128: ticks × numer overflows u64 after a few days of uptime on Apple silicon (125/3).
    (u128::from(ticks) * u128::from(numer) / u128::from(denom)) as u64
}

/// CPU time (user + system) of the calling thread, in nanoseconds.
///
/// The thread's port comes from `pthread_mach_thread_np`, which returns the port name pthread
/// already holds: unlike `mach_thread_self` it adds no send right, so there is nothing to
/// `mach_port_deallocate` and two Mach traps fewer per sample.
pub fn thread_cpu_time_ns() -> Option<u64> {
    // SAFETY: `pthread_self` is always the calling, live thread.
    let port = unsafe { libc::pthread_mach_thread_np(libc::pthread_self()) };
    extended_info_ns(port).or_else(|| basic_info_ns(port))
}

/// `THREAD_EXTENDED_INFO`: nanosecond resolution.
fn extended_info_ns(port: libc::mach_port_t) -> Option<u64> {
    // SAFETY: a plain C struct of integers and a char array; all-zero is a valid value.
    let mut info: libc::thread_extended_info = unsafe { std::mem::zeroed() };
    let mut count = libc::THREAD_EXTENDED_INFO_COUNT;
    // SAFETY: `info` is writable and `count` says how many integer_t it holds, as thread_info
    // requires; `port` names the calling thread.
    let kr = unsafe {
        libc::thread_info(
            port,
            libc::THREAD_EXTENDED_INFO as libc::thread_flavor_t,
            &mut info as *mut libc::thread_extended_info as libc::thread_info_t,
            &mut count,
        )
    };
    (kr == libc::KERN_SUCCESS).then(|| info.pth_user_time.saturating_add(info.pth_system_time))
}

/// `THREAD_BASIC_INFO`: microsecond resolution, available on every macOS.
fn basic_info_ns(port: libc::mach_port_t) -> Option<u64> {
    // SAFETY: a plain C struct of integers; all-zero is a valid value.
    let mut info: libc::thread_basic_info = unsafe { std::mem::zeroed() };
    let mut count = libc::THREAD_BASIC_INFO_COUNT;
    // SAFETY: as in `extended_info_ns`.
    let kr = unsafe {
        libc::thread_info(
            port,
            libc::THREAD_BASIC_INFO as libc::thread_flavor_t,
            &mut info as *mut libc::thread_basic_info as libc::thread_info_t,
            &mut count,
        )
    };
    if kr != libc::KERN_SUCCESS {
        return None;
    }
    let us =
        |t: libc::time_value_t| t.seconds.max(0) as u64 * 1_000_000 + t.microseconds.max(0) as u64;
    Some((us(info.user_time) + us(info.system_time)) * 1_000)
}
