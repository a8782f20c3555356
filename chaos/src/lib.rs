//! Fork chaos: a driver that forks from several threads of a profiled process while the other
//! threads of that process keep doing what real hosts do around a fork, each of which holds a
//! lock of libc's or std's for a moment:
//! (a) start and join std threads; (b) write to stderr with `eprintln!`; (c) read and set
//! environment variables; (d) resolve a loopback name through `getaddrinfo`; (e) allocate and
//! free; (f) exit threads that run TLS destructors. (g), another global allocator, is the
//! caller's choice of `#[global_allocator]`.
//!
//! Every child restarts the profiler with its first `record`, records, sometimes forks a
//! grandchild from a freshly started thread, stops, and exits with a code that says what went
//! wrong (see [`ChildFailure`]). A child that has not exited within [`Options::child_limit`] is
//! a hang: it is reported (with a `gdb` backtrace when asked) and killed.
//!
//! Used by the test suite (`tests/fork_chaos*.rs`) and by `forkprof torture --chaos`.
//!
//! The child code here calls only what is safe after a fork in a process whose other threads
//! may hold any lock: forkprof, allocation (glibc and musl reset malloc in the child; jemalloc
//! handles fork with its own handlers), clocks, `nanosleep`, `waitpid`, `kill`, `_exit`, and
//! forkprof's raw threads. Never `std::thread::spawn`, stdio, the environment or the resolver.

mod disturb;
// Linux-only calls: /proc, PR_SET_CHILD_SUBREAPER, SIGEV_THREAD_ID timers.
#[cfg(target_os = "linux")]
pub mod line;
mod shared;
#[cfg(target_os = "linux")]
pub mod signals;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forkprof::{Frame, Profiler, Sample};

pub use disturb::{Disturbances, DisturberCounts};
pub use shared::SharedSlots;

/// How much chaos.
#[derive(Debug, Clone)]
pub struct Options {
    /// Forks in all, shared between the forking threads.
    pub forks: u64,
    /// Threads forking at once.
    pub forking_threads: usize,
    /// Samples each child records (the first one restarts its profiler).
    pub child_samples: u32,
    /// Every n-th child forks a grandchild from a thread it starts (0: never).
    pub grandchild_every: u64,
    /// A child (or grandchild) still running after this is a hang.
    pub child_limit: Duration,
    /// Which of the background disturbances run.
    pub disturb: Disturbances,
    /// Send stderr to /dev/null while the run lasts (the stderr writer is loud).
    pub silence_stderr: bool,
    /// Attach `gdb` to a hung child before killing it, and keep its backtrace.
    pub backtrace_hangs: bool,
    /// Called once per 1000 forks with the tally so far (progress on long runs).
    pub progress: Option<fn(&Progress)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            forks: 2000,
            forking_threads: 4,
            child_samples: 20,
            grandchild_every: 5,
            child_limit: Duration::from_secs(20),
            disturb: Disturbances::all(),
            silence_stderr: true,
            backtrace_hangs: false,
            progress: None,
        }
    }
}

/// What a child's exit code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildFailure {
    /// `record` returned an error.
    RecordFailed,
    /// After its first record the profiler was off, with this reason code (`Disabled::code`).
    NotProfiling(u32),
    /// The profiler stored fewer samples than recorded.
    SamplesMissing,
    /// `stop` timed out.
    StopTimedOut,
    /// `stop` returned another error.
    StopFailed,
    /// The grandchild failed: its own exit code (as in this enum), or 30 + the signal that
    /// killed it.
    GrandchildFailed(i32),
    /// The grandchild hung and was killed by its parent.
    GrandchildHung,
    /// The thread that forks the grandchild could not be started.
    ThreadFailed,
    /// Killed by a signal.
    Signal(i32),
    /// Any other exit code (101: a panic).
    Other(i32),
}

impl ChildFailure {
    fn code(self) -> i32 {
        match self {
            ChildFailure::RecordFailed => 10,
            ChildFailure::NotProfiling(c) => 20 + c as i32,
            ChildFailure::SamplesMissing => 12,
            ChildFailure::StopTimedOut => 13,
            ChildFailure::StopFailed => 14,
            ChildFailure::GrandchildFailed(c) => 40 + c.clamp(0, 60),
            ChildFailure::GrandchildHung => 16,
            ChildFailure::ThreadFailed => 17,
            ChildFailure::Signal(_) | ChildFailure::Other(_) => 1,
        }
    }

