//! The explicit interception API (what hosts that own their fork entry points call) misused
//! and used: out-of-order calls are typed errors, never a deadlock, and forkprof's own
//! `fork()` wrapper restarts profiling in the child.

mod support;

use std::time::Duration;

use forkprof::fork::{after_fork_child, after_fork_parent, before_fork};
use forkprof::{ChildPolicy, Error, Frame, Profiler, Sample};
use support::*;

fn start(dir: &std::path::Path, policy: ChildPolicy) -> Profiler {
    Profiler::start(file_config("explicit", dir, policy)).unwrap()
}

#[test]
fn out_of_order_hooks_are_errors_and_never_deadlock() {
    let _serial = serial();
    let _w = Watchdog::new("out-of-order hooks", Duration::from_secs(30));
    let dir = TempDir::new("explicit-order");
    let p = start(dir.path(), ChildPolicy::Restart);
    let f = [Frame::new("work", "w.rs", 1)];

    assert!(matches!(after_fork_parent(), Err(Error::ForkOrder { .. })));
    assert!(matches!(after_fork_child(), Err(Error::ForkOrder { .. })));
    before_fork().unwrap();
    assert!(matches!(before_fork(), Err(Error::ForkOrder { .. })));
    // Between the hooks the profiler keeps working (on glibc the locking is libc's atfork).
    p.record(&Sample::new(&f, &[1])).unwrap();
    p.flush_sync(Duration::from_secs(10)).unwrap();
    after_fork_parent().unwrap();
    assert!(matches!(after_fork_parent(), Err(Error::ForkOrder { .. })));
    assert_eq!(forkprof::fork::state().in_flight, 0);
    assert_eq!(forkprof_core::fork::locks_held(), (false, false));

    // The pairing is per thread: another thread's before_fork is its own business.
    std::thread::spawn(|| {
        before_fork().unwrap();
        after_fork_parent().unwrap();
    })
    .join()
    .unwrap();

    // A real fork through the hooks still works afterwards.
    before_fork().unwrap();
    // SAFETY: the child only calls forkprof and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match after_fork_child() {
            Ok(()) => {
                let _ = p.record(&Sample::new(&f, &[1]));
                match p.stop(Duration::from_secs(10)) {
                    Ok(s) if s.samples_recorded == 1 => 0,
                    _ => 81,
                }
            }
            Err(_) => 80,
        };
        // SAFETY: ends the child.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0);
    after_fork_parent().unwrap();
    expect_exit_0(pid, "child of a hooked fork");
    let s = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(s.samples_recorded, 1);
}

#[test]
fn fork_wrapper_restarts_profiling_in_the_child() {
    let _serial = serial();
    let _w = Watchdog::new("fork wrapper", Duration::from_secs(30));
    let dir = TempDir::new("explicit-wrapper");
    let p = start(dir.path(), ChildPolicy::Restart);
    let parent_f = [Frame::new("parent_work", "p.rs", 1)];
    for _ in 0..10 {
        p.record(&Sample::new(&parent_f, &[1])).unwrap();
    }
    let pid = forkprof::fork::fork().unwrap();
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // after_fork_child already restarted the profiler: it runs before any record.
            if !p.is_running() {
                return 90;
            }
            let f = [Frame::new("child_work", "c.rs", 1)];
            for _ in 0..7 {
                p.record(&Sample::new(&f, &[1])).unwrap();
            }
            match p.stop(Duration::from_secs(10)) {
                Ok(s) if s.samples_recorded == 7 && s.profiles_written == 1 => 0,
                _ => 91,
            }
        }))
        .unwrap_or(101);
        // SAFETY: ends the child.
        unsafe { libc::_exit(code) };
    }
    expect_exit_0(pid, "child of forkprof::fork::fork");
    let s = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(s.samples_recorded, 10);
    let profiles = read_profiles(dir.path());
    let child = totals_by_stack(profiles_of(&profiles, "explicit", pid as u32).iter(), 0);
    assert_eq!(child.get("child_work"), Some(&7));
    assert_eq!(child.get("parent_work"), None);
    let parent = profiles_of(&profiles, "explicit", std::process::id());
    assert_eq!(total_value(&parent), 10);
}

#[test]
fn fork_wrapper_under_disable_policy() {
    let _serial = serial();
    let _w = Watchdog::new("fork wrapper, Disable", Duration::from_secs(30));
    let dir = TempDir::new("explicit-disable");
    let p = start(dir.path(), ChildPolicy::Disable);
    let pid = forkprof::fork::fork().unwrap();
    if pid == 0 {
        let f = [Frame::new("child_work", "c.rs", 1)];
        let ok = p.record(&Sample::new(&f, &[1])).is_ok()
            && !p.is_running()
            && p.stats().samples_ignored == 1
            && p.flush().is_err();
        // SAFETY: ends the child.
        unsafe { libc::_exit(if ok { 0 } else { 95 }) };
    }
    expect_exit_0(pid, "child of forkprof::fork::fork under Disable");
    p.stop(Duration::from_secs(10)).unwrap();
}
