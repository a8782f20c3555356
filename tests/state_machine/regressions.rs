//! Core bugs the state machine found, each pinned by a plain test that names it.

use std::time::Duration;

use forkprof::{Compression, Config, Frame, Profiler, Sample};

use super::support::{read_profiles, totals_by_stack, TempDir, Watchdog};

fn file_config(dir: &std::path::Path) -> Config {
    Config::builder("regress")
        .sample_type("samples", "count")
        .output_dir(dir, Compression::Gzip)
        .build()
        .unwrap()
}

/// Sequence numbers were per session: a profiler stopped and started again in the same
/// process numbered its profiles from 0 again, and the file exporter overwrote the earlier
/// session's `<service>-<pid>-0` file (its samples lost).
#[test]
fn restarting_in_one_process_keeps_the_earlier_profiles() {
    let _w = Watchdog::new("restarting_in_one_process", Duration::from_secs(60));
    let dir = TempDir::new("regress-seq");
    let frames = [Frame::new("first_session", "a.rs", 1)];
    let p = Profiler::start(file_config(dir.path())).unwrap();
    p.record(&Sample::new(&frames, &[1])).unwrap();
    p.stop(Duration::from_secs(10)).unwrap();
    let frames2 = [Frame::new("second_session", "b.rs", 1)];
    let p = Profiler::start(file_config(dir.path())).unwrap();
    p.record(&Sample::new(&frames2, &[1])).unwrap();
    p.stop(Duration::from_secs(10)).unwrap();
    let profiles = read_profiles(dir.path());
    let totals = totals_by_stack(profiles.iter().map(|(_, p)| p), 0);
    assert_eq!(totals.get("first_session"), Some(&1), "{totals:?}");
    assert_eq!(totals.get("second_session"), Some(&1), "{totals:?}");
    assert_eq!(profiles.len(), 2);
}

/// A forked child numbers its own profiles from 0, whatever the parent had reached.
#[test]
fn a_child_numbers_its_profiles_from_zero() {
    let _w = Watchdog::new(
        "a_child_numbers_its_profiles_from_zero",
        Duration::from_secs(60),
    );
    let dir = TempDir::new("regress-child-seq");
    let frames = [Frame::new("work", "w.rs", 1)];
    let p = Profiler::start(file_config(dir.path())).unwrap();
    for _ in 0..3 {
        p.record(&Sample::new(&frames, &[1])).unwrap();
        p.flush_sync(Duration::from_secs(10)).unwrap();
    }
    // SAFETY: the child records, stops and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = p.record(&Sample::new(&frames, &[1])).is_ok()
            && p.stop(Duration::from_secs(10)).is_ok();
        // SAFETY: ends the child without the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    p.stop(Duration::from_secs(10)).unwrap();
    let me = std::process::id();
    let names: Vec<String> = read_profiles(dir.path())
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // The parent's numbers are process-wide (other tests in this process take some too).
    let parent = names
        .iter()
        .filter(|n| n.starts_with(&format!("regress-{me}-")));
    assert_eq!(parent.count(), 3, "{names:?}");
    let child: Vec<_> = names
        .iter()
        .filter(|n| n.starts_with(&format!("regress-{pid}-")))
        .collect();
    // `regress-<pid>-<stamp>-0.pprof.gz`: the child's first profile.
    assert!(
        child.len() == 1 && child[0].ends_with("-0.pprof.gz"),
        "{names:?}"
    );
}

