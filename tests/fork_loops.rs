//! Fork loops, the way glibc's and jemalloc's own fork tests find deadlocks: many forks from
//! several threads while host threads record, and many fresh processes each forking from two
//! threads at once (once-only windows such as the first `pthread_atfork` registration happen
//! once per process, so only fresh processes revisit them).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use forkprof::{ChildPolicy, Compression, Config, Frame, Profiler, Sample};
use support::*;

const CHILD_SAMPLES: u64 = 5;

fn config(service: &str, dir: &std::path::Path, policy: ChildPolicy) -> Config {
    Config::builder(service)
        .sample_type("samples", "count")
        .child_policy(policy)
        .period(Duration::from_millis(100))
        .output_dir(dir, Compression::Gzip)
        // Every profile is counted: none may be pruned by the default retention.
        .output_retention(forkprof::Retention::UNBOUNDED)
        .build()
        .unwrap()
}

/// A forked child's work: record, flush every other time, check its own counters.
fn child_work(p: &Profiler, flush: bool) -> i32 {
    let f = [Frame::new("child_work", "c.rs", 1)];
    for _ in 0..CHILD_SAMPLES {
        if p.record(&Sample::new(&f, &[1])).is_err() {
            return 60;
        }
    }
    if flush && p.flush().is_err() {
        return 61;
    }
    let s = p.stats();
    if s.samples_recorded + s.samples_dropped != CHILD_SAMPLES || s.pid != std::process::id() {
        return 62;
    }
    0
}

/// Host threads that record until told to stop; each returns how many samples it handed over.
fn spawn_hosts(
    p: &Profiler,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<u64>> {
    (0..n)
        .map(|_| {
            let p = p.clone();
            spawn_recorder(move |s| p.record(s).unwrap(), stop)
        })
        .collect()
}

#[test]
fn two_thousand_forks_from_four_threads_while_hosts_record() {
    const THREADS: usize = 4;
    const FORKS_PER_THREAD: usize = 500;
    let _serial = serial();
    let _w = Watchdog::new("2000 forks", Duration::from_secs(120));
    let dir = TempDir::new("loops");
    let p = Profiler::start(config("loops", dir.path(), ChildPolicy::Restart)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let hosts = spawn_hosts(&p, 2, &stop);
    let t0 = Instant::now();
    let forkers: Vec<_> = (0..THREADS)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut worst = Duration::ZERO;
                for i in 0..FORKS_PER_THREAD {
                    let f0 = Instant::now();
                    let pid = fork_and_run(|| child_work(&p, (i + t) % 2 == 0));
                    worst = worst.max(f0.elapsed());
                    expect_exit_0(pid, "fork loop child");
                }
                worst
            })
        })
        .collect();
    let worst = forkers
        .into_iter()
        .map(|f| f.join().unwrap())
        .max()
        .unwrap();
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Release);
    let handed: u64 = hosts.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!(
        "{} forks in {elapsed:?} ({:.0}/s), slowest fork {worst:?}",
        THREADS * FORKS_PER_THREAD,
        (THREADS * FORKS_PER_THREAD) as f64 / elapsed.as_secs_f64()
    );
    let st = forkprof::fork::state();
    assert_eq!(st.in_flight, 0);
    let stats = p.stop(Duration::from_secs(20)).unwrap();
    assert_eq!(stats.samples_recorded + stats.samples_dropped, handed);
    assert_eq!(stats.profiles_dropped, 0);
    assert_eq!(stats.profiles_failed, 0);
    let profiles = read_profiles(dir.path());
    let parent = profiles_of(&profiles, "loops", std::process::id());
    assert_eq!(
        total_value(&parent),
        stats.samples_recorded as i64,
        "the parent lost samples across the forks"
    );
}

const FRESH_ENV: &str = "FORKPROF_TEST_FRESH_PROCESS_DIR";
const FRESH_TEST: &str = "one_hundred_fresh_processes_fork_from_two_threads_at_once";

