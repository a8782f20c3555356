//! Turns a hang into exit code 3 with a DEADLOCK report, instead of a CI job that times out
//! saying nothing. Each forking thread publishes what it is doing (inside `fork()`, or waiting
//! for which child) and since when; a thread stuck longer than the limit, or a phase in which
//! no fork completed for that long, ends the run with the profiler's thread activity and the
//! fork protocol's counters, after killing the children still alive.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use forkprof::Profiler;

use super::exporter::Tally;

const IDLE: i64 = 0;
const IN_FORK: i64 = -1;

/// One forking thread's state: `IDLE`, `IN_FORK`, or the pid it is waiting for.
#[derive(Default)]
pub struct Slot {
    state: AtomicI64,
    since_ms: AtomicU64,
}

pub struct Board {
    start: Instant,
    pub slots: Vec<Slot>,
    last_fork_ms: AtomicU64,
}

impl Board {
    pub fn new(threads: usize) -> Arc<Board> {
        Arc::new(Board {
            start: Instant::now(),
            slots: (0..threads).map(|_| Slot::default()).collect(),
            last_fork_ms: AtomicU64::new(0),
        })
    }
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn set(&self, i: usize, state: i64) {
        let s = &self.slots[i];
        s.since_ms.store(self.now_ms(), Ordering::Relaxed);
        s.state.store(state, Ordering::Release);
    }
    pub fn forking(&self, i: usize) {
        self.set(i, IN_FORK);
    }
    pub fn waiting(&self, i: usize, pid: libc::pid_t) {
        self.set(i, pid as i64);
    }
    pub fn done(&self, i: usize) {
        self.set(i, IDLE);
        self.last_fork_ms.store(self.now_ms(), Ordering::Release);
    }
}

pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(
        phase: &'static str,
        board: Arc<Board>,
        limit: Duration,
        profiler: Option<Profiler>,
        tally: Option<Arc<Tally>>,
    ) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("torture-watchdog".into())
            .spawn(move || {
                let limit_ms = limit.as_millis() as u64;
                while !s.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(100));
                    let now = board.now_ms();
                    let stuck = board.slots.iter().any(|sl| {
                        sl.state.load(Ordering::Acquire) != IDLE
                            && now.saturating_sub(sl.since_ms.load(Ordering::Relaxed)) > limit_ms
                    });
                    let silent =
                        now.saturating_sub(board.last_fork_ms.load(Ordering::Acquire)) > limit_ms;
                    if stuck || silent {
                        report_and_exit(phase, &board, limit, profiler.as_ref(), tally.as_deref());
                    }
                }
            })
            .expect("spawn the torture watchdog");
        Watchdog {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn report_and_exit(
    phase: &str,
    board: &Board,
    limit: Duration,
    profiler: Option<&Profiler>,
    tally: Option<&Tally>,
) -> ! {
    let now = board.now_ms();
    eprintln!("DEADLOCK: no fork completed within {limit:?} in the {phase} phase");
    for (i, sl) in board.slots.iter().enumerate() {
        let for_s = now.saturating_sub(sl.since_ms.load(Ordering::Relaxed)) as f64 / 1000.0;
        match sl.state.load(Ordering::Acquire) {
            IDLE => eprintln!("  forker {i}: between forks"),
            IN_FORK => eprintln!("  forker {i}: inside fork() for {for_s:.1} s"),
            pid => eprintln!("  forker {i}: waiting for child {pid} for {for_s:.1} s"),
        }
    }
    match profiler {
        Some(p) => {
            for (name, activity) in p.thread_activity() {
                eprintln!("  profiler {name} thread: {activity:?}");
            }
        }
        None => eprintln!("  no profiler running (bare phase)"),
    }
    if let Some(t) = tally {
        eprintln!(
            "  upload in flight: {}",
            t.in_flight.load(Ordering::Acquire)
        );
    }
    eprintln!("  fork state: {:?}", forkprof::fork::state());
    for sl in &board.slots {
        let pid = sl.state.load(Ordering::Acquire);
        if pid > 0 {
            // SAFETY: killing a child of this process that hung.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    // SAFETY: ends the process at once; other threads may be the ones that hung.
    unsafe { libc::_exit(3) }
}
