//! The interception strategy (macOS's: no prepare handler, the host brackets its own fork with
//! `before_fork` / `after_fork_*`, a child-only handler flags forks nobody intercepted) run on
//! Linux through a stand-in platform. The strategy is chosen once per process at the first
//! start, so every test here uses the same platform (nextest gives each test its own process).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use forkprof::{ChildPolicy, Compression, Config, Frame, Platform, Sample};
use forkprof_core::{ForkStrategy, Profiler};
use support::*;

/// macOS's strategy on Linux: interception, a child-only atfork handler, no wipe-on-fork
/// sentinel (so unobserved forks are found by pid comparison).
struct InterceptionOnLinux;

extern "C" fn child_only() {
    forkprof_core::fork::atfork_child_unintercepted();
}

static REGISTERED: AtomicBool = AtomicBool::new(false);

impl Platform for InterceptionOnLinux {
    fn name(&self) -> &'static str {
        "interception-on-linux"
    }
    fn fork_strategy(&self) -> ForkStrategy {
        ForkStrategy::Interception
    }
    fn install_fork_hooks(&self) -> forkprof::Result<()> {
        if !REGISTERED.swap(true, Ordering::AcqRel) {
            // SAFETY: registers an `extern "C"` handler that only stores atomics.
            let rc = unsafe { libc::pthread_atfork(None, None, Some(child_only)) };
            assert_eq!(rc, 0);
        }
        Ok(())
    }
    fn fork_sentinel(&self) -> Option<&'static AtomicU64> {
        None
    }
    fn thread_cpu_time_ns(&self) -> Option<u64> {
        None
    }
    fn monotonic_ns(&self) -> u64 {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

static PLATFORM: InterceptionOnLinux = InterceptionOnLinux;

const SERVICE: &str = "intercepted";

fn start(dir: &std::path::Path, policy: ChildPolicy) -> Profiler {
    Profiler::start_on(file_config(SERVICE, dir, policy), &PLATFORM).unwrap()
}

#[test]
fn intercepted_forks_from_four_threads_restart_in_the_children() {
    let _serial = serial();
    let _w = Watchdog::new("intercepted forks", Duration::from_secs(60));
    let dir = TempDir::new("intercepted");
    let p = start(dir.path(), ChildPolicy::Restart);
    let stop = Arc::new(AtomicBool::new(false));
    let host = {
        let p = p.clone();
        spawn_recorder(move |s| p.record(s).unwrap(), &stop)
    };
    const THREADS: usize = 4;
    const FORKS: usize = 50;
    let go = Arc::new(Barrier::new(THREADS));
    let forkers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (p, go) = (p.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                let mut pids = Vec::new();
                for _ in 0..FORKS {
                    let pid = forkprof::fork::fork().unwrap();
                    if pid == 0 {
                        let f = [Frame::new("child_work", "c.rs", 1)];
                        let ok = p.is_running()
                            && p.record(&Sample::new(&f, &[1])).is_ok()
                            && p.stats().samples_recorded == 1;
                        // SAFETY: ends the child.
                        unsafe { libc::_exit(if ok { 0 } else { 120 }) };
                    }
                    pids.push(pid);
                    expect_exit_0(pid, "intercepted child");
                }
                pids
            })
        })
        .collect();
    for f in forkers {
        f.join().unwrap();
    }
    assert_eq!(forkprof::fork::state().in_flight, 0);
    assert_eq!(forkprof_core::fork::locks_held(), (false, false));
    stop.store(true, Ordering::Release);
    let handed = host.join().unwrap();
    let s = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(s.samples_recorded + s.samples_dropped, handed);
    let profiles = read_profiles(dir.path());
    assert_eq!(
        total_value(&profiles_of(&profiles, SERVICE, std::process::id())),
        s.samples_recorded as i64
    );
}

#[test]
fn a_fork_nobody_intercepted_turns_profiling_off_in_the_child() {
    let _serial = serial();
    let _w = Watchdog::new("unintercepted fork", Duration::from_secs(60));
    let dir = TempDir::new("unintercepted");
    let p = start(dir.path(), ChildPolicy::Restart);
    let f = [Frame::new("parent_work", "p.rs", 1)];
    p.record(&Sample::new(&f, &[1])).unwrap();
    // A plain fork: no before_fork, so only the child-only handler sees it.
    let pid = fork_and_run(|| {
        let ok = forkprof::fork::is_unobserved_child()
            && p.record(&Sample::new(&f, &[1])).is_ok()
            && !p.is_running()
            && p.flush().is_err()
            && p.stop(Duration::from_secs(1)).is_err();
        if ok {
            0
        } else {
            121
        }
    });
    expect_exit_0(pid, "unintercepted child");
    // The parent is unaffected.
    assert!(!forkprof::fork::is_unobserved_child());
    p.record(&Sample::new(&f, &[1])).unwrap();
    let s = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(s.samples_recorded, 2);
}

#[test]
fn before_fork_holds_the_locks_until_the_parent_half() {
    let _serial = serial();
    let _w = Watchdog::new("interception lock window", Duration::from_secs(60));
    let dir = TempDir::new("interception-locks");
    let p = start(dir.path(), ChildPolicy::Restart);
    forkprof::fork::before_fork().unwrap();
    assert_eq!(forkprof_core::fork::locks_held(), (true, true));
    assert_eq!(forkprof::fork::state().in_flight, 1);
    // Recording never takes them: the host keeps recording while its fork is in progress.
    p.record(&Sample::new(&[Frame::new("work", "w.rs", 1)], &[1]))
        .unwrap();
    // What takes the locks is refused on this thread instead of waiting on itself.
    let order_error = |r: Result<(), forkprof::Error>| {
        assert!(
            matches!(r, Err(forkprof::Error::ForkOrder { .. })),
            "expected ForkOrder, got {r:?}"
        )
    };
    order_error(p.stop(Duration::from_secs(1)).map(|_| ()));
    order_error(forkprof_core::intern_on(b"mid_fork_name", &PLATFORM).map(|_| ()));
    let cfg = Config::builder("second")
        .sample_type("samples", "count")
        .output_dir(dir.path(), Compression::Gzip)
        .build()
        .unwrap();
    order_error(Profiler::start_on(cfg, &PLATFORM).map(|_| ()));
    forkprof::fork::after_fork_parent().unwrap();
    assert_eq!(forkprof_core::fork::locks_held(), (false, false));
    assert_eq!(forkprof::fork::state().in_flight, 0);
    p.stop(Duration::from_secs(10)).unwrap();
}
