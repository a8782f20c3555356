//! A signal-sampling host: samples are recorded from a `SIGPROF` handler, as gperftools,
//! pprof-rs and many VMs' CPU profilers do, while threads churn the allocator and other threads
//! fork. The signals come from the process CPU timer (`setitimer(ITIMER_PROF)`) and from
//! per-thread CPU timers (`timer_create` with `SIGEV_THREAD_ID`), about 1 kHz each. Timers are
//! not inherited across `fork()`, so every child (and grandchild) arms its own, records from
//! its handler while it churns the allocator, and calls `stop` while its signals still fire.
//!
//! A signal can land anywhere: inside `malloc` holding the arena lock, inside `fork()`'s atfork
//! handlers, inside forkprof's own threads or its `stop()`. Whatever forkprof's `record` does
//! from the handler must therefore be async-signal-safe in every state; when it is not, a child
//! hangs on a lock its own interrupted code holds. A child that does not exit within
//! [`Options::child_limit`] is a hang: it is reported with the stage it had reached and (when
//! asked) `gdb`'s backtrace of every thread, then killed.
//!
//! The handler here does only async-signal-safe things: it reads pre-built frame ids and a
//! profiler handle through atomics, calls `record`, bumps atomic counters and reads the
//! monotonic clock. It allocates nothing and takes no lock.
//!
//! Used by the test suite (`tests/signals*.rs`) and by `forkprof torture --signals`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use forkprof::{ChildPolicy, Config, FrameIds, Profiler, Sample};

use crate::shared;

/// Which timers fire the samples in one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// `setitimer(ITIMER_PROF)`: a process-directed `SIGPROF` per ms of process CPU time,
    /// delivered to whichever thread the kernel picks (forkprof's own included, unless they
    /// block it).
    pub process: bool,
    /// `timer_create(CLOCK_THREAD_CPUTIME_ID)` with `SIGEV_THREAD_ID`: each busy thread gets its
    /// own `SIGPROF` per ms of its CPU time.
    pub per_thread: bool,
    /// Each child also starts a thread (forkprof's raw thread: safe in a child) that churns the
    /// allocator under its own per-thread timer while the child stops.
    pub child_thread: bool,
}

/// One phase of a run: a name and its timers.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub name: &'static str,
    pub timers: Timers,
}

/// The three phases of `forkprof torture --signals`, in order.
pub const PHASES: [Phase; 3] = [
    Phase {
        name: "itimer",
        timers: Timers {
            process: true,
            per_thread: false,
            child_thread: false,
        },
    },
    Phase {
        name: "thread-timers",
        timers: Timers {
            process: false,
            per_thread: true,
            child_thread: false,
        },
    },
    Phase {
        name: "mixed",
        timers: Timers {
            process: true,
            per_thread: true,
            child_thread: true,
        },
    },
];

/// How much of it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Forks in the phase, shared between the forking threads.
    pub forks: u64,
    /// Threads forking at once.
    pub forking_threads: usize,
    /// Parent threads churning the allocator (and, with per-thread timers, each sampled).
    pub churn_threads: usize,
    /// Samples each child (and grandchild) waits to have recorded from its handler before it
    /// stops.
    pub child_samples: u64,
    /// Every n-th child forks a grandchild while its own timers fire (0: never).
    pub grandchild_every: u64,
    /// A child still running after this is a hang (a grandchild: after half of it).
    pub child_limit: Duration,
    /// Attach `gdb` to a hung child before killing it, and keep its backtrace.
    pub backtrace_hangs: bool,
    /// Stop forking after this many hangs (0: never stop): a test fails on the first.
    pub max_hangs: usize,
    /// Called once per 1000 forks with the tally so far (progress on long runs).
    pub progress: Option<fn(&Progress)>,
    /// Called with each hang as it is found, backtrace included: a long run that is stopped
    /// before its end still shows where its hangs waited.
    pub on_hang: Option<fn(&Hang)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            forks: 700,
            forking_threads: 3,
            churn_threads: 2,
            child_samples: 5,
            grandchild_every: 4,
            child_limit: Duration::from_secs(10),
            backtrace_hangs: true,
            max_hangs: 1,
            progress: None,
            on_hang: None,
        }
    }
}

/// How far a phase has got.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub phase: &'static str,
    pub forks: u64,
    pub of: u64,
    pub children_ok: u64,
    pub failed: u64,
    pub hung: u64,
}

/// Where a child (or grandchild) was when it was last seen: it publishes each stage into
/// memory shared with the parent, so a hang names the stage it stuck in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Forked; not yet running its own code (or never got there).
    Forked,
    /// Arming its timers and starting its churn thread.
    Arming,
    /// Waiting for its handler's samples while it churns the allocator.
    Recording,
    /// Forking its grandchild and waiting for it.
    Grandchild,
    /// Inside `stop()`, its signals still firing.
    Stopping,
    /// Checking its counters, disarming, ending its churn thread.
    Checking,
    /// About to exit 0.
    Done,
}

