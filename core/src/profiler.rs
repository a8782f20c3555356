//! The host-facing handle: `start`, `record`, `flush`, `stop`, `stats`.
//!
//! A `Profiler` points at the session of the process it runs in. In a forked child the fork
//! protocol (`fork/`) replaces it with the child's own before the child's code runs again; the
//! parent's is leaked (its threads do not exist here).

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::buffer::Push;
use crate::config::{ChildPolicy, Config};
use crate::error::{Error, Result};
use crate::fork::restart::{self, ForkAware};
use crate::fork::{self, CONTROL};
use crate::platform::Platform;
use crate::sample::{Sample, StrId};
use crate::session::{Activity, Session, StopWait};
use crate::stats::{Disabled, Stats};
use crate::wire;

const RUNNING: u8 = 0;
const STOPPED: u8 = 1;
const DISABLED: u8 = 2;

struct Shared {
    config: Arc<Config>,
    platform: &'static dyn Platform,
    n_values: usize,
    max_depth: usize,
    /// `Arc::into_raw` of the current process's session; never null.
    session: AtomicPtr<Session>,
    state: AtomicU8,
    /// Why the state is DISABLED (a `Disabled` code; 0 otherwise).
    disabled: AtomicU8,
    ignored: AtomicU64,
}

/// A running profiler. Cheap to clone; every clone records into the same profiles.
#[derive(Clone)]
pub struct Profiler {
    shared: Arc<Shared>,
}

impl Shared {
    #[inline]
    fn session(&self) -> &Session {
        // SAFETY: `session` always holds a pointer from `Arc::into_raw` whose count `Shared`
        // owns; it is replaced only in a forked child, where the old one is leaked, and freed
        // only in `Drop`, when no `&Shared` remains.
        unsafe { &*self.session.load(Ordering::Acquire) }
    }

    /// The session of this process. `None` when the profiler does not record here: stopped,
    /// off, or a child that did not restart (its policy, or a fork nobody observed).
    fn current(&self) -> Option<&Session> {
        let gen = fork::generation_checked()?;
        let s = self.session();
        if s.generation() != gen || self.state.load(Ordering::Acquire) != RUNNING {
            return None;
        }
        if let Some(why) = s.startup_failure() {
            self.disable(why);
            return None;
        }
        Some(s)
    }

    /// Turns profiling off in this process for `why`. The session (if it is this process's)
    /// is asked to stop, so its threads end on their own.
    #[cold]
    fn disable(&self, why: Disabled) {
        if self
            .state
            .compare_exchange(RUNNING, DISABLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.disabled.store(why as u8, Ordering::Release);
        }
    }

    fn disabled_reason(&self) -> Option<Disabled> {
        if fork::is_unobserved_child() {
            return Some(Disabled::UnobservedFork);
        }
        Disabled::from_code(u32::from(self.disabled.load(Ordering::Acquire)))
    }

    #[inline]
    fn push(&self, s: &Session, sample: &Sample<'_>) -> Result<()> {
        if sample.values.len() != self.n_values {
            return Err(Error::sample(
                "values",
                format!(
                    "has {} entries; the profiler has {} sample types",
                    sample.values.len(),
                    self.n_values
                ),
            ));
        }
        let plan = wire::plan(sample, self.max_depth);
        let (result, wake) = s
            .buffer()
            .push(plan.len, |out| wire::encode(sample, &plan, out));
        let c = s.counters();
        match result {
            Push::Stored => {
                c.samples_recorded.fetch_add(1, Ordering::Relaxed);
                if plan.truncates() {
                    c.frames_truncated.fetch_add(1, Ordering::Relaxed);
                }
            }
            Push::Dropped => {
                c.samples_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Push::TooLarge => {
                c.samples_too_large.fetch_add(1, Ordering::Relaxed);
            }
            Push::Closed => {
                // Raced `stop()`: counted like any record after stop.
                self.ignored.fetch_add(1, Ordering::Relaxed);
            }
        }
        if wake && !s.wake_collector() {
            self.disable(Disabled::ThreadsDidNotStart);
        }
        Ok(())
    }
}

impl ForkAware for Shared {
    fn release_parent_session(&self) {
        // This child's counters start at zero (the parent's ignored records are the parent's).
        self.ignored.store(0, Ordering::Relaxed);
        if fork::generation_checked() != Some(self.session().generation()) {
            self.session().release_in_child();
        }
    }

