//! The macOS deadlock, reproduced natively on musl.
//!
//! musl holds one atfork lock from before the first prepare handler until after the last
//! parent/child handler, and `pthread_atfork` takes the same lock (musl's own `pthread_atfork` does). macOS's
//! `getaddrinfo` registers atfork handlers lazily, so "a thread calls `pthread_atfork` while
//! another forks" is exactly what a lookup on an upload thread does there. Each scenario runs
//! in a fresh subprocess (this binary re-executed) under a watchdog that turns a hang into
//! exit code 42.
#![cfg(all(target_os = "linux", target_env = "musl"))]

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use forkprof::{Compression, Config, Frame, Profiler, Sample};

const MODE: &str = "FORKPROF_MUSL_ATFORK_MODE";
const DEADLOCK_EXIT: i32 = 42;

static FORK_STARTED: AtomicBool = AtomicBool::new(false);
static HELPER_DONE: AtomicBool = AtomicBool::new(false);

extern "C" fn noop() {}

/// A naive prepare handler: waits for the helper thread, like a rendezvous barrier.
extern "C" fn naive_prepare() {
    FORK_STARTED.store(true, Ordering::Release);
    while !HELPER_DONE.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
}

/// The "upload thread": waits until a fork is in its prepare phase, then registers an atfork
/// handler as a first `getaddrinfo` would on macOS.
fn helper_registering_during_fork() {
    while !FORK_STARTED.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    // SAFETY: registering a handler that does nothing.
    unsafe { libc::pthread_atfork(Some(noop), Some(noop), Some(noop)) };
    HELPER_DONE.store(true, Ordering::Release);
}

fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("DEADLOCK: no progress within {limit:?}");
        // SAFETY: ends the process at once; nothing else to clean up.
        unsafe { libc::_exit(DEADLOCK_EXIT) };
    });
}

fn fork_and_reap(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child runs `child` and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = child();
        // SAFETY: leaves the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128
    }
}

fn naive_barrier_scenario() -> i32 {
    watchdog(Duration::from_secs(3));
    // SAFETY: registering handlers with 'static lifetime.
    unsafe { libc::pthread_atfork(Some(naive_prepare), Some(noop), Some(noop)) };
    let helper = std::thread::spawn(helper_registering_during_fork);
    let code = fork_and_reap(|| 0);
    let _ = helper.join();
    code
}

fn forkprof_scenario() -> i32 {
    watchdog(Duration::from_secs(30));
    let dir = std::env::temp_dir().join(format!("forkprof-musl-atfork-{}", std::process::id()));
    let cfg = Config::builder("musl-atfork")
        .sample_type("samples", "count")
        .period(Duration::from_millis(20))
        .output_dir(&dir, Compression::Gzip)
        .build()
        .expect("config");
    let p = Profiler::start(cfg).expect("start");
    let stop = AtomicBool::new(false);
    let code = std::thread::scope(|s| {
        // A thread registering atfork handlers while forks happen, as macOS getaddrinfo does.
        s.spawn(|| {
            // Bounded: musl keeps every handler and runs all of them on each fork.
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // SAFETY: registering a no-op child handler with 'static lifetime.
                unsafe { libc::pthread_atfork(None, None, Some(noop)) };
                std::thread::yield_now();
            }
        });
        s.spawn(|| {
            let frames = [Frame::new("record_loop", "musl.rs", 1)];
            while !stop.load(Ordering::Relaxed) {
                let _ = p.record(&Sample::new(&frames, &[1]));
            }
        });
        let mut worst = 0;
        for _ in 0..200 {
            let code = fork_and_reap(|| {
                let frames = [Frame::new("child_work", "musl.rs", 2)];
                match p
                    .record(&Sample::new(&frames, &[1]))
                    .and_then(|_| p.stop(Duration::from_secs(5)))
                {
                    Ok(s) if s.samples_recorded == 1 => 0,
                    _ => 1,
                }
            });
            worst = worst.max(code);
        }
        stop.store(true, Ordering::Relaxed);
        worst
    });
    let _ = p.stop(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
    code
}

fn run_scenario(name: &str) -> i32 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "scenario_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MODE, name)
        .status()
        .expect("re-exec test binary");
    out.code().unwrap_or(128)
}

/// Entry point for the re-executed subprocess; a no-op in the normal run.
#[test]
fn scenario_entry() {
    let code = match std::env::var(MODE).as_deref() {
        Ok("naive") => naive_barrier_scenario(),
        Ok("forkprof") => forkprof_scenario(),
        _ => return,
    };
    // SAFETY: ends the subprocess with the scenario's verdict, skipping the test harness.
    unsafe { libc::_exit(code) };
}

#[test]
fn naive_barrier_deadlocks_on_musl() {
    assert_eq!(
        run_scenario("naive"),
        DEADLOCK_EXIT,
        "negative control: a prepare handler that waits for a thread calling pthread_atfork must deadlock on musl"
    );
}

#[test]
fn forkprof_survives_atfork_registration_during_forks() {
    assert_eq!(
        run_scenario("forkprof"),
        0,
        "forkprof's fork loop with concurrent pthread_atfork calls failed or hung"
    );
}
