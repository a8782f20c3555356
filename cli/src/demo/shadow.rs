//! The demo's "VM": a shadow stack of named frames, pushed and popped by a guard on entry to
//! and exit from each instrumented function, and a sampler that records that stack at safe
//! points, the way PHP, Ruby or Python profilers sample their interpreter's frames.
//!
//! A ticker thread raises [`TICK`] every 10 ms; the working thread checks it at safe points
//! ([`safepoint`]) and, when raised, records its current stack with the wall and CPU time spent
//! since its previous sample. Only the thread that installed a [`Sampler`] samples itself.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use forkprof::{FrameIds, Label, Profiler, Sample, StrId};

/// Every function the demo instruments, with the source file it lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Func {
    MasterMain,
    SpawnWorkers,
    Supervise,
    WaitForEvents,
    ReapWorkers,
    ReportProgress,
    WorkerMain,
    ServeRequests,
    HandleRequest,
    ReadRequest,
    ParseRequest,
    ParseHeaders,
    ParseBody,
    HashPayload,
    CompressBody,
    RenderResponse,
    EscapeHtml,
}

const MASTER_FILE: &str = "cli/src/demo.rs";
const WORKER_FILE: &str = "cli/src/demo/work.rs";

/// (name, file) per [`Func`], in declaration order.
pub const FUNCS: [(&str, &str); 17] = [
    ("master_main", MASTER_FILE),
    ("spawn_workers", MASTER_FILE),
    ("supervise", MASTER_FILE),
    ("wait_for_events", MASTER_FILE),
    ("reap_workers", MASTER_FILE),
    ("report_progress", MASTER_FILE),
    ("worker_main", WORKER_FILE),
    ("serve_requests", WORKER_FILE),
    ("handle_request", WORKER_FILE),
    ("read_request", WORKER_FILE),
    ("parse_request", WORKER_FILE),
    ("parse_headers", WORKER_FILE),
    ("parse_body", WORKER_FILE),
    ("hash_payload", WORKER_FILE),
    ("compress_body", WORKER_FILE),
    ("render_response", WORKER_FILE),
    ("escape_html", WORKER_FILE),
];

/// Interned (function, file) per [`Func`]: interned once in the master, before forking; ids
/// stay valid in the forked workers.
static IDS: OnceLock<Vec<(StrId, StrId)>> = OnceLock::new();

pub fn intern_all() -> forkprof::Result<()> {
    if IDS.get().is_some() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(FUNCS.len());
    for (name, file) in FUNCS {
        ids.push((forkprof::intern(name)?, forkprof::intern(file)?));
    }
    let _ = IDS.set(ids);
    Ok(())
}

/// Raised by the ticker, lowered by the sampling thread when it takes a sample.
static TICK: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Root first, as a VM pushes frames; reversed (leaf first) when recorded.
    static STACK: RefCell<Vec<FrameIds>> = RefCell::new(Vec::with_capacity(64));
    static SAMPLER: RefCell<Option<Sampler>> = const { RefCell::new(None) };
}

