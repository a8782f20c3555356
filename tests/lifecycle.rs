//! Start, record, flush, stop: what lands in the files, read back and checked by go tool pprof.

mod support;

use std::time::Duration;

use forkprof::{Compression, Config, Frame, FrameIds, Label, Profiler, Sample};
use support::*;

fn config(dir: &std::path::Path, compression: Compression) -> Config {
    Config::builder("lifecycle")
        .sample_type("samples", "count")
        .sample_type("wall-time", "nanoseconds")
        .tag("env:test")
        .output_dir(dir, compression)
        .build()
        .unwrap()
}

#[test]
fn samples_are_aggregated_and_written() {
    let _w = Watchdog::new(
        "samples_are_aggregated_and_written",
        Duration::from_secs(30),
    );
    let dir = TempDir::new("agg");
    let p = Profiler::start(config(dir.path(), Compression::Gzip)).unwrap();
    let a = [
        Frame::new("leaf_a", "a.rs", 10),
        Frame::new("main", "main.rs", 1),
    ];
    let b = [
        Frame::new("leaf_b", "b.rs", 20),
        Frame::new("main", "main.rs", 1),
    ];
    let labels = [Label::str("thread", "t1")];
    for _ in 0..100 {
        p.record(&Sample::new(&a, &[1, 1000])).unwrap();
        p.record(&Sample::new(&b, &[1, 500]).labels(&labels))
            .unwrap();
    }
    let f = forkprof::intern("leaf_ids").unwrap();
    let file = forkprof::intern("ids.rs").unwrap();
    let ids = [FrameIds {
        function: f,
        file,
        line: 3,
    }];
    for i in 0..10 {
        p.record(&Sample::with_ids(&ids, &[1, 7]).timestamp_ns(1_700_000_000_000_000_000 + i))
            .unwrap();
    }
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.samples_recorded, 210);
    assert_eq!(stats.profiles_written, 1);
    let profiles = read_profiles(dir.path());
    assert_eq!(profiles.len(), 1);
    let (path, prof) = &profiles[0];
    let name = path.file_name().unwrap().to_string_lossy();
    // Sequence numbers are per process: other tests in this process may have taken some.
    // `lifecycle-<pid>-<stamp>-<seq>.pprof.gz`, the stamp `20261206T192439123456`.
    let prefix = format!("lifecycle-{}-", std::process::id());
    let rest = name
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(".pprof.gz"))
        .and_then(|r| r.split_once('-'));
    assert!(
        rest.is_some_and(|(stamp, seq)| stamp.len() == 21
            && stamp.as_bytes()[8] == b'T'
            && seq.parse::<u64>().is_ok()),
        "{name}"
    );
    let totals = totals_by_stack([prof], 1);
    assert_eq!(totals["leaf_a;main"], 100_000);
    assert_eq!(totals["leaf_b;main"], 50_000);
    assert_eq!(totals["leaf_ids"], 70);
    // aggregated: 2 rows; timeline: 10 individual samples
    assert_eq!(prof.samples.len(), 12);
    assert!(prof
        .comments
        .iter()
        .any(|c| c == &format!("pid:{}", std::process::id())));
    assert!(prof.duration_nanos > 0 && prof.time_nanos > 0);
    let raw = go_pprof_check(path, &["leaf_a", "leaf_b", "leaf_ids"]);
    if let Some(raw) = raw {
        assert!(raw.contains("samples/count"), "{raw}");
    }
}

#[test]
fn deep_stacks_are_truncated_with_a_marker() {
    let dir = TempDir::new("deep");
    let cfg = Config::builder("deep")
        .sample_type("samples", "count")
        .max_stack_depth(8)
        .output_dir(dir.path(), Compression::None)
        .build()
        .unwrap();
    let p = Profiler::start(cfg).unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let frames: Vec<Frame> = names.iter().map(|n| Frame::new(n, "deep.rs", 1)).collect();
    p.record(&Sample::new(&frames, &[1])).unwrap();
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.frames_truncated, 1);
    let profiles = read_profiles(dir.path());
    let totals = totals_by_stack(profiles.iter().map(|(_, p)| p), 0);
    assert_eq!(totals.len(), 1);
    let stack = totals.keys().next().unwrap();
    assert_eq!(stack, "f0;f1;f2;f3;f4;f5;f6;[13 frames omitted]");
    go_pprof_check(&profiles[0].0, &["f0", "frames omitted"]);
}

#[test]
fn wrong_value_count_names_the_field_and_record_after_stop_is_counted() {
    let dir = TempDir::new("bad");
    let p = Profiler::start(config(dir.path(), Compression::Zstd)).unwrap();
    let frames = [Frame::new("f", "g", 1)];
    let err = p.record(&Sample::new(&frames, &[1])).unwrap_err();
    assert!(err.to_string().contains("`values`"), "{err}");
    p.record(&Sample::new(&frames, &[1, 2])).unwrap();
    p.stop(Duration::from_secs(10)).unwrap();
    p.record(&Sample::new(&frames, &[1, 2])).unwrap();
    p.record(&Sample::new(&frames, &[1, 2])).unwrap();
    let s = p.stats();
    assert_eq!(s.samples_ignored, 2);
    let profiles = read_profiles(dir.path());
    assert!(profiles[0].0.to_string_lossy().ends_with(".pprof.zst"));
}

#[test]
fn unwritable_directory_is_a_clear_error() {
    let dir = TempDir::new("ro");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let cfg = Config::builder("x")
        .sample_type("s", "count")
        .output_dir(file.join("sub"), Compression::Gzip)
        .build()
        .unwrap();
    let err = Profiler::start(cfg).err().expect("must fail");
    assert!(err.to_string().contains("output_dir"), "{err}");
}

#[test]
fn flush_sync_writes_now_and_rotation_follows_the_period() {
    let dir = TempDir::new("rot");
    let cfg = Config::builder("rot")
        .sample_type("samples", "count")
        .period(Duration::from_millis(200))
        .drain_interval(Duration::from_millis(10))
        .output_dir(dir.path(), Compression::Gzip)
        .build()
        .unwrap();
    let p = Profiler::start(cfg).unwrap();
    let frames = [Frame::new("tick", "t.rs", 1)];
    p.record(&Sample::new(&frames, &[1])).unwrap();
    p.flush_sync(Duration::from_secs(10)).unwrap();
    assert_eq!(read_profiles(dir.path()).len(), 1);
    // Rotation by period: record, then wait for a profile to appear without flushing.
    p.record(&Sample::new(&frames, &[1])).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.stats().profiles_written < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no rotation within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p.stop(Duration::from_secs(10)).unwrap();
    let total: i64 = totals_by_stack(read_profiles(dir.path()).iter().map(|(_, p)| p), 0)
        .values()
        .sum();
    assert_eq!(total, 2);
}

#[test]
fn stop_for_exit_writes_the_last_file() {
    let _w = Watchdog::new(
        "stop_for_exit_writes_the_last_file",
        Duration::from_secs(30),
    );
    let dir = TempDir::new("stop-for-exit");
    let p = Profiler::start(config(dir.path(), Compression::Gzip)).unwrap();
    let frames = [Frame::new("last_fn", "last.rs", 3)];
    p.record(&Sample::new(&frames, &[1, 1000])).unwrap();
    // Files depend on no remote endpoint: the call returns once the file is written.
    let s = p.stop_for_exit(Duration::from_secs(20)).unwrap();
    assert_eq!(s.profiles_written, 1, "{s:?}");
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pprof.gz"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        p.stop_for_exit(Duration::from_secs(1)).is_err(),
        "already stopped"
    );
}
