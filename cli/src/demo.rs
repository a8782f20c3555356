//! `forkprof demo`: a pre-fork server profiled across `fork()`.
//!
//! The master starts the profiler (child policy `Restart`, file exporter), then forks its
//! workers with a plain `libc::fork()`, as Swoole, gunicorn or php-fpm do: no forkprof call
//! around the fork, only the atfork handlers forkprof registered. Each worker serves generated
//! requests through real CPU work (see `demo/work.rs`), keeps a shadow stack of named frames
//! and samples it at 100 Hz at safe points (see `demo/shadow.rs`). Its first `record()` after
//! the fork gives it its own profiler session; at the end it stops the profiler, which writes
//! its last profile, and exits. The master supervises (progress, exit statuses, a watchdog),
//! stops its own profiler and prints what each process recorded, read back from the files.

mod board;
mod shadow;
mod work;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use forkprof::export::ExporterConfigExt;
use forkprof::pprof::top::{sample_type_index, top, Top};
use forkprof::{ChildPolicy, Compression, Config, ExporterConfig, Label, Profiler, SampleType};

use board::{Board, Slot};
use shadow::{frame, safepoint, Func, Sampler, Ticker};

const SERVICE: &str = "forkprof-demo";
/// 100 Hz sampling.
const TICK_INTERVAL: Duration = Duration::from_millis(10);
/// How long a process waits for its profiler to write the last profile.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit codes of a worker that failed (`0` is success).
const EXIT_WORKER_FAILED: i32 = 1;
const EXIT_WORKER_PANICKED: i32 = 70;

/// The options (their help text is in main.rs, on the subcommand).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Worker processes (1 to 256).
    #[arg(long, value_name = "N", default_value = "4", value_parser = workers)]
    workers: usize,
    /// How long the workers serve requests, in seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    duration: Duration,
    /// Where profiles (and flame.svg) are written.
    #[arg(long, value_name = "DIR", default_value = "./forkprof-demo-profiles")]
    out: PathBuf,
    /// Profile rotation period, in seconds (a last profile is written at stop).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    period: Duration,
    /// Kill a worker still running this many seconds after --duration.
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = seconds)]
    watchdog: Duration,
    /// Upload instead of writing files: http://host:8126 or unix:///path (a Datadog agent),
    /// pyroscope+http://host:4040 (Pyroscope).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
}

fn workers(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!("`{v}` is not between 1 and 256")),
    }
}

fn seconds(v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("`{v}` is not a positive number of seconds")),
    }
}

pub fn main(o: Args) -> i32 {
    match run(&o) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("forkprof demo: {e}");
            1
        }
    }
}

/// What became of a worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Running,
    Exited(i32),
    Signaled(i32),
    /// Still running at the watchdog deadline: killed.
    KilledByWatchdog,
    ForkFailed(String),
    /// `waitpid` failed: the process is not ours to wait for any more.
    Lost(String),
}

struct Worker {
    index: usize,
    pid: i32,
    outcome: Outcome,
}

/// A pthread id as a label value: stable for the thread's life and available everywhere.
fn thread_id() -> i64 {
    // SAFETY: pthread_self has no preconditions.
    (unsafe { libc::pthread_self() }) as usize as i64
}

