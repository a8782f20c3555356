//! One process's running profiler: its buffer, counters, export queue, and what its two
//! threads (collector and uploader) share with the host. State lives in private fields behind
//! named operations, used by the host side (`profiler.rs`), the threads (`collector.rs`,
//! `uploader.rs`) and the one place that starts them (`workers.rs`). This module imports none of
//! those.
//!
//! A session belongs to the process that started it. After a fork the child never touches its
//! parent's session beyond reading it (its threads do not exist there; its locks may be held for
//! ever): it leaks it and, under `Restart`, starts a session of its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::buffer::SampleBuffer;
use crate::config::Config;
use crate::endpoints::Endpoints;
use crate::error::{Error, Result};
use crate::export::EncodedProfile;
use crate::stats::{Counters, Disabled};
use crate::sync::{BriefLock, Latch, Parker};
use crate::thread::RawThread;

/// What a profiler thread is doing right now: read by the torture watchdog to say where a
/// hang is, written with a relaxed store at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Activity {
    Starting = 0,
    Idle = 1,
    Draining = 2,
    Encoding = 3,
    Compressing = 4,
    Enqueueing = 5,
    Exporting = 6,
    Finished = 7,
}

impl Activity {
    fn from_u8(v: u8) -> Activity {
        match v {
            1 => Activity::Idle,
            2 => Activity::Draining,
            3 => Activity::Encoding,
            4 => Activity::Compressing,
            5 => Activity::Enqueueing,
            6 => Activity::Exporting,
            7 => Activity::Finished,
            _ => Activity::Starting,
        }
    }
}

/// How long a session's threads may take to reach their loops. A thread that has not by then
/// is taken to be stuck on a lock inherited across fork (or never scheduled): the profiler turns
/// itself off rather than let `stop` or `flush_sync` wait for it. A thread normally starts in
/// well under a millisecond; the margin is for a machine that is heavily loaded.
pub(crate) const START_GRACE: Duration = Duration::from_secs(2);

/// How long a forked child's `stop` keeps trying to join its threads once they finished.
const CHILD_JOIN_LIMIT: Duration = Duration::from_secs(1);

/// How long the uploader sleeps when the queue is empty before it looks again.
pub(crate) const UPLOADER_IDLE_WAIT: Duration = Duration::from_millis(200);

pub(crate) struct Session {
    generation: u64,
    pid: u32,
    config: Arc<Config>,
    started_at: Instant,
    buffer: SampleBuffer,
    counters: Counters,
    /// Bounded queue of finished profiles (oldest dropped when full).
    queue: BriefLock<VecDeque<EncodedProfile>>,
    stopping: AtomicBool,
    wake_pending: AtomicBool,
    flush_requested: AtomicU64,
    /// Highest flush ticket the uploader has finished with.
    flushed: Latch,
    /// How many of the two threads have reached their loops (`checked_in` mirrors it for
    /// waiting; this one is read on the record path).
    threads_in: AtomicU8,
    checked_in: Latch,
    /// 1 once the uploader thread has exited its loop.
    finished: Latch,
    /// 1 once a stop has nothing left to wait for but a remote endpoint: the uploader finished,
    /// or the collector finished and the exporter waits on its endpoint (`StopWait::NotOnPeers`).
    handed_over: Latch,
    /// The exporter waits on its endpoint (an answer, a pause between attempts).
    waiting_on_peer: AtomicBool,
    collector_done: AtomicBool,
    collector_activity: AtomicU8,
    uploader_activity: AtomicU8,
    /// Set by `shut_down`: the uploader's hard limit for the exports still to do.
    stop_deadline: OnceLock<Instant>,
    collector_parker: Parker,
    uploader_parker: Parker,
    threads: BriefLock<Vec<RawThread>>,
    /// Set once a forked child gave back what it inherited of this session.
    released: AtomicBool,
    /// Late-bound endpoints of this process's requests (a child starts with none).
    endpoints: Endpoints,
}

impl Session {
    pub fn new(
        config: Arc<Config>,
        buffer: SampleBuffer,
        generation: u64,
        pid: u32,
    ) -> Result<Session> {
        Ok(Session {
            generation,
            pid,
            started_at: Instant::now(),
            buffer,
            counters: Counters::default(),
            queue: BriefLock::new(VecDeque::with_capacity(config.max_pending_profiles)),
            stopping: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            flush_requested: AtomicU64::new(0),
            flushed: Latch::default(),
            threads_in: AtomicU8::new(0),
            checked_in: Latch::default(),
            finished: Latch::default(),
            handed_over: Latch::default(),
            waiting_on_peer: AtomicBool::new(false),
            collector_done: AtomicBool::new(false),
            collector_activity: AtomicU8::new(Activity::Starting as u8),
            uploader_activity: AtomicU8::new(Activity::Starting as u8),
            stop_deadline: OnceLock::new(),
            collector_parker: Parker::new()?,
            uploader_parker: Parker::new()?,
            threads: BriefLock::new(Vec::new()),
            released: AtomicBool::new(false),
            endpoints: Endpoints::default(),
            config,
        })
    }