    fn from_status(status: i32) -> Option<ChildFailure> {
        if libc::WIFSIGNALED(status) {
            return Some(ChildFailure::Signal(libc::WTERMSIG(status)));
        }
        Some(match libc::WEXITSTATUS(status) {
            0 => return None,
            10 => ChildFailure::RecordFailed,
            12 => ChildFailure::SamplesMissing,
            13 => ChildFailure::StopTimedOut,
            14 => ChildFailure::StopFailed,
            16 => ChildFailure::GrandchildHung,
            17 => ChildFailure::ThreadFailed,
            c @ 20..=29 => ChildFailure::NotProfiling((c - 20) as u32),
            101 => ChildFailure::Other(101),
            c @ 40..=100 => ChildFailure::GrandchildFailed(c - 40),
            c => ChildFailure::Other(c),
        })
    }
}

/// How far a run has got.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub forks: u64,
    pub of: u64,
    pub children_ok: u64,
    pub failed: u64,
    pub hung: u64,
}

/// A child that did not exit in time.
#[derive(Debug, Clone)]
pub struct Hang {
    pub pid: i32,
    /// `gdb`'s `thread apply all bt` of the hung child, when asked for and available.
    pub backtrace: Option<String>,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub forks: u64,
    pub children_ok: u64,
    /// (pid, what went wrong) of every failed child.
    pub failures: Vec<(i32, ChildFailure)>,
    pub hangs: Vec<Hang>,
    /// Pids of the children that exited 0 (each wrote its own profile).
    pub ok_pids: Vec<i32>,
    /// Parent side: how long each `fork()` call took, in ns.
    pub fork_ns: Vec<u64>,
    /// Child side: how long each child's first `record` (which restarts its profiler) took.
    pub first_record_ns: Vec<u64>,
    pub disturbers: DisturberCounts,
    pub elapsed: Duration,
}

/// Runs the chaos around `profiler`, which the caller started with the `Restart` policy; with
/// `None`, the same chaos with no profiler at all (children exit at once), for comparison.
pub fn run(profiler: Option<&Profiler>, opts: &Options) -> Report {
    let t0 = Instant::now();
    let slots = SharedSlots::new(opts.forks as usize);
    let stderr_guard = opts.silence_stderr.then(shared::StderrSilenced::new);
    let stop = Arc::new(AtomicBool::new(false));
    let disturbers = disturb::start(opts.disturb, profiler, &stop);
    let next = Arc::new(AtomicU64::new(0));
    let report = Arc::new(Mutex::new(Report::default()));
    let forkers: Vec<_> = (0..opts.forking_threads.max(1))
        .map(|_| {
            let (p, opts, next, report, slots) = (
                profiler.cloned(),
                opts.clone(),
                next.clone(),
                report.clone(),
                slots.clone(),
            );
            std::thread::spawn(move || forking_thread(p.as_ref(), &opts, &next, &report, &slots))
        })
        .collect();
    for f in forkers {
        let _ = f.join();
    }
    stop.store(true, Ordering::Release);
    let counts = disturb::join(disturbers);
    drop(stderr_guard);
    let mut report = std::mem::take(&mut *report.lock().unwrap());
    report.disturbers = counts;
    report.first_record_ns = slots.collect();
    report.elapsed = t0.elapsed();
    report
}

fn forking_thread(
    p: Option<&Profiler>,
    opts: &Options,
    next: &AtomicU64,
    report: &Mutex<Report>,
    slots: &SharedSlots,
) {
    let frames = [
        Frame::new("forking_thread", "chaos.rs", 1),
        Frame::new("chaos_main", "chaos.rs", 2),
    ];
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= opts.forks {
            return;
        }
        if let Some(p) = p {
            let _ = p.record(&Sample::new(&frames, &[1]));
        }
        let t = Instant::now();
        // SAFETY: the child runs only `child_main` (fork-safe calls, see the crate docs) and
        // then `_exit`s.
        let pid = unsafe { libc::fork() };
        let fork_ns = t.elapsed().as_nanos() as u64;
        if pid == 0 {
            let code = p.map_or(0, |p| child_main(p, i, opts, slots));
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut r = report.lock().unwrap();
        r.forks += 1;
        if pid < 0 {
            r.failures.push((-1, ChildFailure::Other(-1)));
            continue;
        }
        r.fork_ns.push(fork_ns);
        drop(r);
        let outcome = shared::wait_child(pid, opts.child_limit);
        let mut r = report.lock().unwrap();
        match outcome {
            Some(status) => match ChildFailure::from_status(status) {
                None => {
                    r.children_ok += 1;
                    r.ok_pids.push(pid);
                }
                Some(f) => r.failures.push((pid, f)),
            },
            None => {
                drop(r);
                let backtrace = opts.backtrace_hangs.then(|| shared::backtrace(pid));
                shared::kill_and_reap(pid);
                r = report.lock().unwrap();
                r.hangs.push(Hang { pid, backtrace });
            }
        }
        let tally = Progress {
            forks: i + 1,
            of: opts.forks,
            children_ok: r.children_ok,
            failed: r.failures.len() as u64,
            hung: r.hangs.len() as u64,
        };
        drop(r);
        // Reported by the thread that made the 1000th, 2000th, ... fork, once each.
        if (i + 1).is_multiple_of(1000) {
            if let Some(progress) = opts.progress {
                progress(&tally);
            }
        }
    }
}