/// One fresh process: the profiler's first start races two forking threads, then two threads
/// fork at once with it running. Exit code 0 when every child and the totals check out.
fn fresh_process(dir: &std::path::Path) -> i32 {
    let p = {
        let go = Arc::new(Barrier::new(3));
        let forkers: Vec<_> = (0..2)
            .map(|_| {
                let (go, dir) = (go.clone(), dir.to_path_buf());
                std::thread::spawn(move || {
                    go.wait();
                    let pid = fork_and_run(move || {
                        // Forked while the first start (hook registration included) may be
                        // anywhere: a start here works, or is refused, but never hangs.
                        match Profiler::start(config("early", &dir, ChildPolicy::Restart)) {
                            Ok(p) => child_work(&p, true),
                            Err(forkprof::Error::NotRunning { .. }) => 0,
                            Err(_) => 70,
                        }
                    });
                    wait_exit(
                        pid,
                        Duration::from_secs(10),
                        "child forked during the first start",
                    )
                })
            })
            .collect();
        go.wait();
        let p = Profiler::start(config("fresh", dir, ChildPolicy::Restart)).unwrap();
        for f in forkers {
            if f.join().unwrap() != Exit::Code(0) {
                return 71;
            }
        }
        p
    };
    let frames = [Frame::new("parent_work", "p.rs", 1)];
    for _ in 0..20 {
        p.record(&Sample::new(&frames, &[1])).unwrap();
    }
    let go = Arc::new(Barrier::new(2));
    let forkers: Vec<_> = (0..2)
        .map(|i| {
            let (go, p) = (go.clone(), p.clone());
            std::thread::spawn(move || {
                go.wait();
                let pid = fork_and_run(|| child_work(&p, i == 0));
                wait_exit(pid, Duration::from_secs(10), "child of a two-thread fork")
            })
        })
        .collect();
    for f in forkers {
        if f.join().unwrap() != Exit::Code(0) {
            return 72;
        }
    }
    for _ in 0..20 {
        p.record(&Sample::new(&frames, &[1])).unwrap();
    }
    let Ok(stats) = p.stop(Duration::from_secs(10)) else {
        return 73;
    };
    let profiles = read_profiles(dir);
    if stats.samples_recorded != 40
        || total_value(&profiles_of(&profiles, "fresh", std::process::id())) != 40
    {
        return 74;
    }
    0
}

#[test]
fn one_hundred_fresh_processes_fork_from_two_threads_at_once() {
    if let Some(dir) = std::env::var_os(FRESH_ENV) {
        let _w = Watchdog::new("fresh process", Duration::from_secs(30));
        let code = fresh_process(std::path::Path::new(&dir));
        std::process::exit(code);
    }
    const PROCESSES: usize = 100;
    const PARALLEL: usize = 2;
    let _w = Watchdog::new("100 fresh processes", Duration::from_secs(120));
    let exe = std::env::current_exe().unwrap();
    let t0 = Instant::now();
    let mut failures = Vec::new();
    for batch in 0..PROCESSES / PARALLEL {
        let running: Vec<_> = (0..PARALLEL)
            .map(|i| {
                let dir = TempDir::new(&format!("fresh{}", batch * PARALLEL + i));
                let child = std::process::Command::new(&exe)
                    .args(["--exact", FRESH_TEST, "--nocapture", "--test-threads=1"])
                    .env(FRESH_ENV, dir.path())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                (dir, child)
            })
            .collect();
        for (dir, mut child) in running {
            let pid = child.id() as libc::pid_t;
            match wait_exit(pid, Duration::from_secs(30), "fresh test process") {
                Exit::Code(0) => {}
                other => failures.push(format!("{}: {other:?}", dir.path().display())),
            }
            // Already reaped by wait_exit; keep std from trying again.
            std::mem::forget(child.stdin.take());
        }
    }
    eprintln!("{PROCESSES} fresh processes in {:?}", t0.elapsed());
    assert!(failures.is_empty(), "fresh processes failed: {failures:?}");
}