    // ---- what everyone reads ----

    /// The fork generation of the process that started this session.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn buffer(&self) -> &SampleBuffer {
        &self.buffer
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn activity(&self) -> [(&'static str, Activity); 2] {
        [
            (
                "collector",
                Activity::from_u8(self.collector_activity.load(Ordering::Relaxed)),
            ),
            (
                "uploader",
                Activity::from_u8(self.uploader_activity.load(Ordering::Relaxed)),
            ),
        ]
    }

    // ---- the host's operations ----

    /// Hands the session the threads `workers::start` started for it.
    pub fn adopt_threads(&self, threads: Vec<RawThread>) {
        self.threads.lock().extend(threads);
    }

    /// Wakes the collector unless a wake is already on its way. Returns false if the session's
    /// threads never started (see [`START_GRACE`]): the caller turns profiling off.
    #[inline]
    pub fn wake_collector(&self) -> bool {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.collector_parker.unpark();
        }
        // Every wake, not only the first: a collector that never started never clears the
        // pending wake. One atomic load once the threads have checked in.
        self.startup_failure().is_none()
    }

    /// Asks the collector to close the current profile now; returns the ticket to wait for.
    pub fn request_flush(&self) -> u64 {
        let ticket = self.flush_requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake_pending.store(true, Ordering::Release);
        self.collector_parker.unpark();
        ticket
    }

    /// Waits until the uploader has handled flush `ticket` (and everything queued before it).
    pub fn wait_flushed(&self, ticket: u64, deadline: Instant) -> Result<()> {
        if let Some(why) = self.startup_failure() {
            return Err(Error::NotRunning {
                reason: why.as_str(),
            });
        }
        if self.flushed.wait_for(ticket, deadline) {
            Ok(())
        } else {
            Err(Error::Timeout {
                what: "flush: the exporter has not handled the profile yet",
            })
        }
    }