impl Stage {
    fn from_u64(v: u64) -> Stage {
        match v {
            1 => Stage::Arming,
            2 => Stage::Recording,
            3 => Stage::Grandchild,
            4 => Stage::Stopping,
            5 => Stage::Checking,
            6 => Stage::Done,
            _ => Stage::Forked,
        }
    }
}

/// What a child's exit code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `record` from the handler returned an error.
    RecordFailed,
    /// The handler did not record `child_samples` samples within the child limit's half.
    TooFewSignals,
    /// Profiling was off in the child, with this reason code (`Disabled::code`).
    NotProfiling(u32),
    /// `stop()`'s counters hold fewer samples than the handler had recorded before `stop()`
    /// was called: samples recorded in the child were lost (under the Disable policy: fewer
    /// counted as ignored).
    SamplesLost,
    /// `stop()`'s counters hold more samples than the handler ever tried in this process: the
    /// parent's samples are counted in the child.
    ForeignSamples,
    /// `stop()` timed out.
    StopTimedOut,
    /// `stop()` returned another error.
    StopFailed,
    /// A timer could not be created or armed.
    TimerFailed,
    /// The handler ran on one of forkprof's threads, which must block the host's signals.
    SignalOnForkprofThread,
    /// Under the Disable policy, the child's profiler was not off for that reason, or counted
    /// samples as recorded.
    NotDisabled,
    /// The child's churn thread could not be started, or did not end.
    ThreadFailed,
    /// The grandchild failed: its own exit code (as in this enum), or 30 + its signal.
    GrandchildFailed(i32),
    /// The grandchild hung; its parent left it running for the driver to report and kill.
    GrandchildHung,
    /// Killed by a signal.
    Signal(i32),
    /// Any other exit code (101: a panic).
    Other(i32),
}

impl Failure {
    fn code(self) -> i32 {
        match self {
            Failure::RecordFailed => 10,
            Failure::TooFewSignals => 11,
            Failure::SamplesLost => 12,
            Failure::StopTimedOut => 13,
            Failure::StopFailed => 14,
            Failure::ForeignSamples => 15,
            Failure::GrandchildHung => 16,
            Failure::ThreadFailed => 17,
            Failure::TimerFailed => 18,
            Failure::SignalOnForkprofThread => 19,
            Failure::NotDisabled => 30,
            Failure::NotProfiling(c) => 20 + c.min(9) as i32,
            Failure::GrandchildFailed(c) => 40 + c.clamp(0, 60),
            Failure::Signal(_) | Failure::Other(_) => 1,
        }
    }

    fn from_status(status: i32) -> Option<Failure> {
        if libc::WIFSIGNALED(status) {
            return Some(Failure::Signal(libc::WTERMSIG(status)));
        }
        Some(match libc::WEXITSTATUS(status) {
            0 => return None,
            10 => Failure::RecordFailed,
            11 => Failure::TooFewSignals,
            12 => Failure::SamplesLost,
            13 => Failure::StopTimedOut,
            14 => Failure::StopFailed,
            15 => Failure::ForeignSamples,
            16 => Failure::GrandchildHung,
            17 => Failure::ThreadFailed,
            18 => Failure::TimerFailed,
            19 => Failure::SignalOnForkprofThread,
            30 => Failure::NotDisabled,
            c @ 20..=29 => Failure::NotProfiling((c - 20) as u32),
            c @ 40..=100 => Failure::GrandchildFailed(c - 40),
            c => Failure::Other(c),
        })
    }
}

/// A child or grandchild that did not exit in time.
#[derive(Debug, Clone)]
pub struct Hang {
    pub pid: i32,
    /// True for a grandchild (its parent child reported it and exited).
    pub grandchild: bool,
    pub stage: Stage,
    /// `gdb`'s `thread apply all bt`, when asked for.
    pub backtrace: Option<String>,
}

/// "child 123 hung in stage Recording": how every report names a hang.
impl std::fmt::Display for Hang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = if self.grandchild {
            "grandchild"
        } else {
            "child"
        };
        write!(f, "{who} {} hung in stage {:?}", self.pid, self.stage)
    }
}

/// A child that exited 0, and what it recorded.
#[derive(Debug, Clone, Copy)]
pub struct ChildOk {
    pub pid: i32,
    /// `samples_recorded` of its `stop()`: what its profile files must hold, all of it under
    /// the child's own stack.
    pub recorded: u64,
    /// Its grandchild, when it forked one: (pid, samples recorded).
    pub grandchild: Option<(i32, u64)>,
}