/// Pops its frame when dropped: on return, `?` or unwinding alike.
#[must_use = "the frame is popped when the guard is dropped"]
pub struct FrameGuard {
    // Frames belong to the thread that pushed them.
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Pushes `f` (called at `line`) on this thread's shadow stack. Use [`frame!`].
pub fn enter(f: Func, line: u32) -> FrameGuard {
    let (function, file) = IDS
        .get()
        .map(|ids| ids[f as usize])
        .unwrap_or((StrId::from_u32(0), StrId::from_u32(0)));
    STACK.with(|s| {
        s.borrow_mut().push(FrameIds {
            function,
            file,
            line,
        })
    });
    FrameGuard {
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for FrameGuard {
    fn drop(&mut self) {
        STACK.with(|s| {
            s.borrow_mut().pop();
        });
    }
}

/// `let _f = frame!(Func::ParseRequest);` at the top of an instrumented function.
macro_rules! frame {
    ($f:expr) => {
        $crate::demo::shadow::enter($f, line!())
    };
}
pub(crate) use frame;

/// Starts this thread with an empty shadow stack: a forked worker leaves the master's frames
/// behind, as a worker process starts its own request loop.
pub fn reset_stack() {
    STACK.with(|s| s.borrow_mut().clear());
}

/// Records this thread's stack into a profiler when the ticker says so.
pub struct Sampler {
    profiler: Profiler,
    labels: Vec<Label<'static>>,
    last_wall: u64,
    last_cpu: u64,
    scratch: Vec<FrameIds>,
    /// Samples handed to the profiler.
    pub taken: u64,
    /// Where to publish `taken` for the master's progress line.
    progress: Option<&'static AtomicU64>,
}

impl Sampler {
    pub fn new(
        profiler: Profiler,
        labels: Vec<Label<'static>>,
        progress: Option<&'static AtomicU64>,
    ) -> Sampler {
        Sampler {
            profiler,
            labels,
            last_wall: forkprof::monotonic_ns(),
            last_cpu: forkprof::thread_cpu_time_ns().unwrap_or(0),
            scratch: Vec::with_capacity(64),
            taken: 0,
            progress,
        }
    }

    fn sample(&mut self, stack: &[FrameIds]) {
        let wall = forkprof::monotonic_ns();
        let cpu = forkprof::thread_cpu_time_ns().unwrap_or(self.last_cpu);
        let values = [
            wall.saturating_sub(self.last_wall) as i64,
            cpu.saturating_sub(self.last_cpu) as i64,
        ];
        self.last_wall = wall;
        self.last_cpu = cpu;
        self.scratch.clear();
        self.scratch.extend(stack.iter().rev());
        let sample = Sample::with_ids(&self.scratch, &values).labels(&self.labels);
        // The only error is a sample that does not match the configuration: a bug here.
        if self.profiler.record(&sample).is_ok() {
            self.taken += 1;
            if let Some(p) = self.progress {
                p.store(self.taken, Ordering::Relaxed);
            }
        }
    }
}

/// Makes `sampler` this thread's sampler; returns the previous one.
pub fn install(sampler: Sampler) -> Option<Sampler> {
    TICK.store(false, Ordering::Relaxed);
    SAMPLER.with(|s| s.borrow_mut().replace(sampler))
}

/// Removes this thread's sampler.
pub fn uninstall() -> Option<Sampler> {
    SAMPLER.with(|s| s.borrow_mut().take())
}

/// Records the current stack now, whatever the ticker says: at the end of a loop, so the time
/// since the last tick is not lost (and a very short run still has its sample).
pub fn sample_now() {
    TICK.store(false, Ordering::Relaxed);
    take_sample();
}

/// A safe point: records the stack if the ticker has fired since the last sample.
#[inline]
pub fn safepoint() {
    if TICK.load(Ordering::Relaxed) && TICK.swap(false, Ordering::Relaxed) {
        take_sample();
    }
}

#[cold]
fn take_sample() {
    SAMPLER.with(|s| {
        if let Some(sampler) = s.borrow_mut().as_mut() {
            STACK.with(|st| sampler.sample(&st.borrow()));
        }
    });
    // forkprof's threads only queue their messages; a host hands them to its logger from its
    // own threads. The demo's VM does it at its sampling safe points, so a 429 or a refused
    // connection shows while the run lasts, not only at the end (`record` never delivers).
    forkprof::drain_messages();
}

/// The thread that raises [`TICK`] at a fixed interval.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    handle: forkprof::thread::RawThread,
}

impl Ticker {
    pub fn start(interval: Duration) -> std::io::Result<Ticker> {
        TICK.store(false, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // A raw thread: workers start it in a forked child, where a std thread's start-up
        // can wait for ever on a std lock a master thread held at the fork.
        let handle = forkprof::thread::spawn(c"demo-ticker", move || {
            while !s.load(Ordering::Acquire) {
                std::thread::sleep(interval);
                TICK.store(true, Ordering::Relaxed);
            }
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Ticker { stop, handle })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.handle.join();
    }
}

/// Samples this thread's sampler has taken so far.
pub fn taken() -> u64 {
    SAMPLER.with(|s| s.borrow().as_ref().map(|s| s.taken).unwrap_or(0))
}
