//! The file exporter's retention bound across a pre-fork server's workers: each worker's
//! first profile makes its exporter prune the shared directory, so the directory holds the
//! newest profiles of whichever processes wrote them, and nothing that is not a profile of
//! forkprof's naming is touched.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use forkprof::export::file::is_profile_name;
use forkprof::export::ExporterConfigExt;
use forkprof::{
    ChildPolicy, Compression, Config, ExporterConfig, Frame, Profiler, Retention, Sample,
};
use support::*;

fn profile_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| is_profile_name(n))
        .collect();
    v.sort();
    v
}

fn pid_of(name: &str) -> u32 {
    name.strip_prefix("retention-")
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a profile of this test: {name}"))
}

#[test]
fn workers_keep_the_shared_directory_within_the_bound() {
    let _w = Watchdog::new("file retention across forks", Duration::from_secs(120));
    let dir = TempDir::new("retention");
    std::fs::write(dir.path().join("notes.txt"), b"not a profile").unwrap();
    std::fs::write(dir.path().join("other.pprof"), b"another tool's").unwrap();
    let config = Config::builder("retention")
        .sample_type("samples", "count")
        .output_retention(Retention::files(3))
        .output_dir(dir.path(), Compression::Gzip)
        .child_policy(ChildPolicy::Restart)
        .build()
        .unwrap();
    let p = Profiler::start(config).unwrap();
    let frames = [Frame::new("retained", "retention.rs", 1)];
    p.record(&Sample::new(&frames, &[1])).unwrap();
    p.flush_sync(Duration::from_secs(10)).unwrap();
    assert_eq!(profile_files(dir.path()).len(), 1);

    let mut children = Vec::new();
    for _ in 0..6 {
        let pid = fork_and_run(|| {
            if p.record(&Sample::new(&frames, &[1])).is_err() {
                return 10;
            }
            match p.stop(Duration::from_secs(10)) {
                Ok(s) if s.profiles_written == 1 => 0,
                _ => 11,
            }
        });
        expect_exit_0(pid, "a worker writing one profile");
        children.push(pid as u32);
    }

    let kept = profile_files(dir.path());
    let kept_pids: BTreeSet<u32> = kept.iter().map(|n| pid_of(n)).collect();
    assert_eq!(
        kept_pids,
        children[3..].iter().copied().collect(),
        "the three newest profiles, the last three workers': {kept:?}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("notes.txt")).unwrap(),
        b"not a profile"
    );
    assert!(dir.path().join("other.pprof").exists());
    p.stop(Duration::from_secs(10)).unwrap();
}

#[test]
fn the_retention_is_set_in_either_order_and_only_for_files() {
    let dir = TempDir::new("retention-config");
    let base = || Config::builder("svc").sample_type("samples", "count");
    for b in [
        base()
            .output_retention(Retention::bytes(1 << 20))
            .output_dir(dir.path(), Compression::Gzip),
        base()
            .output_dir(dir.path(), Compression::Gzip)
            .output_retention(Retention::bytes(1 << 20)),
    ] {
        match b.build().unwrap().exporter() {
            ExporterConfig::File { retention, .. } => {
                assert_eq!(*retention, Retention::bytes(1 << 20))
            }
            other => panic!("{other:?}"),
        }
    }
    // Not set: the default bound.
    match base().build().unwrap().exporter() {
        ExporterConfig::File { retention, .. } => assert_eq!(*retention, Retention::DEFAULT),
        other => panic!("{other:?}"),
    }
    let err = base()
        .output_retention(Retention::files(5))
        .exporter(ExporterConfig::from_url("http://127.0.0.1:1"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("output_retention"), "{err}");
}
