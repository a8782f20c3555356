//! The sampling tick: one thread per process that, every period of time spent inside requests,
//! marks a sample as due and raises the engine's VM interrupt flag, so the PHP thread takes the
//! sample itself at its next interrupt check (or when a blocking internal function returns).
//!
//! The period is counted on the request clock ([`request_clock_ns`]): nanoseconds spent
//! between RINIT and RSHUTDOWN, which stands still while a php-fpm worker waits for its next
//! request. What is left of a period when a request ends carries over to the next request, so
//! requests shorter than the period are sampled in proportion to their time (ten 4 ms requests
//! at a 10 ms period give about four samples) instead of never, as a period restarted at each
//! request would. [`Schedule`] is that accounting, as a pure function of the clock.
//!
//! Started with `pthread_create` directly, not `std::thread`: every forked child restarts it
//! right after the fork, from inside forkprof's atfork child handler (see
//! [`crate::child_restarted`]), and std's thread start-up takes a process-wide lock that
//! another parent thread may have held at fork time. The loop touches only atomics and one
//! futex, which it sleeps on (a period, or until the next request); it allocates nothing and
//! takes no lock.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// Set by the tick, consumed (swapped to false) by whichever hook takes the sample.
pub static SAMPLE_DUE: AtomicBool = AtomicBool::new(false);
/// The engine's `EG(vm_interrupt)` (a `zend_atomic_bool`, one byte), set at MINIT.
pub static VM_INTERRUPT: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());
/// 1 between RINIT and RSHUTDOWN, else 0. Outside a request the tick thread sleeps until the
/// next one instead of ticking, so an idle php-fpm worker's thread does not wake up every
/// period.
static IN_REQUEST: AtomicU32 = AtomicU32::new(0);
/// The futex the tick thread sleeps on, bumped and woken when a request starts and at a stop:
/// a sleep that began before either ends at once (the kernel compares the value it was given),
/// so MSHUTDOWN's join does not wait out the rest of a period.
static WAKE: AtomicU32 = AtomicU32::new(0);

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
/// Turns of the tick thread's loop in this process: 0 with a tick thread started means it has
/// not run yet (a starved machine can leave a just-forked child's thread unscheduled for
/// longer than a short child lives).
pub static WAKEUPS: AtomicU64 = AtomicU64::new(0);
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

/// Sleeps while `word` holds `seen`, at most `timeout_ns` (spurious and early wake-ups are
/// fine: the caller re-checks).
fn futex_wait_while(word: &AtomicU32, seen: u32, timeout_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a live, aligned 32-bit atomic with a valid relative timeout; the
    // kernel returns at once if the word no longer holds `seen`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            seen,
            &ts as *const libc::timespec,
        )
    };
}

/// The request clock, in one word so the tick thread reads it with one atomic load. Bit 63
/// set: inside a request, and the other bits are the monotonic time at which the clock read 0
/// (so it reads `now - epoch`). Clear: between requests, and the other bits are the clock's
/// value. Written only by the PHP thread (RINIT, RSHUTDOWN); a forked child inherits it, and
/// with it its parent's request time so far (the walk's wall-time deltas are taken on it).
static REQ_CLOCK: AtomicU64 = AtomicU64::new(0);
const IN_REQUEST_BIT: u64 = 1 << 63;

/// The request clock's value at monotonic time `now`, from its word.
fn clock_value(word: u64, now: u64) -> u64 {
    if word & IN_REQUEST_BIT != 0 {
        now.saturating_sub(word & !IN_REQUEST_BIT)
    } else {
        word
    }
}

/// The word once a request starts at `now` (unchanged if one is running already).
fn clock_started(word: u64, now: u64) -> u64 {
    if word & IN_REQUEST_BIT != 0 {
        return word;
    }
    IN_REQUEST_BIT | now.saturating_sub(word)
}

/// The word once the request ends at `now` (unchanged if none is running).
fn clock_stopped(word: u64, now: u64) -> u64 {
    clock_value(word, now) & !IN_REQUEST_BIT
}

/// `CLOCK_MONOTONIC` in ns: the clock of the tick thread's sleeps and of the request clock.
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; clock_gettime takes no lock.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Nanoseconds this process has spent inside requests (RINIT to RSHUTDOWN).
pub fn request_clock_ns() -> u64 {
    clock_value(REQ_CLOCK.load(Ordering::Acquire), monotonic_ns())
}

/// When the next tick is due, on the request clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    due: u64,
}

impl Schedule {
    /// The first tick is one period after `clock`.
    pub fn starting_at(clock: u64, period: u64) -> Schedule {
        Schedule {
            due: clock.saturating_add(period),
        }
    }

