//! `forkprof top` on good, garbage, truncated and missing files: the binary, as a user runs it.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use forkprof::{Compression, Config, Frame, Profiler, Sample};
use support::{go_pprof_available, TempDir, Watchdog};

fn forkprof(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forkprof"))
        .args(args)
        .output()
        .expect("run the forkprof binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes one profile with a known shape: `hot` leaf under `main` 3× the value of `cold`.
fn write_profile(dir: &Path, compression: Compression) -> PathBuf {
    write_profile_with(dir, compression, None)
}

/// [`write_profile`], with `default_sample_type` set when `default` is given.
fn write_profile_with(dir: &Path, compression: Compression, default: Option<&str>) -> PathBuf {
    let mut builder = Config::builder("toptest")
        .sample_type("wall-time", "nanoseconds")
        .sample_type("cpu-time", "nanoseconds")
        .output_dir(dir, compression);
    if let Some(d) = default {
        builder = builder.default_sample_type(d);
    }
    let config = builder.build().unwrap();
    let p = Profiler::start(config).unwrap();
    let hot = [Frame::new("hot", "a.rs", 1), Frame::new("main", "m.rs", 1)];
    let cold = [Frame::new("cold", "b.rs", 2), Frame::new("main", "m.rs", 1)];
    for _ in 0..3 {
        p.record(&Sample::new(&hot, &[10_000_000, 1_000_000]))
            .unwrap();
    }
    p.record(&Sample::new(&cold, &[10_000_000, 9_000_000]))
        .unwrap();
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.profiles_written, 1);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

#[test]
fn a_good_file_prints_flat_and_cum_per_sample_type() {
    let _w = Watchdog::new("top good file", Duration::from_secs(60));
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let dir = TempDir::new("top-good");
        let file = write_profile(dir.path(), compression);
        let out = forkprof(&["top", file.to_str().unwrap()]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{compression:?}: {stdout}{}",
            text(&out.stderr)
        );
        assert!(stdout.contains("Type: wall-time"), "{stdout}");
        assert!(stdout.contains("Type: cpu-time"), "{stdout}");
        assert!(stdout.contains("flat%"), "{stdout}");
        // wall-time: hot 30ms of 40ms flat (75%), main 100% cum; hot is listed first.
        let wall = &stdout
            [stdout.find("Type: wall-time").unwrap()..stdout.find("Type: cpu-time").unwrap()];
        let hot_line = wall.lines().find(|l| l.ends_with(" hot")).expect("hot row");
        assert!(
            hot_line.contains("30.00ms") && hot_line.contains("75.00%"),
            "{hot_line}"
        );
        let main_line = wall
            .lines()
            .find(|l| l.ends_with(" main"))
            .expect("main row");
        assert!(main_line.contains("40.00ms 100.00%"), "{main_line}");
        assert!(
            wall.find(" hot").unwrap() < wall.find(" cold").unwrap(),
            "{wall}"
        );
    }
}

#[test]
fn options_pick_the_sample_type_and_the_row_count() {
    let dir = TempDir::new("top-opts");
    let file = write_profile(dir.path(), Compression::Gzip);
    let f = file.to_str().unwrap();
    let out = forkprof(&["top", "--sample-type", "cpu-time", "-n", "1", f]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(!stdout.contains("Type: wall-time"), "{stdout}");
    // cpu-time: cold (9ms) beats hot (3ms); only one row is shown.
    assert!(stdout.contains(" cold"), "{stdout}");
    assert!(!stdout.contains(" hot"), "{stdout}");

    let out = forkprof(&["top", "--sample-type", "alloc-space", f]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(f) && stderr.contains("alloc-space"),
        "{stderr}"
    );
}

fn assert_clean_failure(out: &Output, file: &str, expect: &str) {
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "`{file}` accepted: {}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains(file) && first.contains(expect), "{stderr}");
}

#[test]
fn bad_files_fail_with_one_line_naming_the_file() {
    let dir = TempDir::new("top-bad");
    let garbage = dir.path().join("garbage.pprof");
    std::fs::write(&garbage, b"this is not a profile at all\n").unwrap();
    let g = garbage.to_str().unwrap();
    assert_clean_failure(&forkprof(&["top", g]), g, "not a valid pprof");

    let empty = dir.path().join("empty.pprof");
    std::fs::write(&empty, b"").unwrap();
    let e = empty.to_str().unwrap();
    assert_clean_failure(&forkprof(&["top", e]), e, "not a valid pprof");

    let good_dir = TempDir::new("top-bad-good");
    let good = write_profile(good_dir.path(), Compression::Gzip);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.pprof.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let t = truncated.to_str().unwrap();
    assert_clean_failure(&forkprof(&["top", t]), t, "decompress");

    let missing = dir.path().join("missing.pprof");
    let m = missing.to_str().unwrap();
    assert_clean_failure(&forkprof(&["top", m]), m, "cannot read");

    // A bad file among good ones: the good one is still printed, the exit code says failure.
    let out = forkprof(&["top", m, good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains(" hot"), "{}", text(&out.stdout));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(forkprof(&["top"]).status.code(), Some(2));
    assert_eq!(forkprof(&["top", "-n", "many", "f"]).status.code(), Some(2));
    assert_eq!(forkprof(&["top", "--help"]).status.code(), Some(0));
}

/// The `Type:` line `go tool pprof -top` prints: the type it shows when none is named.
fn go_pprof_type(file: &Path) -> Option<String> {
    if !go_pprof_available() {
        assert!(
            std::env::var_os("FORKPROF_REQUIRE_GO").is_none(),
            "go is required (FORKPROF_REQUIRE_GO set) but not found"
        );
        eprintln!("go not found: skipping the go tool pprof half of this test");
        return None;
    }
    let out = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(file)
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .output()
        .expect("run go tool pprof");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Type: "))
        .expect("a Type: line");
    Some(line["Type: ".len()..].to_string())
}

#[test]
fn go_pprof_and_top_show_the_default_sample_type_first() {
    let _w = Watchdog::new("default sample type", Duration::from_secs(60));
    // Unset: the first configured type (the demo's wall-time); set: the one named, even
    // when it is not the first.
    for (default, want) in [(None, "wall-time"), (Some("cpu-time"), "cpu-time")] {
        let dir = TempDir::new("top-default");
        let file = write_profile_with(dir.path(), Compression::Gzip, default);
        if let Some(ty) = go_pprof_type(&file) {
            assert_eq!(ty, want, "go tool pprof -top");
        }
        let out = forkprof(&["top", file.to_str().unwrap()]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        let first = stdout.lines().find(|l| l.starts_with("Type: ")).unwrap();
        assert_eq!(first, format!("Type: {want} (nanoseconds)"), "{stdout}");
        assert_eq!(
            stdout.matches("Type: ").count(),
            2,
            "every type still listed"
        );
    }
}
