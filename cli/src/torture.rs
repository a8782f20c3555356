//! `forkprof torture`: forks K times from T threads at once while H host threads record
//! samples and the uploader (the real Datadog exporter) is stalled mid-body on a loopback
//! endpoint that never reads or answers; then the same forks with no profiler at all, to
//! compare latencies in one run.
//!
//! What it checks (any failure: exit 1; a hang: exit 3 with a DEADLOCK report):
//! - every child records, flushes every other time, checks its own counters and exits 0;
//! - the parent loses nothing: once the endpoint starts answering and the profiler stops,
//!   the samples in the profiles the endpoint accepted equal the samples the parent recorded,
//!   with no profile dropped or failed (the export queue is sized to hold the whole run);
//! - at least one upload really was stalled mid-body when the endpoint was released.

mod chaos;
mod exporter;
#[cfg(target_os = "linux")]
mod line;
mod server;
#[cfg(target_os = "linux")]
mod signals;
mod watchdog;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use forkprof::{ChildPolicy, Config, ExporterConfig, Frame, Profiler, Sample};

use exporter::{StalledHttpFactory, Tally};
use forkprof_chaos::SharedSlots;
use server::StalledServer;
use watchdog::{Board, Watchdog};

/// The options (their help text is in main.rs, on the subcommand).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Forks per phase.
    #[arg(long, value_name = "K", default_value_t = 2000)]
    forks: usize,
    /// Threads forking at once.
    #[arg(long, value_name = "T", default_value_t = 4)]
    threads: usize,
    /// Host threads recording continuously.
    #[arg(long, value_name = "H", default_value_t = 2)]
    hosts: usize,
    /// Profile rotation period, e.g. 50ms or 1s (a bare number is milliseconds).
    #[arg(long, value_name = "D", default_value = "50ms", value_parser = period)]
    period: Duration,
    /// Child policy.
    #[arg(long, value_name = "P", default_value = "restart")]
    policy: Policy,
    /// Samples each child records.
    #[arg(long, value_name = "N", default_value_t = 10)]
    child_samples: u64,
    /// Seconds without a completed fork before DEADLOCK.
    #[arg(long, value_name = "S", default_value = "10", value_parser = watchdog_seconds)]
    watchdog: Duration,
    /// Self-test of the watchdog: the first child of the profiled phase never exits, so the
    /// run must end in DEADLOCK and exit code 3.
    #[arg(long, hide = true)]
    self_test_hang: bool,
    /// Refused with the reason: the run uploads to its own loopback endpoint.
    #[arg(long, hide = true, value_name = "URL")]
    endpoint: Option<String>,
    /// Fork chaos instead: while the forks happen, other threads start and join threads,
    /// write to stderr, read and set the environment, resolve localhost, allocate, and exit
    /// threads with TLS destructors; every child restarts, records, sometimes forks a
    /// grandchild from a new thread, and stops. Then the same chaos with no profiler.
    /// Uses --forks, --threads and --child-samples; a child hung for --watchdog seconds is a
    /// DEADLOCK (its gdb backtrace is printed).
    #[arg(long)]
    chaos: bool,
    /// Signal sampling instead: samples are recorded from a SIGPROF handler (the process CPU
    /// timer, per-thread CPU timers, then both: three phases sharing --forks) while threads
    /// churn malloc and --threads threads fork; every child and grandchild re-arms its own
    /// timers, records from its handler and stops with its signals still firing. Uses --forks,
    /// --threads and --child-samples; a child hung for --watchdog seconds is a DEADLOCK (its
    /// stage and gdb backtrace are printed).
    #[arg(long, conflicts_with = "chaos")]
    signals: bool,
    /// A process line instead: N generations, each restarting the profiler it inherits,
    /// recording, counting its own mappings, thread-stack guard pages and descriptors
    /// (/proc/self/maps, /proc/self/fd), stopping, starting afresh and forking the next; fails
    /// if the counts grow down the line. A generation stuck for --watchdog seconds is a
    /// DEADLOCK. Linux only.
    #[arg(long, value_name = "N", conflicts_with_all = ["chaos", "signals"])]
    line: Option<u64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Policy {
    Restart,
    Disable,
}

fn period(v: &str) -> Result<Duration, String> {
    parse_duration(v)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "expects a duration such as 50ms or 1s".to_string())
}

fn watchdog_seconds(v: &str) -> Result<Duration, String> {
    match v.parse::<u64>() {
        Ok(0) => Err("--watchdog must be at least 1 second".into()),
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(_) => Err("expects seconds".into()),
    }
}