fn run(o: &Args) -> Result<i32, String> {
    let started = SystemTime::now();
    shadow::intern_all().map_err(|e| format!("cannot intern the demo's names: {e}"))?;
    let wall = || SampleType::new("wall-time", "nanoseconds");
    let builder = Config::builder(SERVICE)
        .sample_type("wall-time", "nanoseconds")
        .sample_type("cpu-time", "nanoseconds")
        .sampling_period(wall(), TICK_INTERVAL.as_nanos() as i64)
        .period(o.period);
    let builder = match &o.endpoint {
        Some(url) => builder.exporter(ExporterConfig::from_url(url)),
        None => builder.output_dir(&o.out, Compression::Gzip),
    };
    let config = builder
        .tag(format!("workers:{}", o.workers))
        .child_policy(ChildPolicy::Restart)
        .build()
        .map_err(|e| e.to_string())?;
    let profiler = Profiler::start(config).map_err(|e| format!("cannot start: {e}"))?;
    let board = Board::new(o.workers).map_err(|e| format!("cannot map shared counters: {e}"))?;
    let master_labels = vec![
        Label::str("role", "master"),
        Label::num("thread id", thread_id()),
    ];
    shadow::install(Sampler::new(profiler.clone(), master_labels, None));
    let ticker =
        Ticker::start(TICK_INTERVAL).map_err(|e| format!("cannot start the ticker: {e}"))?;
    let master_pid = std::process::id() as i32;
    let destination = match &o.endpoint {
        Some(url) => format!("uploaded to {url}"),
        None => format!("in {}", o.out.display()),
    };
    println!(
        "forkprof demo: master pid {master_pid}, {} workers for {:.1}s, profiles {destination}",
        o.workers,
        o.duration.as_secs_f64(),
    );

    let start = Instant::now();
    let deadline = start + o.duration;
    let workers = {
        let _f = frame!(Func::MasterMain);
        let mut workers = spawn_workers(o.workers, &profiler, board, deadline);
        supervise(&mut workers, board, start, deadline + o.watchdog);
        workers
    };
    ticker.stop();
    shadow::uninstall();
    let master_stop = profiler.stop(STOP_TIMEOUT);
    forkprof::drain_messages();
    println!("workers done after {:.1}s", start.elapsed().as_secs_f64());

    // One row per process, master first.
    let mut rows = Vec::new();
    let mut master = Row::new(master_pid, "master".into());
    match master_stop {
        Ok(stats) => {
            master.samples = stats.samples_recorded;
            master.dropped = stats.samples_dropped;
            master.profiles = stats.profiles_written;
        }
        Err(e) => master.problems.push(format!("profiler stop failed: {e}")),
    }
    rows.push(master);
    for w in &workers {
        let mut r = Row::new(w.pid, format!("worker {}", w.index));
        let slot = board.slot(w.index);
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Acquire);
        // A worker that never stopped its profiler did not report what it accepted: show
        // what its sampler handed over until it died.
        r.samples = if load(&slot.stopped) == 1 {
            load(&slot.recorded)
        } else {
            load(&slot.samples)
        };
        r.dropped = load(&slot.dropped);
        r.profiles = load(&slot.profiles);
        match &w.outcome {
            Outcome::Exited(0) => {}
            Outcome::Exited(c) => r.problems.push(format!("exited with status {c}")),
            Outcome::Signaled(s) => r.problems.push(format!("killed by signal {s}")),
            Outcome::KilledByWatchdog => r.problems.push(format!(
                "still running {:.1}s after the end: killed by the watchdog",
                o.watchdog.as_secs_f64()
            )),
            Outcome::ForkFailed(e) => r.problems.push(format!("fork failed: {e}")),
            Outcome::Lost(e) => r.problems.push(format!("waitpid failed: {e}")),
            Outcome::Running => r.problems.push("never reaped".into()),
        }
        if w.pid > 0 && load(&slot.stopped) != 1 && r.problems.is_empty() {
            r.problems
                .push("exited without stopping its profiler cleanly".into());
        }
        rows.push(r);
    }
    for r in rows.iter_mut() {
        if r.pid <= 0 {
            continue;
        }
        match &o.endpoint {
            None => r.read_back(&o.out, started),
            // Nothing local to read back: the endpoint has the profiles.
            Some(_) if r.profiles == 0 && r.problems.is_empty() => r
                .problems
                .push("uploaded no profile (forkprof's messages on stderr say why)".into()),
            Some(_) => {}
        }
    }
    let mut code = print_summary(&rows, &o.out, o.endpoint.as_deref());
    if o.endpoint.is_none() && flame_graph(&rows, &o.out).is_err() {
        code = 1;
    }
    Ok(code)
}