/// What one phase saw.
#[derive(Debug, Default)]
pub struct Report {
    pub phase: &'static str,
    pub forks: u64,
    pub children_ok: Vec<ChildOk>,
    /// (pid, what went wrong) of every failed child.
    pub failures: Vec<(i32, Failure)>,
    pub hangs: Vec<Hang>,
    /// Parent side: each `fork()` call, ns.
    pub fork_ns: Vec<u64>,
    /// Child side: each child's (and grandchild's) first `record` from its handler, ns.
    pub first_record_ns: Vec<u64>,
    /// Child side: each child's (and grandchild's) `stop()`, its signals firing, ns.
    pub stop_ns: Vec<u64>,
    /// Signals the parent's handler took, and how many of its records returned `Ok`.
    pub parent_signals: u64,
    pub parent_recorded_ok: u64,
    /// The parent's `stop()` (called while its signals still fire), or its error.
    pub parent_stop: Option<Result<forkprof::Stats, String>>,
    /// Parent VmRSS at the end of the phase, KiB.
    pub parent_rss_kb: Option<u64>,
    pub elapsed: Duration,
}

impl Report {
    pub fn grandchildren_ok(&self) -> u64 {
        self.children_ok
            .iter()
            .filter(|c| c.grandchild.is_some())
            .count() as u64
    }

    /// Everything that went wrong, one line each (empty: the phase passed).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for h in &self.hangs {
            out.push(format!("DEADLOCK: {h} (killed)"));
        }
        for (pid, f) in &self.failures {
            match f {
                Failure::GrandchildFailed(c) => out.push(format!(
                    "FAILED: child {pid}: its grandchild failed: {}",
                    describe_grandchild(*c)
                )),
                f => out.push(format!("FAILED: child {pid}: {f:?}")),
            }
        }
        match &self.parent_stop {
            Some(Ok(s)) => {
                let counted = s.samples_recorded + s.samples_dropped + s.samples_too_large;
                if counted < self.parent_recorded_ok {
                    out.push(format!(
                        "FAILED: the parent's stop() counts {counted} samples, but its handler had {} records accepted before stop()",
                        self.parent_recorded_ok
                    ));
                }
                if counted > self.parent_signals {
                    out.push(format!(
                        "FAILED: the parent's stop() counts {counted} samples, more than its {} signals",
                        self.parent_signals
                    ));
                }
                if s.disabled.is_some() {
                    out.push(format!(
                        "FAILED: the parent's profiler is off: {:?}",
                        s.disabled
                    ));
                }
            }
            Some(Err(e)) => out.push(format!("FAILED: the parent's stop(): {e}")),
            None => out.push("FAILED: the parent's profiler never started".into()),
        }
        out
    }
}

/// A grandchild's code as its parent passed it on: its exit code, or 30 + its signal.
fn describe_grandchild(c: i32) -> String {
    match c {
        31..=59 => format!("killed by signal {}", c - 30),
        // The code passed on is capped at 60: a panic (101) lands here too.
        60.. => "a panic, or a signal above 29".into(),
        // Exit codes are the high byte of a wait status.
        c => match Failure::from_status(c << 8) {
            Some(f) => format!("{f:?}"),
            None => "exit code 0 (?)".into(),
        },
    }
}

// ---- what the handler reads: set up before any timer is armed ----

/// The profiler the handler records into (a leaked handle: a handler may still be running on
/// another thread when a phase ends, so it is never freed).
static PROFILER: AtomicPtr<Profiler> = AtomicPtr::new(std::ptr::null_mut());
/// The pre-interned stack per role (parent, child, grandchild), leaf first.
static STACKS: OnceLock<[[FrameIds; 2]; 3]> = OnceLock::new();
/// This process's role: an index into `STACKS`.
static ROLE: AtomicUsize = AtomicUsize::new(0);
/// Signals taken in this process (incremented before `record`).
static SIGNALS: AtomicU64 = AtomicU64::new(0);
/// Records in this process that returned `Ok` (incremented after `record`).
static RECORDED_OK: AtomicU64 = AtomicU64::new(0);
static RECORD_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Signals whose handler ran on one of forkprof's own threads (named `forkprof-*`): they must
/// block every signal a host may use.
static ON_FORKPROF_THREAD: AtomicU64 = AtomicU64::new(0);
/// Set in a fresh child: its next signal times its `record`.
static TIME_FIRST: AtomicBool = AtomicBool::new(false);
static FIRST_RECORD_NS: AtomicU64 = AtomicU64::new(0);
/// The child's churn thread: asked to end, and ended.
static CHURN_STOP: AtomicBool = AtomicBool::new(false);
static CHURN_DONE: AtomicBool = AtomicBool::new(false);