    /// At request-clock value `clock`: whether a tick is due now (the next one is then
    /// scheduled), and how much more request time to wait for the next one. A schedule that
    /// fell behind by a whole period or more (a suspended process, a loaded machine) ticks
    /// once and then a full period later, rather than in a burst to catch up.
    pub fn poll(&mut self, clock: u64, period: u64) -> (bool, u64) {
        let period = period.max(1);
        if clock < self.due {
            return (false, self.due - clock);
        }
        self.due = if clock - self.due >= period {
            clock.saturating_add(period)
        } else {
            self.due + period
        };
        (true, self.due - clock)
    }
}

/// A request starts: the request clock runs, and ticks resume (the tick thread is woken if
/// it sleeps).
pub fn request_started() {
    let word = REQ_CLOCK.load(Ordering::Relaxed);
    REQ_CLOCK.store(clock_started(word, monotonic_ns()), Ordering::Release);
    IN_REQUEST.store(1, Ordering::Release);
    wake_tick_thread();
}

fn wake_tick_thread() {
    WAKE.fetch_add(1, Ordering::AcqRel);
    futex_wake(&WAKE);
}

/// A request ended: the request clock stops (what is left of the period waits for the next
/// request) and the tick thread goes to sleep at its next wake-up.
pub fn request_ended() {
    IN_REQUEST.store(0, Ordering::Release);
    let word = REQ_CLOCK.load(Ordering::Relaxed);
    REQ_CLOCK.store(clock_stopped(word, monotonic_ns()), Ordering::Release);
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
        WAKEUPS.store(0, Ordering::Relaxed);
    }
    let gen = STOP_GEN.load(Ordering::Acquire);
    // SAFETY: zeroed pthread_attr_t is initialised by pthread_attr_init before any use.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: all-zero is a valid pthread_t (an integer on glibc, a pointer on musl); it is
    // written by pthread_create before any use.
    let mut tid: libc::pthread_t = unsafe { std::mem::zeroed() };
    // SAFETY: `attr` is a valid attr object for these calls; `tick_main` is an
    // `extern "C" fn(*mut c_void) -> *mut c_void` that never unwinds and reads only the
    // integer passed as its argument. pthread_create in a forked child meets only libc's
    // own thread-list lock, which glibc and musl reset in the child. The thread blocks
    // every asynchronous signal (see `sigmask`).
    let rc = crate::sigmask::blocked(|| unsafe {
        libc::pthread_attr_init(&mut attr);
        // 64 KiB: the loop has a few words of locals.
        libc::pthread_attr_setstacksize(&mut attr, 64 << 10);
        let rc = libc::pthread_create(&mut tid, &attr, tick_main, gen as usize as *mut _);
        libc::pthread_attr_destroy(&mut attr);
        rc
    });
    if rc != 0 {
        return Err(rc);
    }
    HANDLE.store(tid as u64, Ordering::Relaxed);
    TIMER_PID.store(pid, Ordering::Release);
    STARTS.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Stops and joins this process's tick thread (woken at once). Nothing to do in a process
/// whose thread was the parent's.
pub fn stop() {
    if !running_here() {
        return;
    }
    STOP_GEN.fetch_add(1, Ordering::AcqRel);
    wake_tick_thread();
    let tid = HANDLE.load(Ordering::Relaxed) as libc::pthread_t;
    // SAFETY: `tid` was created joinable in this process and is joined only here, once:
    // TIMER_PID is cleared right after.
    unsafe { libc::pthread_join(tid, std::ptr::null_mut()) };
    TIMER_PID.store(0, Ordering::Release);
}

extern "C" fn tick_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    let gen = arg as usize as u64;
    // SAFETY: PR_SET_NAME names the calling thread (for top, ps -L, /proc); no lock.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"forkprof-tick".as_ptr()) };
    let mut schedule = Schedule::starting_at(request_clock_ns(), PERIOD_NS.load(Ordering::Relaxed));
    loop {
        // Read before the checks below: a start or stop that comes after them changes it, so
        // the sleep that follows does not begin.
        let seen = WAKE.load(Ordering::Acquire);
        WAKEUPS.fetch_add(1, Ordering::Relaxed);
        if STOP_GEN.load(Ordering::Acquire) != gen {
            break;
        }
        if IN_REQUEST.load(Ordering::Acquire) == 0 {
            // Between requests: sleep until the next one starts (or a stop). The request
            // clock stands still meanwhile, so the schedule needs no adjusting. The bound only
            // guards against a missed wake-up; the loop re-checks either way.
            futex_wait_while(&WAKE, seen, 1_000_000_000);
            continue;
        }
        let (due, wait) = schedule.poll(request_clock_ns(), PERIOD_NS.load(Ordering::Relaxed));
        if due {
            tick();
        }
        // Request time passes at the rate of real time while the request runs: `wait` from
        // now is when the next tick is due if it is still running then (if it ended, the
        // next wake-up sees that and sleeps until the next request).
        futex_wait_while(&WAKE, seen, wait);
    }
    std::ptr::null_mut()
}

