//! macOS fork semantics, on Linux and on a Mac.
//!
//! On glibc the scenarios run in a re-executed copy of this binary with
//! `tests/macos_sim/macos_sim.c` preloaded: it gives glibc macOS's atfork behaviour (one
//! non-recursive lock from the first prepare handler to the last parent/child handler,
//! `pthread_atfork` blocked on it, and `getaddrinfo` registering a handler on its first call).
//! On a Mac the same scenarios run natively, against the real Libsystem.
//!
//! - The negative control: a prepare handler that waits for the thread doing the first lookup
//!   (the Datadog PHP profiler's barrier) must deadlock under the simulation, and must not on
//!   plain glibc: proof that the simulation reproduces the macOS hazard.
//! - forkprof's macOS strategy (interception, child-only handler) and its atfork strategy
//!   (glibc's, or the macOS opt-in) fork in loops from two threads while a host thread does
//!   lookups, in one process and in many fresh ones (the registration window is once per
//!   process). Intercepted children profile themselves; unintercepted children under the
//!   macOS strategy turn profiling off without touching anything inherited.
//!
//! Each scenario runs in its own process: the fork strategy is fixed at the first install.
//! Sizes: FORKPROF_MACOS_SIM_FORKS (forks per process) and FORKPROF_MACOS_SIM_PROCESSES.
#![cfg(any(all(target_os = "linux", target_env = "gnu"), target_os = "macos"))]

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::{read_profiles, totals_by_stack, TempDir, Watchdog};

/// Names the scenario the re-executed binary runs.
const SCENARIO_ENV: &str = "FORKPROF_MACOS_SIM_SCENARIO";
/// The scenario's own watchdog fired: something deadlocked.
const EXIT_DEADLOCK: i32 = 86;
/// The simulation library was expected but is not loaded.
const EXIT_NO_SIM: i32 = 87;

/// Entry point of the re-executed binary; a no-op in a normal test run.
#[test]
fn scenario_entry() {
    if let Ok(name) = std::env::var(SCENARIO_ENV) {
        let code = scenario::run(&name);
        std::process::exit(code);
    }
}

// ---------------------------------------------------------------- the driver side

/// On a Mac every variant means the same: the real Libsystem is the simulation.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum Sim {
    /// No preload: plain glibc, or the real Libsystem on a Mac.
    Off,
    /// Preloaded; the first lookup registers its handler only once a fork is in progress.
    AwaitFork,
    /// Preloaded; the first lookup waits this many ms before registering.
    DelayMs(u32),
}

#[cfg(target_os = "linux")]
fn sim_library() -> std::path::PathBuf {
    use std::sync::OnceLock;
    static LIB: OnceLock<std::path::PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/macos_sim/macos_sim.c");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("macos_sim");
        std::fs::create_dir_all(&dir).unwrap();
        // One file per test process: nextest runs tests in parallel processes.
        let out = dir.join(format!("libforkprof_macos_sim-{}.so", std::process::id()));
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(&src)
            .args(["-ldl", "-lpthread"])
            .status()
            .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
        assert!(status.success(), "compiling {} failed", src.display());
        out
    })
    .clone()
}

