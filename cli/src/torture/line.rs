//! `forkprof torture --line N`: one process line N generations long (the driver is
//! `forkprof_chaos::line`). Each process inherits a running profiler (restarted in it),
//! records, counts its own mappings, thread-stack guard pages and descriptors, stops, starts a
//! fresh profiler and forks the next. Whatever a restart or a stop leaks adds up down the line.
//!
//! Exit 0: no generation failed and the counts stayed where the line settled; 1: a generation
//! failed or a count grew; 3: DEADLOCK (a generation hung; its backtrace is printed).

use std::time::Duration;

use forkprof::{ChildPolicy, Compression, Config};
use forkprof_chaos::line::{self, Counts, LineOptions};

/// Generations the line settles in before its counts are compared.
const WARM_UP: usize = 10;
/// Mappings that come and go between generations without a leak (malloc trimming an arena,
/// a stack's guard page splitting its mapping or not); the test uses the same figure.
const MAPPING_JITTER: u64 = 4;

fn progress(gen: u64, c: &Counts) {
    if gen.is_multiple_of(10_000) {
        println!(
            "  generation {gen}: {} mappings, {} guard pages, {} descriptors, VmData {} KiB",
            c.mappings, c.guards, c.fds, c.data_kb
        );
    }
}

pub fn main(depth: u64, limit: Duration) -> i32 {
    if depth <= WARM_UP as u64 {
        crate::usage_error(
            "torture",
            format!("--line needs more than {WARM_UP} generations"),
        );
    }
    let dir = std::env::temp_dir().join(format!("forkprof-line-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = match Config::builder("line")
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
            eprintln!("forkprof torture --line: {e}");
            return 1;
        }
    };
    println!(
        "process line: {depth} generations, each restarting the profiler it inherits, recording, counting its mappings, guard pages and descriptors, stopping, starting afresh and forking the next; a generation stuck for {limit:?} is a DEADLOCK"
    );
    let opts = LineOptions {
        depth,
        limit,
        progress: Some(progress),
        prune_dir: Some(dir.clone()),
        ..LineOptions::default()
    };
    let r = line::run(config, &opts);
    let _ = std::fs::remove_dir_all(&dir);

    let secs = r.elapsed.as_secs_f64();
    println!(
        "{} generations in {secs:.1} s ({:.0} per second)",
        r.counts.len(),
        r.counts.len() as f64 / secs
    );
    let settled = r
        .counts
        .iter()
        .take(WARM_UP)
        .fold(Counts::default(), |m, c| Counts {
            mappings: m.mappings.max(c.mappings),
            guards: m.guards.max(c.guards),
            fds: m.fds.max(c.fds),
            data_kb: m.data_kb.max(c.data_kb),
        });
    let last = r.counts.last().copied().unwrap_or_default();
    let peak = r.counts.iter().fold(Counts::default(), |m, c| Counts {
        mappings: m.mappings.max(c.mappings),
        guards: m.guards.max(c.guards),
        fds: m.fds.max(c.fds),
        data_kb: m.data_kb.max(c.data_kb),
    });
    println!(
        "{:<28} {:>9} {:>12} {:>12} {:>12}",
        "", "mappings", "guard pages", "descriptors", "VmData KiB"
    );
    for (name, c) in [
        (format!("settled (generation {WARM_UP})"), settled),
        ("peak".to_string(), peak),
        (format!("last (generation {})", r.counts.len()), last),
    ] {
        println!(
            "{name:<28} {:>9} {:>12} {:>12} {:>12}",
            c.mappings, c.guards, c.fds, c.data_kb
        );
    }
    if let Some((gen, pid, stage, bt)) = &r.hang {
        println!("DEADLOCK: generation {gen} (pid {pid}) hung in {stage}; killed. Backtrace:");
        println!("{}", bt.as_deref().unwrap_or("(none)"));
        println!("RESULT: DEADLOCK");
        return 3;
    }
    let mut failed = false;
    for (gen, pid, f) in r.failures.iter().take(20) {
        println!("FAILED: generation {gen} (pid {pid}): {f:?}");
        failed = true;
    }
    if (r.counts.len() as u64) < depth {
        println!("FAILED: the line ended at generation {}", r.counts.len());
        failed = true;
    }
    if peak.guards > settled.guards + MAPPING_JITTER || peak.fds > settled.fds {
        println!("FAILED: thread stacks or descriptors grew down the line: restarts leak");
        failed = true;
    }
    if peak.mappings > settled.mappings + MAPPING_JITTER {
        // Not judged yet: what still grows is malloc-arena fragments of the parent sessions a
        // child leaks on purpose (docs/fork-protocol.md, "Known limits").
        let per = (peak.mappings - settled.mappings) as f64 / depth.max(1) as f64;
        println!(
            "NOTE: mappings grew by {} ({per:.2} a generation): malloc-arena fragments of leaked parent sessions, not yet fixed",
            peak.mappings - settled.mappings
        );
    }
    if failed {
        println!("RESULT: FAILED");
        return 1;
    }
    println!("RESULT: ok");
    0
}