/// A child's whole life. Returns its exit code.
fn child_main(p: &Profiler, index: u64, opts: &Options, slots: &SharedSlots) -> i32 {
    let frames = [
        Frame::new("child_work", "chaos.rs", 10),
        Frame::new("child_main", "chaos.rs", 11),
    ];
    let t = Instant::now();
    if p.record(&Sample::new(&frames, &[1])).is_err() {
        return ChildFailure::RecordFailed.code();
    }
    slots.set(index as usize, t.elapsed().as_nanos() as u64);
    for _ in 1..opts.child_samples {
        if p.record(&Sample::new(&frames, &[1])).is_err() {
            return ChildFailure::RecordFailed.code();
        }
    }
    let stats = p.stats();
    if let Some(why) = stats.disabled {
        return ChildFailure::NotProfiling(why.code()).code();
    }
    if stats.samples_recorded != u64::from(opts.child_samples) {
        return ChildFailure::SamplesMissing.code();
    }
    if opts.grandchild_every != 0 && index.is_multiple_of(opts.grandchild_every) {
        if let Err(f) = grandchild_from_new_thread(p, opts) {
            return f.code();
        }
    }
    match p.stop(Duration::from_secs(10)) {
        Ok(s) if s.samples_recorded == u64::from(opts.child_samples) => 0,
        Ok(_) => ChildFailure::SamplesMissing.code(),
        Err(forkprof::Error::Timeout { .. }) => ChildFailure::StopTimedOut.code(),
        Err(_) => ChildFailure::StopFailed.code(),
    }
}

/// Starts a thread (a raw one: `std::thread::spawn` can hang in a forked child) that forks a
/// grandchild, which records and stops in turn; waits for both, bounded.
fn grandchild_from_new_thread(p: &Profiler, opts: &Options) -> Result<(), ChildFailure> {
    let result = Arc::new(AtomicU64::new(u64::MAX));
    let thread = {
        let (p, result, limit) = (p.clone(), result.clone(), opts.child_limit);
        forkprof::thread::spawn(c"chaos-forker", move || {
            let frames = [Frame::new("grandchild", "chaos.rs", 20)];
            // SAFETY: the grandchild records, stops and `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let code = if p.record(&Sample::new(&frames, &[1])).is_err() {
                    ChildFailure::RecordFailed.code()
                } else if let Some(why) = p.stats().disabled {
                    ChildFailure::NotProfiling(why.code()).code()
                } else {
                    match p.stop(Duration::from_secs(10)) {
                        Ok(s) if s.samples_recorded == 1 => 0,
                        Ok(_) => ChildFailure::SamplesMissing.code(),
                        Err(forkprof::Error::Timeout { .. }) => ChildFailure::StopTimedOut.code(),
                        Err(_) => ChildFailure::StopFailed.code(),
                    }
                };
                // SAFETY: ends the grandchild without running exit handlers.
                unsafe { libc::_exit(code) };
            }
            let code = match shared::wait_child(pid, limit) {
                Some(0) => 0,
                // 2 is this thread's own code for a hang: never a grandchild's.
                Some(status) if libc::WIFSIGNALED(status) => 30 + libc::WTERMSIG(status) as u64,
                Some(status) => libc::WEXITSTATUS(status) as u64,
                None => {
                    shared::kill_and_reap(pid);
                    2
                }
            };
            result.store(code, Ordering::Release);
        })
        .map_err(|_| ChildFailure::ThreadFailed)?
    };
    // Waited for through `result`, not joined: the thread's own exit belongs to libc, and a
    // forked child's libc may hold locks of vanished threads (forkprof never joins its own
    // threads in a child for the same reason). Dropping the handle detaches the thread.
    let deadline = Instant::now() + opts.child_limit + Duration::from_secs(1);
    let code = loop {
        let c = result.load(Ordering::Acquire);
        if c != u64::MAX || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    drop(thread);
    match code {
        0 => Ok(()),
        2 | u64::MAX => Err(ChildFailure::GrandchildHung),
        c => Err(ChildFailure::GrandchildFailed(c as i32)),
    }
}
