//! One long process line, as a pre-fork server that re-forks from its newest worker for months
//! lives it: every process of the line inherits a running profiler (which restarts in it),
//! records, counts its own mappings, thread-stack guard pages and file descriptors, stops the
//! profiler, starts a fresh one, forks the next process of the line, stops again and exits.
//!
//! Whatever a restart or a stop leaks (a thread stack left mapped, a stack inherited and never
//! unmapped, a descriptor never closed) is inherited by the next process and adds up down the
//! line, so the counts grow with depth; without a leak they stay flat once the line has warmed
//! up. A process that does not finish within [`LineOptions::limit`] is a hang: reported (with
//! `gdb`'s backtrace when asked) and killed.
//!
//! Each process of the line exits right after forking the next, so only two or three exist at
//! once whatever the depth: the driver makes itself the subreaper of its descendants
//! (`PR_SET_CHILD_SUBREAPER`) and reaps them all, so it must be the only code of its process
//! that waits for children while the line runs.
//!
//! Used by `tests/fork_line_leaks.rs` and by `forkprof torture --line N`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use forkprof::{Config, Frame, Profiler, Sample};

/// How long a line, and what counts as a hang.
#[derive(Debug, Clone)]
pub struct LineOptions {
    /// Processes in the line, the driver not counted.
    pub depth: u64,
    /// Samples each process records before counting.
    pub samples: u32,
    /// A process of the line that has not finished after this is a hang.
    pub limit: Duration,
    /// Attach `gdb` to a hung process before killing it, and keep its backtrace.
    pub backtrace_hangs: bool,
    /// Called every 1000 generations with the newest generation's counts.
    pub progress: Option<fn(u64, &Counts)>,
    /// Every 1000 generations, delete the finished profile files in this directory (a long
    /// line writes two per generation).
    pub prune_dir: Option<std::path::PathBuf>,
    /// Each process uploads a profile from its fresh profiler (`flush_sync`) before it forks
    /// the next, so every child inherits an exporter holding an open connection (an HTTP
    /// exporter pools it): a child must not keep it open for ever.
    pub flush_before_fork: bool,
}

impl Default for LineOptions {
    fn default() -> Self {
        LineOptions {
            depth: 300,
            samples: 20,
            limit: Duration::from_secs(10),
            backtrace_hangs: true,
            progress: None,
            prune_dir: None,
            flush_before_fork: false,
        }
    }
}

/// What one process of the line counted in itself, after its restart and its samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Lines of /proc/self/maps.
    pub mappings: u64,
    /// Anonymous inaccessible mappings (`---p`, no path): the guard page below every thread
    /// stack (forkprof's and libc's), and malloc's reserved arena tails.
    pub guards: u64,
    /// Entries of /proc/self/fd.
    pub fds: u64,
    /// VmData of /proc/self/status, KiB: the heap and private mappings (reported, not
    /// judged: an inherited session is memory a child never frees by design).
    pub data_kb: u64,
}

/// What went wrong in a process of the line (its exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFailure {
    /// `record` failed, or the restarted profiler did not count every sample.
    RecordFailed,
    /// Profiling was off in the process, with this reason code (`Disabled::code`).
    NotProfiling(u32),
    /// /proc could not be read.
    ProcUnreadable,
    /// The restarted profiler's `stop()` failed.
    StopFailed,
    /// The fresh profiler could not start, or its `stop()` failed.
    StartFailed,
    /// fork() failed.
    ForkFailed,
    /// The upload before the fork failed.
    FlushFailed,
    /// Killed by a signal.
    Signal(i32),
    /// Any other exit code (101: a panic).
    Other(i32),
}

impl LineFailure {
    fn code(self) -> i32 {
        match self {
            LineFailure::RecordFailed => 10,
            LineFailure::ProcUnreadable => 11,
            LineFailure::StopFailed => 12,
            LineFailure::StartFailed => 13,
            LineFailure::ForkFailed => 14,
            LineFailure::FlushFailed => 15,
            LineFailure::NotProfiling(c) => 20 + c.min(9) as i32,
            LineFailure::Signal(_) | LineFailure::Other(_) => 1,
        }
    }
    fn from_status(status: i32) -> Option<LineFailure> {
        if libc::WIFSIGNALED(status) {
            return Some(LineFailure::Signal(libc::WTERMSIG(status)));
        }
        Some(match libc::WEXITSTATUS(status) {
            0 => return None,
            10 => LineFailure::RecordFailed,
            11 => LineFailure::ProcUnreadable,
            12 => LineFailure::StopFailed,
            13 => LineFailure::StartFailed,
            14 => LineFailure::ForkFailed,
            15 => LineFailure::FlushFailed,
            c @ 20..=29 => LineFailure::NotProfiling((c - 20) as u32),
            c => LineFailure::Other(c),
        })
    }
}