/// Runs `scenario` in a fresh copy of this binary, LD_PRELOAD set on that process only.
fn run_scenario(scenario: &str, sim: Sim, env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "scenario_entry",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(SCENARIO_ENV, scenario)
    .env_remove("LD_PRELOAD")
    .env_remove("MACOS_SIM_GAI_AWAIT_FORK")
    .env_remove("MACOS_SIM_GAI_DELAY_MS")
    .env_remove(forkprof_backend_macos::ATFORK_OPT_IN_ENV);
    match sim {
        Sim::Off => {}
        #[cfg(target_os = "linux")]
        Sim::AwaitFork => {
            cmd.env("LD_PRELOAD", sim_library())
                .env("MACOS_SIM_GAI_AWAIT_FORK", "1");
        }
        #[cfg(target_os = "linux")]
        Sim::DelayMs(ms) => {
            cmd.env("LD_PRELOAD", sim_library())
                .env("MACOS_SIM_GAI_DELAY_MS", ms.to_string());
        }
        #[cfg(not(target_os = "linux"))]
        Sim::AwaitFork | Sim::DelayMs(_) => {}
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Output goes to files, not pipes: a hung fork child would hold a pipe open and keep the
    // driver waiting after the scenario itself has exited.
    let logs = TempDir::new("macos-sim-log");
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    cmd.stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    // Its own process group, so whatever it leaves behind can be ended with it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("re-run the test binary");
    let status = child.wait().expect("wait for the scenario");
    // SAFETY: signals the process group this test created (the scenario's id), nothing else;
    // ESRCH when the scenario left nothing behind.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stderr\n{}\n--- stdout\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// The scenario's one-line summary (figures), echoed for `--nocapture` runs.
fn summary(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("macos-sim["))
        .collect::<Vec<_>>()
        .join("\n")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn expect_pass(
    scenario: &str,
    sim: Sim,
    dir: &Path,
    forks: usize,
    extra_env: &[(&str, String)],
) -> String {
    let mut env = vec![
        ("FORKPROF_MACOS_SIM_DIR", dir.display().to_string()),
        ("FORKPROF_MACOS_SIM_FORKS", forks.to_string()),
    ];
    env.extend_from_slice(extra_env);
    let out = run_scenario(scenario, sim, &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "scenario {scenario} failed ({} means deadlock, {} means the simulation library did \
         not load): {}",
        EXIT_DEADLOCK,
        EXIT_NO_SIM,
        describe(&out)
    );
    let s = summary(&out);
    assert!(!s.is_empty(), "no summary line: {}", describe(&out));
    eprintln!("{s}");
    s
}

/// How long one scenario process may take before its watchdog calls it a deadlock: generous
/// (a loaded 2-core CI machine forks in ~0.2-5 ms here), and growing with the soak size.
fn scenario_limit(forks: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(50) * forks as u32
}

#[cfg(target_os = "linux")]
#[test]
fn naive_prepare_barrier_deadlocks_under_macos_semantics_only() {
    let _w = Watchdog::new("naive barrier negative control", Duration::from_secs(60));
    let out = run_scenario("naive-barrier", Sim::AwaitFork, &[]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_DEADLOCK),
        "the naive barrier must deadlock under the macOS simulation; if it does not, the \
         simulation is not faithful: {}",
        describe(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("registration blocked by the fork"),
        "the deadlock must be the helper's pthread_atfork waiting on the forking thread: {err}"
    );
    eprintln!(
        "{}",
        err.lines().find(|l| l.contains("watchdog")).unwrap_or("")
    );
    // The same program on plain glibc 2.36, which drops its atfork lock around each prepare
    // handler and registers nothing in getaddrinfo: no deadlock.
    let out = run_scenario(
        "naive-barrier",
        Sim::Off,
        &[("FORKPROF_MACOS_SIM_NAIVE_LIMIT_S", "60".to_string())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    eprintln!("{}", summary(&out));
}

/// Where the scenario's profiles go: tmpfs when there is one, so that the exporter's
/// `fdatasync` (thousands of files) does not wait on a disk shared with other builds.
fn profile_dir(tag: &str) -> TempDir {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = shm.join(format!("forkprof-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::create_dir_all(&dir).is_ok() {
            return TempDir(dir);
        }
    }
    TempDir::new(tag)
}

fn fork_loop(scenario: &str) {
    let forks = env_usize("FORKPROF_MACOS_SIM_FORKS", 150);
    let _w = Watchdog::new("fork loop scenario", scenario_limit(forks) * 2);
    let dir = profile_dir(scenario);
    expect_pass(scenario, Sim::AwaitFork, dir.path(), forks, &[]);
}

fn fresh_processes(scenario: &str) {
    let processes = env_usize("FORKPROF_MACOS_SIM_PROCESSES", 12);
    let forks = 6;
    let _w = Watchdog::new(
        "fresh processes scenario",
        scenario_limit(forks) + Duration::from_secs(2 * processes as u64),
    );
    let t0 = std::time::Instant::now();
    for i in 0..processes {
        let dir = profile_dir(scenario);
        // Half meet the registration with a fork certainly in progress, half after a delay
        // that lets it race the first forks.
        let sim = if i % 2 == 0 {
            Sim::AwaitFork
        } else {
            Sim::DelayMs((i % 5) as u32)
        };
        expect_pass(scenario, sim, dir.path(), forks, &[]);
    }
    eprintln!(
        "{scenario}: {processes} fresh processes x {forks} forks in {:?}",
        t0.elapsed()
    );
}

#[test]
fn macos_strategy_fork_loop() {
    fork_loop("macos-strategy");
}

#[test]
fn macos_strategy_fresh_processes() {
    fresh_processes("macos-strategy");
}

/// The documented opt-in: the macOS backend with prepare/parent/child handlers, under the
/// macOS atfork lock. forkprof's prepare takes only its own brief locks, so it passes; every
/// child, intercepted or not, profiles itself.
#[test]
fn macos_atfork_opt_in_fork_loop() {
    let forks = env_usize("FORKPROF_MACOS_SIM_FORKS", 150);
    let _w = Watchdog::new("opt-in fork loop", scenario_limit(forks) * 2);
    let dir = profile_dir("opt-in");
    let opt_in = [(forkprof_backend_macos::ATFORK_OPT_IN_ENV, "1".to_string())];
    expect_pass(
        "macos-atfork-opt-in",
        Sim::AwaitFork,
        dir.path(),
        forks,
        &opt_in,
    );
}

#[test]
fn atfork_strategy_fork_loop() {
    fork_loop("atfork-strategy");
}

#[test]
fn atfork_strategy_fresh_processes() {
    fresh_processes("atfork-strategy");
}

// ---------------------------------------------------------------- the re-executed side

mod scenario {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use forkprof::{ChildPolicy, Compression, Config, Frame, Platform, Sample};
    use forkprof_core::Profiler;

    use super::{read_profiles, scenario_limit, totals_by_stack, EXIT_DEADLOCK, EXIT_NO_SIM};

    pub fn run(name: &str) -> i32 {
        let limit = if name == "naive-barrier" {
            // Its 5 forks take milliseconds unless it deadlocks, which is what the run under
            // the simulation expects; the run on plain glibc gets a generous limit instead.
            let secs = std::env::var("FORKPROF_MACOS_SIM_NAIVE_LIMIT_S")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3);
            Duration::from_secs(secs)
        } else {
            scenario_limit(forks())
        };
        let _watchdog = ExitWatchdog::start(name, limit);
        if cfg!(target_os = "linux") && sim_stats().is_none() && preload_expected() {
            say("macos-sim: LD_PRELOAD set but the simulation library is not loaded\n");
            return EXIT_NO_SIM;
        }
        match name {
            "naive-barrier" => naive_barrier(),
            "macos-strategy" => strategy(&forkprof_backend_macos::PLATFORM, false),
            "atfork-strategy" => strategy(atfork_platform(), true),
            "macos-atfork-opt-in" => {
                // FORKPROF_MACOS_ATFORK=1 (set by the driver) turns the default macOS platform
                // into the atfork strategy at install.
                let p: &'static dyn Platform = &forkprof_backend_macos::PLATFORM;
                if p.fork_strategy() != forkprof::ForkStrategy::Atfork {
                    return 47;
                }
                strategy(p, true)
            }
            _ => 2,
        }
    }

    fn forks() -> usize {
        std::env::var("FORKPROF_MACOS_SIM_FORKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30)
    }

    fn preload_expected() -> bool {
        std::env::var_os("LD_PRELOAD").is_some()
    }

    #[cfg(target_os = "linux")]
    fn atfork_platform() -> &'static dyn Platform {
        forkprof::platform()
    }

    #[cfg(not(target_os = "linux"))]
    fn atfork_platform() -> &'static dyn Platform {
        &forkprof_backend_macos::PLATFORM_ATFORK
    }

    /// Writes to stderr without Rust's stderr lock (which a vanished thread may hold).
    fn say(msg: &str) {
        // SAFETY: writing a valid buffer to fd 2.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }

    /// `_exit(EXIT_DEADLOCK)` if the scenario has not finished in time.
    struct ExitWatchdog(Arc<AtomicBool>);

    impl ExitWatchdog {
        fn start(name: &str, limit: Duration) -> ExitWatchdog {
            let done = Arc::new(AtomicBool::new(false));
            let d = done.clone();
            let name = name.to_owned();
            std::thread::spawn(move || {
                let end = Instant::now() + limit;
                while Instant::now() < end {
                    if d.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let blocked = match sim_stats() {
                    Some(s) if s.registrations_blocked_by_fork > s.gai_registrations => {
                        ", a getaddrinfo registration blocked by the fork"
                    }
                    _ => "",
                };
                say(&format!(
                    "macos-sim: watchdog: scenario {name} did not finish within {limit:?}{blocked}\n"
                ));
                // SAFETY: ends this process at once, without running anything inherited.
                unsafe { libc::_exit(EXIT_DEADLOCK) };
            });
            ExitWatchdog(done)
        }
    }

    impl Drop for ExitWatchdog {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[repr(C)]
    #[derive(Default, Debug, Clone, Copy)]
    pub struct SimStats {
        pub forks: libc::c_ulong,
        pub registrations: libc::c_ulong,
        pub registrations_blocked: libc::c_ulong,
        pub registrations_blocked_by_fork: libc::c_ulong,
        pub gai_calls: libc::c_ulong,
        pub gai_registrations: libc::c_ulong,
        pub handlers: libc::c_ulong,
    }

    /// The simulation's counters, or `None` when it is not loaded.
    #[cfg(target_os = "linux")]
    pub fn sim_stats() -> Option<SimStats> {
        // SAFETY: looking up a symbol by a NUL-terminated name.
        let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"forkprof_macos_sim_stats".as_ptr()) };
        if f.is_null() {
            return None;
        }
        // SAFETY: the library defines it as `void (struct forkprof_macos_sim_stats *)`, and
        // SimStats has that struct's layout.
        let f: extern "C" fn(*mut SimStats) = unsafe { std::mem::transmute(f) };
        let mut s = SimStats::default();
        f(&mut s);
        Some(s)
    }

    #[cfg(not(target_os = "linux"))]
    pub fn sim_stats() -> Option<SimStats> {
        None
    }

    fn lookup_localhost() {
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated host, null service and hints, a writable result slot.
        let rc = unsafe {
            libc::getaddrinfo(
                c"localhost".as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                &mut res,
            )
        };
        if rc == 0 && !res.is_null() {
            // SAFETY: `res` came from a successful getaddrinfo.
            unsafe { libc::freeaddrinfo(res) };
        }
    }

    /// Forks; the child runs `child` and `_exit`s with its code. Never returns in the child.
    fn in_child(pid: libc::pid_t, child: impl FnOnce() -> i32) {
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
    }

    fn wait_exit_code(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r != pid {
            return -1;
        }
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            1000 + status
        }
    }

    // ---- the negative control: a prepare handler that waits for the lookup thread

    static PAUSE_REQUESTED: AtomicU64 = AtomicU64::new(0);
    static PAUSE_ACKED: AtomicU64 = AtomicU64::new(0);
    static HELPER_LOOKING_UP: AtomicBool = AtomicBool::new(false);

    /// The design the fork protocol forbids (docs/fork-protocol.md, rule 1): prepare waits until the helper thread has parked.
    extern "C" fn naive_prepare() {
        let want = PAUSE_REQUESTED.fetch_add(1, Ordering::AcqRel) + 1;
        while PAUSE_ACKED.load(Ordering::Acquire) < want {
            std::thread::yield_now();
        }
    }

    extern "C" fn naive_after() {}

    fn naive_barrier() -> i32 {
        // SAFETY: 'static extern "C" handlers that never unwind.
        let rc = unsafe {
            libc::pthread_atfork(Some(naive_prepare), Some(naive_after), Some(naive_after))
        };
        if rc != 0 {
            return 3;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let helper = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                let req = PAUSE_REQUESTED.load(Ordering::Acquire);
                if req > PAUSE_ACKED.load(Ordering::Acquire) {
                    PAUSE_ACKED.store(req, Ordering::Release); // "parked at the barrier"
                }
                HELPER_LOOKING_UP.store(true, Ordering::Release);
                lookup_localhost();
            }
        });
        while !HELPER_LOOKING_UP.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let forks = 5;
        for _ in 0..forks {
            // SAFETY: the child only `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return 4;
            }
            in_child(pid, || 0);
            if wait_exit_code(pid) != 0 {
                return 5;
            }
        }
        stop.store(true, Ordering::Release);
        helper.join().unwrap();
        say(&format!(
            "macos-sim[naive-barrier] forks={forks} deadlocks=0 sim={:?}\n",
            sim_stats()
        ));
        0
    }

    // ---- forkprof's strategies

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Kind {
        /// forkprof::fork::fork()
        Wrapper,
        /// before_fork / libc::fork / after_fork_*
        Explicit,
        /// plain libc::fork, nobody told forkprof
        Plain,
    }

    struct ForkRecord {
        pid: libc::pid_t,
        kind: Kind,
        fork_ns: u64,
        /// From the fork call to the child's exit status, in the parent.
        child_ns: u64,
    }

    const CHILD_SAMPLES: u64 = 10;

    /// The child of an observed fork: profiles itself, only its own samples, and exits 0.
    fn observed_child(p: &Profiler) -> i32 {
        let frames = [Frame::new("child_work", "child.rs", 1)];
        for _ in 0..CHILD_SAMPLES {
            if p.record(&Sample::new(&frames, &[1])).is_err() {
                return 10;
            }
        }
        if !p.is_running() {
            return 11;
        }
        match p.stop(Duration::from_secs(30)) {
            Ok(s)
                if s.samples_recorded == CHILD_SAMPLES
                    && s.profiles_written >= 1
                    && s.pid == std::process::id() =>
            {
                0
            }
            Ok(s) => {
                say(&format!(
                    "child {}: unexpected stats {s:?}\n",
                    std::process::id()
                ));
                12
            }
            Err(e) => {
                say(&format!("child {}: stop: {e}\n", std::process::id()));
                13
            }
        }
    }

    /// The child of an unintercepted fork under the macOS strategy: profiling is off, and no
    /// call takes a lock it inherited (another thread may have been inside `before_fork`).
    fn unobserved_child(p: &Profiler, platform: &'static dyn Platform) -> i32 {
        let frames = [Frame::new("child_work", "child.rs", 1)];
        if p.record(&Sample::new(&frames, &[1])).is_err() {
            return 20;
        }
        if p.is_running() || !forkprof::fork::is_unobserved_child() {
            return 21;
        }
        if p.stats().samples_ignored == 0 {
            return 22;
        }
        if p.stop(Duration::from_secs(1)).is_ok() || p.flush().is_ok() {
            return 23;
        }
        if forkprof_core::intern_on(b"late", platform).is_ok() {
            return 24;
        }
        // A host that intercepts forks may fork again from here: that must not wait either.
        match forkprof::fork::fork() {
            Ok(0) => {
                // SAFETY: the grandchild ends at once.
                unsafe { libc::_exit(if p.is_running() { 25 } else { 0 }) };
            }
            Ok(pid) => {
                if wait_exit_code(pid) != 0 {
                    return 26;
                }
            }
            Err(_) => return 27,
        }
        0
    }

    fn fork_once(
        p: &Profiler,
        platform: &'static dyn Platform,
        kind: Kind,
        atfork: bool,
    ) -> Result<ForkRecord, String> {
        let t0 = Instant::now();
        let pid = match kind {
            Kind::Wrapper => forkprof::fork::fork().map_err(|e| format!("fork(): {e}"))?,
            Kind::Explicit => {
                forkprof::fork::before_fork().map_err(|e| format!("before_fork: {e}"))?;
                // SAFETY: the child runs `observed_child` and `_exit`s.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    if forkprof::fork::after_fork_child().is_err() {
                        // SAFETY: ends the child.
                        unsafe { libc::_exit(30) };
                    }
                } else {
                    forkprof::fork::after_fork_parent()
                        .map_err(|e| format!("after_fork_parent: {e}"))?;
                }
                pid
            }
            // SAFETY: the child runs one of the child functions and `_exit`s.
            Kind::Plain => unsafe { libc::fork() },
        };
        let fork_ns = t0.elapsed().as_nanos() as u64;
        if pid < 0 {
            return Err("fork failed".into());
        }
        in_child(pid, || {
            if kind == Kind::Plain && !atfork {
                unobserved_child(p, platform)
            } else {
                observed_child(p)
            }
        });
        let code = wait_exit_code(pid);
        let child_ns = t0.elapsed().as_nanos() as u64;
        if code != 0 {
            return Err(format!(
                "child {pid} (fork kind {}) exited {code}",
                kind as u8
            ));
        }
        Ok(ForkRecord {
            pid,
            kind,
            fork_ns,
            child_ns,
        })
    }

    fn strategy(platform: &'static dyn Platform, atfork: bool) -> i32 {
        let scenario = match (atfork, platform.name()) {
            (false, _) => "macos-strategy",
            (true, "macos") => "macos-atfork-opt-in",
            (true, _) => "atfork-strategy",
        };
        let dir = match std::env::var("FORKPROF_MACOS_SIM_DIR") {
            Ok(d) => std::path::PathBuf::from(d),
            Err(_) => return 40,
        };
        let forks = forks();
        let config = Config::builder("macsim")
            .sample_type("samples", "count")
            .child_policy(ChildPolicy::Restart)
            .output_dir(&dir, Compression::Gzip)
            .build()
            .unwrap();
        let started = Instant::now();
        let p = Profiler::start_on(config, platform).unwrap();

        // A host thread that records and resolves names: its first lookup registers an atfork
        // handler (Libinfo's lazy registration), which the first fork meets.
        let stop = Arc::new(AtomicBool::new(false));
        let lookups = Arc::new(AtomicU64::new(0));
        let helper = {
            let (p, stop, lookups) = (p.clone(), stop.clone(), lookups.clone());
            std::thread::spawn(move || {
                let frames = [Frame::new("helper_lookup", "helper.rs", 1)];
                while !stop.load(Ordering::Acquire) {
                    p.record(&Sample::new(&frames, &[1])).unwrap();
                    HELPER_LOOKING_UP.store(true, Ordering::Release);
                    lookup_localhost();
                    let n = lookups.fetch_add(1, Ordering::Relaxed);
                    if n % 16 == 0 {
                        let _ = forkprof_core::intern_on(b"helper_name", platform);
                    }
                }
            })
        };
        while !HELPER_LOOKING_UP.load(Ordering::Acquire) {
            std::thread::yield_now();
        }

        // Two threads fork at once, cycling through the three ways to fork.
        let kinds = [Kind::Wrapper, Kind::Explicit, Kind::Plain];
        let forker = |offset: usize, count: usize| {
            let p = p.clone();
            move || -> Result<Vec<ForkRecord>, String> {
                (0..count)
                    .map(|i| fork_once(&p, platform, kinds[(i + offset) % 3], atfork))
                    .collect()
            }
        };
        let second = std::thread::spawn(forker(1, forks / 2));
        let first = forker(0, forks - forks / 2)();
        let second = second.join().unwrap();
        stop.store(true, Ordering::Release);
        helper.join().unwrap();
        let mut records = match (first, second) {
            (Ok(mut a), Ok(b)) => {
                a.extend(b);
                a
            }
            (Err(e), _) | (_, Err(e)) => {
                say(&format!("macos-sim[{scenario}] FAILED: {e}\n"));
                return 41;
            }
        };
        let parent = match p.stop(Duration::from_secs(20)) {
            Ok(s) => s,
            Err(e) => {
                say(&format!("macos-sim[{scenario}] parent stop: {e}\n"));
                return 42;
            }
        };

        // Every observed child wrote a profile of its own samples only; unobserved ones none.
        let forks_ms = started.elapsed().as_millis();
        let profiles = read_profiles(&dir);
        // Files are named service-pid-seq.pprof.gz: group them by pid once.
        let mut by_pid: std::collections::HashMap<u32, Vec<&forkprof::pprof::Profile>> =
            std::collections::HashMap::new();
        for (path, prof) in &profiles {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if let Some(pid) = name.split('-').nth(1).and_then(|p| p.parse().ok()) {
                by_pid.entry(pid).or_default().push(prof);
            }
        }
        // Long soaks wrap pid_max: a pid used by two children names two processes' files
        // (and their seq numbers collide), so those children cannot be told apart; skip them.
        let mut uses: std::collections::HashMap<libc::pid_t, usize> =
            std::collections::HashMap::new();
        for r in &records {
            *uses.entry(r.pid).or_default() += 1;
        }
        let mut child_profiles = 0;
        let mut pids_reused = 0;
        for r in &records {
            if uses[&r.pid] > 1 {
                pids_reused += 1;
                continue;
            }
            let mine = by_pid.get(&(r.pid as u32)).cloned().unwrap_or_default();
            let expect_profile = atfork || r.kind != Kind::Plain;
            if !expect_profile {
                if !mine.is_empty() {
                    say(&format!("unobserved child {} wrote a profile\n", r.pid));
                    return 43;
                }
                continue;
            }
            let totals = totals_by_stack(mine.iter().copied(), 0);
            if totals.get("child_work") != Some(&(CHILD_SAMPLES as i64)) || totals.len() != 1 {
                say(&format!("child {} profile totals {totals:?}\n", r.pid));
                return 44;
            }
            child_profiles += 1;
        }
        let parent_totals = totals_by_stack(
            by_pid
                .get(&std::process::id())
                .into_iter()
                .flatten()
                .copied(),
            0,
        );
        if parent_totals.get("helper_lookup").copied() != Some(parent.samples_recorded as i64)
            || parent_totals.contains_key("child_work")
        {
            say(&format!(
                "parent totals {parent_totals:?}, recorded {}\n",
                parent.samples_recorded
            ));
            return 45;
        }

        if let Some(s) = sim_stats() {
            // The collision this scenario exists for must have happened: with AWAIT_FORK the
            // lazy registration waited for a fork in progress.
            let awaited = std::env::var_os("MACOS_SIM_GAI_AWAIT_FORK").is_some();
            if s.gai_registrations != 1 || (awaited && s.registrations_blocked_by_fork == 0) {
                say(&format!("macos-sim[{scenario}] no collision: {s:?}\n"));
                return 46;
            }
        }
        let child_ms_max = records.iter().map(|r| r.child_ns).max().unwrap_or(0) / 1_000_000;
        records.sort_by_key(|r| r.fork_ns);
        let pct = |q: f64| records[((records.len() - 1) as f64 * q) as usize].fork_ns / 1000;
        let count = |k: Kind| records.iter().filter(|r| r.kind == k).count();
        let sim = sim_stats()
            .map(|s| {
                format!(
                    " sim_forks={} sim_registrations={} registrations_blocked_by_fork={} \
                     gai_registrations={}",
                    s.forks, s.registrations, s.registrations_blocked_by_fork, s.gai_registrations
                )
            })
            .unwrap_or_default();
        say(&format!(
            "macos-sim[{scenario}] platform={} forks={} wrapper={} explicit={} plain={} \
             child_profiles={child_profiles} pids_reused={pids_reused} lookups={} \
             parent_samples={} \
             fork_call_us_p50={} p99={} child_ms_max={child_ms_max} forks_ms={forks_ms} \
             checked_ms={}{sim}\n",
            platform.name(),
            records.len(),
            count(Kind::Wrapper),
            count(Kind::Explicit),
            count(Kind::Plain),
            lookups.load(Ordering::Relaxed),
            parent.samples_recorded,
            pct(0.5),
            pct(0.99),
            started.elapsed().as_millis(),
        ));
        0
    }
}
