//! `forkprof torture --chaos`: the fork-chaos run of the test suite (`forkprof-chaos`) at any
//! size, so a user can soak their own platform; then the same chaos without a profiler.
//!
//! Exit 0: every child restarted, recorded, stopped and wrote its profile; 1: a child failed;
//! 3: DEADLOCK (a child hung; its backtrace is printed).

use std::time::Duration;

use forkprof::{ChildPolicy, Compression, Config, Profiler};
use forkprof_chaos::{Options, Progress, Report};

pub struct ChaosArgs {
    pub forks: u64,
    pub threads: usize,
    pub child_samples: u32,
    pub child_limit: Duration,
}

/// Every 10,000 forks, with this process's resident size: a soak that grows shows it here
/// (and forks slow down as the page tables they copy grow).
fn progress(p: &Progress) {
    if p.forks.is_multiple_of(10_000) || p.forks == p.of {
        let rss = super::rss_kb()
            .map(|k| format!(", parent rss {:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_default();
        println!(
            "  {} of {} forks: {} children ok, {} failed, {} hung so far{rss}",
            p.forks, p.of, p.children_ok, p.failed, p.hung
        );
    }
}

fn pct(v: &mut [u64], p: usize) -> u64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) * p) / 100]
}

fn line(name: &str, r: &Report) -> String {
    let (mut fork, mut first) = (r.fork_ns.clone(), r.first_record_ns.clone());
    format!(
        "{name:<9} {:>7} {:>8.0} {:>8.1} {:>8.1} {:>9.1} {:>8} {:>6} {:>11} {:>11}",
        r.forks,
        r.forks as f64 / r.elapsed.as_secs_f64(),
        pct(&mut fork, 50) as f64 / 1e3,
        pct(&mut fork, 99) as f64 / 1e3,
        fork.last().copied().unwrap_or(0) as f64 / 1e3,
        r.failures.len(),
        r.hangs.len(),
        if first.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", pct(&mut first, 50) as f64 / 1e3)
        },
        if first.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", pct(&mut first, 99) as f64 / 1e3)
        },
    )
}

pub fn main(a: ChaosArgs) -> i32 {
    if a.threads == 0 || a.forks == 0 {
        crate::usage_error(
            "torture",
            "--chaos needs --forks and --threads of at least 1",
        );
    }
    let dir = std::env::temp_dir().join(format!("forkprof-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = match Config::builder("chaos")
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
            eprintln!("forkprof torture --chaos: {e}");
            return 1;
        }
    };
    let opts = Options {
        forks: a.forks,
        forking_threads: a.threads,
        child_samples: a.child_samples,
        child_limit: a.child_limit,
        backtrace_hangs: true,
        progress: Some(progress),
        ..Options::default()
    };
    println!(
        "fork chaos: {} forks from {} threads; meanwhile threads start and join, write to stderr (silenced), set and read the environment, resolve localhost, allocate, and exit with TLS destructors",
        a.forks, a.threads
    );
    println!(
        "profiled phase (children restart, record {}, fork a grandchild every {}, stop):",
        a.child_samples, opts.grandchild_every
    );
    let p = match Profiler::start(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("forkprof torture --chaos: cannot start the profiler: {e}");
            return 1;
        }
    };
    let profiled = forkprof_chaos::run(Some(&p), &opts);
    let stopped = p.stop(Duration::from_secs(10));
    // The comparison needs no soak: at most 10,000 bare forks.
    let bare_opts = Options {
        forks: opts.forks.min(10_000),
        ..opts.clone()
    };
    println!(
        "bare phase ({} forks, no profiler, children exit at once):",
        bare_opts.forks
    );
    let bare = forkprof_chaos::run(None, &bare_opts);
    let written = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!(
        "{:<9} {:>7} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6} {:>11} {:>11}",
        "phase",
        "forks",
        "forks/s",
        "p50 µs",
        "p99 µs",
        "max µs",
        "failed",
        "hung",
        "1st rec p50",
        "1st rec p99"
    );
    println!("{}", line("profiled", &profiled));
    println!("{}", line("bare", &bare));
    let (mut pf, mut bf) = (profiled.fork_ns.clone(), bare.fork_ns.clone());
    let (p50, b50) = (pct(&mut pf, 50).max(1), pct(&mut bf, 50).max(1));
    let (p99, b99) = (pct(&mut pf, 99).max(1), pct(&mut bf, 99).max(1));
    println!(
        "profiled / bare: fork p50 {:.2}x, p99 {:.2}x ({:+.1} µs); the child's first record (its restart) is in the last two columns",
        p50 as f64 / b50 as f64,
        p99 as f64 / b99 as f64,
        (p99 as f64 - b99 as f64) / 1e3
    );
    println!("disturbances: {:?}", profiled.disturbers);
    println!(
        "profiles written by the profiled phase: {written} files ({} children ok)",
        profiled.children_ok
    );
    for (pid, f) in profiled.failures.iter().take(20) {
        println!("FAILED child {pid}: {f:?}");
    }
    for h in &profiled.hangs {
        println!(
            "DEADLOCK: child {} hung for {:?}; killed. Backtrace:",
            h.pid, a.child_limit
        );
        println!("{}", h.backtrace.as_deref().unwrap_or("(none)"));
    }
    if let Err(e) = stopped {
        println!("FAILED: the parent's stop: {e}");
        return 1;
    }
    if !profiled.hangs.is_empty() || !bare.hangs.is_empty() {
        println!("RESULT: DEADLOCK");
        return 3;
    }
    if !profiled.failures.is_empty() || !bare.failures.is_empty() {
        println!(
            "RESULT: FAILED ({} children)",
            profiled.failures.len() + bare.failures.len()
        );
        return 1;
    }
    println!("RESULT: ok");
    0
}
