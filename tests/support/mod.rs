//! Shared helpers for the cross-crate scenarios: temp dirs, reading the profiles forkprof
//! wrote, `go tool pprof` checks, and a watchdog for anything that forks.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use forkprof::pprof;

/// A fresh directory under the target dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = std::env::var_os("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!(
            "forkprof-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("FORKPROF_KEEP_TEST_FILES").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Every profile file in `dir` (sorted), decoded.
pub fn read_profiles(dir: &Path) -> Vec<(PathBuf, pprof::Profile)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().unwrap().to_string_lossy().contains(".pprof")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let raw = forkprof::compress::decompress_any(&bytes, 1 << 30).unwrap();
            let prof = pprof::decode(&raw).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, prof)
        })
        .collect()
}

/// Sum of value `idx` per leaf-first stack (function names joined by ';'), over profiles.
pub fn totals_by_stack<'a>(
    profiles: impl IntoIterator<Item = &'a pprof::Profile>,
    idx: usize,
) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for p in profiles {
        for s in &p.samples {
            *out.entry(p.stack_names(s).join(";")).or_insert(0) += s.values[idx];
        }
    }
    out
}

/// `go tool pprof` when the machine has Go (CI installs it); `None` otherwise.
pub fn go_pprof_available() -> bool {
    std::process::Command::new("go")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs `go tool pprof -raw` and `-top` on `file`; both must exit 0. Returns the `-raw` text.
/// With `FORKPROF_REQUIRE_GO=1` (set by ci/test) a missing Go is a failure, not a skip.
pub fn go_pprof_check(file: &Path, expect_functions: &[&str]) -> Option<String> {
    if !go_pprof_available() {
        assert!(
            std::env::var_os("FORKPROF_REQUIRE_GO").is_none(),
            "go is required (FORKPROF_REQUIRE_GO set) but not found"
        );
        eprintln!(
            "go not found: skipping go tool pprof check of {}",
            file.display()
        );
        return None;
    }
    let mut raw = String::new();
    for mode in ["-raw", "-top"] {
        let out = std::process::Command::new("go")
            .args(["tool", "pprof", mode, "-nodefraction=0", "-edgefraction=0"])
            .arg(file)
            .env("PPROF_TMPDIR", std::env::temp_dir())
            .output()
            .expect("run go tool pprof");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "go tool pprof {mode} {} failed: {}\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr),
            text
        );
        for f in expect_functions {
            assert!(
                text.contains(f),
                "go tool pprof {mode} {}: `{f}` missing from:\n{text}",
                file.display()
            );
        }
        if mode == "-raw" {
            raw = text;
        }
    }
    Some(raw)
}

/// Aborts the whole test process with a clear message if `limit` passes before the returned
/// guard is dropped: a deadlock fails fast instead of hanging CI.
pub struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    pub fn new(what: &'static str, limit: Duration) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            let step = Duration::from_millis(20);
            let mut waited = Duration::ZERO;
            while waited < limit {
                if d.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(step);
                waited += step;
            }
            eprintln!("DEADLOCK? watchdog: `{what}` did not finish within {limit:?}; aborting");
            std::process::abort();
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}
