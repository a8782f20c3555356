//! The fork protocol: what forkprof does when the host forks.
//!
//! The rules, the state that decides a child's fate (each atomic below, who writes it, who
//! reads it) and what each handler may and may not do are written once, in
//! `docs/fork-protocol.md`; the comments here say how the code keeps them.
//!
//! # Where each part lives
//! - [`handlers`]: the `pthread_atfork` prepare / parent / child functions (glibc, musl) and
//!   the child-only one of the interception strategy (macOS).
//! - [`intercept`]: `before_fork` / `after_fork_parent` / `after_fork_child` and [`fork()`],
//!   for hosts that own their fork entry points.
//! - [`restart`]: the registry of running profilers and how one restarts in a child.
//! - this file: the process-wide state all three share, and detection of the current
//!   generation on every profiler call.

mod child_hooks;
mod handlers;
mod intercept;
pub(crate) mod restart;

pub use child_hooks::on_child_restart;
pub use handlers::{atfork_child, atfork_child_unintercepted, atfork_parent, atfork_prepare};
pub use intercept::{after_fork_child, after_fork_parent, before_fork, fork};
pub(crate) use restart::CONTROL;

use std::cell::Cell;
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

use crate::error::{Error, Result};
use crate::platform::{ForkStrategy, Platform};
use crate::stats::Disabled;

/// Bumped in every child whose fork was observed (by a child handler or `after_fork_child`).
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// The pid this process had when its state was last (re)initialised.
static PID: AtomicU32 = AtomicU32::new(0);
/// Prepares that have not yet reached their parent/child half (rule 2).
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
/// Forks observed in this process, parent side (diagnostics).
static FORKS_SEEN: AtomicU64 = AtomicU64::new(0);
/// Set in a process that was forked without anyone running forkprof's child handler.
static UNOBSERVED: AtomicBool = AtomicBool::new(false);
/// Running profilers plus one once the string table is in use: the handlers do nothing at 0.
static USERS: AtomicUsize = AtomicUsize::new(0);
static INTERN_USER: AtomicBool = AtomicBool::new(false);
/// The backend's wipe-on-fork word (null when the platform has none).
static SENTINEL: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());
static STRATEGY: AtomicU8 = AtomicU8::new(ForkStrategy::Atfork as u8);
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The pid of the process one of whose threads is inside [`install`], 0 when none.
static INSTALLER: AtomicU32 = AtomicU32::new(0);
/// Tests only: behave as on a platform without a sentinel.
static IGNORE_SENTINEL: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread is between `before_fork` and `after_fork_*` (explicit interception).
    static EXPLICIT: Cell<bool> = const { Cell::new(false) };
    /// This thread's prepare handler took the locks; its parent/child half must release them.
    static LOCKED_HERE: Cell<bool> = const { Cell::new(false) };
    /// Records since this thread last compared pids (platforms without a sentinel).
    static PID_CHECK_COUNTDOWN: Cell<u32> = const { Cell::new(0) };
}

/// Thread-local flags read from atfork handlers must not panic (a panic there aborts): when a
/// thread forks from inside a TLS destructor the flag reads as unset.
fn flag_get(key: &'static std::thread::LocalKey<Cell<bool>>) -> bool {
    key.try_with(Cell::get).unwrap_or(false)
}

fn flag_replace(key: &'static std::thread::LocalKey<Cell<bool>>, v: bool) -> bool {
    key.try_with(|c| c.replace(v)).unwrap_or(false)
}

/// Sets a flag; false if this thread's TLS is gone.
fn flag_set(key: &'static std::thread::LocalKey<Cell<bool>>) -> bool {
    key.try_with(|c| c.set(true)).is_ok()
}

fn getpid() -> u32 {
    std::process::id()
}

/// Wires the backend in: once per process, however often profilers start and stop.
///
/// Not under CONTROL, nor any lock a child could inherit held: a fork from another thread
/// can land anywhere in here (inside the backend's once-only set-up, or before the handlers
/// exist and so with no child handler to reset anything). [`INSTALLER`] names the process
/// whose thread is installing, so such a child sees a set-up begun by a thread it does not
/// have and turns profiling off instead of waiting for it for ever.
pub fn install(platform: &'static dyn Platform) -> Result<()> {
    let me = getpid();
    loop {
        if INSTALLED.load(Ordering::Acquire) {
            return Ok(());
        }
        match INSTALLER.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(pid) if pid != me => {
                UNOBSERVED.store(true, Ordering::Relaxed);
                return Err(Error::NotRunning {
                    reason: "this process was forked while its parent was setting forkprof up; profiling is off in it",
                });
            }
            // Another thread of this process is installing; it holds no lock and does a
            // bounded amount of work.
            Err(_) => std::thread::yield_now(),
        }
    }
    let result = install_now(platform);
    if result.is_err() {
        INSTALLER.store(0, Ordering::Release);
    }
    result
}

