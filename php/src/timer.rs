//! The sampling tick: one thread per process that, every period, marks a sample as due and
//! raises the engine's VM interrupt flag, so the PHP thread takes the sample itself at its next
//! interrupt check (or when a blocking internal function returns).
//!
//! Started with `pthread_create` directly, not `std::thread`: a forked child (pcntl_fork)
//! restarts it right after the fork, and std's thread start-up takes a process-wide lock that
//! another parent thread may have held at fork time. The loop touches only atomics and
//! `clock_nanosleep` (and a futex to sleep between requests); it allocates nothing and takes
//! no lock.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// Set by the tick, consumed (swapped to false) by whichever hook takes the sample.
pub static SAMPLE_DUE: AtomicBool = AtomicBool::new(false);
/// The engine's `EG(vm_interrupt)` (a `zend_atomic_bool`, one byte), set at MINIT.
pub static VM_INTERRUPT: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());
/// 1 between RINIT and RSHUTDOWN, else 0. Outside a request the tick thread sleeps on this
/// word (a futex) instead of ticking, so an idle php-fpm worker's thread does not wake up
/// every period.
static IN_REQUEST: AtomicU32 = AtomicU32::new(0);

static PERIOD_NS: AtomicU64 = AtomicU64::new(10_000_000);
/// The pid the tick thread runs in (0: none). A child inherits its parent's value, so a
/// mismatch means "no tick thread here".
static TIMER_PID: AtomicI32 = AtomicI32::new(0);
/// Bumped to ask the running tick thread to exit.
static STOP_GEN: AtomicU64 = AtomicU64::new(0);
/// The running thread's handle, for the join at MSHUTDOWN.
static HANDLE: AtomicU64 = AtomicU64::new(0);
/// Ticks delivered in this process.
pub static TICKS: AtomicU64 = AtomicU64::new(0);
/// Tick threads started in this process (1 normally, 1 in each forked child).
pub static STARTS: AtomicU64 = AtomicU64::new(0);

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live, aligned 32-bit atomic; it only wakes waiters.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

/// Sleeps while `word` is 0, at most `timeout_ns` (spurious and early wake-ups are fine:
/// the caller re-checks).
fn futex_wait_while_zero(word: &AtomicU32, timeout_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a live, aligned 32-bit atomic with a valid relative timeout; the
    // kernel returns at once if the word is no longer 0.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            0u32,
            &ts as *const libc::timespec,
        )
    };
}

/// A request starts: ticks resume (the tick thread is woken if it sleeps).
pub fn request_started() {
    IN_REQUEST.store(1, Ordering::Release);
    futex_wake(&IN_REQUEST);
}

/// A request ended: the tick thread goes to sleep at its next tick.
pub fn request_ended() {
    IN_REQUEST.store(0, Ordering::Release);
}

fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions and takes no lock.
    unsafe { libc::getpid() }
}

/// Whether this process has a tick thread.
pub fn running_here() -> bool {
    TIMER_PID.load(Ordering::Acquire) == getpid()
}

/// Starts the tick thread in this process unless one runs already. Returns the OS error of
/// `pthread_create` when it fails (the extension then records nothing, and says why).
pub fn ensure_started(period_ns: u64) -> Result<(), i32> {
    let pid = getpid();
    if TIMER_PID.load(Ordering::Acquire) == pid {
        return Ok(());
    }
    PERIOD_NS.store(period_ns.max(1), Ordering::Relaxed);
    if TIMER_PID.load(Ordering::Acquire) != 0 {
        // Inherited from the parent: its thread does not exist here, and its counts are the
        // parent's.
        TICKS.store(0, Ordering::Relaxed);
        STARTS.store(0, Ordering::Relaxed);
    }
    let gen = STOP_GEN.load(Ordering::Acquire);
    // SAFETY: zeroed pthread_attr_t is initialised by pthread_attr_init before any use.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    let mut tid: libc::pthread_t = 0;
    // SAFETY: `attr` is a valid attr object for these calls; `tick_main` is an
    // `extern "C" fn(*mut c_void) -> *mut c_void` that never unwinds and reads only the
    // integer passed as its argument. pthread_create in a forked child meets only libc's
    // own thread-list lock, which glibc and musl reset in the child.
    let rc = unsafe {
        libc::pthread_attr_init(&mut attr);
        // 64 KiB: the loop has a few words of locals.
        libc::pthread_attr_setstacksize(&mut attr, 64 << 10);
        let rc = libc::pthread_create(&mut tid, &attr, tick_main, gen as usize as *mut _);
        libc::pthread_attr_destroy(&mut attr);
        rc
    };
    if rc != 0 {
        return Err(rc);
    }
    HANDLE.store(tid as u64, Ordering::Relaxed);
    TIMER_PID.store(pid, Ordering::Release);
    STARTS.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Stops and joins this process's tick thread (it wakes within one period). Nothing to do
/// in a process whose thread was the parent's.
pub fn stop() {
    if !running_here() {
        return;
    }
    STOP_GEN.fetch_add(1, Ordering::AcqRel);
    futex_wake(&IN_REQUEST);
    let tid = HANDLE.load(Ordering::Relaxed) as libc::pthread_t;
    // SAFETY: `tid` was created joinable in this process and is joined only here, once:
    // TIMER_PID is cleared right after.
    unsafe { libc::pthread_join(tid, std::ptr::null_mut()) };
    TIMER_PID.store(0, Ordering::Release);
}

fn add_ns(t: &mut libc::timespec, ns: u64) {
    let total = t.tv_nsec as u64 + ns;
    t.tv_sec += (total / 1_000_000_000) as libc::time_t;
    t.tv_nsec = (total % 1_000_000_000) as libc::c_long;
}

extern "C" fn tick_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    let gen = arg as usize as u64;
    // SAFETY: PR_SET_NAME names the calling thread (for top, ps -L, /proc); no lock.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"forkprof-tick".as_ptr()) };
    let mut next = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `next` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut next) };
    while STOP_GEN.load(Ordering::Acquire) == gen {
        let period = PERIOD_NS.load(Ordering::Relaxed);
        if IN_REQUEST.load(Ordering::Acquire) == 0 {
            // Between requests: sleep until the next one starts (or a stop). The bound only
            // guards against a missed wake-up; the loop re-checks either way.
            futex_wait_while_zero(&IN_REQUEST, 1_000_000_000);
            // SAFETY: `next` is a valid timespec to write.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut next) };
            continue;
        }
        add_ns(&mut next, period);
        // SAFETY: absolute sleep on a valid timespec; EINTR just ends this sleep early.
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &next,
                std::ptr::null_mut(),
            )
        };
        if STOP_GEN.load(Ordering::Acquire) != gen {
            break;
        }
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        if (now.tv_sec, now.tv_nsec) > (next.tv_sec, next.tv_nsec) {
            // Fell behind (a suspended process, a loaded machine): tick from now on rather
            // than firing a burst to catch up.
            next = now;
        }
        if IN_REQUEST.load(Ordering::Acquire) == 0 {
            continue;
        }
        let flag = VM_INTERRUPT.load(Ordering::Acquire);
        if flag.is_null() {
            continue;
        }
        SAMPLE_DUE.store(true, Ordering::Release);
        // SAFETY: `flag` points at EG(vm_interrupt) in the executor globals, which live as
        // long as the process; the engine reads it as an atomic bool of the same layout.
        unsafe { (*flag).store(true, Ordering::Release) };
        TICKS.fetch_add(1, Ordering::Relaxed);
    }
    std::ptr::null_mut()
}
