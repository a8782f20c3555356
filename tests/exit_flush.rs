//! The opt-in exit flush: a process that ends through `exit()` without calling `stop` still
//! writes its last profile; a forked child that never restarted the profiler writes nothing
//! at exit (and does not hang there); a child that did restart writes its own.

mod support;

use std::time::Duration;

use forkprof::{ChildPolicy, Frame, Profiler, Sample};
use support::*;

fn record(p: &Profiler, function: &str, n: usize) {
    let f = [Frame::new(function, "exit.rs", 1)];
    for _ in 0..n {
        p.record(&Sample::new(&f, &[1])).unwrap();
    }
}

/// Ends the calling (child) process through `exit()`, which runs the `atexit` handlers.
fn exit_normally() -> ! {
    // SAFETY: exit runs atexit handlers and ends the process; nothing of the test harness
    // needs to run in this forked child.
    unsafe { libc::exit(0) }
}

#[test]
fn a_process_that_exits_without_stop_still_writes_its_last_profile() {
    let _w = Watchdog::new("exit flush", Duration::from_secs(60));
    let dir = TempDir::new("exit-flush");
    let out = dir.path().to_path_buf();
    let pid = fork_and_run(move || {
        let p = Profiler::start(file_config("atexit", &out, ChildPolicy::Restart)).unwrap();
        record(&p, "worker_last_work", 5);
        p.stop_at_exit(Duration::from_secs(5)).unwrap();
        exit_normally()
    });
    expect_exit_0(pid, "a worker exiting through exit()");
    let profiles = read_profiles(dir.path());
    let mine = profiles_of(&profiles, "atexit", pid as u32);
    assert_eq!(mine.len(), 1, "{profiles:?}");
    assert_eq!(total_value(&mine), 5);
}

#[test]
fn at_exit_a_child_that_never_restarted_writes_nothing_and_one_that_did_writes_its_own() {
    let _w = Watchdog::new("exit flush in children", Duration::from_secs(60));
    let dir = TempDir::new("exit-children");
    let p = Profiler::start(file_config("fam", dir.path(), ChildPolicy::Restart)).unwrap();
    p.stop_at_exit(Duration::from_secs(5)).unwrap();
    record(&p, "parent_work", 7); // buffered at fork time: never the children's

    let idle = fork_and_run(|| exit_normally());
    expect_exit_0(idle, "a child that never used the profiler");
    let busy = fork_and_run({
        let p = p.clone();
        move || {
            record(&p, "child_work", 3);
            exit_normally()
        }
    });
    expect_exit_0(busy, "a child that restarted the profiler");

    let profiles = read_profiles(dir.path());
    assert!(
        profiles_of(&profiles, "fam", idle as u32).is_empty(),
        "{profiles:?}"
    );
    let child = profiles_of(&profiles, "fam", busy as u32);
    assert_eq!(total_value(&child), 3, "{profiles:?}");
    assert!(
        profiles_of(&profiles, "fam", std::process::id()).is_empty(),
        "no child wrote the parent's profile"
    );
    let stats = p.stop(Duration::from_secs(5)).unwrap();
    assert_eq!(stats.samples_recorded, 7);
    let profiles = read_profiles(dir.path());
    assert_eq!(
        total_value(&profiles_of(&profiles, "fam", std::process::id())),
        7
    );
}