    /// Steps 2–3 of `fork/restart.rs`.
    fn restart_after_fork(&self) {
        let Some(gen) = fork::generation_checked() else {
            return;
        };
        if self.session().generation() == gen || self.state.load(Ordering::Acquire) != RUNNING {
            return;
        }
        if fork::check_not_mid_fork().is_err() {
            return; // this thread holds CONTROL for a fork; the next call restarts
        }
        if self.config.child_policy == ChildPolicy::Disable {
            self.disable(Disabled::ChildPolicy);
            crate::messages::child_disabled("the child policy is Disable");
            return;
        }
        match restart::start_child_session(&self.config, self.platform, gen) {
            Ok(new) => {
                let Ok(_order) = CONTROL.lock() else {
                    // Held for good by an unpaired before_fork: this session can never be
                    // installed safely.
                    new.request_stop();
                    self.disable(Disabled::RestartFailed);
                    return;
                };
                if self.state.load(Ordering::Acquire) != RUNNING {
                    // `stop()` ran on another thread while this session was being built: it
                    // never becomes the profiler's, so nobody else would end its threads.
                    new.request_stop();
                } else {
                    // The previous session is the parent's (given back already, see
                    // `release_parent_session`): overwrite the pointer, never drop it.
                    self.session
                        .store(Arc::into_raw(new) as *mut Session, Ordering::Release);
                }
            }
            Err(why) => self.disable(why),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let ptr = *self.session.get_mut();
        let ours = fork::generation_checked() == Some(self.session().generation());
        if !ours {
            return; // inherited from a parent process: leak it
        }
        if self.state.swap(STOPPED, Ordering::AcqRel) == RUNNING {
            fork::remove_user();
            self.session().request_stop();
        }
        // SAFETY: `ptr` came from `Arc::into_raw` in this process and this is its last use.
        drop(unsafe { Arc::from_raw(ptr) });
    }
}

impl Profiler {
    /// Starts a profiler on `platform` (the facade passes the one chosen at compile time).
    pub fn start_on(config: Config, platform: &'static dyn Platform) -> Result<Profiler> {
        fork::check_not_mid_fork()?;
        if fork::is_unobserved_child() {
            return Err(fork::unobserved_error());
        }
        fork::install(platform)?;
        // Count ourselves before taking any lock, so a concurrent fork's prepare sees us.
        fork::add_user();
        let config = Arc::new(config);
        let gen = fork::generation_checked().unwrap_or(0);
        let session = match crate::workers::start(
            config.clone(),
            platform,
            gen,
            std::process::id(),
            fork::has_sentinel(),
            false,
        ) {
            Ok(s) => s,
            Err(e) => {
                fork::remove_user();
                return Err(e);
            }
        };
        let shared = Arc::new(Shared {
            n_values: config.sample_types.len(),
            max_depth: config.max_stack_depth,
            config,
            platform,
            session: AtomicPtr::new(Arc::into_raw(session) as *mut Session),
            state: AtomicU8::new(RUNNING),
            disabled: AtomicU8::new(0),
            ignored: AtomicU64::new(0),
        });
        // On error `shared` drops here, which stops the session just started.
        restart::register(Arc::downgrade(&shared) as Weak<dyn ForkAware>)?;
        Ok(Profiler { shared })
    }