/// What a line run saw.
#[derive(Debug, Default)]
pub struct LineReport {
    /// Counts per generation (index 0: generation 1), for every generation that counted.
    pub counts: Vec<Counts>,
    /// (generation, pid, what) of every process that failed.
    pub failures: Vec<(u64, i32, LineFailure)>,
    /// (generation, pid, stage reached, backtrace) of the process that hung; the line ends there.
    pub hang: Option<(u64, i32, &'static str, Option<String>)>,
    pub elapsed: Duration,
}

/// One generation's slot in memory shared with the driver. All-zero is valid.
#[repr(C)]
struct Slot {
    pid: AtomicI64,
    stage: AtomicU64,
    mappings: AtomicU64,
    guards: AtomicU64,
    fds: AtomicU64,
    data_kb: AtomicU64,
}

const FORKED: u64 = 1;
const COUNTED: u64 = 2;
const DONE: u64 = 3;
/// Set by the driver when it reaped a process that failed.
const REAPED: u64 = 4;

fn stage_name(s: u64) -> &'static str {
    match s {
        FORKED => "restart, record or count",
        COUNTED => "stop, start or fork",
        DONE => "exit",
        REAPED => "(reaped)",
        _ => "fork (the child never ran its own code)",
    }
}

struct Slots {
    ptr: *mut Slot,
    len: usize,
}

impl Slots {
    fn new(len: usize) -> Option<Slots> {
        let bytes = len.max(1) * std::mem::size_of::<Slot>();
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
        (p != libc::MAP_FAILED).then(|| Slots {
            ptr: p.cast(),
            len: len.max(1),
        })
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

/// The calling process's counts, from /proc. Allocates (std's file reads): safe in a forked
/// child, whose malloc glibc and musl reset at the fork.
pub fn count_self() -> Option<Counts> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let mut c = Counts::default();
    for l in maps.lines() {
        c.mappings += 1;
        let mut f = l.split_whitespace();
        let perms = f.nth(1);
        if perms == Some("---p") && f.nth(3).is_none() {
            c.guards += 1;
        }
    }
    // read_dir's own descriptor is listed too: not counted.
    c.fds = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .count()
        .saturating_sub(1) as u64;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    c.data_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(c)
}

/// Runs a line of `opts.depth` processes from a profiler started with `config` (its child
/// policy must be `Restart`).
pub fn run(config: Config, opts: &LineOptions) -> LineReport {
    let t0 = Instant::now();
    let mut report = LineReport::default();
    let Some(slots) = Slots::new(opts.depth as usize + 2) else {
        report.failures.push((0, 0, LineFailure::Other(-1)));
        return report;
    };
    // SAFETY: prctl with valid arguments: orphans of the line are reparented to us.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let p = match Profiler::start(config.clone()) {
        Ok(p) => p,
        Err(_) => {
            report.failures.push((0, 0, LineFailure::StartFailed));
            return report;
        }
    };
    let frames = [Frame::new("line_driver", "line.rs", 1)];
    let _ = p.record(&Sample::new(&frames, &[1]));
    // SAFETY: the child runs only `generation` and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = generation(p, &config, 1, opts, &slots);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        report.failures.push((1, -1, LineFailure::ForkFailed));
        return report;
    }
    slots.get(1).pid.store(pid as i64, Ordering::Release);
    let _ = p.stop(Duration::from_secs(5));
    watch(&slots, opts, &mut report);
    for g in 1..=opts.depth as usize {
        let s = slots.get(g);
        if s.stage.load(Ordering::Acquire) < COUNTED {
            break;
        }
        report.counts.push(Counts {
            mappings: s.mappings.load(Ordering::Relaxed),
            guards: s.guards.load(Ordering::Relaxed),
            fds: s.fds.load(Ordering::Relaxed),
            data_kb: s.data_kb.load(Ordering::Relaxed),
        });
    }
    // SAFETY: as above; the line is over.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
    report.elapsed = t0.elapsed();
    report
}

