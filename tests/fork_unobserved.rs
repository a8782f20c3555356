//! Unobserved forks: a raw `clone` and glibc's `_Fork` run no atfork handler. The child's next
//! profiler call must turn profiling off there without touching any inherited lock: to prove
//! it, both of forkprof's locks are held by threads that vanish in the child (the collector
//! held on the string table by a pause point, and another thread's fork whose prepare holds
//! CONTROL while it waits for that table).
#![cfg(target_os = "linux")] // raw clone and the wipe-on-fork sentinel are Linux-only; macOS has its own unintercepted-fork test (fork_interception.rs)

mod support;

use std::time::{Duration, Instant};

use forkprof::{ChildPolicy, Compression, Config, Frame, FrameIds, Profiler, Sample};
use forkprof_core::pause_points::{self, Point};
use support::*;

const SERVICE: &str = "unobserved";

struct ReleaseOnDrop;
impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        pause_points::release();
    }
}

fn config(dir: &std::path::Path) -> Config {
    Config::builder(SERVICE)
        .sample_type("samples", "count")
        .child_policy(ChildPolicy::Restart)
        .output_dir(dir, Compression::Gzip)
        .build()
        .unwrap()
}

/// Runs in a child that no handler saw, so it keeps to what needs no lock: every check is a
/// plain comparison and the exit code says which one failed.
fn unobserved_child(p: &Profiler, spare: Config) -> i32 {
    if !forkprof::fork::is_unobserved_child() {
        return 20;
    }
    let frames = [Frame::new("never_recorded", "u.rs", 1)];
    let before = p.stats().samples_ignored;
    if p.record(&Sample::new(&frames, &[1])).is_err() {
        return 21;
    }
    let s = p.stats();
    if s.samples_ignored != before + 1 || s.samples_recorded != 0 {
        return 22;
    }
    if p.is_running() || p.flush().is_ok() {
        return 23;
    }
    if forkprof::intern("a_name_never_seen").is_ok() {
        return 24;
    }
    if Profiler::start(spare).is_ok() {
        return 25;
    }
    if p.stop(Duration::from_secs(1)).is_ok() {
        return 26;
    }
    if !forkprof::fork::state().unobserved_child {
        return 27;
    }
    0
}

type ForkFn = unsafe extern "C" fn() -> libc::pid_t;

fn glibc_underscore_fork() -> Option<ForkFn> {
    // SAFETY: dlsym with a NUL-terminated name; the symbol, when present, is `pid_t _Fork(void)`.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_Fork".as_ptr()) };
    if sym.is_null() {
        None
    } else {
        // SAFETY: see above.
        Some(unsafe { std::mem::transmute::<*mut libc::c_void, ForkFn>(sym) })
    }
}

fn scenario(what: &str, unobserved_fork: impl FnOnce() -> libc::pid_t) {
    let _serial = serial();
    let _w = Watchdog::new("unobserved fork scenario", Duration::from_secs(60));
    let dir = TempDir::new("unobserved");
    let p = Profiler::start(config(dir.path())).unwrap();
    let text = [Frame::new("parent_work", "p.rs", 1)];
    let id_frames = [FrameIds {
        function: forkprof::intern("parent_ids_work").unwrap(),
        file: forkprof::intern("p.rs").unwrap(),
        line: 3,
    }];
    let mut recorded = 0i64;
    for _ in 0..50 {
        p.record(&Sample::new(&text, &[1])).unwrap();
        recorded += 1;
    }

    // 1. The collector stops inside the string table lock.
    let _release = ReleaseOnDrop;
    pause_points::arm(Point::HoldingStringTableToResolve);
    p.record(&Sample::with_ids(&id_frames, &[1])).unwrap();
    recorded += 1;
    p.flush().unwrap();
    assert!(pause_points::wait_arrived(Duration::from_secs(10)));

    // 2. Another thread forks (observed): its prepare takes CONTROL, then waits for the table.
    let p2 = p.clone();
    let observed = std::thread::spawn(move || {
        fork_and_run(|| {
            let f = [Frame::new("observed_child", "o.rs", 1)];
            p2.record(&Sample::new(&f, &[1])).unwrap();
            match p2.stop(Duration::from_secs(10)) {
                Ok(s) if s.samples_recorded == 1 => 0,
                _ => 30,
            }
        })
    });
    let end = Instant::now() + Duration::from_secs(10);
    while forkprof_core::fork::locks_held() != (true, true) {
        assert!(
            Instant::now() < end,
            "the observed fork's prepare never took CONTROL"
        );
        std::thread::yield_now();
    }

    // 3. The unobserved fork, with both locks held by threads the child will not have.
    let spare = config(dir.path());
    let t0 = Instant::now();
    let pid = unobserved_fork();
    assert!(
        pid >= 0,
        "{what} failed: {}",
        std::io::Error::last_os_error()
    );
    if pid == 0 {
        let code = unobserved_child(&p, spare);
        // SAFETY: leaves the unobserved child without running anything of the parent's.
        unsafe { libc::_exit(code) };
    }
    eprintln!("{what}: returned in the parent after {:?}", t0.elapsed());
    match wait_exit(pid, Duration::from_secs(10), what) {
        Exit::Code(0) => {}
        other => panic!("{what} child ended with {other:?} (exit codes: see unobserved_child)"),
    }
    assert!(
        !forkprof::fork::is_unobserved_child(),
        "the parent stays observed"
    );

    // 4. Let the observed fork finish; the parent carries on with exact totals.
    pause_points::release();
    let observed_pid = observed.join().unwrap();
    expect_exit_0(observed_pid, "observed child");
    for _ in 0..50 {
        p.record(&Sample::new(&text, &[1])).unwrap();
        recorded += 1;
    }
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.samples_recorded as i64, recorded);
    let profiles = read_profiles(dir.path());
    assert_eq!(
        total_value(&profiles_of(&profiles, SERVICE, std::process::id())),
        recorded
    );
    assert!(
        profiles_of(&profiles, SERVICE, pid as u32).is_empty(),
        "the unobserved child must export nothing"
    );
}

#[test]
fn raw_clone_child_disables_profiling_without_touching_held_locks() {
    scenario("raw clone", raw_clone);
}

#[test]
fn glibc_fork_without_handlers_child_disables_profiling() {
    let Some(f) = glibc_underscore_fork() else {
        eprintln!("this libc has no _Fork: skipped");
        return;
    };
    // SAFETY: `_Fork` has fork's contract minus the atfork handlers.
    scenario("_Fork", || unsafe { f() });
}
