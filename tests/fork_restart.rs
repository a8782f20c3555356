//! Children under `Restart` profile themselves; the parent keeps every sample it recorded.

mod support;

use std::time::Duration;

use forkprof::{ChildPolicy, Frame, Profiler, Sample};
use support::*;

fn start(dir: &std::path::Path, policy: ChildPolicy) -> Profiler {
    Profiler::start(file_config("forked", dir, policy)).unwrap()
}

#[test]
fn child_profiles_only_its_own_samples_and_parent_keeps_all() {
    let _w = Watchdog::new(
        "child_profiles_only_its_own_samples",
        Duration::from_secs(60),
    );
    let dir = TempDir::new("restart");
    let p = start(dir.path(), ChildPolicy::Restart);
    let parent_frames = [Frame::new("parent_work", "p.rs", 1)];
    let child_frames = [Frame::new("child_work", "c.rs", 1)];
    for _ in 0..500 {
        p.record(&Sample::new(&parent_frames, &[1])).unwrap();
    }
    let child = fork_and_run(|| {
        for _ in 0..300 {
            p.record(&Sample::new(&child_frames, &[1])).unwrap();
        }
        let s = p.stop(Duration::from_secs(10)).unwrap();
        if s.samples_recorded != 300 || s.profiles_written != 1 || s.pid != std::process::id() {
            return 2;
        }
        0
    });
    for _ in 0..500 {
        p.record(&Sample::new(&parent_frames, &[1])).unwrap();
    }
    expect_exit_0(child, "forked child");
    let s = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(s.samples_recorded, 1000);

    let profiles = read_profiles(dir.path());
    let me = std::process::id();
    let parent: Vec<_> = profiles
        .iter()
        .filter(|(path, _)| path.to_string_lossy().contains(&format!("forked-{me}-")))
        .collect();
    let children: Vec<_> = profiles
        .iter()
        .filter(|(path, _)| path.to_string_lossy().contains(&format!("forked-{child}-")))
        .collect();
    assert_eq!(
        totals_by_stack(parent.iter().map(|(_, p)| p), 0).get("parent_work"),
        Some(&1000)
    );
    let child_totals = totals_by_stack(children.iter().map(|(_, p)| p), 0);
    assert_eq!(child_totals.get("child_work"), Some(&300));
    assert_eq!(
        child_totals.get("parent_work"),
        None,
        "the child must never export the parent's samples"
    );
    assert!(children[0].1.comments.contains(&format!("pid:{child}")));
    go_pprof_check(&children[0].0, &["child_work"]);
}

#[test]
fn disable_policy_child_records_nothing() {
    let _w = Watchdog::new(
        "disable_policy_child_records_nothing",
        Duration::from_secs(60),
    );
    let dir = TempDir::new("disable");
    let p = start(dir.path(), ChildPolicy::Disable);
    let frames = [Frame::new("f", "f.rs", 1)];
    p.record(&Sample::new(&frames, &[1])).unwrap();
    let child = fork_and_run(|| {
        p.record(&Sample::new(&frames, &[1])).unwrap();
        if p.is_running() || p.stats().samples_ignored != 1 {
            return 3;
        }
        0
    });
    expect_exit_0(child, "forked child");
    p.stop(Duration::from_secs(10)).unwrap();
    let profiles = read_profiles(dir.path());
    assert_eq!(profiles.len(), 1);
    assert!(profiles[0]
        .0
        .to_string_lossy()
        .contains(&format!("-{}-", std::process::id())));
}

#[test]
fn grandchildren_restart_too() {
    let _w = Watchdog::new("grandchildren_restart_too", Duration::from_secs(60));
    let dir = TempDir::new("grand");
    let p = start(dir.path(), ChildPolicy::Restart);
    let frames = [Frame::new("gen_work", "g.rs", 1)];
    let child = fork_and_run(|| {
        p.record(&Sample::new(&frames, &[1])).unwrap();
        let grandchild = fork_and_run(|| {
            p.record(&Sample::new(&frames, &[5])).unwrap();
            p.stop(Duration::from_secs(10))
                .map(|s| if s.samples_recorded == 1 { 0 } else { 4 })
                .unwrap_or(5)
        });
        expect_exit_0(grandchild, "forked child");
        p.stop(Duration::from_secs(10))
            .map(|s| if s.samples_recorded == 1 { 0 } else { 6 })
            .unwrap_or(7)
    });
    expect_exit_0(child, "forked child");
    p.stop(Duration::from_secs(10)).unwrap();
    let profiles = read_profiles(dir.path());
    assert_eq!(
        profiles.len(),
        2,
        "child and grandchild each wrote one profile; the parent none"
    );
    let total: i64 = totals_by_stack(profiles.iter().map(|(_, p)| p), 0)
        .values()
        .sum();
    assert_eq!(total, 6);
}