/// Writes `flame.svg` beside the profiles: every worker's wall time merged into one graph
/// (the master only supervises: its idle loop would take a fifth of the picture).
fn flame_graph(rows: &[Row], dir: &Path) -> Result<(), ()> {
    let files: Vec<PathBuf> = rows
        .iter()
        .filter(|r| r.role != "master")
        .flat_map(|r| r.files.iter().cloned())
        .collect();
    if files.is_empty() {
        println!("FAILED: no worker profile to draw a flame graph of");
        return Err(());
    }
    let workers = rows.iter().filter(|r| r.role != "master").count();
    let title = format!("forkprof demo: {workers} forked workers, wall time");
    let drawn = crate::flame::draw(&crate::flame::Request {
        files: &files,
        before: None,
        sample_type: Some("wall-time"),
        pids: &[],
        services: &[],
        title: Some(&title),
        normalize: false,
        width: 1200,
    });
    let path = dir.join("flame.svg");
    let written =
        drawn.and_then(|d| crate::flame::write_atomically(&path, d.svg.as_bytes()).map(|()| d));
    match written {
        Ok(d) => {
            let shown = std::fs::canonicalize(&path).unwrap_or(path);
            println!(
                "flame graph of the workers ({} frames, {:.1} KiB): {}",
                d.frames,
                d.svg.len() as f64 / 1024.0,
                shown.display()
            );
            println!("open it in a browser: hover for values, click to zoom, Ctrl+F to search");
            Ok(())
        }
        Err(e) => {
            println!("FAILED: flame graph: {e}");
            Err(())
        }
    }
}

fn spawn_workers(
    n: usize,
    profiler: &Profiler,
    board: &'static Board,
    deadline: Instant,
) -> Vec<Worker> {
    let _f = frame!(Func::SpawnWorkers);
    let mut workers = Vec::with_capacity(n);
    for index in 0..n {
        safepoint();
        // Anything buffered would be written twice: once by us, once by the child.
        let _ = std::io::stdout().flush();
        // SAFETY: fork() in a process whose other threads (the ticker and the profiler's
        // collector and uploader) hold no lock the child needs: forkprof's atfork handlers
        // take its own locks around the fork, and the child only runs `worker_process`,
        // which never returns into the master's code.
        let pid = unsafe { libc::fork() };
        match pid {
            0 => worker_process(index, profiler, board.slot(index), deadline),
            -1 => workers.push(Worker {
                index,
                pid: -1,
                outcome: Outcome::ForkFailed(std::io::Error::last_os_error().to_string()),
            }),
            pid => {
                println!("worker {index} started: pid {pid}");
                workers.push(Worker {
                    index,
                    pid,
                    outcome: Outcome::Running,
                })
            }
        }
    }
    workers
}

/// The forked child: runs the worker and exits with its status, never returning.
fn worker_process(index: usize, profiler: &Profiler, slot: &'static Slot, deadline: Instant) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_worker(index, profiler, slot, deadline)
    }))
    .unwrap_or(EXIT_WORKER_PANICKED);
    // A child whose profiler could not restart answers `stop` with an error before delivering
    // anything: what it queued (why it could not restart) is handed over here.
    forkprof::drain_messages();
    let _ = std::io::stdout().flush();
    // SAFETY: `_exit` ends this child only, without running the master's atexit handlers or
    // destructors of state the child merely inherited.
    unsafe { libc::_exit(code) }
}

fn run_worker(index: usize, profiler: &Profiler, slot: &'static Slot, deadline: Instant) -> i32 {
    use std::sync::atomic::Ordering::Release;
    // A fresh VM stack and sampler; the master's sampler (and its ticker, whose thread does not
    // exist here) are inherited memory, left alone.
    shadow::reset_stack();
    let labels = vec![
        Label::str("role", "worker"),
        Label::num("worker id", index as i64),
        Label::num("thread id", thread_id()),
    ];
    if let Some(inherited) =
        shadow::install(Sampler::new(profiler.clone(), labels, Some(&slot.samples)))
    {
        std::mem::forget(inherited);
    }
    let ticker = match Ticker::start(TICK_INTERVAL) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("forkprof demo: worker {index}: cannot start its ticker: {e}");
            return EXIT_WORKER_FAILED;
        }
    };
    let (served, checksum) = {
        let _f = frame!(Func::WorkerMain);
        work::serve_requests(deadline, (index as u64 + 1).wrapping_mul(1_000_003))
    };
    std::hint::black_box(checksum);
    ticker.stop();
    shadow::uninstall();
    slot.requests.store(served, Release);
    match profiler.stop(STOP_TIMEOUT) {
        Ok(stats) => {
            slot.recorded.store(stats.samples_recorded, Release);
            slot.dropped.store(stats.samples_dropped, Release);
            slot.profiles.store(stats.profiles_written, Release);
            slot.stopped.store(1, Release);
            0
        }
        Err(e) => {
            eprintln!("forkprof demo: worker {index}: profiler stop failed: {e}");
            EXIT_WORKER_FAILED
        }
    }
}

