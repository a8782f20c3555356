//! Taking one sample on the PHP thread: the time since the previous one (wall and thread CPU),
//! the stack, and `record()`. Everything here runs inside an engine hook on the PHP thread.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use ext_php_rs::ffi::zend_execute_data;
use forkprof::trace::TRACE_ENDPOINT;
use forkprof::{Label, Profiler, Sample};

use crate::stack::Walker;

/// The profiler of this process, once the first request started it.
pub static PROFILER: OnceLock<Profiler> = OnceLock::new();
/// Frames kept per sample (the `forkprof.max_depth` setting).
pub static MAX_DEPTH: AtomicU64 = AtomicU64::new(128);

/// When the previous sample (or the fork) was taken: on the request clock (see
/// [`crate::timer`]), which stands still between requests, and on the thread CPU clock.
static LAST_WALL_NS: AtomicU64 = AtomicU64::new(0);
static LAST_CPU_NS: AtomicU64 = AtomicU64::new(0);
/// CPU time spent in earlier requests since the previous sample, not yet in a sample: CPU
/// carries over across idle time like the tick period does, and what a worker burns between
/// requests (waiting for one) is nobody's.
static CPU_CARRIED_NS: AtomicU64 = AtomicU64::new(0);

/// This process's sampling counters (reset in a forked child).
pub static SAMPLES: AtomicU64 = AtomicU64::new(0);
pub static SAMPLES_IN_INTERNAL: AtomicU64 = AtomicU64::new(0);
pub static SAMPLE_COST_NS: AtomicU64 = AtomicU64::new(0);
pub static RECORD_ERRORS: AtomicU64 = AtomicU64::new(0);

/// The cost of the last [`COSTS`] samples, so `forkprof_stats()` can give a median that one
/// preempted sample on a busy machine does not skew.
const COSTS: usize = 1024;
static COST_RING: [AtomicU32; COSTS] = [const { AtomicU32::new(0) }; COSTS];

/// The median cost, in ns, of the last (at most [`COSTS`]) samples; 0 before the first.
pub fn median_cost_ns() -> u64 {
    let n = (SAMPLES.load(Relaxed) as usize).min(COSTS);
    let mut v: Vec<u32> = COST_RING[..n].iter().map(|c| c.load(Relaxed)).collect();
    v.sort_unstable();
    v.get(n / 2).map_or(0, |&c| u64::from(c))
}

thread_local! {
    static WALKER: RefCell<Walker> = RefCell::new(Walker::new());
}

fn cpu_now() -> u64 {
    forkprof::thread_cpu_time_ns().unwrap_or(0)
}

/// Starts the next sample's interval now: at the first request and right after a fork (the
/// child's thread CPU clock starts from zero, and its first sample holds only its own time).
pub fn reset_interval() {
    LAST_WALL_NS.store(crate::timer::request_clock_ns(), Relaxed);
    LAST_CPU_NS.store(cpu_now(), Relaxed);
    CPU_CARRIED_NS.store(0, Relaxed);
}

/// A request starts: its CPU time counts from now.
pub fn request_started() {
    LAST_CPU_NS.store(cpu_now(), Relaxed);
}

/// A request ends: its CPU time since the previous sample waits for the next sample.
pub fn request_ended() {
    let spent = cpu_now().saturating_sub(LAST_CPU_NS.load(Relaxed));
    CPU_CARRIED_NS.fetch_add(spent, Relaxed);
}

/// Zeroes the counters a forked child inherited from its parent.
pub fn reset_counters() {
    for c in [
        &SAMPLES,
        &SAMPLES_IN_INTERNAL,
        &SAMPLE_COST_NS,
        &RECORD_ERRORS,
    ] {
        c.store(0, Relaxed);
    }
}

/// The most sample types a profile has: sample, wall-time, cpu-time, alloc-samples,
/// alloc-size, exception-samples, timeline.
pub const MAX_TYPES: usize = 7;

/// Where each sample type sits in a sample's values, for this process's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Types {
    /// How many values a sample has.
    pub count: usize,
    /// `alloc-samples`; `alloc-size` is the next one.
    pub alloc: Option<usize>,
    pub exception: Option<usize>,
    pub timeline: bool,
}

static TYPES: OnceLock<Types> = OnceLock::new();