/// Reaps the line as it goes and watches its newest generation: done when the last one has
/// exited, a hang when the newest one has not moved on within the limit.
fn watch(slots: &Slots, opts: &LineOptions, report: &mut LineReport) {
    let mut newest = 1usize;
    let mut since = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        let mut status = 0;
        // SAFETY: reaping any of our descendants (we are their subreaper) without blocking.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            if let Some(f) = LineFailure::from_status(status) {
                let gen = (1..=opts.depth as usize)
                    .find(|&g| slots.get(g).pid.load(Ordering::Acquire) == r as i64)
                    .unwrap_or(0);
                if gen != 0 {
                    // Never signalled again: its pid is free for reuse from now on.
                    slots.get(gen).stage.store(REAPED, Ordering::Release);
                }
                report.failures.push((gen as u64, r, f));
            }
            pause = Duration::from_micros(50);
            continue;
        }
        if r < 0 {
            return; // ECHILD: the whole line has exited
        }
        while newest < opts.depth as usize && slots.get(newest + 1).pid.load(Ordering::Acquire) != 0
        {
            newest += 1;
            since = Instant::now();
            if newest.is_multiple_of(1000) {
                if let Some(dir) = &opts.prune_dir {
                    prune(dir);
                }
                if let Some(progress) = opts.progress {
                    let s = slots.get(newest - 1);
                    progress(
                        newest as u64 - 1,
                        &Counts {
                            mappings: s.mappings.load(Ordering::Relaxed),
                            guards: s.guards.load(Ordering::Relaxed),
                            fds: s.fds.load(Ordering::Relaxed),
                            data_kb: s.data_kb.load(Ordering::Relaxed),
                        },
                    );
                }
            }
        }
        if since.elapsed() > opts.limit {
            since = Instant::now();
            // The newest generation stuck, or (the line complete) an older one that never
            // exited.
            let stuck: Vec<usize> = (1..=newest)
                .rev()
                .filter(|&g| slots.get(g).stage.load(Ordering::Acquire) < DONE)
                .collect();
            for (i, g) in stuck.into_iter().enumerate() {
                let slot = slots.get(g);
                let pid = slot.pid.load(Ordering::Acquire) as i32;
                if report.hang.is_none() && i == 0 {
                    let stage = stage_name(slot.stage.load(Ordering::Acquire));
                    let bt = opts.backtrace_hangs.then(|| crate::shared::backtrace(pid));
                    report.hang = Some((g as u64, pid, stage, bt));
                }
                if pid > 0 {
                    // SAFETY: a hung process of the line, our descendant; reaped by the loop.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        // Polling: no event to wait on for "a descendant made progress"; the pause bounds the
        // cost of the poll, it orders nothing.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

/// Deletes the finished files in `dir` (a file being written has a name starting with '.').
fn prune(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with('.') {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A process of the line, from its first generation `gen` on: a child of the fork at the end
/// carries on as the next generation in this same loop (never a nested call, so the stack does
/// not grow with the depth). Returns its exit code.
fn generation(
    mut p: Profiler,
    config: &Config,
    mut gen: usize,
    opts: &LineOptions,
    slots: &Slots,
) -> i32 {
    loop {
        let slot = slots.get(gen);
        // SAFETY: getpid has no preconditions.
        slot.pid
            .store(unsafe { libc::getpid() } as i64, Ordering::Release);
        slot.stage.store(FORKED, Ordering::Release);
        let frames = [Frame::new("line_generation", "line.rs", 2)];
        for _ in 0..opts.samples {
            if p.record(&Sample::new(&frames, &[1])).is_err() {
                return LineFailure::RecordFailed.code();
            }
        }
        let s = p.stats();
        if let Some(why) = s.disabled {
            return LineFailure::NotProfiling(why.code()).code();
        }
        if s.samples_recorded != u64::from(opts.samples) {
            return LineFailure::RecordFailed.code();
        }
        let Some(c) = count_self() else {
            return LineFailure::ProcUnreadable.code();
        };
        slot.mappings.store(c.mappings, Ordering::Relaxed);
        slot.guards.store(c.guards, Ordering::Relaxed);
        slot.fds.store(c.fds, Ordering::Relaxed);
        slot.data_kb.store(c.data_kb, Ordering::Relaxed);
        slot.stage.store(COUNTED, Ordering::Release);
        if p.stop(Duration::from_secs(5)).is_err() {
            return LineFailure::StopFailed.code();
        }
        drop(p);
        let fresh = match Profiler::start(config.clone()) {
            Ok(f) => f,
            Err(_) => return LineFailure::StartFailed.code(),
        };
        if opts.flush_before_fork {
            let _ = fresh.record(&Sample::new(&frames, &[1]));
            if fresh.flush_sync(Duration::from_secs(5)).is_err() {
                return LineFailure::FlushFailed.code();
            }
        }
        if gen < opts.depth as usize {
            // SAFETY: the child carries on in this loop (fork-safe calls only) and `_exit`s
            // through the caller.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                p = fresh;
                gen += 1;
                continue;
            }
            if pid < 0 {
                return LineFailure::ForkFailed.code();
            }
            slots.get(gen + 1).pid.store(pid as i64, Ordering::Release);
        }
        if fresh.stop(Duration::from_secs(5)).is_err() {
            return LineFailure::StartFailed.code();
        }
        slot.stage.store(DONE, Ordering::Release);
        return 0;
    }
}