/// Once any flush had been requested, every empty period rotation queued a placeholder
/// profile. Behind a hung endpoint those placeholders filled the export queue and pushed out
/// the real profiles waiting there (counted dropped, samples lost), and a later `flush_sync`
/// could be answered by a placeholder for a profile that had been dropped.
#[test]
fn empty_rotations_do_not_push_real_profiles_out_of_the_queue() {
    use super::endpoint::{Endpoint, Mode, Outcome};
    use forkprof::ExporterConfig;
    let _w = Watchdog::new("empty_rotations_do_not_push", Duration::from_secs(60));
    let dir = TempDir::new("regress-placeholder");
    let ep = Endpoint::new(dir.path(), "regress");
    let period = Duration::from_millis(5);
    let cfg = Config::builder("regress")
        .sample_type("samples", "count")
        .period(period)
        .max_pending_profiles(4)
        .exporter(ExporterConfig::Custom(ep.factory(Compression::Gzip)))
        .build()
        .unwrap();
    let p = Profiler::start(cfg).unwrap();
    let frames = [Frame::new("before_the_hang", "a.rs", 1)];
    p.record(&Sample::new(&frames, &[1])).unwrap();
    p.flush_sync(Duration::from_secs(10)).unwrap();
    ep.set_mode(Mode::Hung);
    let stuck = [Frame::new("stuck", "a.rs", 2)];
    p.record(&Sample::new(&stuck, &[1])).unwrap();
    super::wait_until("an export hangs", Duration::from_secs(10), || {
        ep.hung() == 1
    })
    .unwrap();
    let queued = [Frame::new("queued", "a.rs", 3)];
    p.record(&Sample::new(&queued, &[1])).unwrap();
    // Let many empty periods pass while the export hangs: nothing new is recorded, so
    // nothing may be pushed out of the queue.
    std::thread::sleep(period * 60);
    ep.set_mode(Mode::Down);
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.profiles_dropped, 0, "{stats:?}");
    let failed: Vec<_> = ep
        .entries()
        .into_iter()
        .filter(|e| !matches!(e.outcome, Outcome::Delivered(_)))
        .flat_map(|e| e.totals.into_keys())
        .collect();
    assert!(failed.iter().any(|k| k.contains("|stuck|")), "{failed:?}");
    assert!(failed.iter().any(|k| k.contains("|queued|")), "{failed:?}");
}

