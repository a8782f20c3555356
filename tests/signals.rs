//! A host that samples with signals: `record` from a `SIGPROF` handler (the process CPU timer,
//! per-thread CPU timers, or both) while threads churn the allocator and several threads fork;
//! every child and grandchild re-arms its own timers, records from its handler, and stops with
//! its signals still firing (the driver is `forkprof_chaos::signals`).
//!
//! Each phase is its own test (so nextest runs them in their own processes); together they fork
//! at least 2000 children, plus grandchildren. Every child must exit 0 having checked its own
//! `stop()` counters (every sample its handler had recorded before `stop()` is counted, none of
//! the parent's is), and every profile file must hold exactly what its process recorded, under
//! its own stack only; no signal may run its handler on one of forkprof's threads. A fourth
//! test runs children under the Disable policy, whose records are counted no-ops. A child that
//! hangs is reported with its stage and gdb's backtrace, and fails the test at once.

#![cfg(target_os = "linux")] // per-thread CPU timers (SIGEV_THREAD_ID), /proc

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use forkprof::{ChildPolicy, Compression, Config};
use forkprof_chaos::signals::{self, Options, Phase, Report, PHASES, STACK_NAMES};

fn config(dir: &std::path::Path, policy: ChildPolicy) -> Config {
    Config::builder("sig")
        .sample_type("samples", "count")
        .child_policy(policy)
        // Only stop() writes: one file per process, read back below.
        .period(Duration::from_secs(600))
        .output_dir(dir, Compression::None)
        // Every profile is counted: none may be pruned by the default retention.
        .output_retention(forkprof::Retention::UNBOUNDED)
        .build()
        .unwrap()
}

/// Forks per phase: the three Restart phases make 2100 forks.
const FORKS: u64 = 700;

fn run_phase(phase: Phase, policy: ChildPolicy, forks: u64) {
    let _serial = support::serial();
    // Every child has its own limit (10 s); this bounds the whole phase should the driver
    // itself (the parent's stop(), a forking thread) hang.
    let _watchdog = support::Watchdog::new("signal-sampling phase", Duration::from_secs(150));
    let dir = support::TempDir::new("signals");
    let opts = Options {
        forks,
        ..Options::default()
    };
    let report = signals::run(config(dir.path(), policy), phase, &opts);
    let problems = report.problems();
    for h in &report.hangs {
        eprintln!(
            "DEADLOCK: {h}; backtrace:\n{}",
            h.backtrace.as_deref().unwrap_or("(none)")
        );
    }
    assert!(
        problems.is_empty(),
        "phase {}: {} forks, {} children ok:\n{}",
        phase.name,
        report.forks,
        report.children_ok.len(),
        problems.join("\n")
    );
    assert_eq!(report.forks, forks);
    assert_eq!(report.children_ok.len() as u64, forks);
    let expected_grandchildren = forks.div_ceil(opts.grandchild_every);
    assert_eq!(report.grandchildren_ok(), expected_grandchildren);
    assert!(
        report.parent_signals > 0,
        "the parent's handler never ran: no signal was delivered in phase {}",
        phase.name
    );
    check_files(&report, dir.path(), policy);
    let (mut fork, mut first) = (report.fork_ns.clone(), report.first_record_ns.clone());
    eprintln!(
        "phase {}: {} forks, {} grandchildren, fork p50 {} µs p99 {} µs, first record p50 {} µs p99 {} µs, parent signals {}, {:?}",
        phase.name,
        report.forks,
        report.grandchildren_ok(),
        signals::pct(&mut fork, 50) / 1000,
        signals::pct(&mut fork, 99) / 1000,
        signals::pct(&mut first, 50) / 1000,
        signals::pct(&mut first, 99) / 1000,
        report.parent_signals,
        report.elapsed
    );
}

/// Every process's files hold exactly the samples its `stop()` counted, all under its own
/// role's stack: a child's profile never carries the parent's samples, nor a grandchild's its
/// parent's.
fn check_files(report: &Report, dir: &std::path::Path, policy: ChildPolicy) {
    // Under Disable no child records anything (each child checked that it counted its
    // handler's records as ignored): no child may write a file.
    let children_record = policy == ChildPolicy::Restart;
    let profiles = support::read_profiles(dir);
    let mut by_pid: BTreeMap<u32, BTreeMap<String, i64>> = BTreeMap::new();
    for (path, prof) in &profiles {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let pid: u32 = name
            .strip_prefix("sig-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected profile file name {name}"));
        let totals = by_pid.entry(pid).or_default();
        for (stack, v) in support::totals_by_stack([prof], 0) {
            *totals.entry(stack).or_insert(0) += v;
        }
    }
    // What each pid's files must hold. A pid can be reused within a run (pid_max is often
    // 32768, and a run forks thousands of processes on a busy machine): the files of every
    // process that had it then add up, and file names carry a per-process stamp, so none
    // replaces another's.
    let mut want: BTreeMap<u32, BTreeMap<String, i64>> = BTreeMap::new();
    let mut holders: BTreeMap<u32, u32> = BTreeMap::new();
    let mut expect = |pid: i32, role: usize, recorded: u64| {
        *holders.entry(pid as u32).or_insert(0) += 1;
        let w = want.entry(pid as u32).or_default();
        if recorded > 0 {
            *w.entry(STACK_NAMES[role].to_string()).or_insert(0) += recorded as i64;
        }
    };
    for c in &report.children_ok {
        assert_eq!(
            c.recorded > 0,
            children_record,
            "child {} recorded {}",
            c.pid,
            c.recorded
        );
        expect(c.pid, 1, c.recorded);
        if let Some((gc, recorded)) = c.grandchild {
            assert_eq!(
                recorded > 0,
                children_record,
                "grandchild {gc} recorded {recorded}"
            );
            expect(gc, 2, recorded);
        }
    }
    let parent = report.parent_stop.as_ref().unwrap().as_ref().unwrap();
    expect(std::process::id() as i32, 0, parent.samples_recorded);
    for (pid, got) in &by_pid {
        assert!(
            want.contains_key(pid),
            "files of pid {pid}, which is none of this run's processes: {got:?}"
        );
    }
    for (pid, w) in &want {
        let got = by_pid.get(pid).cloned().unwrap_or_default();
        assert_eq!(
            &got, w,
            "pid {pid} ({} process(es) of this run had it): its profiles hold other samples than it recorded",
            holders[pid]
        );
    }
}

#[test]
fn signals_process_timer() {
    run_phase(PHASES[0], ChildPolicy::Restart, FORKS);
}

#[test]
fn signals_per_thread_timers() {
    run_phase(PHASES[1], ChildPolicy::Restart, FORKS);
}

#[test]
fn signals_mixed_with_child_threads() {
    run_phase(PHASES[2], ChildPolicy::Restart, FORKS);
}

/// Children under the Disable policy: `record` from their handlers is a counted no-op, as
/// signal-safe as ever, and `stop()` says profiling is off.
#[test]
fn signals_children_under_disable() {
    run_phase(PHASES[2], ChildPolicy::Disable, FORKS / 4);
}