struct Options {
    forks: usize,
    threads: usize,
    hosts: usize,
    period: Duration,
    policy: ChildPolicy,
    child_samples: u64,
    watchdog: Duration,
    /// Self-test of the watchdog: the first child of the profiled phase never exits.
    hang_one_child: bool,
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "us" => Some(Duration::from_micros(n)),
        _ => None,
    }
}

impl Options {
    fn from_args(a: Args) -> Result<Options, String> {
        if a.endpoint.is_some() {
            return Err("--endpoint is not a torture option: the run uploads through the Datadog exporter to its own loopback endpoint, which it must be able to stall".into());
        }
        if a.threads == 0 || a.forks < a.threads {
            return Err("--forks must be at least --threads, and --threads at least 1".into());
        }
        Ok(Options {
            forks: a.forks,
            threads: a.threads,
            hosts: a.hosts,
            period: a.period,
            policy: match a.policy {
                Policy::Restart => ChildPolicy::Restart,
                Policy::Disable => ChildPolicy::Disable,
            },
            child_samples: a.child_samples,
            watchdog: a.watchdog,
            hang_one_child: a.self_test_hang,
        })
    }
}

/// What one phase measured.
struct Phase {
    /// Fork latency in the parent (fork() call to its return), nanoseconds, sorted.
    latencies: Vec<u64>,
    elapsed: Duration,
    /// Children that did not exit 0, with how they ended.
    failed: Vec<(libc::pid_t, String)>,
    /// fork() calls that failed.
    fork_errors: u64,
    /// Samples the host threads handed to `record()`.
    handed: u64,
    /// Forks started while an upload was in flight.
    during_upload: u64,
    /// Each child's first `record` (the lazy restart of its profiler), nanoseconds, sorted.
    first_record: Vec<u64>,
    /// Resident memory at the end of the phase, KiB (fork copies page tables: it grows with
    /// what is resident).
    rss_kb: Option<u64>,
}

impl Phase {
    fn pct(&self, p: usize) -> u64 {
        if self.latencies.is_empty() {
            return 0;
        }
        self.latencies[((self.latencies.len() - 1) * p) / 100]
    }
    /// Percentile `p` of the children's first `record`, if any child measured one.
    fn first_record_pct(&self, p: usize) -> Option<u64> {
        let v = &self.first_record;
        (!v.is_empty()).then(|| v[((v.len() - 1) * p) / 100])
    }
    fn max(&self) -> u64 {
        self.latencies.last().copied().unwrap_or(0)
    }
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// The child's whole life. Only forkprof calls, the monotonic clock (vDSO, no lock) and a
/// plain store into memory shared with the parent: no printing (the stdout and stderr locks
/// may belong to a thread that does not exist here). forkprof's messages, which its `flush`
/// and `stats` deliver, go through the CLI's logger, which takes no lock (`cli/src/stderr_log.rs`).
fn child(
    p: Option<&Profiler>,
    policy: ChildPolicy,
    samples: u64,
    flush: bool,
    first_record: (&SharedSlots, usize),
) -> i32 {
    let Some(p) = p else {
        return 0;
    };
    if policy == ChildPolicy::Disable {
        // Every child would say, at info, that it does not profile because the run chose
        // `--policy disable`: thousands of identical lines. Its warnings and errors still show.
        crate::stderr_log::cap(log::LevelFilter::Warn);
    }
    let frames = [
        Frame::new("torture_child_work", "torture.rs", 2),
        Frame::new("torture_child_main", "torture.rs", 1),
    ];
    for i in 0..samples {
        let t = Instant::now();
        if p.record(&Sample::new(&frames, &[1])).is_err() {
            return 10;
        }
        if i == 0 {
            first_record
                .0
                .set(first_record.1, t.elapsed().as_nanos() as u64);
        }
    }
    let flushed = p.flush();
    let s = p.stats();
    match policy {
        ChildPolicy::Restart => {
            if flush && flushed.is_err() {
                return 11;
            }
            if s.samples_recorded + s.samples_dropped != samples || s.pid != std::process::id() {
                return 12;
            }
        }
        ChildPolicy::Disable => {
            if p.is_running() || flushed.is_ok() || s.samples_ignored < samples {
                return 13;
            }
        }
    }
    0
}

fn describe(status: libc::c_int) -> Option<String> {
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => None,
            c => Some(format!("exit code {c}")),
        }
    } else if libc::WIFSIGNALED(status) {
        Some(format!("signal {}", libc::WTERMSIG(status)))
    } else {
        Some(format!("status {status:#x}"))
    }
}