/// `CLOCK_REALTIME` in ns since the Unix epoch: a timeline sample's time.
pub fn unix_ns() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; clock_gettime takes no lock.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) };
    // time_t and c_long are i64 on the 64-bit targets the extension builds for.
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

pub fn set_types(t: Types) {
    let _ = TYPES.set(t);
}

pub fn types() -> Types {
    TYPES.get().copied().unwrap_or(Types {
        count: 3,
        alloc: None,
        exception: None,
        timeline: false,
    })
}

/// Walks the stack at `ex` and records it with `values` and `labels`, plus the endpoint.
/// Returns an error when nothing was recorded (the walker busy: a hook inside a walk).
///
/// # Safety
/// `ex` is null or the current frame of the PHP thread this runs on, inside an engine hook.
pub unsafe fn record_stack(
    profiler: &Profiler,
    ex: *const zend_execute_data,
    values: &[i64],
    labels: &[Label<'_>],
    timestamp_ns: Option<i64>,
) -> Result<(), ()> {
    let depth = MAX_DEPTH.load(Relaxed) as usize;
    WALKER.with(|w| {
        let Ok(mut w) = w.try_borrow_mut() else {
            return Err(());
        };
        // SAFETY: forwarded from this function's contract.
        unsafe {
            w.walk(
                ex,
                depth,
                crate::endpoint::find_class(),
                |frames, request| {
                    // (In the unsafe block above: the object the walk found is a live
                    // Swoole\Http\Request until the hook returns.)
                    let swoole = request.and_then(|o| crate::endpoint::swoole_uri(o));
                    crate::endpoint::with(swoole, |endpoint| {
                        // The endpoint, the span's four labels (userland's or ddtrace's) and
                        // the caller's own, on this stack.
                        let trace = crate::trace::labels();
                        let mut all = [Label::num("", 0); 9];
                        let mut n = 0;
                        if !endpoint.is_empty() {
                            all[0] = Label::str(TRACE_ENDPOINT, endpoint);
                            n = 1;
                        }
                        for l in trace.as_slice().iter().chain(labels) {
                            if n == all.len() {
                                break;
                            }
                            all[n] = *l;
                            n += 1;
                        }
                        let mut sample = Sample::new(frames, values).labels(&all[..n]);
                        if let Some(ts) = timestamp_ns {
                            sample = sample.timestamp_ns(ts);
                        }
                        profiler.record(&sample).map_err(|_| ())
                    })
                },
            )
        }
    })
}

/// Takes one sample of the stack at `ex`.
///
/// # Safety
/// `ex` is null or the current frame of the PHP thread this runs on, inside an engine hook.
pub unsafe fn sample(ex: *const zend_execute_data, in_internal: bool) {
    let Some(profiler) = PROFILER.get() else {
        return;
    };
    let t0 = forkprof::monotonic_ns();
    let cpu = cpu_now();
    // Request time, not real time: a sample taken early in a request also stands for the
    // end of the previous ones, whose remainder of the period carried over to it.
    let clock = crate::timer::request_clock_ns();
    let wall = clock.saturating_sub(LAST_WALL_NS.swap(clock, Relaxed));
    let cpu_d =
        cpu.saturating_sub(LAST_CPU_NS.swap(cpu, Relaxed)) + CPU_CARRIED_NS.swap(0, Relaxed);
    let mut values = [0i64; MAX_TYPES];
    values[0] = 1;
    values[1] = wall as i64;
    values[2] = cpu_d as i64;
    let t = types();
    let timestamp = t.timeline.then(unix_ns);
    // SAFETY: forwarded from this function's contract.
    let recorded = unsafe { record_stack(profiler, ex, &values[..t.count], &[], timestamp) };
    let cost = forkprof::monotonic_ns().saturating_sub(t0);
    match recorded {
        Ok(()) => {
            let n = SAMPLES.fetch_add(1, Relaxed) as usize;
            COST_RING[n % COSTS].store(cost.min(u64::from(u32::MAX)) as u32, Relaxed);
            if in_internal {
                SAMPLES_IN_INTERNAL.fetch_add(1, Relaxed);
            }
        }
        _ => {
            RECORD_ERRORS.fetch_add(1, Relaxed);
        }
    }
    SAMPLE_COST_NS.fetch_add(cost, Relaxed);
}