fn install_now(platform: &'static dyn Platform) -> Result<()> {
    STRATEGY.store(platform.fork_strategy() as u8, Ordering::Relaxed);
    if let Some(word) = sentinel_of(platform) {
        word.store(1, Ordering::Relaxed);
        SENTINEL.store(
            word as *const AtomicU64 as *mut AtomicU64,
            Ordering::Release,
        );
    }
    PID.store(getpid(), Ordering::Relaxed);
    platform.install_fork_hooks()?;
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

fn sentinel_of(platform: &'static dyn Platform) -> Option<&'static AtomicU64> {
    if IGNORE_SENTINEL.load(Ordering::Relaxed) {
        return None;
    }
    platform.fork_sentinel()
}

/// Whether this process notices unobserved forks with one load (a wipe-on-fork sentinel) or
/// only by comparing pids every 64 records. Without a sentinel, memory that children do not
/// inherit must not be written by host threads: a child nobody told about the fork would
/// write into a hole for up to 63 records (`buffer.rs` keeps the sample buffer inherited then).
pub(crate) fn has_sentinel() -> bool {
    !SENTINEL.load(Ordering::Acquire).is_null()
}

/// Tests only: from now on behave as on a platform with no wipe-on-fork sentinel (macOS, Linux
/// before 4.14). Call before the first profiler starts in the process.
#[cfg(feature = "test-hooks")]
pub fn simulate_no_sentinel() {
    IGNORE_SENTINEL.store(true, Ordering::Relaxed);
}

/// Refuses calls that take CONTROL or the string table from a thread that already holds them
/// for a fork in progress: between `before_fork` and `after_fork_*` under interception, or
/// from another library's atfork prepare handler that runs after forkprof's. BriefLock is not
/// reentrant, so taking them again would wait on this very thread for ever.
pub(crate) fn check_not_mid_fork() -> Result<()> {
    if LOCKED_HERE.with(|l| l.get()) {
        return Err(Error::ForkOrder {
            reason: "start/stop/intern called on a thread whose fork is in progress (between before_fork and after_fork_parent/after_fork_child); call it before or after the fork",
        });
    }
    Ok(())
}

fn strategy() -> ForkStrategy {
    if STRATEGY.load(Ordering::Relaxed) == ForkStrategy::Interception as u8 {
        ForkStrategy::Interception
    } else {
        ForkStrategy::Atfork
    }
}

/// The current fork generation, or `None` if this process came from a fork nobody observed
/// (then profiling is off here). Cheap: two relaxed loads on platforms with a sentinel.
#[inline]
pub(crate) fn generation() -> Option<u64> {
    if UNOBSERVED.load(Ordering::Relaxed) {
        return None;
    }
    let sentinel = SENTINEL.load(Ordering::Relaxed);
    if !sentinel.is_null() {
        // SAFETY: the sentinel is a `&'static AtomicU64` handed over by the backend.
        if unsafe { (*sentinel).load(Ordering::Relaxed) } == 0 {
            return unobserved();
        }
    } else {
        let due = PID_CHECK_COUNTDOWN
            .try_with(|c| {
                let n = c.get();
                c.set(if n == 0 { 63 } else { n - 1 });
                n == 0
            })
            .unwrap_or(true);
        if due && getpid() != PID.load(Ordering::Relaxed) {
            return unobserved();
        }
    }
    Some(GENERATION.load(Ordering::Acquire))
}

/// A full check for calls off the hot path (flush, stop, stats, intern).
pub(crate) fn generation_checked() -> Option<u64> {
    if !INSTALLED.load(Ordering::Acquire) {
        return Some(GENERATION.load(Ordering::Acquire));
    }
    if SENTINEL.load(Ordering::Relaxed).is_null() && getpid() != PID.load(Ordering::Relaxed) {
        return unobserved();
    }
    generation()
}

#[cold]
fn unobserved() -> Option<u64> {
    if flag_get(&EXPLICIT) {
        // Between `fork()` and `after_fork_child()` under explicit interception (the host's
        // own after-fork code runs first: a Python `after_in_child` hook, Ruby's `_fork`
        // chain): this thread announced the fork, so it was observed, and the child's half
        // is on its way. Not running yet, but not off for good either.
        return None;
    }
    if !UNOBSERVED.swap(true, Ordering::Relaxed) && USERS.load(Ordering::Relaxed) != 0 {
        crate::messages::child_disabled(Disabled::UnobservedFork.as_str());
    }
    None
}

/// True in a process created by a fork that no handler saw.
pub fn is_unobserved_child() -> bool {
    generation_checked().is_none()
}

/// The error every entry point returns in such a process.
pub(crate) fn unobserved_error() -> Error {
    Error::NotRunning {
        reason: Disabled::UnobservedFork.as_str(),
    }
}

pub(crate) fn add_user() {
    USERS.fetch_add(1, Ordering::AcqRel);
}

pub(crate) fn remove_user() {
    USERS.fetch_sub(1, Ordering::AcqRel);
}

/// The string table is process-wide and outlives profilers: once used, forks must lock it.
pub(crate) fn note_intern_use() {
    if !INTERN_USER.swap(true, Ordering::AcqRel) {
        add_user();
    }
}

/// Counters for diagnostics and the torture run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkState {
    pub generation: u64,
    pub pid: u32,
    pub in_flight: u32,
    pub forks_seen: u64,
    pub unobserved_child: bool,
}

pub fn state() -> ForkState {
    ForkState {
        generation: GENERATION.load(Ordering::Acquire),
        pid: PID.load(Ordering::Relaxed),
        in_flight: IN_FLIGHT.load(Ordering::Relaxed),
        forks_seen: FORKS_SEEN.load(Ordering::Relaxed),
        unobserved_child: UNOBSERVED.load(Ordering::Relaxed),
    }
}

/// Whether (CONTROL, the string table) are held right now, for tests that must know a fork's
/// prepare handler really holds them before they act.
#[cfg(feature = "test-hooks")]
pub fn locks_held() -> (bool, bool) {
    (CONTROL.is_locked(), crate::intern::TABLE.is_locked())
}