fn run_phase(
    name: &'static str,
    o: &Options,
    profiler: Option<&Profiler>,
    tally: Option<&Arc<Tally>>,
) -> Phase {
    let stop_hosts = Arc::new(AtomicBool::new(false));
    let hosts: Vec<_> = (0..o.hosts)
        .map(|h| {
            let (p, stop) = (profiler.cloned(), stop_hosts.clone());
            std::thread::spawn(move || {
                let tid = h as i64;
                let frames = [
                    Frame::new("torture_host_work", "torture.rs", 20),
                    Frame::new("torture_host_loop", "torture.rs", 10),
                    Frame::new("torture_host_main", "torture.rs", 1),
                ];
                let labels = [forkprof::Label::num("thread id", tid)];
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let sample = Sample::new(&frames, &[1]).labels(&labels);
                    match &p {
                        Some(p) => p.record(&sample).expect("a valid sample"),
                        None => {
                            std::hint::black_box(&sample);
                        }
                    }
                    n += 1;
                    if n.is_multiple_of(32) {
                        std::thread::yield_now();
                    }
                }
                n
            })
        })
        .collect();

    let board = Board::new(o.threads);
    let _dog = Watchdog::start(
        name,
        board.clone(),
        o.watchdog,
        profiler.cloned(),
        tally.cloned(),
    );
    let go = Arc::new(Barrier::new(o.threads));
    let slots = SharedSlots::new(if profiler.is_some() { o.forks } else { 0 });
    let t0 = Instant::now();
    let forkers: Vec<_> = (0..o.threads)
        .map(|t| {
            let n = o.forks / o.threads + usize::from(t < o.forks % o.threads);
            let (p, tally, board, go, slots) = (
                profiler.cloned(),
                tally.cloned(),
                board.clone(),
                go.clone(),
                slots.clone(),
            );
            let (policy, samples) = (o.policy, o.child_samples);
            let hang = o.hang_one_child && profiler.is_some() && t == 0;
            let threads = o.threads;
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(n);
                let mut failed = Vec::new();
                let (mut fork_errors, mut during_upload) = (0u64, 0u64);
                go.wait();
                for i in 0..n {
                    board.forking(t);
                    if tally
                        .as_ref()
                        .is_some_and(|t| t.in_flight.load(Ordering::Acquire))
                    {
                        during_upload += 1;
                    }
                    let f0 = Instant::now();
                    // SAFETY: the child runs only `child` (forkprof calls and atomics) and
                    // `_exit`s.
                    let pid = unsafe { libc::fork() };
                    if pid == 0 {
                        if hang && i == 0 {
                            loop {
                                // SAFETY: blocks until a signal (the watchdog's SIGKILL).
                                unsafe { libc::pause() };
                            }
                        }
                        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let slot = (&slots, t + i * threads);
                            child(p.as_ref(), policy, samples, (i + t) % 2 == 0, slot)
                        }))
                        .unwrap_or(101);
                        // SAFETY: ends the child without the parent's atexit handlers.
                        unsafe { libc::_exit(code) };
                    }
                    let took = f0.elapsed();
                    if pid < 0 {
                        fork_errors += 1;
                        board.done(t);
                        continue;
                    }
                    lat.push(took.as_nanos() as u64);
                    board.waiting(t, pid);
                    let mut status = 0;
                    // SAFETY: reaping our own child; the watchdog covers a child that hangs.
                    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                    if r != pid {
                        failed.push((pid, format!("waitpid: {}", std::io::Error::last_os_error())));
                    } else if let Some(why) = describe(status) {
                        failed.push((pid, why));
                    }
                    board.done(t);
                }
                (lat, failed, fork_errors, during_upload)
            })
        })
        .collect();
    let mut phase = Phase {
        latencies: Vec::with_capacity(o.forks),
        elapsed: Duration::ZERO,
        failed: Vec::new(),
        fork_errors: 0,
        handed: 0,
        during_upload: 0,
        first_record: Vec::new(),
        rss_kb: None,
    };
    for f in forkers {
        let (lat, failed, errors, during) = f.join().expect("forking thread");
        phase.latencies.extend(lat);
        phase.failed.extend(failed);
        phase.fork_errors += errors;
        phase.during_upload += during;
    }
    phase.elapsed = t0.elapsed();
    stop_hosts.store(true, Ordering::Release);
    phase.handed = hosts
        .into_iter()
        .map(|h| h.join().expect("host thread"))
        .sum();
    phase.latencies.sort_unstable();
    phase.first_record = slots.collect();
    phase.first_record.sort_unstable();
    phase.rss_kb = rss_kb();
    phase
}

/// VmRSS of this process, where /proc has it.
pub(crate) fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

