//! The fork protocol (DESIGN.md, "The fork protocol"): process-wide state and the handlers a
//! backend wires to `pthread_atfork` or to the host's own fork entry points.
//!
//! The rules, and where each is kept:
//! 1. Prepare never waits on a thread: [`lock_all`] takes [`CONTROL`] then the string table,
//!    both [`BriefLock`]s that no thread holds across I/O, and nothing else.
//! 2. Concurrent forks: [`IN_FLIGHT`] counts prepares; "which thread locked" is thread-local,
//!    never a shared boolean.
//! 3. Parent: release the locks, nothing else.
//! 4. Child: atomics and lock re-initialisation only: bump [`GENERATION`], store the pid,
//!    re-arm the fork sentinel. Every profiler notices the new generation on its next call and
//!    leaks (never joins, drops or signals) what it inherited.
//! 5. The restart itself happens outside the handler (`Profiler` does it lazily, or
//!    [`after_fork_child`] does it eagerly).
//! 6. Unobserved forks: the backend's sentinel word is zeroed by the kernel in every child; a
//!    zero sentinel with no child handler run means nobody saw the fork, and profiling turns
//!    itself off in that process without touching any inherited lock or thread.
//! 7. Set-up ([`install`]) holds no lock a child could inherit: a fork can land in the middle
//!    of it, before any handler exists, and that child must refuse rather than wait.

use std::cell::Cell;
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::{Arc, Weak};

use crate::error::{Error, Result};
use crate::platform::{ForkStrategy, Platform};
use crate::sync::BriefLock;

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

/// Something that must hear about a fork outside the atfork handler: a running profiler.
pub(crate) trait ForkAware: Send + Sync {
    fn restart_after_fork(&self);
}

/// The registry of running profilers, and the lock that orders start/stop/restart against
/// fork. First in [`lock_all`]'s order.
pub(crate) static CONTROL: BriefLock<Vec<Weak<dyn ForkAware>>> = BriefLock::new(Vec::new());

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
    if let Some(word) = platform.fork_sentinel() {
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
    if !UNOBSERVED.swap(true, Ordering::Relaxed) && USERS.load(Ordering::Relaxed) != 0 {
        crate::messages::child_disabled("forked without forkprof's fork hooks (_Fork, clone, or a fork nobody intercepted): profiling is off in this process");
    }
    None
}