fn supervise(workers: &mut [Worker], board: &Board, start: Instant, watchdog: Instant) {
    let _f = frame!(Func::Supervise);
    let mut next_report = start + Duration::from_secs(1);
    loop {
        wait_for_events();
        reap_workers(workers);
        if workers.iter().all(|w| w.outcome != Outcome::Running) {
            break;
        }
        let now = Instant::now();
        if now >= next_report {
            report_progress(start, workers, board);
            next_report += Duration::from_secs(1);
        }
        if now >= watchdog {
            kill_stragglers(workers);
            break;
        }
    }
    shadow::sample_now();
}

/// The master idles until the next tick: its workers do the serving.
fn wait_for_events() {
    let _f = frame!(Func::WaitForEvents);
    std::thread::sleep(TICK_INTERVAL);
    safepoint();
}

fn wait_status(pid: i32, flags: i32) -> Option<Outcome> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; `pid` is a child of this process.
    let rc = unsafe { libc::waitpid(pid, &mut status, flags) };
    match rc {
        0 => None,
        -1 => Some(Outcome::Lost(std::io::Error::last_os_error().to_string())),
        _ if libc::WIFEXITED(status) => Some(Outcome::Exited(libc::WEXITSTATUS(status))),
        _ if libc::WIFSIGNALED(status) => Some(Outcome::Signaled(libc::WTERMSIG(status))),
        _ => None,
    }
}

fn reap_workers(workers: &mut [Worker]) {
    let _f = frame!(Func::ReapWorkers);
    for w in workers.iter_mut().filter(|w| w.outcome == Outcome::Running) {
        if let Some(outcome) = wait_status(w.pid, libc::WNOHANG) {
            w.outcome = outcome;
        }
    }
    safepoint();
}

fn kill_stragglers(workers: &mut [Worker]) {
    for w in workers.iter_mut().filter(|w| w.outcome == Outcome::Running) {
        eprintln!(
            "forkprof demo: worker {} (pid {}) did not exit in time: killing it",
            w.index, w.pid
        );
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(w.pid, libc::SIGKILL) };
        // SIGKILL cannot be caught; reap it so no zombie is left, but never wait unbounded.
        let until = Instant::now() + Duration::from_secs(5);
        while wait_status(w.pid, libc::WNOHANG).is_none() && Instant::now() < until {
            std::thread::sleep(TICK_INTERVAL);
        }
        w.outcome = Outcome::KilledByWatchdog;
    }
}

fn report_progress(start: Instant, workers: &[Worker], board: &Board) {
    let _f = frame!(Func::ReportProgress);
    let mut line = format!(
        "[{:5.1}s] samples: master {}",
        start.elapsed().as_secs_f64(),
        shadow::taken()
    );
    for w in workers {
        let n = board
            .slot(w.index)
            .samples
            .load(std::sync::atomic::Ordering::Relaxed);
        let state = match w.outcome {
            Outcome::Running => "",
            Outcome::Exited(0) => " (done)",
            _ => " (failed)",
        };
        line += &format!(", worker {} {n}{state}", w.index);
    }
    println!("{line}");
    safepoint();
}

/// One process in the summary.
struct Row {
    pid: i32,
    role: String,
    samples: u64,
    dropped: u64,
    profiles: u64,
    files: Vec<PathBuf>,
    top: Top,
    problems: Vec<String>,
}

impl Row {
    fn new(pid: i32, role: String) -> Row {
        Row {
            pid,
            role,
            samples: 0,
            dropped: 0,
            profiles: 0,
            files: Vec::new(),
            top: Top::default(),
            problems: Vec::new(),
        }
    }

