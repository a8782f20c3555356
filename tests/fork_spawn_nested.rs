//! Subprocesses and nested forks while profiling: `Command::spawn` (posix_spawn or fork+exec,
//! both must pass through forkprof's handlers unharmed) in a loop, and forks three deep.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkprof::{ChildPolicy, Compression, Config, Frame, Profiler, Sample};
use support::*;

fn start(service: &str, dir: &std::path::Path) -> Profiler {
    let cfg = Config::builder(service)
        .sample_type("samples", "count")
        .child_policy(ChildPolicy::Restart)
        .period(Duration::from_millis(50))
        .output_dir(dir, Compression::Gzip)
        .build()
        .unwrap();
    Profiler::start(cfg).unwrap()
}

#[test]
fn spawning_bin_true_in_a_loop_while_profiling() {
    let _serial = serial();
    let _w = Watchdog::new("Command::spawn loop", Duration::from_secs(60));
    let dir = TempDir::new("spawn");
    let p = start("spawn", dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let host = {
        let p = p.clone();
        spawn_recorder(move |s| p.record(s).unwrap(), &stop)
    };
    let t0 = Instant::now();
    const SPAWNS: u32 = 300;
    for i in 0..SPAWNS {
        let status = std::process::Command::new("/bin/true")
            .status()
            .unwrap_or_else(|e| panic!("spawn {i} failed: {e}"));
        assert!(status.success(), "/bin/true #{i}: {status}");
    }
    eprintln!("{SPAWNS} spawns of /bin/true in {:?}", t0.elapsed());
    stop.store(true, Ordering::Release);
    let handed = host.join().unwrap();
    let s = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(s.samples_recorded + s.samples_dropped, handed);
    let profiles = read_profiles(dir.path());
    assert_eq!(
        total_value(&profiles_of(&profiles, "spawn", std::process::id())),
        s.samples_recorded as i64
    );
}

/// Records `n` samples of `name`, forks `depth` more levels below, and checks its own counters.
fn generation(p: &Profiler, depth: u32, n: i64) -> i32 {
    let name = format!("level_{depth}");
    let f = [Frame::new(&name, "n.rs", depth)];
    for _ in 0..n {
        if p.record(&Sample::new(&f, &[1])).is_err() {
            return 100;
        }
    }
    if depth > 0 {
        // Two children per level, forked from two threads at once. Raw threads: below the
        // top level this runs in a forked child, where a std thread's start-up can wait for
        // ever on a std lock a parent thread held at the fork.
        let kids: Vec<_> = (0..2)
            .map(|_| {
                let p = p.clone();
                let ok = Arc::new(AtomicBool::new(false));
                let done = ok.clone();
                let t = forkprof::thread::spawn(c"nested-forker", move || {
                    let pid = fork_and_run(|| generation(&p, depth - 1, n + 1));
                    let exit = wait_exit(pid, Duration::from_secs(15), "nested child");
                    done.store(exit == Exit::Code(0), Ordering::Release);
                });
                (t, ok)
            })
            .collect();
        for (t, ok) in kids {
            match t {
                Ok(t) => t.join(),
                Err(_) => return 102,
            }
            if !ok.load(Ordering::Acquire) {
                return 101;
            }
        }
    }
    match p.stop(Duration::from_secs(10)) {
        Ok(s) if s.samples_recorded == n as u64 && s.pid == std::process::id() => 0,
        _ => 102,
    }
}

#[test]
fn nested_forks_three_levels_each_profile_their_own() {
    let _serial = serial();
    let _w = Watchdog::new("nested forks", Duration::from_secs(60));
    let dir = TempDir::new("nested");
    let p = start("nested", dir.path());
    // Parent (level 3) forks 2 children, each 2 grandchildren, each 2 great-grandchildren.
    assert_eq!(generation(&p, 3, 10), 0);
    let profiles = read_profiles(dir.path());
    let totals = totals_by_stack(profiles.iter().map(|(_, p)| p), 0);
    assert_eq!(totals.get("level_3"), Some(&10));
    assert_eq!(totals.get("level_2"), Some(&(2 * 11)));
    assert_eq!(totals.get("level_1"), Some(&(4 * 12)));
    assert_eq!(totals.get("level_0"), Some(&(8 * 13)));
}

/// An exporter factory that notes the pid of the process each exporter was made in: the
/// child's restart builds its exporter, so the note tells where and when the restart ran.
#[derive(Debug)]
struct NotingFactory {
    dir: std::path::PathBuf,
    made_in_pid: std::sync::atomic::AtomicU32,
    made: std::sync::atomic::AtomicU32,
}

impl forkprof::ExporterFactory for NotingFactory {
    fn compression(&self) -> Compression {
        Compression::Gzip
    }
    fn create(
        &self,
        ctx: &forkprof::export::ExportContext<'_>,
    ) -> forkprof::Result<Box<dyn forkprof::Exporter>> {
        // getpid and atomics: this runs inside the child's atfork handler.
        self.made_in_pid
            .store(std::process::id(), Ordering::Release);
        self.made.fetch_add(1, Ordering::AcqRel);
        Ok(Box::new(forkprof::export::file::FileExporter::open(
            &self.dir, ctx,
        )?))
    }
}

/// The child's profiler restarts before `fork()` returns in it, so no forkprof call in the
/// child (a `record` from a signal handler above all) ever has to start one; a grandchild
/// forked at once restarts the same way and profiles too.
#[test]
fn a_child_restarts_before_fork_returns_and_so_does_a_grandchild() {
    let _serial = serial();
    let _w = Watchdog::new("restart inside fork", Duration::from_secs(60));
    let dir = TempDir::new("restart-in-fork");
    let factory = Arc::new(NotingFactory {
        dir: dir.path().to_path_buf(),
        made_in_pid: Default::default(),
        made: Default::default(),
    });
    let cfg = Config::builder("restart-in-fork")
        .sample_type("samples", "count")
        .child_policy(ChildPolicy::Restart)
        .exporter(forkprof::ExporterConfig::Custom(factory.clone()))
        .build()
        .unwrap();
    let p = Profiler::start(cfg).unwrap();
    assert_eq!(factory.made.load(Ordering::Acquire), 1);
    let f = [Frame::new("work", "w.rs", 1)];
    // Before anything else in the child: its exporter exists, made in this very process.
    let restarted_here =
        || factory.made_in_pid.load(Ordering::Acquire) == std::process::id() && p.is_running();
    let child = fork_and_run(|| {
        if !restarted_here() {
            return 130;
        }
        let grandchild = fork_and_run(|| {
            if !restarted_here() {
                return 140;
            }
            let ok = p.record(&Sample::new(&f, &[1])).is_ok() && p.stats().samples_recorded == 1;
            match p.stop(Duration::from_secs(10)) {
                Ok(s) if ok && s.samples_recorded == 1 => 0,
                _ => 141,
            }
        });
        let ok = p.record(&Sample::new(&f, &[1])).is_ok() && p.stats().samples_recorded == 1;
        match wait_exit(grandchild, Duration::from_secs(15), "grandchild") {
            Exit::Code(0) => {}
            Exit::Code(c) => return c,
            Exit::Signal(_) => return 133,
        }
        match p.stop(Duration::from_secs(10)) {
            Ok(s) if ok && s.samples_recorded == 1 => 0,
            _ => 131,
        }
    });
    expect_exit_0(child, "child that restarts inside fork");
    // The parent's own exporter was not rebuilt.
    assert_eq!(factory.made.load(Ordering::Acquire), 1);
    assert_eq!(
        factory.made_in_pid.load(Ordering::Acquire),
        std::process::id()
    );
    p.stop(Duration::from_secs(10)).unwrap();
}