/// True in a process created by a fork that no handler saw.
pub fn is_unobserved_child() -> bool {
    generation_checked().is_none()
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

fn lock_all() {
    IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
    CONTROL.lock_raw();
    crate::intern::TABLE.lock_raw();
}

/// # Safety
/// The calling thread took the locks with `lock_all` (or is the only thread of the child).
unsafe fn unlock_all() {
    // SAFETY: per this function's contract.
    unsafe {
        crate::intern::TABLE.unlock_raw();
        CONTROL.unlock_raw();
    }
}

/// The child's half, shared by the atfork child handler and `after_fork_child`.
/// Only atomics and lock re-initialisation: no allocation, no I/O, no thread.
fn reinit_child(locked_here: bool) {
    if locked_here {
        // SAFETY: after fork the calling thread is the only one, and its own prepare took
        // both locks (rule 1 orders every observed fork through them).
        unsafe { unlock_all() };
    } else if CONTROL.is_locked() || crate::intern::TABLE.is_locked() {
        // No profiler ran at prepare time, yet a vanished thread held a lock (a `start()` or
        // `intern()` racing the fork). Its data may be half-updated: stay off in this child.
        UNOBSERVED.store(true, Ordering::Relaxed);
    }
    IN_FLIGHT.store(0, Ordering::Relaxed);
    PID.store(getpid(), Ordering::Relaxed);
    crate::collector::reset_sequence_in_child();
    let sentinel = SENTINEL.load(Ordering::Relaxed);
    if !sentinel.is_null() {
        // SAFETY: a `&'static AtomicU64` from the backend; the kernel zeroed it in this child.
        unsafe { (*sentinel).store(1, Ordering::Relaxed) };
    }
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

// ---- handlers registered with pthread_atfork (ForkStrategy::Atfork) ----

/// atfork prepare. May call: atomics, [`BriefLock::lock_raw`] on forkprof's two locks.
/// May not: wait for a thread, allocate, log, resolve, or call `pthread_atfork`.
pub fn atfork_prepare() {
    if USERS.load(Ordering::Acquire) == 0 || UNOBSERVED.load(Ordering::Relaxed) {
        return;
    }
    // Without TLS the parent half could not know to unlock: skip, and the child will find
    // the locks as they were (see `reinit_child`).
    if flag_set(&LOCKED_HERE) {
        lock_all();
    }
}

/// atfork parent (also reached when `fork()` fails). May call: atomics and unlocking.
pub fn atfork_parent() {
    if flag_replace(&LOCKED_HERE, false) {
        FORKS_SEEN.fetch_add(1, Ordering::Relaxed);
        // SAFETY: this thread's prepare took the locks.
        unsafe { unlock_all() };
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// atfork child. May call: atomics and lock re-initialisation. May not: allocate, spawn,
/// join, drop inherited state, or call anything that takes a libc lock.
pub fn atfork_child() {
    if flag_get(&EXPLICIT) && strategy() == ForkStrategy::Interception {
        return; // after_fork_child does the work
    }
    reinit_child(flag_replace(&LOCKED_HERE, false));
}

/// The child-only handler of [`ForkStrategy::Interception`] (macOS): a fork reached here
/// without `before_fork` on this thread was not intercepted, so the child cannot trust any
/// lock it inherited. Only atomics.
pub fn atfork_child_unintercepted() {
    if !flag_get(&EXPLICIT) && USERS.load(Ordering::Acquire) != 0 {
        UNOBSERVED.store(true, Ordering::Relaxed);
    }
}

// ---- explicit interception, for hosts that own their fork entry points ----

/// Call right before the host forks. Pairs with exactly one `after_fork_parent` (in the
/// parent, also when the fork failed) or `after_fork_child` (in the child).
pub fn before_fork() -> Result<()> {
    if flag_get(&EXPLICIT) {
        return Err(Error::ForkOrder { reason: "before_fork called twice on this thread without after_fork_parent/after_fork_child in between" });
    }
    if !flag_set(&EXPLICIT) {
        return Err(Error::ForkOrder {
            reason: "before_fork called from a thread that is exiting",
        });
    }
    if generation_checked().is_none() {
        // This process came from an unobserved fork: the locks may be held by threads that do
        // not exist here. Take nothing; the child of this fork stays off as well.
        return Ok(());
    }
    // With atfork handlers installed, libc's fork runs them and they do the locking: taking
    // the locks here as well would deadlock where libc holds its atfork lock across prepare
    // (musl, glibc < 2.34) while another thread's prepare waits for ours.
    if strategy() == ForkStrategy::Interception
        && USERS.load(Ordering::Acquire) != 0
        && flag_set(&LOCKED_HERE)
    {
        lock_all();
    }
    Ok(())
}

fn end_explicit(which: &'static str) -> Result<()> {
    if !flag_replace(&EXPLICIT, false) {
        return Err(Error::ForkOrder {
            reason: if which == "parent" {
                "after_fork_parent called without before_fork on this thread"
            } else {
                "after_fork_child called without before_fork on this thread"
            },
        });
    }
    Ok(())
}

/// Call in the parent after the fork returned (whether it succeeded or failed).
pub fn after_fork_parent() -> Result<()> {
    end_explicit("parent")?;
    atfork_parent();
    Ok(())
}

/// Call in the child right after the fork. Restarts profilers under the `Restart` policy now
/// rather than on their next call. Not async-signal-safe: call it from the host's own
/// after-fork hook, not from an atfork handler.
pub fn after_fork_child() -> Result<()> {
    end_explicit("child")?;
    match strategy() {
        ForkStrategy::Interception => reinit_child(flag_replace(&LOCKED_HERE, false)),
        ForkStrategy::Atfork => {
            if getpid() != PID.load(Ordering::Relaxed) {
                // The atfork child handler did not run: whatever forked skipped it (`_Fork`,
                // `clone`), so locks may be held by threads that do not exist here.
                UNOBSERVED.store(true, Ordering::Relaxed);
            }
        }
    }
    restart_all();
    Ok(())
}

fn restart_all() {
    if UNOBSERVED.load(Ordering::Relaxed) {
        return;
    }
    let profilers: Vec<Arc<dyn ForkAware>> = {
        let reg = CONTROL.lock();
        reg.iter().filter_map(Weak::upgrade).collect()
    };
    for p in profilers {
        p.restart_after_fork();
    }
}

/// `fork()` with forkprof's hooks around it, for hosts that fork through forkprof.
/// Returns the child's pid in the parent and 0 in the child.
pub fn fork() -> Result<i32> {
    before_fork()?;
    // SAFETY: fork has no memory-safety preconditions; the child only runs the hooks below and
    // then returns to the caller, who owns what happens next.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = Error::last_os("fork");
        let _ = after_fork_parent();
        return Err(err);
    }
    if pid == 0 {
        after_fork_child()?;
    } else {
        after_fork_parent()?;
    }
    Ok(pid)
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
