//! Every wait in a child is bounded: a child whose restart cannot complete turns profiling off
//! with a reason in `stats().disabled`, and `record` and `stop` return at once instead of
//! waiting for threads that will never run.
//!
//! Both failures are made real in a forked child: a collector held before its loop (as if on a
//! lock inherited held), and thread creation refused by a seccomp filter.
#![cfg(target_os = "linux")] // seccomp is Linux-only

mod support;

use std::time::{Duration, Instant};

use forkprof::{ChildPolicy, Disabled, Frame, Profiler, Sample};
use forkprof_core::pause_points::{self, Point};
use support::*;

fn frames() -> [Frame<'static>; 1] {
    [Frame::new("bounded_child", "bounded.rs", 1)]
}

/// In a child that is meant to be off for `why`: records are accepted (counted, not stored)
/// and `stop` with a long deadline returns NotRunning long before it.
fn check_off_and_prompt(p: &Profiler, why: Disabled) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.stats().disabled != Some(why) {
        if p.record(&Sample::new(&frames(), &[1])).is_err() {
            return 10;
        }
        if Instant::now() > deadline {
            return 11; // never turned itself off
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if p.is_running() || p.record(&Sample::new(&frames(), &[1])).is_err() {
        return 12;
    }
    let t = Instant::now();
    match p.stop(Duration::from_secs(60)) {
        Err(forkprof::Error::NotRunning { reason }) if reason == why.as_str() => {}
        _ => return 13,
    }
    if t.elapsed() > Duration::from_secs(10) {
        return 14; // waited for the threads after all
    }
    0
}

#[test]
fn a_child_whose_collector_never_reaches_its_loop_turns_off_and_stops_at_once() {
    let _serial = serial();
    let _w = Watchdog::new("restart with a stuck collector", Duration::from_secs(60));
    let dir = TempDir::new("bounded-stuck");
    let p = Profiler::start(file_config("bounded", dir.path(), ChildPolicy::Restart)).unwrap();
    p.record(&Sample::new(&frames(), &[1])).unwrap();
    // Both parent threads are in their loops once a flush went through them: only the child's
    // restarted collector can stop at the point, and there it stays (nobody releases it).
    p.flush_sync(Duration::from_secs(20)).unwrap();
    pause_points::arm(Point::WorkerBeforeItsLoop);
    let pid = fork_and_run(|| check_off_and_prompt(&p, Disabled::ThreadsDidNotStart));
    let exit = wait_exit(pid, Duration::from_secs(40), "child with a stuck collector");
    pause_points::release();
    assert_eq!(exit, Exit::Code(0));
    p.stop(Duration::from_secs(10)).unwrap();
}

/// On the calling thread only: thread-creating clones fail with EAGAIN (glibc tries clone3,
/// musl uses clone with CLONE_THREAD); process forks are untouched.
fn refuse_new_threads_on_this_thread() {
    use support::bpf::*;
    // seccomp_data: nr at 0, arch at 4, args[0] (low half on little endian) at 16.
    let prog = [
        ins(LD_W_ABS, 0, 0, 4),
        ins(JEQ_K, 0, 6, AUDIT_ARCH),
        ins(LD_W_ABS, 0, 0, 0),
        ins(JEQ_K, 3, 0, libc::SYS_clone3 as u32),
        ins(JEQ_K, 0, 3, libc::SYS_clone as u32),
        ins(LD_W_ABS, 0, 0, 16),
        ins(JSET_K, 0, 1, libc::CLONE_THREAD as u32),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EAGAIN as u32),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    seccomp_on_this_thread(&prog);
}

#[test]
fn a_child_that_cannot_start_threads_turns_off_and_stops_at_once() {
    let _serial = serial();
    let _w = Watchdog::new("restart without threads", Duration::from_secs(60));
    let dir = TempDir::new("bounded-nothreads");
    let p = Profiler::start(file_config("bounded", dir.path(), ChildPolicy::Restart)).unwrap();
    p.record(&Sample::new(&frames(), &[1])).unwrap();
    // The child restarts inside fork(), so the filter must be in place before the fork: the
    // forking thread installs it on itself (a fork is still allowed) and the child inherits it.
    let pid = std::thread::scope(|s| {
        s.spawn(|| {
            refuse_new_threads_on_this_thread();
            fork_and_run(|| check_off_and_prompt(&p, Disabled::RestartFailed))
        })
        .join()
        .unwrap()
    });
    assert_eq!(
        wait_exit(pid, Duration::from_secs(40), "child without threads"),
        Exit::Code(0)
    );
    p.stop(Duration::from_secs(10)).unwrap();
}