    /// The one way a session ends: the collector drains for the last time, writes the last
    /// profile and exits; the uploader exports what is queued and exits. Returns at once.
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_pending.store(true, Ordering::Release);
        self.collector_parker.unpark();
        self.uploader_parker.unpark();
    }

    /// [`Session::request_stop`], then waits until the last profile is exported (or, with
    /// [`StopWait::NotOnPeers`], until only a remote endpoint is left to wait for) and joins
    /// the threads, all by `deadline`. An export still stuck then is left to finish alone.
    pub fn shut_down(&self, deadline: Instant, wait: StopWait) -> Result<()> {
        let _ = self.stop_deadline.set(deadline);
        self.request_stop();
        if !self
            .checked_in
            .wait_for(2, deadline.min(self.started_at + START_GRACE))
        {
            return Err(Error::NotRunning {
                reason: Disabled::ThreadsDidNotStart.as_str(),
            });
        }
        let done = match wait {
            StopWait::Exported => &self.finished,
            StopWait::NotOnPeers => &self.handed_over,
        };
        if !done.wait_for(1, deadline) {
            return Err(Error::Timeout {
                what: "stop: the exporter did not finish before the deadline; its thread is left to finish alone",
            });
        }
        if self.finished.get() == 0 {
            // Handed over: the upload waiting on its endpoint ends alone (by its own timeouts
            // and the stop deadline), or with the process.
            return Ok(());
        }
        let threads = std::mem::take(&mut *self.threads.lock());
        if self.generation == 0 {
            for t in threads {
                t.join();
            }
            return Ok(());
        }
        // A forked child: the threads have done their work, but their exit could block for
        // good on a libc lock a vanished parent thread held at the fork (glibc's thread-exit
        // resolver clean-up takes resolv_conf's lock). So they are joined without waiting,
        // retried until a bound: a thread that has not ended by then is detached (its stack
        // stays mapped) rather than turn stop() into a wait without end. Normally both have
        // ended within microseconds and their stacks are unmapped, so a long line of forked
        // processes does not pile up stacks.
        let until = deadline.min(Instant::now() + CHILD_JOIN_LIMIT);
        let mut left = threads;
        if !self.buffer.platform().can_try_join() {
            return Ok(()); // dropping them detaches them
        }
        loop {
            left = left
                .into_iter()
                .filter_map(|t| t.try_join().err())
                .collect();
            if left.is_empty() || Instant::now() >= until {
                return Ok(()); // dropping what is left detaches it
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// In a forked child, for its parent's session (whose threads do not exist here): gives
    /// back what the child inherited of it and will never use, so a line of forked processes
    /// does not pile up descriptors and stacks: the wake-up pipes and what is mapped of the
    /// threads' stacks. `close` and `munmap` only; the thread list is tried once, never waited
    /// for (a parent thread could have held it at the fork).
    pub fn release_in_child(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return; // a second profiler's pass, or a grandchild of the same line: done once
        }
        self.collector_parker.close();
        self.uploader_parker.close();
        if let Some(mut threads) = self.threads.try_lock() {
            for t in threads.drain(..) {
                t.forget_in_child();
            }
        }
    }

    /// Why this session cannot work, if its threads have not started within [`START_GRACE`].
    pub fn startup_failure(&self) -> Option<Disabled> {
        if self.threads_in.load(Ordering::Acquire) >= 2 || self.started_at.elapsed() < START_GRACE {
            return None;
        }
        Some(Disabled::ThreadsDidNotStart)
    }

    // ---- what the threads do ----

    /// A thread's first step: it is running and will honour `request_stop`.
    pub fn check_in(&self) {
        let n = self.threads_in.fetch_add(1, Ordering::AcqRel) + 1;
        self.checked_in.raise_to(u64::from(n));
    }

    pub fn set_collector_activity(&self, a: Activity) {
        self.collector_activity.store(a as u8, Ordering::Relaxed);
    }

    pub fn set_uploader_activity(&self, a: Activity) {
        self.uploader_activity.store(a as u8, Ordering::Relaxed);
    }

    /// The collector's turn begins: wakes that arrive from now on start another turn.
    pub fn begin_collector_turn(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    pub fn flush_requested(&self) -> u64 {
        self.flush_requested.load(Ordering::Acquire)
    }

    /// Sleeps up to `timeout` unless a wake is pending.
    pub fn collector_sleep(&self, timeout: Duration) {
        if !self.wake_pending.load(Ordering::Acquire) {
            self.collector_parker.park_timeout(timeout);
        }
    }

    /// Queues a finished profile, dropping (and counting) the oldest when the queue is full.
    pub fn push_profile(&self, p: EncodedProfile) {
        {
            let mut q = self.queue.lock();
            crate::pause_points::pause_point(crate::pause_points::Point::HoldingQueueToPush);
            if q.len() >= self.config.max_pending_profiles {
                if let Some(old) = q.pop_front() {
                    if old.seq != u64::MAX {
                        self.counters
                            .profiles_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        crate::messages::profile_dropped(self.config.max_pending_profiles);
                    }
                    // Its flush waiters are answered by this newer profile's ticket.
                }
            }
            q.push_back(p);
        }
        self.uploader_parker.unpark();
    }

    /// The collector wrote its last profile and is about to exit.
    pub fn collector_finished(&self) {
        // SeqCst, with `waiting_on_peer`: of this store and the uploader's, one sees the other.
        self.collector_done.store(true, Ordering::SeqCst);
        if self.waiting_on_peer.load(Ordering::SeqCst) {
            self.handed_over.raise_to(1);
        }
        self.uploader_parker.unpark();
    }

    /// The next profile to export, if any.
    pub fn pop_profile(&self) -> Option<EncodedProfile> {
        let mut q = self.queue.lock();
        crate::pause_points::pause_point(crate::pause_points::Point::HoldingQueueToPop);
        q.pop_front()
    }

    /// True once the collector has exited and nothing is left in the queue: the uploader's
    /// cue to exit.
    pub fn nothing_left_to_export(&self) -> bool {
        self.collector_done.load(Ordering::Acquire) && self.queue.lock().is_empty()
    }

    pub fn uploader_sleep(&self) {
        self.uploader_parker.park_timeout(UPLOADER_IDLE_WAIT);
    }

    /// The hard limit for an export that runs while the session stops.
    pub fn export_deadline(&self) -> Option<Instant> {
        if self.is_stopping() {
            self.stop_deadline.get().copied()
        } else {
            None
        }
    }

    pub fn profile_handled(&self, flush_ticket: u64) {
        self.flushed.raise_to(flush_ticket);
    }

    pub fn uploader_finished(&self) {
        self.finished.raise_to(1);
        self.handed_over.raise_to(1);
    }
}

/// What a stop waits for, besides the collector's last profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopWait {
    /// Every queued profile exported (written, or answered by its endpoint, or given up).
    Exported,
    /// Nothing but a remote endpoint: an upload waiting for its answer (its request is
    /// written) or between attempts is not waited for.
    NotOnPeers,
}

impl crate::export::UploadPause for Session {
    fn stop_deadline(&self) -> Option<Instant> {
        self.export_deadline()
    }

    fn waiting_on_peer(&self, waiting: bool) {
        self.waiting_on_peer.store(waiting, Ordering::SeqCst);
        if waiting && self.collector_done.load(Ordering::SeqCst) {
            self.handed_over.raise_to(1);
        }
    }

    fn pause(&self, d: Duration) {
        if self.is_stopping() {
            // The stop's wake-up is spent: a plain sleep (nanosleep, no lock).
            std::thread::sleep(d);
        } else {
            self.uploader_parker.park_timeout(d);
        }
    }
}
