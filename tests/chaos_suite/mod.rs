//! The fork-chaos suite, shared by `fork_chaos.rs` (the system allocator) and
//! `fork_chaos_jemalloc.rs` (jemalloc as the global allocator): the same chaos, two builds.

use std::collections::HashSet;
use std::time::Duration;

use forkprof::{ChildPolicy, Compression, Config, Profiler};
use forkprof_chaos::{Options, Report};

use crate::support::{TempDir, Watchdog};

/// Forks from 4 threads while the rest of the process churns threads, writes to stderr, uses
/// the environment, resolves `localhost`, allocates and exits TLS-destructor threads. Every
/// child must restart, record, (every 5th) fork a grandchild from a fresh thread, stop and
/// exit 0, and have written its own profile. `FORKPROF_CHAOS_FORKS` sizes the run (default
/// 2000).
pub fn run_suite(tag: &str) {
    let forks: u64 = std::env::var("FORKPROF_CHAOS_FORKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let _w = Watchdog::new("fork chaos", Duration::from_secs(600));
    let dir = TempDir::new(tag);
    let config = Config::builder(tag)
        .sample_type("samples", "count")
        .child_policy(ChildPolicy::Restart)
        .period(Duration::from_secs(60))
        .output_dir(dir.path(), Compression::None)
        // Every profile is counted: none may be pruned by the default retention.
        .output_retention(forkprof::Retention::UNBOUNDED)
        .build()
        .unwrap();
    let p = Profiler::start(config).unwrap();
    let opts = Options {
        forks,
        ..Options::default()
    };
    let r = forkprof_chaos::run(Some(&p), &opts);
    p.stop(Duration::from_secs(10)).unwrap();
    eprintln!("{}", summary(&r));
    assert!(
        r.hangs.is_empty(),
        "DEADLOCK: {} of {} children hung: {:?}",
        r.hangs.len(),
        r.forks,
        r.hangs
    );
    assert!(
        r.failures.is_empty(),
        "{} of {} children failed: {:?}",
        r.failures.len(),
        r.forks,
        r.failures
    );
    assert_eq!(r.children_ok, forks);
    let d = r.disturbers;
    for (what, n) in [
        ("threads joined", d.threads_joined),
        ("stderr lines", d.stderr_lines),
        ("environment operations", d.env_ops),
        ("name lookups", d.lookups),
        ("allocation rounds", d.allocations),
        ("TLS-destructor thread exits", d.tls_exits),
        ("host samples", d.samples_recorded),
    ] {
        assert!(
            n > 0,
            "the disturbance `{what}` never ran: the run proves nothing"
        );
    }
    // Every child wrote a profile of its own, named with its own pid.
    let pids_with_files: HashSet<i32> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&format!("{tag}-"))?;
            rest.split('-').next()?.parse().ok()
        })
        .collect();
    let missing: Vec<i32> = r
        .ok_pids
        .iter()
        .copied()
        .filter(|pid| !pids_with_files.contains(pid))
        .collect();
    assert!(
        missing.is_empty(),
        "{} children exited 0 but wrote no profile: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

pub fn summary(r: &Report) -> String {
    let (mut fork, mut first) = (r.fork_ns.clone(), r.first_record_ns.clone());
    format!(
        "fork chaos: {} forks in {:.1?}: {} ok, {} failed, {} hung; fork median {} us; \
         child's first record median {} us; disturbers {:?}",
        r.forks,
        r.elapsed,
        r.children_ok,
        r.failures.len(),
        r.hangs.len(),
        median(&mut fork) / 1000,
        median(&mut first) / 1000,
        r.disturbers
    )
}