const ONE: [i64; 1] = [1];
/// The parent's churn threads churn for this long, then rest as long.
const CHURN_PAUSE: Duration = Duration::from_micros(500);
const ROLE_PARENT: usize = 0;
const ROLE_CHILD: usize = 1;
const ROLE_GRANDCHILD: usize = 2;

/// The stack names per role, as they appear in the profiles.
pub const STACK_NAMES: [&str; 3] = [
    "sig_parent_leaf;sig_parent_main",
    "sig_child_leaf;sig_child_main",
    "sig_grandchild_leaf;sig_grandchild_main",
];

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe and writes only `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn errno_ptr() -> *mut libc::c_int {
    // SAFETY: the calling thread's errno; async-signal-safe.
    unsafe { libc::__errno_location() }
}

/// The `SIGPROF` handler. Async-signal-safe on this side: atomics, a `OnceLock::get` (an
/// atomic load), `clock_gettime`, and forkprof's `record` with a sample built on the stack from
/// ids interned before any timer was armed. errno is saved and restored.
extern "C" fn on_sigprof(_sig: libc::c_int) {
    // SAFETY: this thread's errno, read and restored around the handler.
    let saved_errno = unsafe { *errno_ptr() };
    SIGNALS.fetch_add(1, Ordering::Relaxed);
    if on_forkprof_thread() {
        ON_FORKPROF_THREAD.fetch_add(1, Ordering::Relaxed);
    }
    let p = PROFILER.load(Ordering::Acquire);
    if let (false, Some(stacks)) = (p.is_null(), STACKS.get()) {
        let role = ROLE.load(Ordering::Relaxed).min(2);
        let timed = TIME_FIRST.swap(false, Ordering::Relaxed);
        let t0 = if timed { now_ns() } else { 0 };
        // SAFETY: `p` is a leaked `Profiler` handle, never freed.
        let r = unsafe { &*p }.record(&Sample::with_ids(&stacks[role], &ONE));
        if timed {
            FIRST_RECORD_NS.store(now_ns().saturating_sub(t0).max(1), Ordering::Relaxed);
        }
        match r {
            Ok(()) => RECORDED_OK.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                // Not expected: record's only error is a sample that does not match the
                // configuration, and this one always matches. Its message is allocated:
                // leaked, never freed here, where `free` is not safe.
                std::mem::forget(e);
                RECORD_ERRORS.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
    // SAFETY: as above.
    unsafe { *errno_ptr() = saved_errno };
}

/// Whether the calling thread is one of forkprof's (by its name). `prctl(PR_GET_NAME)` is a
/// plain system call on glibc and musl (no lock, no allocation), so the handler may use it.
fn on_forkprof_thread() -> bool {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `name`.
    let ok = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr(), 0, 0, 0) } == 0;
    ok && name.starts_with(b"forkprof-")
}

fn install_handler() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid start; the handler is an `extern "C" fn(c_int)`
        // that never unwinds.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigprof as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut()),
                0,
                "sigaction(SIGPROF): {}",
                std::io::Error::last_os_error()
            );
        }
    });
}

fn intern_stacks() -> forkprof::Result<()> {
    if STACKS.get().is_some() {
        return Ok(());
    }
    let mut out = [[FrameIds {
        function: forkprof::intern("sig")?,
        file: forkprof::intern("signals.rs")?,
        line: 0,
    }; 2]; 3];
    for (role, names) in STACK_NAMES.iter().enumerate() {
        for (depth, name) in names.split(';').enumerate() {
            out[role][depth] = FrameIds {
                function: forkprof::intern(name)?,
                file: forkprof::intern("signals.rs")?,
                line: 1 + depth as u32,
            };
        }
    }
    let _ = STACKS.set(out);
    Ok(())
}

// ---- timers ----

const TICK: libc::timeval = libc::timeval {
    tv_sec: 0,
    tv_usec: 1000,
};

/// Arms (or, with `on == false`, disarms) this process's `ITIMER_PROF`.
fn process_timer(on: bool) -> bool {
    let zero = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let v = if on { TICK } else { zero };
    let it = libc::itimerval {
        it_interval: v,
        it_value: v,
    };
    // SAFETY: setitimer with a valid value; async-signal-safe and lock-free in the child.
    unsafe { libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()) == 0 }
}

/// A `SIGPROF` per ms of the calling thread's CPU time, to that thread only.
struct ThreadTimer(libc::timer_t);

impl ThreadTimer {
    fn arm() -> Option<ThreadTimer> {
        // SAFETY: gettid has no arguments; the sigevent is zeroed then filled; timer_create with
        // SIGEV_THREAD_ID starts no helper thread (that is SIGEV_THREAD) and is a plain system
        // call on glibc and musl, so it is safe in a forked child.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::c_int;
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = libc::SIGPROF;
            sev.sigev_notify_thread_id = tid;
            let mut id: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut sev, &mut id) != 0 {
                return None;
            }
            let tick = libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            let spec = libc::itimerspec {
                it_interval: tick,
                it_value: tick,
            };
            if libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) != 0 {
                libc::timer_delete(id);
                return None;
            }
            Some(ThreadTimer(id))
        }
    }
}

impl Drop for ThreadTimer {
    fn drop(&mut self) {
        // SAFETY: the timer made in `arm`, deleted once.
        unsafe { libc::timer_delete(self.0) };
    }
}

fn unblock_sigprof() {
    // SAFETY: a signal set on the stack, filled by sigemptyset/sigaddset; pthread_sigmask
    // changes only the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPROF);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

// ---- allocator churn: what the signals interrupt ----

/// Allocates and frees blocks of varied sizes (some above glibc's mmap threshold) keeping a
/// few alive, for `rounds` rounds; a signal arriving here often finds malloc's lock held.
fn churn(state: &mut u64, keep: &mut [Option<Vec<u8>>; 8], rounds: u32) {
    for _ in 0..rounds {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (*state >> 33) as usize;
        let size = if r.is_multiple_of(61) {
            160 << 10
        } else {
            16 + r % 4096
        };
        let mut v = Vec::<u8>::with_capacity(size);
        v.push(r as u8);
        keep[r % keep.len()] = Some(std::hint::black_box(v));
    }
}

// ---- the child ----

/// One child's (or grandchild's) slot in memory shared with the driver. All-zero is valid.
#[repr(C)]
struct Slot {
    pid: AtomicI64,
    stage: AtomicU64,
    first_record_ns: AtomicU64,
    stop_ns: AtomicU64,
    recorded: AtomicU64,
}

/// Two slots per fork (child, grandchild) in a `MAP_SHARED` mapping: children write with plain
/// atomic stores, no lock and no pipe; the driver reads a slot after its writer ended.
struct Slots {
    ptr: *mut Slot,
    len: usize,
}

// SAFETY: the slots are atomics in shared memory; each is written by one process at a time.
unsafe impl Send for Slots {}
// SAFETY: as above.
unsafe impl Sync for Slots {}

impl Slots {
    fn new(forks: u64) -> Slots {
        let len = (forks as usize).max(1) * 2;
        let bytes = len * std::mem::size_of::<Slot>();
        // SAFETY: a new shared anonymous mapping (zeroed by the kernel); checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap of the signal slots failed");
        Slots { ptr: p.cast(), len }
    }
    fn get(&self, i: usize) -> &Slot {
        assert!(i < self.len);
        // SAFETY: within the mapping, which lives as long as `self`; all-zero atomics are valid.
        unsafe { &*self.ptr.add(i) }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len * std::mem::size_of::<Slot>()) };
    }
}

fn set_stage(slot: &Slot, s: Stage) {
    slot.stage.store(s as u64, Ordering::Release);
}

/// A forked process's whole life (role child or grandchild). Returns its exit code. Only what
/// is safe after a fork in a process whose other threads may hold any lock: forkprof,
/// allocation (glibc and musl reset malloc in the child), timers, clocks, `nanosleep`,
/// `waitpid`, `_exit`, and forkprof's raw threads.
fn child_main(
    p: &Profiler,
    role: usize,
    index: usize,
    timers: Timers,
    opts: &Options,
    slots: &Slots,
) -> i32 {
    // No timer of the parent's is inherited and pending signals are cleared by fork(), so
    // nothing runs the handler in this process before the timers below are armed.
    SIGNALS.store(0, Ordering::Relaxed);
    RECORDED_OK.store(0, Ordering::Relaxed);
    RECORD_ERRORS.store(0, Ordering::Relaxed);
    ON_FORKPROF_THREAD.store(0, Ordering::Relaxed);
    FIRST_RECORD_NS.store(0, Ordering::Relaxed);
    ROLE.store(role, Ordering::Relaxed);
    TIME_FIRST.store(true, Ordering::Relaxed);
    let slot = slots.get(index * 2 + usize::from(role == ROLE_GRANDCHILD));
    // SAFETY: getpid is async-signal-safe.
    slot.pid
        .store(unsafe { libc::getpid() } as i64, Ordering::Release);
    set_stage(slot, Stage::Arming);

    if timers.process && !process_timer(true) {
        return Failure::TimerFailed.code();
    }
    let thread_timer = if timers.per_thread {
        match ThreadTimer::arm() {
            Some(t) => Some(t),
            None => return Failure::TimerFailed.code(),
        }
    } else {
        None
    };
    let churner = if timers.child_thread {
        CHURN_STOP.store(false, Ordering::Relaxed);
        CHURN_DONE.store(false, Ordering::Relaxed);
        match forkprof::thread::spawn(c"sig-churn", || {
            // forkprof starts its raw threads with asynchronous signals blocked; a host thread
            // that wants to be sampled unblocks its sampling signal.
            unblock_sigprof();
            let timer = ThreadTimer::arm();
            let (mut st, mut keep) = (7u64, Default::default());
            while !CHURN_STOP.load(Ordering::Acquire) {
                churn(&mut st, &mut keep, 64);
            }
            drop(timer);
            CHURN_DONE.store(true, Ordering::Release);
        }) {
            Ok(t) => Some(t),
            Err(_) => return Failure::ThreadFailed.code(),
        }
    } else {
        None
    };

    set_stage(slot, Stage::Recording);
    let (mut st, mut keep) = (index as u64 ^ 0x5eed, Default::default());
    let deadline = Instant::now() + opts.child_limit / 2;
    while RECORDED_OK.load(Ordering::Relaxed) < opts.child_samples {
        churn(&mut st, &mut keep, 64);
        if Instant::now() > deadline {
            return Failure::TooFewSignals.code();
        }
    }
    if RECORD_ERRORS.load(Ordering::Relaxed) != 0 {
        return Failure::RecordFailed.code();
    }

    if role == ROLE_CHILD
        && opts.grandchild_every != 0
        && (index as u64).is_multiple_of(opts.grandchild_every)
    {
        set_stage(slot, Stage::Grandchild);
        if let Err(f) = grandchild(p, index, timers, opts, slots) {
            return f.code();
        }
    }

    // stop() while the signals still fire, on this thread and (mixed phase) the churn thread.
    set_stage(slot, Stage::Stopping);
    let accepted_before = RECORDED_OK.load(Ordering::Relaxed);
    let t = Instant::now();
    let stopped = p.stop(Duration::from_secs(5));
    slot.stop_ns
        .store((t.elapsed().as_nanos() as u64).max(1), Ordering::Relaxed);
    set_stage(slot, Stage::Checking);
    // Under the Disable policy profiling is off in every child: its records are counted
    // no-ops (the same signal-safety applies), stop() says so, and nothing is written.
    let disabled_policy = p.config().child_policy() == ChildPolicy::Disable;
    let s = match stopped {
        Ok(_) if disabled_policy => return Failure::NotDisabled.code(),
        Ok(s) => s,
        Err(forkprof::Error::NotRunning { .. }) if disabled_policy => p.stats(),
        Err(forkprof::Error::Timeout { .. }) => return Failure::StopTimedOut.code(),
        Err(_) => return Failure::StopFailed.code(),
    };
    // Read after the counters: the timers still fire, and every signal's handler bumps
    // SIGNALS before it records, so the counters can never exceed what is read here unless
    // samples that are not this process's were counted.
    let signals_after = SIGNALS.load(Ordering::Relaxed);
    let counted = if disabled_policy {
        if s.disabled != Some(forkprof::Disabled::ChildPolicy) || s.samples_recorded != 0 {
            return Failure::NotDisabled.code();
        }
        s.samples_ignored
    } else {
        if let Some(why) = s.disabled {
            return Failure::NotProfiling(why.code()).code();
        }
        s.samples_recorded + s.samples_dropped + s.samples_too_large
    };
    if counted < accepted_before {
        return Failure::SamplesLost.code();
    }
    if counted > signals_after {
        return Failure::ForeignSamples.code();
    }
    if RECORD_ERRORS.load(Ordering::Relaxed) != 0 {
        return Failure::RecordFailed.code();
    }
    if ON_FORKPROF_THREAD.load(Ordering::Relaxed) != 0 {
        return Failure::SignalOnForkprofThread.code();
    }
    slot.recorded.store(s.samples_recorded, Ordering::Relaxed);
    slot.first_record_ns
        .store(FIRST_RECORD_NS.load(Ordering::Relaxed), Ordering::Relaxed);

    if timers.process {
        process_timer(false);
    }
    drop(thread_timer);
    if let Some(t) = churner {
        CHURN_STOP.store(true, Ordering::Release);
        let end = Instant::now() + opts.child_limit / 4;
        while !CHURN_DONE.load(Ordering::Acquire) {
            if Instant::now() > end {
                return Failure::ThreadFailed.code();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        // Not joined: a thread's exit belongs to libc, which in a forked child may hold locks
        // of vanished threads; the thread has finished its body, dropping the handle detaches.
        drop(t);
    }
    set_stage(slot, Stage::Done);
    0
}

/// Forks the grandchild from the child's main thread, its timers firing; waits for it at most
/// half the child limit. A hung grandchild is left running (and its pid in its slot) for the
/// driver, which can attach a debugger to it, then kills it.
fn grandchild(
    p: &Profiler,
    index: usize,
    timers: Timers,
    opts: &Options,
    slots: &Slots,
) -> Result<(), Failure> {
    // SAFETY: the grandchild runs only `child_main` and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = child_main(p, ROLE_GRANDCHILD, index, timers, opts, slots);
        // SAFETY: ends the grandchild without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        return Err(Failure::GrandchildFailed(0));
    }
    match shared::wait_child(pid, opts.child_limit / 2) {
        Some(0) => Ok(()),
        Some(st) if libc::WIFSIGNALED(st) => {
            Err(Failure::GrandchildFailed(30 + libc::WTERMSIG(st)))
        }
        Some(st) => Err(Failure::GrandchildFailed(libc::WEXITSTATUS(st))),
        None => Err(Failure::GrandchildHung),
    }
}

// ---- the driver ----

/// Runs one phase: starts a profiler from `config`, records from the handler in this process
/// too, forks `opts.forks` children from `opts.forking_threads` threads, then stops the
/// profiler while its signals still fire.
pub fn run(config: Config, phase: Phase, opts: &Options) -> Report {
    let t0 = Instant::now();
    let mut report = Report {
        phase: phase.name,
        ..Report::default()
    };
    install_handler();
    if let Err(e) = intern_stacks() {
        report.parent_stop = Some(Err(format!("intern: {e}")));
        return report;
    }
    let p = match Profiler::start(config) {
        Ok(p) => p,
        Err(e) => {
            report.parent_stop = Some(Err(format!("start: {e}")));
            return report;
        }
    };
    ROLE.store(ROLE_PARENT, Ordering::Relaxed);
    SIGNALS.store(0, Ordering::Relaxed);
    RECORDED_OK.store(0, Ordering::Relaxed);
    RECORD_ERRORS.store(0, Ordering::Relaxed);
    ON_FORKPROF_THREAD.store(0, Ordering::Relaxed);
    // Leaked: a handler may be running with the previous phase's handle.
    PROFILER.store(Box::into_raw(Box::new(p.clone())), Ordering::Release);

    let slots = Arc::new(Slots::new(opts.forks));
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..opts.churn_threads)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let timer = phase.timers.per_thread.then(ThreadTimer::arm).flatten();
                let (mut st, mut keep) = (i as u64 + 1, Default::default());
                while !stop.load(Ordering::Acquire) {
                    let burst = Instant::now();
                    while burst.elapsed() < CHURN_PAUSE {
                        churn(&mut st, &mut keep, 64);
                    }
                    // Half busy: enough CPU time for the timers to sample this thread often,
                    // and enough left over for the children, which need CPU time of their own
                    // before their timers fire.
                    std::thread::sleep(CHURN_PAUSE);
                }
                drop(timer);
            })
        })
        .collect();
    if phase.timers.process {
        process_timer(true);
    }

    let next = Arc::new(AtomicU64::new(0));
    let shared_report = Arc::new(Mutex::new(std::mem::take(&mut report)));
    let forkers: Vec<_> = (0..opts.forking_threads.max(1))
        .map(|_| {
            let (p, opts, next, rep, slots) = (
                p.clone(),
                opts.clone(),
                next.clone(),
                shared_report.clone(),
                slots.clone(),
            );
            std::thread::spawn(move || forking_thread(&p, phase, &opts, &next, &rep, &slots))
        })
        .collect();
    for f in forkers {
        let _ = f.join();
    }
    let mut report = std::mem::take(&mut *shared_report.lock().unwrap());
    report.phase = phase.name;

    // The parent's stop() races its own signals: the timers and churners are still running.
    let accepted_before = RECORDED_OK.load(Ordering::Relaxed);
    let stopped = p.stop(Duration::from_secs(10));
    report.parent_signals = SIGNALS.load(Ordering::Relaxed);
    report.parent_recorded_ok = accepted_before;
    report.parent_stop = Some(stopped.map_err(|e| e.to_string()));
    if RECORD_ERRORS.load(Ordering::Relaxed) != 0 {
        report
            .failures
            .push((std::process::id() as i32, Failure::RecordFailed));
    }
    if ON_FORKPROF_THREAD.load(Ordering::Relaxed) != 0 {
        report
            .failures
            .push((std::process::id() as i32, Failure::SignalOnForkprofThread));
    }
    if phase.timers.process {
        process_timer(false);
    }
    stop.store(true, Ordering::Release);
    for c in churners {
        let _ = c.join();
    }
    report.parent_rss_kb = rss_kb();
    report.elapsed = t0.elapsed();
    report
}

fn forking_thread(
    p: &Profiler,
    phase: Phase,
    opts: &Options,
    next: &AtomicU64,
    report: &Mutex<Report>,
    slots: &Slots,
) {
    // The forking threads are sampled too: a signal can land inside fork()'s atfork handlers.
    let _timer = phase.timers.per_thread.then(ThreadTimer::arm).flatten();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        {
            let r = report.lock().unwrap();
            if i >= opts.forks || (opts.max_hangs != 0 && r.hangs.len() >= opts.max_hangs) {
                return;
            }
        }
        let t = Instant::now();
        // SAFETY: the child runs only `child_main` (fork-safe calls, see there) and `_exit`s.
        let pid = unsafe { libc::fork() };
        let fork_ns = t.elapsed().as_nanos() as u64;
        if pid == 0 {
            let code = child_main(p, ROLE_CHILD, i as usize, phase.timers, opts, slots);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut r = report.lock().unwrap();
        r.forks += 1;
        if pid < 0 {
            r.failures.push((-1, Failure::Other(-1)));
            continue;
        }
        r.fork_ns.push(fork_ns);
        drop(r);
        let outcome = shared::wait_child(pid, opts.child_limit);
        let child_slot = slots.get(i as usize * 2);
        let gc_slot = slots.get(i as usize * 2 + 1);
        let mut hangs = Vec::new();
        let mut result = None;
        match outcome {
            Some(status) => match Failure::from_status(status) {
                None => {
                    let gc_pid = gc_slot.pid.load(Ordering::Acquire) as i32;
                    result = Some(Ok(ChildOk {
                        pid,
                        recorded: child_slot.recorded.load(Ordering::Acquire),
                        grandchild: (gc_pid != 0)
                            .then(|| (gc_pid, gc_slot.recorded.load(Ordering::Acquire))),
                    }));
                }
                Some(Failure::GrandchildHung) => {
                    // Its parent exited and left it to us (reparented, still running).
                    let gc = gc_slot.pid.load(Ordering::Acquire) as i32;
                    if gc > 0 {
                        hangs.push(hang(gc, true, gc_slot, opts));
                    }
                    result = Some(Err(Failure::GrandchildHung));
                }
                Some(f) => result = Some(Err(f)),
            },
            None => {
                // The grandchild first, if the child was waiting for it: it is the likelier
                // culprit, and killing the child first would orphan it.
                let gc = gc_slot.pid.load(Ordering::Acquire) as i32;
                if gc > 0 && Stage::from_u64(gc_slot.stage.load(Ordering::Acquire)) != Stage::Done {
                    hangs.push(hang(gc, true, gc_slot, opts));
                }
                hangs.push(hang(pid, false, child_slot, opts));
                shared::kill_and_reap(pid);
            }
        }
        let first = [
            child_slot.first_record_ns.load(Ordering::Acquire),
            gc_slot.first_record_ns.load(Ordering::Acquire),
        ];
        let mut r = report.lock().unwrap();
        r.first_record_ns.extend(first.iter().filter(|&&v| v != 0));
        let stops = [
            child_slot.stop_ns.load(Ordering::Acquire),
            gc_slot.stop_ns.load(Ordering::Acquire),
        ];
        r.stop_ns.extend(stops.iter().filter(|&&v| v != 0));
        match result {
            Some(Ok(ok)) => r.children_ok.push(ok),
            Some(Err(f)) => r.failures.push((pid, f)),
            None => {}
        }
        r.hangs.extend(hangs);
        let tally = Progress {
            phase: phase.name,
            forks: i + 1,
            of: opts.forks,
            children_ok: r.children_ok.len() as u64,
            failed: r.failures.len() as u64,
            hung: r.hangs.len() as u64,
        };
        drop(r);
        if (i + 1).is_multiple_of(1000) {
            if let Some(progress) = opts.progress {
                progress(&tally);
            }
        }
    }
}

/// Reports a hung process (stage, optional backtrace) and kills it. A grandchild is not our
/// child (its parent exited, or is being killed): it is only signalled, its reaper is init.
fn hang(pid: i32, grandchild: bool, slot: &Slot, opts: &Options) -> Hang {
    let stage = Stage::from_u64(slot.stage.load(Ordering::Acquire));
    let backtrace = opts.backtrace_hangs.then(|| shared::backtrace(pid));
    if grandchild {
        // SAFETY: a hung grandchild of this run.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let h = Hang {
        pid,
        grandchild,
        stage,
        backtrace,
    };
    if let Some(on_hang) = opts.on_hang {
        on_hang(&h);
    }
    h
}

/// VmRSS of this process, where /proc has it.
pub fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Percentile `p` (0..=100) of `v` (sorted here); 0 when empty.
pub fn pct(v: &mut [u64], p: usize) -> u64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) * p) / 100]
}
