//! A long-lived pre-fork server re-forks down one process line: each process inherits a running
//! profiler (which restarts in it), records, counts its own mappings, thread-stack guard pages
//! and file descriptors, stops, starts a fresh profiler and forks the next (the driver is
//! `forkprof_chaos::line`; `forkprof torture --line 100000` runs it at full length).
//!
//! A restart or a stop that leaks a thread stack, leaves an inherited stack mapped or a
//! descriptor open passes it on to every later process, so the counts climb with the depth
//! (a few mappings per generation: thousands by the end of this line). Without a leak they stay
//! where the line settled after its first generations.
//!
//! Its own test binary: the driver reaps every descendant of the process (it is their
//! subreaper), which no other test's children must meet.

#![cfg(target_os = "linux")] // /proc, PR_SET_CHILD_SUBREAPER

mod support;

use std::time::Duration;

use forkprof::ChildPolicy;
use forkprof_chaos::line::{self, Counts, LineOptions};

/// Generations in the line.
const DEPTH: u64 = 300;
/// The generations the line settles in (libc's and the allocator's first-use mappings, the
/// first profile file) before the counts are compared.
const WARM_UP: usize = 10;
/// Mappings that may come and go between generations without anything leaking: malloc gives
/// an arena's unused tail back or maps a large block, and a thread's stack sits in one mapping
/// or two depending on whether its guard page split it from a neighbour. A leak of one
/// mapping per generation exceeds it within a few generations.
const MAPPING_JITTER: u64 = 4;

#[test]
fn restarts_down_one_process_line_leak_no_mappings_stacks_or_fds() {
    let _watchdog = support::Watchdog::new("process line", Duration::from_secs(120));
    let dir = support::TempDir::new("line");
    let config = support::file_config("line", dir.path(), ChildPolicy::Restart);
    let opts = LineOptions {
        depth: DEPTH,
        ..LineOptions::default()
    };
    let report = line::run(config, &opts);
    if let Some((gen, pid, stage, bt)) = &report.hang {
        panic!(
            "DEADLOCK: generation {gen} (pid {pid}) hung in {stage}; backtrace:\n{}",
            bt.as_deref().unwrap_or("(none)")
        );
    }
    assert!(
        report.failures.is_empty(),
        "processes of the line failed (generation, pid, what): {:?}",
        report.failures
    );
    assert_eq!(report.counts.len() as u64, DEPTH, "the line ended early");
    for (g, c) in report.counts.iter().enumerate().step_by(50) {
        eprintln!("generation {}: {c:?}", g + 1);
    }
    eprintln!("generation {DEPTH}: {:?}", report.counts.last().unwrap());

    let settled = max_of(&report.counts[..WARM_UP]);
    for (g, c) in report.counts.iter().enumerate().skip(WARM_UP) {
        let gen = g + 1;
        assert!(
            c.mappings <= settled.mappings + MAPPING_JITTER,
            "generation {gen} has {} mappings, the line settled at {} by generation {WARM_UP}: restarts leak mappings",
            c.mappings,
            settled.mappings
        );
        assert!(
            c.guards <= settled.guards + MAPPING_JITTER,
            "generation {gen} has {} guard pages (one per thread stack), the line settled at {} by generation {WARM_UP}: restarts leak thread stacks",
            c.guards,
            settled.guards
        );
        assert!(
            c.fds <= settled.fds,
            "generation {gen} has {} open descriptors, the line settled at {} by generation {WARM_UP}: restarts leak descriptors",
            c.fds,
            settled.fds
        );
    }
}

fn max_of(counts: &[Counts]) -> Counts {
    counts.iter().fold(Counts::default(), |m, c| Counts {
        mappings: m.mappings.max(c.mappings),
        guards: m.guards.max(c.guards),
        fds: m.fds.max(c.fds),
    })
}