    /// Records one sample. Never blocks and never allocates; when the buffer is full the
    /// sample is dropped and counted. After `stop()`, or in a child under `Disable`, it is a
    /// counted no-op. The only error is a sample that does not match the configuration.
    ///
    /// Async-signal-safe in every state (a parent, a forked child, during and after `stop`):
    /// atomics, `try_lock` of the buffer's shards, and at most one `write(2)` to wake the
    /// collector. It never restarts anything (a forked child restarted before `fork()`
    /// returned in it, see `fork/handlers.rs`) and never calls the host's logger.
    #[inline]
    pub fn record(&self, sample: &Sample<'_>) -> Result<()> {
        let sh = &*self.shared;
        let s = sh.session();
        if fork::generation() != Some(s.generation()) || sh.state.load(Ordering::Relaxed) != RUNNING
        {
            sh.ignored.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        sh.push(s, sample)
    }

    /// Closes the current profile now and queues it for export; returns at once.
    pub fn flush(&self) -> Result<()> {
        let s = self.running_session()?;
        s.request_flush();
        crate::messages::deliver_on_call();
        Ok(())
    }

    /// Like [`Profiler::flush`], then waits until the exporter has handled the profile (and
    /// every profile queued before it), or `timeout` passes.
    pub fn flush_sync(&self, timeout: Duration) -> Result<()> {
        let s = self.running_session()?;
        let ticket = s.request_flush();
        let result = s.wait_flushed(ticket, Instant::now() + timeout);
        crate::messages::deliver_on_call();
        if let Some(why) = s.startup_failure() {
            self.shared.disable(why);
        }
        result
    }

    fn running_session(&self) -> Result<&Session> {
        self.shared.current().ok_or_else(|| Error::NotRunning {
            reason: match self.shared.disabled_reason() {
                Some(why) => why.as_str(),
                None => "stopped",
            },
        })
    }

    /// Writes the last profile, and joins the profiler's threads if they finish within
    /// `timeout` (an export that is still stuck is left to finish alone and the call returns
    /// `Error::Timeout`). Later `record()` calls are counted no-ops.
    pub fn stop(&self, timeout: Duration) -> Result<Stats> {
        self.stop_waiting(timeout, StopWait::Exported)
    }

    /// [`Profiler::stop`] for a process about to exit, which must never wait on a remote
    /// endpoint: returns once the last profile is encoded and queued and the exporter is either
    /// done (files are written) or waiting on its endpoint, for the answer to an upload whose
    /// request it has written or between two attempts. That upload is left to finish alone
    /// (within its timeouts and `timeout`) or to end with the process, so its outcome is not in
    /// the returned counters, and profiles queued behind it are not sent. `timeout` still
    /// bounds the whole call (a connect that hangs, a slow disk): then `Error::Timeout`.
    pub fn stop_for_exit(&self, timeout: Duration) -> Result<Stats> {
        self.stop_waiting(timeout, StopWait::NotOnPeers)
    }

    fn stop_waiting(&self, timeout: Duration, wait: StopWait) -> Result<Stats> {
        let sh = &*self.shared;
        let Some(gen) = fork::generation_checked() else {
            // An unobserved child: CONTROL may be held forever by a thread that does not
            // exist here (a prepare handler or a start/stop mid-way in the parent), so touch
            // no lock at all. Nothing of this process's runs to be stopped.
            return Err(fork::unobserved_error());
        };
        fork::check_not_mid_fork()?;
        let deadline = Instant::now() + timeout;
        // Which session to shut down is read under the same lock as the state change: a
        // restart finishing on another thread of a child either installed its session before
        // this (and it is shut down here) or sees STOPPED and ends that session itself. Only a
        // session started in this process has threads to stop; a child that never restarted
        // has nothing of its own (and must not touch the parent's session).
        let (ours, was) = {
            let _order = CONTROL.lock()?;
            let was = sh.state.swap(STOPPED, Ordering::AcqRel);
            (gen == sh.session().generation(), was)
        };
        if was == STOPPED {
            return Err(Error::NotRunning {
                reason: "already stopped",
            });
        }
        fork::remove_user();
        // A registry entry left behind (its lock held for good) is a dead Weak, skipped by
        // every later restart.
        let _ = restart::unregister(Arc::as_ptr(&self.shared) as *const ());
        if was == DISABLED {
            // Off in this process: nothing to write. A session this process started (its
            // threads never came up, say) is asked to end, without waiting for it.
            if ours {
                sh.session().request_stop();
            }
            return Err(Error::NotRunning {
                reason: sh.disabled_reason().map_or("disabled", Disabled::as_str),
            });
        }
        if ours {
            let done = sh.session().shut_down(deadline, wait);
            crate::messages::deliver_on_call();
            if let Err(e) = done {
                if let Some(why) = sh.session().startup_failure() {
                    sh.disabled.store(why as u8, Ordering::Release);
                }
                return Err(e);
            }
        }
        Ok(self.stats())
    }

    /// Counters of this process's profiling (zero-based in a forked child).
    pub fn stats(&self) -> Stats {
        crate::messages::deliver_on_stats();
        let sh = &*self.shared;
        let ignored = sh.ignored.load(Ordering::Relaxed);
        let gen = fork::generation_checked();
        if gen == Some(sh.session().generation()) {
            if let Some(why) = sh.session().startup_failure() {
                sh.disable(why);
            }
        }
        let disabled = sh.disabled_reason();
        match gen {
            Some(gen) if sh.session().generation() == gen => Stats {
                disabled,
                endpoints_dropped: sh.session().endpoints().dropped(),
                ..sh.session()
                    .counters()
                    .snapshot(std::process::id(), ignored)
            },
            _ => Stats {
                pid: std::process::id(),
                samples_ignored: ignored,
                disabled,
                ..Stats::default()
            },
        }
    }

    /// Registers the endpoint (route, script, resource) of the request whose root span is
    /// `local_root_span_id`, typically when that span ends. When the profile is written, every
    /// sample whose `local root span id` label has this id gets a `trace endpoint` label
    /// (`span_name` for Pyroscope), samples recorded before this call included. Registrations
    /// last for the profile period they were made in and the next one; at most
    /// [`crate::endpoints::MAX_ENDPOINTS`] per period, more are dropped and counted
    /// (`Stats::endpoints_dropped`), and so are calls in a process where the profiler does not
    /// run.
    ///
    /// Takes the endpoint table's lock and allocates: call it from the host's code, never from
    /// a signal handler. The record path never takes that lock.
    pub fn set_endpoint(&self, local_root_span_id: u64, endpoint: &str) -> Result<()> {
        if local_root_span_id == 0 {
            return Err(Error::sample(
                "local_root_span_id",
                "is 0, which means \"no span\": pass the id of the request's root span",
            ));
        }
        let s = self.running_session()?;
        s.endpoints().set(local_root_span_id, endpoint);
        Ok(())
    }

    /// Counts `hits` requests served by `endpoint` in this profile period: sent as Datadog's
    /// `endpoint_counts` with the period's profile. Call it once per request (when its root
    /// span ends, say), whether or not a sample was taken during it. Bounded and
    /// not for signal handlers, like [`Profiler::set_endpoint`].
    pub fn count_endpoint(&self, endpoint: &str, hits: u64) -> Result<()> {
        let s = self.running_session()?;
        s.endpoints().count(endpoint, hits);
        Ok(())
    }

    /// What each profiler thread is doing (for watchdogs and diagnostics).
    pub fn thread_activity(&self) -> Vec<(&'static str, Activity)> {
        match self.shared.current() {
            Some(s) => s.activity().to_vec(),
            None => Vec::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// True while this profiler records in this process.
    pub fn is_running(&self) -> bool {
        self.shared.current().is_some()
    }
}

/// For the exit flush (`exit.rs`): checks that never restart a forked child's profiler.
impl Profiler {
    /// True when this profiler runs a session this very process started (the parent, or a
    /// child that restarted), and has not been stopped.
    pub(crate) fn runs_here(&self) -> bool {
        let sh = &*self.shared;
        fork::generation_checked() == Some(sh.session().generation())
            && sh.state.load(Ordering::Acquire) == RUNNING
    }

    /// Whether both handles are the same profiler.
    pub(crate) fn same_as(&self, other: &Profiler) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// Interns a name in the process-wide table for [`crate::FrameIds`]; see [`crate::intern`].
pub fn intern_on(name: &[u8], platform: &'static dyn Platform) -> Result<StrId> {
    fork::check_not_mid_fork()?;
    if fork::is_unobserved_child() {
        return Err(fork::unobserved_error());
    }
    fork::install(platform)?;
    fork::note_intern_use();
    crate::intern::intern(name)
}