    /// Finds this process's files written during this run and sums their wall-time tops.
    fn read_back(&mut self, dir: &Path, since: SystemTime) {
        let prefix = format!("{SERVICE}-{}-", self.pid);
        // Coarse file-system timestamps: allow a little slack before the start.
        let since = since - Duration::from_secs(2);
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.problems
                    .push(format!("cannot list {}: {e}", dir.display()));
                return;
            }
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let fresh = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t >= since)
                .unwrap_or(false);
            if name.starts_with(&prefix) && name.contains(".pprof") && fresh {
                self.files.push(e.path());
            }
        }
        self.files.sort();
        if self.files.is_empty() {
            self.problems.push("wrote no profile".into());
        }
        for f in &self.files {
            match crate::top::load(f) {
                Ok(p) => match sample_type_index(&p, "wall-time") {
                    Some(i) => self.top.merge(&top(&p, i)),
                    None => self
                        .problems
                        .push(format!("{}: no wall-time sample type", f.display())),
                },
                Err(e) => self.problems.push(e),
            }
        }
    }

    fn top3(&self) -> String {
        let names: Vec<String> = self
            .top
            .functions
            .iter()
            .filter(|f| f.flat > 0)
            .take(3)
            .map(|f| format!("{} {:.1}%", f.name, self.top.percent(f.flat)))
            .collect();
        if names.is_empty() {
            "-".into()
        } else {
            names.join(", ")
        }
    }
}

fn print_summary(rows: &[Row], dir: &Path, endpoint: Option<&str>) -> i32 {
    println!(
        "\n{:>8}  {:<10} {:>8} {:>8} {:>9}  top 3 functions by wall-time (flat)",
        "pid", "role", "samples", "dropped", "profiles"
    );
    for r in rows {
        println!(
            "{:>8}  {:<10} {:>8} {:>8} {:>9}  {}",
            r.pid,
            r.role,
            r.samples,
            r.dropped,
            r.profiles,
            r.top3()
        );
        for f in &r.files {
            println!("{:>8}  file: {}", "", f.display());
        }
        for p in &r.problems {
            println!("{:>8}  FAILED: {p}", "");
        }
    }
    let failed = rows.iter().filter(|r| !r.problems.is_empty()).count();
    if let Some(url) = endpoint {
        let uploaded: u64 = rows.iter().map(|r| r.profiles).sum();
        println!(
            "\n{uploaded} profiles from {} processes uploaded to {url}",
            rows.len()
        );
    } else {
        let files: usize = rows.iter().map(|r| r.files.len()).sum();
        let shown = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        println!(
            "\n{files} profiles from {} processes in {}",
            rows.len(),
            shown.display()
        );
        println!("read them with `forkprof top FILE...`, `forkprof flame FILE...` or `go tool pprof -top FILE`");
    }
    if failed > 0 {
        println!("{failed} of {} processes FAILED", rows.len());
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Args, clap::Error> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: Args,
        }
        T::try_parse_from(std::iter::once("demo").chain(a.iter().copied())).map(|t| t.a)
    }

    #[test]
    fn options_have_defaults_and_are_checked() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.workers, 4);
        assert_eq!(o.duration, Duration::from_secs(10));
        assert_eq!(o.period, Duration::from_secs(60));
        assert_eq!(o.watchdog, Duration::from_secs(20));
        assert_eq!(o.out, PathBuf::from("./forkprof-demo-profiles"));
        let o = parse(&[
            "--workers",
            "2",
            "--duration=0.5",
            "--out",
            "d",
            "--endpoint",
            "http://localhost:8126",
        ])
        .unwrap();
        assert_eq!(o.workers, 2);
        assert_eq!(o.duration, Duration::from_millis(500));
        assert_eq!(o.out, PathBuf::from("d"));
        assert_eq!(o.endpoint.as_deref(), Some("http://localhost:8126"));
        for bad in [
            &["--workers", "0"][..],
            &["--workers", "x"],
            &["--duration", "-1"],
            &["--period", "nan"],
            &["--out"],
            &["--frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
