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

// ---- fork helpers (tests/fork_*.rs) ----

/// Forks; the child runs `child` and `_exit`s with what it returns (101 if it panicked), so
/// it never returns into the test harness. Returns the child's pid.
pub fn fork_and_run(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs `child` and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Waits for child `pid` at most `limit`. A child still running then is killed and the test
/// fails with a DEADLOCK message naming `what`: a hung child fails fast instead of hanging CI.
pub fn wait_exit(pid: libc::pid_t, limit: Duration, what: &str) -> Exit {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) {
                Exit::Code(libc::WEXITSTATUS(status))
            } else {
                Exit::Signal(libc::WTERMSIG(status))
            };
        }
        assert_eq!(r, 0, "waitpid({pid}): {}", std::io::Error::last_os_error());
        if start.elapsed() > limit {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("DEADLOCK: {what}: child {pid} did not exit within {limit:?} (killed)");
        }
        // Polling a child's exit has no event to wait on without SIGCHLD plumbing; the pause
        // bounds the cost of the poll, it does not order anything.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// [`wait_exit`], asserting the child exited with code 0.
pub fn expect_exit_0(pid: libc::pid_t, what: &str) {
    match wait_exit(pid, Duration::from_secs(20), what) {
        Exit::Code(0) => {}
        other => panic!("{what}: child {pid} ended with {other:?}, expected exit code 0"),
    }
}

/// Serialises the tests of one binary that share process-wide state (pause points, fork
/// counters) when they run as threads of one process (`cargo test`); under nextest every
/// test has its own process and this is uncontended.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The parent's and one child's profiles in `dir`, by the `<service>-<pid>-` file prefix.
pub fn profiles_of(
    profiles: &[(PathBuf, pprof::Profile)],
    service: &str,
    pid: u32,
) -> Vec<pprof::Profile> {
    let prefix = format!("{service}-{pid}-");
    profiles
        .iter()
        .filter(|(p, _)| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with(&prefix))
                .unwrap_or(false)
        })
        .map(|(_, p)| p.clone())
        .collect()
}

/// Sum of value 0 over every sample of `profiles`.
pub fn total_value(profiles: &[pprof::Profile]) -> i64 {
    profiles
        .iter()
        .flat_map(|p| p.samples.iter())
        .map(|s| s.values[0])
        .sum()
}

/// The glibc version as (major, minor); `None` on other C libraries.
pub fn glibc_version() -> Option<(u32, u32)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn gnu_get_libc_version() -> *const libc::c_char;
        }
        // SAFETY: returns a pointer to a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
        let v = v.to_str().ok()?;
        let mut it = v.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some((major, minor))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// A host thread handing `host_work` samples (value 1) to `record` until `stop` is set; it
/// returns how many it handed over. `record` wraps either kind of profiler handle.
pub fn spawn_recorder(
    record: impl Fn(&forkprof::Sample<'_>) + Send + 'static,
    stop: &std::sync::Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        let f = [forkprof::Frame::new("host_work", "h.rs", 1)];
        let mut n = 0u64;
        while !stop.load(Ordering::Acquire) {
            record(&forkprof::Sample::new(&f, &[1]));
            n += 1;
            if n.is_multiple_of(32) {
                std::thread::yield_now();
            }
        }
        n
    })
}

/// The configuration most fork tests share: one `samples`/`count` column, gzip files in `dir`,
/// child policy `policy`.
pub fn file_config(service: &str, dir: &Path, policy: forkprof::ChildPolicy) -> forkprof::Config {
    forkprof::Config::builder(service)
        .sample_type("samples", "count")
        .child_policy(policy)
        .output_dir(dir, forkprof::Compression::Gzip)
        // Every profile is counted: none may be pruned by the default retention.
        .output_retention(forkprof::Retention::UNBOUNDED)
        .build()
        .unwrap()
}

// ---- Linux-only fork helpers: a fork that skips libc, and seccomp filters on one thread ----

/// A fork that runs no atfork handler: `clone` without `CLONE_VM`, straight to the kernel. The
/// child must only do what is safe without its libc knowing it forked, then `_exit`.
#[cfg(target_os = "linux")]
pub fn raw_clone() -> libc::pid_t {
    // SAFETY: a clone without CLONE_VM is a fork that skips libc entirely; callers keep the
    // child to lock-free work and `_exit`.
    unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        ) as libc::pid_t
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
pub const AUDIT_ARCH: u32 = 0xc000_00b7;

/// BPF opcodes the tests' seccomp filters use.
#[cfg(target_os = "linux")]
pub mod bpf {
    pub const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    pub const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    pub const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    pub const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

    pub fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }
}

/// Installs `prog` as a seccomp filter on the calling thread only (no TSYNC).
#[cfg(target_os = "linux")]
pub fn seccomp_on_this_thread(prog: &[libc::sock_filter]) {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with valid arguments; `fprog` points at `prog`, alive for the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}
