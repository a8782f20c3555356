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
    assert_eq!(child, [&format!("regress-{pid}-0.pprof.gz")], "{names:?}");
}