/// `record()` racing `stop()` from other threads: every sample the counters call recorded
/// must be in the last profile; the rest must be counted ignored (none lost in between).
#[test]
fn records_racing_stop_are_exported_or_ignored() {
    use super::endpoint::Endpoint;
    use forkprof::ExporterConfig;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let _w = Watchdog::new("records_racing_stop", Duration::from_secs(120));
    let dir = TempDir::new("regress-race-stop");
    let ep = Endpoint::new(dir.path(), "regress");
    let frames = [Frame::new("racing", "r.rs", 1)];
    let rounds = std::env::var("FORKPROF_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut lost_total = 0;
    for round in 0..rounds {
        let cfg = Config::builder("regress")
            .sample_type("samples", "count")
            .buffer_capacity(64 << 10)
            .exporter(ExporterConfig::Custom(ep.factory(Compression::None)))
            .build()
            .unwrap();
        let p = Profiler::start(cfg).unwrap();
        let go = AtomicBool::new(true);
        let attempted = AtomicU64::new(0);
        let stats = std::thread::scope(|sc| {
            for _ in 0..2 {
                sc.spawn(|| {
                    while go.load(Ordering::Relaxed) {
                        p.record(&Sample::new(&frames, &[1])).unwrap();
                        attempted.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            while attempted.load(Ordering::Relaxed) < 1000 {
                std::hint::spin_loop();
            }
            let stats = p.stop(Duration::from_secs(10)).unwrap();
            go.store(false, Ordering::Relaxed);
            stats
        });
        let after = p.stats();
        let exported: i64 = ep
            .entries()
            .iter()
            .filter(|e| e.pid == std::process::id())
            .flat_map(|e| e.totals.values().map(|v| v[0]).collect::<Vec<_>>())
            .sum();
        let _ = std::fs::remove_dir_all(dir.path());
        let _ = std::fs::create_dir_all(dir.path());
        ep.store().entries.lock().unwrap().clear();
        assert_eq!(
            after.samples_recorded + after.samples_dropped + after.samples_ignored,
            attempted.load(Ordering::Relaxed),
            "round {round}: every record() counted once: {after:?}"
        );
        let lost = after.samples_recorded as i64 - exported;
        assert!(lost >= 0, "round {round}: exported more than recorded");
        lost_total += lost;
        let _ = stats;
    }
    assert_eq!(lost_total, 0, "samples counted recorded but never exported");
}

/// Profiler threads alive in this process, by their names.
fn profiler_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("forkprof-"))
        })
        .count()
}

/// In a child, `stop()` racing the lazy restart that another thread's first call started:
/// the restart could install its fresh session after `stop()` had looked for one, leaving
/// that session's threads running forever behind a stopped profiler.
#[test]
fn stop_racing_the_restart_in_a_child_leaves_no_threads() {
    let _w = Watchdog::new("stop_racing_the_restart", Duration::from_secs(120));
    let dir = TempDir::new("regress-restart-race");
    let frames = [Frame::new("child", "c.rs", 1)];
    let p = Profiler::start(file_config(dir.path())).unwrap();
    let mut leaks = 0;
    for _ in 0..40 {
        // SAFETY: the child runs the race, checks its threads and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let barrier = std::sync::Barrier::new(2);
            std::thread::scope(|sc| {
                sc.spawn(|| {
                    barrier.wait();
                    let _ = p.record(&Sample::new(&frames, &[1]));
                });
                sc.spawn(|| {
                    barrier.wait();
                    let _ = p.stop(Duration::from_secs(5));
                });
            });
            let _ = p.stop(Duration::from_secs(5));
            // Gone for good: no profiler thread in three listings in a row. One listing is not
            // enough: /proc/self/task can skip a live thread while another thread exits.
            let end = std::time::Instant::now() + Duration::from_secs(5);
            let mut zeros = 0;
            while zeros < 3 && std::time::Instant::now() < end {
                zeros = if profiler_threads() == 0 {
                    zeros + 1
                } else {
                    0
                };
                std::thread::sleep(Duration::from_millis(5));
            }
            let code = if zeros >= 3 { 0 } else { 9 };
            // SAFETY: ends the child without the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child {pid}: status {status:#x}");
        match libc::WEXITSTATUS(status) {
            0 => {}
            9 => leaks += 1,
            c => panic!("child {pid} exited with {c}"),
        }
    }
    p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(
        leaks, 0,
        "children left with profiler threads running after stop()"
    );
}

/// Two profilers running side by side in one process (same service, same directory) both
/// restart in a child, and nobody's files overwrite anybody's.
#[test]
fn two_profilers_side_by_side_survive_a_fork() {
    let _w = Watchdog::new("two_profilers_side_by_side", Duration::from_secs(60));
    let dir = TempDir::new("regress-two");
    let a = Profiler::start(file_config(dir.path())).unwrap();
    let b = Profiler::start(file_config(dir.path())).unwrap();
    let fa = [Frame::new("from_a", "a.rs", 1)];
    let fb = [Frame::new("from_b", "b.rs", 1)];
    a.record(&Sample::new(&fa, &[1])).unwrap();
    b.record(&Sample::new(&fb, &[1])).unwrap();
    // SAFETY: the child records on both, stops both and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = a.record(&Sample::new(&fa, &[10])).is_ok()
            && b.record(&Sample::new(&fb, &[10])).is_ok()
            && a.stop(Duration::from_secs(10))
                .is_ok_and(|s| s.samples_recorded == 1)
            && b.stop(Duration::from_secs(10))
                .is_ok_and(|s| s.samples_recorded == 1);
        // SAFETY: ends the child without the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    a.stop(Duration::from_secs(10)).unwrap();
    b.stop(Duration::from_secs(10)).unwrap();
    let profiles = read_profiles(dir.path());
    let of = |p: u32| {
        let ps: Vec<_> = profiles
            .iter()
            .filter(|(path, _)| path.to_string_lossy().contains(&format!("regress-{p}-")))
            .map(|(_, prof)| prof)
            .collect();
        totals_by_stack(ps, 0)
    };
    let parent = of(std::process::id());
    let child = of(pid as u32);
    assert_eq!(
        (parent.get("from_a"), parent.get("from_b")),
        (Some(&1), Some(&1))
    );
    assert_eq!(
        (child.get("from_a"), child.get("from_b")),
        (Some(&10), Some(&10))
    );
}
