//! One process's running profiler: its buffer, counters, export queue and two threads.
//!
//! A session belongs to the process that started it. After a fork the child never touches
//! the parent's session beyond reading it (its threads do not exist there; its locks may be
//! held forever): it leaks it and, under `Restart`, starts a session of its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::buffer::SampleBuffer;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::export::{EncodedProfile, ExportContext};
use crate::platform::Platform;
use crate::stats::Counters;
use crate::sync::BriefLock;

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

/// Signalled once, waited on with a deadline (used by `stop` and `flush_sync`).
#[derive(Default)]
pub(crate) struct Latch {
    value: Mutex<u64>,
    cond: Condvar,
}

impl Latch {
    pub fn raise_to(&self, v: u64) {
        let mut g = self.value.lock().unwrap_or_else(|e| e.into_inner());
        if *g < v {
            *g = v;
        }
        self.cond.notify_all();
    }
    pub fn wait_for(&self, v: u64, deadline: Instant) -> bool {
        let mut g = self.value.lock().unwrap_or_else(|e| e.into_inner());
        while *g < v {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = match self.cond.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }
}

pub(crate) struct Session {
    pub generation: u64,
    pub pid: u32,
    pub config: Arc<Config>,
    pub buffer: SampleBuffer,
    pub counters: Counters,
    /// Bounded queue of finished profiles (oldest dropped when full).
    pub queue: BriefLock<VecDeque<EncodedProfile>>,
    pub stopping: AtomicBool,
    pub wake_pending: AtomicBool,
    pub flush_requested: AtomicU64,
    /// Highest flush ticket the uploader has finished with.
    pub flushed: Latch,
    /// 1 once the uploader thread has exited.
    pub finished: Latch,
    pub collector_done: AtomicBool,
    pub collector_activity: AtomicU8,
    pub uploader_activity: AtomicU8,
    /// Set by `shut_down`: the uploader's hard limit for the exports still to do.
    pub stop_deadline: OnceLock<Instant>,
    pub collector: OnceLock<Thread>,
    pub uploader: OnceLock<Thread>,
    pub threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Session {
    /// Builds the exporter on the calling thread (so resolution and directory checks happen
    /// here, never on a profiler thread) and spawns the collector and the uploader.
    pub fn start(
        config: Arc<Config>,
        platform: &'static dyn Platform,
        generation: u64,
        pid: u32,
    ) -> Result<Arc<Session>> {
        let buffer = SampleBuffer::new(config.buffer_capacity, platform).ok_or_else(|| {
            Error::config(
                "buffer_capacity",
                format!(
                    "cannot allocate {} bytes for the sample buffer",
                    2 * config.buffer_capacity
                ),
            )
        })?;
        let exporter = config.exporter.create(&ExportContext {
            config: &config,
            pid,
        })?;
        let session = Arc::new(Session {
            generation,
            pid,
            buffer,
            counters: Counters::default(),
            queue: BriefLock::new(VecDeque::with_capacity(config.max_pending_profiles)),
            stopping: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            flush_requested: AtomicU64::new(0),
            flushed: Latch::default(),
            finished: Latch::default(),
            collector_done: AtomicBool::new(false),
            collector_activity: AtomicU8::new(0),
            uploader_activity: AtomicU8::new(0),
            stop_deadline: OnceLock::new(),
            collector: OnceLock::new(),
            uploader: OnceLock::new(),
            threads: Mutex::new(Vec::new()),
            config,
        });
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::Os {
                    call: "pthread_create",
                    errno: e.raw_os_error().unwrap_or(0),
                })
        };
        let s = session.clone();
        let uploader = spawn(
            "forkprof-upload",
            Box::new(move || crate::uploader::run(s, exporter)),
        )?;
        let _ = session.uploader.set(uploader.thread().clone());
        let s = session.clone();
        let collector = match spawn(
            "forkprof-collect",
            Box::new(move || crate::collector::run(s)),
        ) {
            Ok(c) => c,
            Err(e) => {
                session.stopping.store(true, Ordering::Release);
                session.collector_done.store(true, Ordering::Release);
                uploader.thread().unpark();
                return Err(e);
            }
        };
        let _ = session.collector.set(collector.thread().clone());
        if let Ok(mut t) = session.threads.lock() {
            t.push(uploader);
            t.push(collector);
        }
        Ok(session)
    }

    #[inline]
    pub fn wake_collector(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            if let Some(t) = self.collector.get() {
                t.unpark();
            }
        }
    }

    pub fn wake_uploader(&self) {
        if let Some(t) = self.uploader.get() {
            t.unpark();
        }
    }

    /// Asks the collector to close the current profile now; returns the ticket to wait for.
    pub fn request_flush(&self) -> u64 {
        let ticket = self.flush_requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake_pending.store(true, Ordering::Release);
        if let Some(t) = self.collector.get() {
            t.unpark();
        }
        ticket
    }

    /// Writes the last profile and lets both threads finish; joins them if they do by
    /// `deadline`, otherwise leaves them to finish on their own.
    pub fn shut_down(&self, deadline: Instant) -> Result<()> {
        let _ = self.stop_deadline.set(deadline);
        self.stopping.store(true, Ordering::Release);
        self.wake_pending.store(true, Ordering::Release);
        if let Some(t) = self.collector.get() {
            t.unpark();
        }
        if !self.finished.wait_for(1, deadline) {
            return Err(Error::Timeout { what: "stop: the exporter did not finish before the deadline; its thread is left to finish alone" });
        }
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        if self.generation != 0 {
            // A forked child: its threads have done their work, but their exit can block for
            // good on a libc lock a vanished parent thread held at the fork (glibc's thread-exit
            // resolver cleanup takes resolv_conf's global lock, held if another thread was
            // inside getaddrinfo). Joining would turn that into a stop() that never returns, so
            // the threads are left to exit alone.
            drop(handles);
            return Ok(());
        }
        for h in handles {
            let _ = h.join();
        }
        Ok(())
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
}

pub(crate) fn set_activity(slot: &AtomicU8, a: Activity) {
    slot.store(a as u8, Ordering::Relaxed);
}

pub(crate) const UPLOADER_IDLE_WAIT: Duration = Duration::from_millis(200);