/// Marks a sample due and raises the engine's interrupt flag.
fn tick() {
    if VM_INTERRUPT.load(Ordering::Acquire).is_null() {
        return;
    }
    // Due before the flag: the hook the flag triggers must find the sample due.
    SAMPLE_DUE.store(true, Ordering::Release);
    raise_interrupt();
    TICKS.fetch_add(1, Ordering::Relaxed);
}

fn raise_interrupt() -> bool {
    let flag = VM_INTERRUPT.load(Ordering::Acquire);
    if flag.is_null() {
        return false;
    }
    // SAFETY: `flag` points at EG(vm_interrupt) in the executor globals, which live as long
    // as the process; the engine reads it as an atomic bool of the same layout.
    unsafe { (*flag).store(true, Ordering::Release) };
    true
}

/// At RINIT: a sample still due from the previous request (its tick came after that
/// request's last interrupt check) is taken at this request's first check.
pub fn rearm_if_due() {
    if SAMPLE_DUE.load(Ordering::Acquire) {
        raise_interrupt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_request_clock_stands_still_between_requests() {
        let mut w = 0;
        w = clock_started(w, 1_000);
        assert_eq!(clock_value(w, 1_004), 4);
        w = clock_stopped(w, 1_004);
        assert_eq!(clock_value(w, 9_999), 4, "idle time is not request time");
        assert_eq!(clock_stopped(w, 10_000), w, "ending twice changes nothing");
        w = clock_started(w, 2_000);
        assert_eq!(clock_started(w, 2_500), w, "starting twice changes nothing");
        assert_eq!(clock_value(w, 2_003), 7);
    }

    /// Drives a [`Schedule`] the way `tick_main` does, over `requests` (start, end) in real
    /// time: asleep between requests, woken at each start, otherwise sleeping what `poll`
    /// says. Returns the real times of the ticks.
    fn simulate(requests: &[(u64, u64)], period: u64) -> Vec<u64> {
        let clock_at = |t: u64| -> u64 {
            requests
                .iter()
                .map(|&(s, e)| t.clamp(s, e) - s)
                .sum::<u64>()
        };
        let mut ticks = Vec::new();
        let mut schedule = Schedule::starting_at(0, period);
        let mut t = 0;
        while let Some(&(start, _)) = requests.iter().find(|&&(_, e)| e > t) {
            // Not inside a request: the futex wait ends when the next one starts.
            t = t.max(start);
            let (due, wait) = schedule.poll(clock_at(t), period);
            if due {
                ticks.push(t);
            }
            t += wait;
        }
        ticks
    }

    fn spaced(n: u64, len: u64, idle: u64) -> Vec<(u64, u64)> {
        (0..n)
            .map(|i| (i * (len + idle) + idle, i * (len + idle) + idle + len))
            .collect()
    }

    #[test]
    fn short_requests_spaced_by_idle_time_are_sampled_in_proportion_to_their_time() {
        // 100 requests of 4 ms, 30 ms apart, at a 10 ms period: 400 ms inside requests. A period
        // restarted at each request gives no tick at all here.
        let requests = spaced(100, 4 * MS, 30 * MS);
        let ticks = simulate(&requests, 10 * MS);
        assert!(
            (39..=40).contains(&ticks.len()),
            "{} ticks for 400 ms of requests",
            ticks.len()
        );
        for t in &ticks {
            assert!(
                requests.iter().any(|&(s, e)| (s..e).contains(t)),
                "tick at {t} ns is outside every request"
            );
        }
        // Odd lengths too: 7 ms requests, idle times from 1 to 50 ms.
        let mut requests = Vec::new();
        let mut t = 0;
        for i in 0..200u64 {
            t += (1 + i * 7 % 50) * MS;
            requests.push((t, t + 7 * MS));
            t += 7 * MS;
        }
        let n = simulate(&requests, 10 * MS).len();
        assert!(
            (139..=140).contains(&n),
            "{n} ticks for 1400 ms of requests"
        );
    }

    #[test]
    fn a_long_request_ticks_every_period() {
        let ticks = simulate(&[(5 * MS, 1_005 * MS)], 10 * MS);
        assert_eq!(
            ticks.len(),
            99,
            "ticks at 10, 20, ... 990 ms into the request"
        );
        assert!(ticks.windows(2).all(|w| w[1] - w[0] == 10 * MS));
    }

    #[test]
    fn a_schedule_that_fell_behind_ticks_once_then_a_period_later() {
        let mut s = Schedule::starting_at(0, 10);
        assert_eq!(s.poll(3, 10), (false, 7));
        assert_eq!(s.poll(10, 10), (true, 10));
        // Woken 5 late: the next tick stays on the 10-grid.
        assert_eq!(s.poll(25, 10), (true, 5));
        // Woken 47 late (several periods): one tick, the next a whole period later.
        assert_eq!(s.poll(77, 10), (true, 10));
        assert_eq!(s.poll(87, 10), (true, 10));
        // A zero period (never configured so) does not spin on zero waits.
        assert_eq!(s.poll(97, 0), (true, 1));
    }
}
