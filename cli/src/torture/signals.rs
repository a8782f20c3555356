//! `forkprof torture --signals`: the signal-sampling run of the test suite
//! (`forkprof_chaos::signals`) at any size. A host records from a `SIGPROF` handler while
//! threads churn the allocator and several threads fork; each child and grandchild re-arms its
//! own timers, records from its handler and stops with its signals still firing. Three phases:
//! the process CPU timer (`ITIMER_PROF`), per-thread CPU timers (`timer_create` with
//! `SIGEV_THREAD_ID`), and both with a churning thread in every child.
//!
//! Exit 0: every child and grandchild recorded, stopped and checked its counters; 1: a check
//! failed; 3: DEADLOCK (a child hung; its stage and backtrace are printed).

use std::time::Duration;

use forkprof::{ChildPolicy, Compression, Config};
use forkprof_chaos::signals::{self, Hang, Options, Progress, Report, PHASES};

pub struct SignalArgs {
    pub forks: u64,
    pub threads: usize,
    pub child_samples: u64,
    pub child_limit: Duration,
}

/// A phase stops forking after this many hangs: each costs the child limit, and one is enough
/// to fail the run.
const MAX_HANGS: usize = 3;

/// Each hang as it is found; the summary at the end names them again.
fn print_hang(h: &Hang) {
    println!(
        "  DEADLOCK: {h}; killed. Backtrace:\n{}",
        h.backtrace.as_deref().unwrap_or("(none)")
    );
}

fn progress(p: &Progress) {
    if p.forks.is_multiple_of(10_000) || p.forks == p.of {
        let rss = signals::rss_kb()
            .map(|k| format!(", parent rss {:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_default();
        println!(
            "  {}: {} of {} forks: {} children ok, {} failed, {} hung so far{rss}",
            p.phase, p.forks, p.of, p.children_ok, p.failed, p.hung
        );
    }
}

fn us(mut v: Vec<u64>, p: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    format!("{:.1}", signals::pct(&mut v, p) as f64 / 1e3)
}

fn line(r: &Report) -> String {
    format!(
        "{:<13} {:>7} {:>6} {:>7} {:>6} {:>5} {:>8} {:>8} {:>11} {:>11} {:>8} {:>8} {:>8} {:>9} {:>8.1}",
        r.phase,
        r.forks,
        r.grandchildren_ok(),
        r.children_ok.len(),
        r.failures.len(),
        r.hangs.len(),
        us(r.fork_ns.clone(), 50),
        us(r.fork_ns.clone(), 99),
        us(r.first_record_ns.clone(), 50),
        us(r.first_record_ns.clone(), 99),
        us(r.stop_ns.clone(), 50),
        us(r.stop_ns.clone(), 99),
        r.parent_signals,
        r.parent_rss_kb
            .map(|k| format!("{:.1}", k as f64 / 1024.0))
            .unwrap_or_else(|| "-".into()),
        r.elapsed.as_secs_f64(),
    )
}

fn header() -> String {
    format!(
        "{:<13} {:>7} {:>6} {:>7} {:>6} {:>5} {:>8} {:>8} {:>11} {:>11} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "phase",
        "forks",
        "gchild",
        "ok",
        "failed",
        "hung",
        "fork p50",
        "fork p99",
        "1st rec p50",
        "1st rec p99",
        "stop p50",
        "stop p99",
        "signals",
        "rss MiB",
        "secs"
    )
}

pub fn main(a: SignalArgs) -> i32 {
    if a.threads == 0 || a.forks < PHASES.len() as u64 {
        crate::usage_error(
            "torture",
            format!(
                "--signals needs --threads of at least 1 and --forks of at least {}",
                PHASES.len()
            ),
        );
    }
    let dir = std::env::temp_dir().join(format!("forkprof-signals-{}", std::process::id()));
    println!(
        "signal sampling: {} forks in {} phases from {} threads; samples recorded from a SIGPROF handler (~1 kHz) while 2 threads churn malloc; every child and grandchild (every 4th child forks one) re-arms its timers, records {} samples from its handler and stops with its signals firing; a child hung for {:?} is a DEADLOCK",
        a.forks,
        PHASES.len(),
        a.threads,
        a.child_samples,
        a.child_limit
    );
    let mut reports = Vec::new();
    let mut left = a.forks;
    for (i, phase) in PHASES.iter().enumerate() {
        let forks = if i + 1 == PHASES.len() {
            left
        } else {
            a.forks / PHASES.len() as u64
        };
        left -= forks;
        let _ = std::fs::remove_dir_all(&dir);
        let config = match Config::builder("sig")
            .sample_type("samples", "count")
            .child_policy(ChildPolicy::Restart)
            .period(Duration::from_secs(60))
            .output_dir(&dir, Compression::None)
            // Every profile is counted: none may be pruned by the default retention.
            .output_retention(forkprof::Retention::UNBOUNDED)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("forkprof torture --signals: {e}");
                return 1;
            }
        };
        let opts = Options {
            forks,
            forking_threads: a.threads,
            child_samples: a.child_samples.max(1),
            child_limit: a.child_limit,
            backtrace_hangs: true,
            max_hangs: MAX_HANGS,
            progress: Some(progress),
            on_hang: Some(print_hang),
            ..Options::default()
        };
        println!(
            "phase {} ({forks} forks; process timer {}, per-thread timers {}, a churning thread in each child {}):",
            phase.name, phase.timers.process, phase.timers.per_thread, phase.timers.child_thread
        );
        let r = signals::run(config, *phase, &opts);
        // Each phase's row as soon as it ends, so a long run shows its figures as it goes.
        println!("  {}\n  {}", header(), line(&r));
        reports.push(r);
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!("{}", header());
    for r in &reports {
        println!("{}", line(r));
    }
    println!("(latencies in µs: fork() in the parent; a child's first record from its handler; a child's stop() with its signals firing; signals: the parent's handler)");
    let mut deadlock = false;
    let mut failed = 0;
    for r in &reports {
        for h in &r.hangs {
            deadlock = true;
            println!("DEADLOCK ({}): {h}; killed. Backtrace:", r.phase);
            println!("{}", h.backtrace.as_deref().unwrap_or("(none)"));
        }
        let problems: Vec<_> = r
            .problems()
            .into_iter()
            .filter(|p| !p.starts_with("DEADLOCK"))
            .collect();
        failed += problems.len();
        for p in problems.iter().take(20) {
            println!("{} ({})", p, r.phase);
        }
    }
    if deadlock {
        println!("RESULT: DEADLOCK");
        return 3;
    }
    if failed != 0 {
        println!("RESULT: FAILED ({failed} problems)");
        return 1;
    }
    println!("RESULT: ok");
    0
}