/// Children that upload to the stalled endpoint hold a connection each until they exit;
/// raise the descriptor limit to its hard cap so a long run never runs out.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

pub fn main(args: Args) -> i32 {
    #[cfg(target_os = "linux")]
    {
        if let Some(depth) = args.line {
            return line::main(depth, args.watchdog);
        }
        if args.signals {
            return signals::main(signals::SignalArgs {
                forks: args.forks as u64,
                threads: args.threads,
                child_samples: args.child_samples,
                child_limit: args.watchdog,
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    if args.line.is_some() || args.signals {
        crate::usage_error(
            "torture",
            "--signals and --line are Linux-only (per-thread CPU timers, /proc)",
        );
    }
    if args.chaos {
        return chaos::main(chaos::ChaosArgs {
            forks: args.forks as u64,
            threads: args.threads,
            child_samples: args.child_samples.clamp(1, u32::MAX as u64) as u32,
            child_limit: args.watchdog,
        });
    }
    let o = match Options::from_args(args) {
        Ok(o) => o,
        Err(e) => crate::usage_error("torture", e),
    };
    raise_fd_limit();
    let policy = match o.policy {
        ChildPolicy::Restart => "restart",
        ChildPolicy::Disable => "disable",
    };
    println!(
        "forkprof torture: {} forks per phase from {} threads at once, {} host threads recording, child policy {policy}, period {:?}, platform {}",
        o.forks,
        o.threads,
        o.hosts,
        o.period,
        forkprof::platform().name()
    );

    // The endpoint first, so its thread exists in every phase and only the profiler differs.
    let server = match StalledServer::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("forkprof torture: cannot start the loopback endpoint: {e}");
            return 1;
        }
    };

    // 1. Bare: no profiler has started in this process, so no fork handler is even installed.
    let bare = run_phase("bare", &o, None, None);

    // 2. Profiled, with the upload stalled.
    let tally = Arc::new(Tally::default());
    let factory = match StalledHttpFactory::new(server.addr, tally.clone()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("forkprof torture: cannot build the uploader: {e}");
            return 1;
        }
    };
    let config = Config::builder("forkprof-torture")
        .sample_type("samples", "count")
        .tag("run:torture")
        .period(o.period)
        .child_policy(o.policy)
        // Room for every profile of the run: a dropped profile would hide lost samples.
        .max_pending_profiles(1 << 20)
        .exporter(ExporterConfig::Custom(Arc::new(factory)))
        .build();
    let profiler = match config.and_then(Profiler::start) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("forkprof torture: cannot start the profiler: {e}");
            return 1;
        }
    };
    // Wait for the first upload to be stuck, so every fork below meets a stalled upload.
    let warm = Instant::now();
    let frames = [Frame::new("torture_warmup", "torture.rs", 1)];
    // The first profile is made large (timestamped samples are kept one by one), so its
    // upload cannot fit in the endpoint's small receive buffer and stalls mid-body.
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let mut warmup = 0u64;
    for i in 0..30_000i64 {
        profiler
            .record(&Sample::new(&frames, &[1]).timestamp_ns(t0 + i * 977))
            .expect("a valid sample");
        warmup += 1;
    }
    let _ = profiler.flush();
    while !tally.in_flight.load(Ordering::Acquire) && warm.elapsed() < Duration::from_secs(10) {
        profiler
            .record(&Sample::new(&frames, &[1]))
            .expect("a valid sample");
        warmup += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "uploads go to {} (accepts, never answers); first upload stalled after {:?}",
        server.addr,
        warm.elapsed()
    );
    let profiled = run_phase("profiled", &o, Some(&profiler), Some(&tally));
    let state = forkprof::fork::state();

    // 3. The endpoint starts answering; stopping delivers every queued profile.
    let stalled_for = warm.elapsed();
    server.answer();
    let stats = profiler.stop(Duration::from_secs(120));

    // 4. Stopped: the handlers stay installed (no-ops with no profiler running) and the
    // process keeps what the profiler's threads left behind (their malloc arenas and
    // mappings). Profiled minus stopped is the fork protocol's own share of the cost; stopped
    // minus bare is what having had two more threads costs any fork on this libc.
    let stopped = run_phase("stopped", &o, None, None);

    let mut failures = Vec::new();
    println!();
    println!(
        "{:<10} {:>6} {:>9} {:>12} {:>12} {:>12} {:>8} {:>10}",
        "phase", "forks", "forks/s", "p50", "p99", "max", "failed", "rss"
    );
    for (name, ph) in [
        ("bare", &bare),
        ("profiled", &profiled),
        ("stopped", &stopped),
    ] {
        println!(
            "{:<10} {:>6} {:>9.0} {:>12} {:>12} {:>12} {:>8} {:>10}",
            name,
            ph.latencies.len(),
            ph.rate(),
            us(ph.pct(50)),
            us(ph.pct(99)),
            us(ph.max()),
            ph.failed.len() + ph.fork_errors as usize,
            ph.rss_kb
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into())
        );
        for (pid, why) in ph.failed.iter().take(10) {
            println!("  {name} child {pid} failed: {why}");
        }
        if !ph.failed.is_empty() || ph.fork_errors > 0 {
            failures.push(format!(
                "{name}: {} children failed, {} forks failed",
                ph.failed.len(),
                ph.fork_errors
            ));
        }
    }
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    println!(
        "profiled / bare: p50 {:.2}x, p99 {:.2}x (p99 {:+.1} µs), max {:.2}x",
        ratio(profiled.pct(50), bare.pct(50)),
        ratio(profiled.pct(99), bare.pct(99)),
        (profiled.pct(99) as f64 - bare.pct(99) as f64) / 1000.0,
        ratio(profiled.max(), bare.max()),
    );
    println!(
        "profiled / stopped (the protocol's share): p50 {:.2}x, p99 {:.2}x",
        ratio(profiled.pct(50), stopped.pct(50)),
        ratio(profiled.pct(99), stopped.pct(99)),
    );
    let restarts = matches!(o.policy, ChildPolicy::Restart);
    if let (true, Some(p50), Some(p99)) = (
        restarts,
        profiled.first_record_pct(50),
        profiled.first_record_pct(99),
    ) {
        println!(
            "child's first record (its profiler's restart): p50 {}, p99 {}, max {} over {} children (goal: p50 <= 1 ms)",
            us(p50),
            us(p99),
            us(profiled.first_record_pct(100).unwrap_or(0)),
            profiled.first_record.len()
        );
    }
    println!(
        "forks that met a stalled upload: {} of {}; the upload stayed stalled {:.1} s",
        profiled.during_upload,
        profiled.latencies.len(),
        stalled_for.as_secs_f64()
    );
    println!(
        "children: {} forked, {} exited 0, {} failed",
        profiled.latencies.len(),
        profiled.latencies.len() - profiled.failed.len(),
        profiled.failed.len()
    );
    println!("fork state after the profiled phase: {state:?}");
    if state.in_flight != 0 {
        failures.push(format!("{} prepares still in flight", state.in_flight));
    }
    let c = &server.counters;
    println!(
        "endpoint: {} connections accepted ({} from children that exited mid-upload), {} answered, {} held mid-body until released",
        c.accepted.load(Ordering::Relaxed),
        c.peers_gone.load(Ordering::Relaxed),
        c.answered.load(Ordering::Relaxed),
        c.held_mid_body.load(Ordering::Relaxed)
    );
    if c.held_mid_body.load(Ordering::Relaxed) == 0 {
        failures.push(
            "no upload was stalled mid-body: the run did not test what it claims".to_string(),
        );
    }

    match stats {
        Ok(s) => {
            let handed = profiled.handed + warmup;
            let delivered = tally.delivered_samples.load(Ordering::Relaxed);
            let lost = s.samples_recorded as i64 - delivered as i64;
            println!(
                "parent samples: {} handed to record(), {} recorded, {} dropped (buffer full), {} in the profiles the endpoint accepted: {lost} lost",
                handed, s.samples_recorded, s.samples_dropped, delivered
            );
            println!(
                "parent profiles: {} delivered, {} failed, {} dropped from the queue, {} undecodable",
                s.profiles_written,
                s.profiles_failed,
                s.profiles_dropped,
                tally.undecodable.load(Ordering::Relaxed)
            );
            if s.samples_recorded + s.samples_dropped + s.samples_too_large != handed {
                failures.push(format!(
                    "{handed} samples handed over but {} recorded + {} dropped",
                    s.samples_recorded, s.samples_dropped
                ));
            }
            if lost != 0 {
                failures.push(format!(
                    "{lost} recorded parent samples missing from the delivered profiles"
                ));
            }
            if s.profiles_failed != 0
                || s.profiles_dropped != 0
                || tally.undecodable.load(Ordering::Relaxed) != 0
            {
                failures.push("parent profiles failed, dropped or undecodable".into());
            }
        }
        Err(e) => failures.push(format!("stopping the profiler: {e}")),
    }
    drop(server);

    if failures.is_empty() {
        println!("RESULT: ok");
        0
    } else {
        println!("RESULT: FAILED");
        for f in &failures {
            println!("  {f}");
        }
        1
    }
}
