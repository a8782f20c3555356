//! Fork latency (fork + `_exit(0)` in the child + `waitpid`): a bare process, the same with
//! the host's own 1 kHz sampling thread (`host`), and with the profiler running (`profiled`)
//! with 0, 10,000 or 100,000 unique 18-frame stacks in the profile being built and its
//! uploader stalled on a loopback connection nobody answers.
//!
//! Each phase runs in its own child process (this binary re-executed with `--phase`), the
//! phases alternate for several rounds so machine drift hits all alike, and the parent pools
//! the latencies: median, p99, max, ratios. Each phase also forks once, untimed, a child that
//! reads its own `/proc/self/smaps` right after the fork and reports what it inherited: its
//! resident bytes and mappings, and of those the ones the phase's set-up created (the
//! profiler's, or the host thread's), by address.
//!
//! `cargo run -p forkprof-bench --release --bin fork_overhead -- [--forks N] [--rounds R]`

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkprof::{Activity, Frame, Label, Profiler, Sample};
use forkprof_bench::*;
use std::collections::HashSet;

const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Forks `n` times, each child exiting at once; returns each fork's round trip in ns.
fn fork_loop(n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        // SAFETY: the child only calls `_exit`, which is async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: `_exit` ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(0) };
        }
        assert!(pid > 0, "fork failed: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer and `pid` our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid, "waitpid");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "fork child exited with status {status:#x}"
        );
        out.push(t.elapsed().as_nanos() as u64);
    }
    out
}

fn uploader_activity(p: &Profiler) -> Option<Activity> {
    p.thread_activity()
        .into_iter()
        .find(|(n, _)| *n == "uploader")
        .map(|(_, a)| a)
}

/// The host's own thread: builds a sample every millisecond and records it when profiling.
/// Without a profiler it runs the same loop, so `host` and `profiled` differ only by forkprof.
fn host_thread(p: Option<Profiler>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let w = Workload::new();
        let frames: Vec<Vec<Frame<'_>>> = (0..STACKS).map(|s| w.frames(s)).collect();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let labels = [Label::str(LABEL_STR_KEY, "recorder")];
            let sample = Sample::new(&frames[i % STACKS], &VALUES).labels(&labels);
            match &p {
                Some(p) => {
                    let _ = p.record(&sample);
                }
                None => {
                    std::hint::black_box(&sample);
                }
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// The profiled phase: profiler running, a thread recording at 1 kHz, the uploader stuck in
/// an export that never returns, and `stacks` unique stacks in the profile being built (the
/// period is an hour: that profile stays in progress through the fork loop).
fn profiled(n: usize, stacks: usize, names: &Names, before: &HashSet<u64>) -> (Vec<u64>, String) {
    let listener = dead_listener();
    let addr = listener.local_addr().expect("listener address");
    let mut b = forkprof::Config::builder("fork-overhead")
        .period(Duration::from_secs(3600))
        .exporter(forkprof::ExporterConfig::Custom(Arc::new(StalledFactory {
            addr,
        })));
    for (t, u) in SAMPLE_TYPES {
        b = b.sample_type(t, u);
    }
    let p = Profiler::start(b.build().expect("config")).expect("start");
    let w = Workload::new();
    let frames: Vec<Vec<Frame<'_>>> = (0..STACKS).map(|s| w.frames(s)).collect();
    for i in 0..100 {
        fp_record_text(&p, &frames, &w, i);
    }
    p.flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(10);
    while uploader_activity(&p) != Some(Activity::Exporting) {
        assert!(
            Instant::now() < deadline,
            "the uploader never started its (stalled) export"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 0..stacks {
        record_unique(&p, names, i);
    }
    wait_drained(&p);
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = host_thread(Some(p.clone()), stop.clone());
    let inherited = child_inheritance(before);
    let lat = fork_loop(n);
    stop.store(true, Ordering::Relaxed);
    recorder.join().expect("recorder thread");
    let still = uploader_activity(&p);
    let st = p.stats();
    eprintln!(
        "profiled phase ({stacks} stacks): uploader {:?} after the loop (must be Exporting: the upload stayed stalled), samples recorded {}, dropped for memory {}",
        still, st.samples_recorded, st.samples_dropped_no_memory
    );
    assert_eq!(still, Some(Activity::Exporting), "upload was not stalled");
    assert_eq!(st.samples_dropped_no_memory, 0);
    drop(listener);
    (lat, inherited)
}

fn collector_activity(p: &Profiler) -> Option<Activity> {
    p.thread_activity()
        .into_iter()
        .find(|(n, _)| *n == "collector")
        .map(|(_, a)| a)
}

/// Waits until the collector has taken in everything recorded: idle across three of its
/// drain intervals in a row (a benchmark's set-up, not a test's synchronisation).
fn wait_drained(p: &Profiler) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut idle = 0;
    while idle < 3 {
        assert!(Instant::now() < deadline, "the collector never went idle");
        std::thread::sleep(Duration::from_millis(60));
        idle = if collector_activity(p) == Some(Activity::Idle) {
            idle + 1
        } else {
            0
        };
    }
}

/// Mapping start addresses of this process now.
fn mapping_starts() -> HashSet<u64> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('-').next())
        .filter_map(|a| u64::from_str_radix(a, 16).ok())
        .collect()
}

/// Forks once, untimed; the child reads its own smaps right after the fork and reports, as
/// one line: its resident KiB and mappings in all, and those of mappings whose start was not
/// in `before` (made by the phase's set-up), with a list of the latter.
fn child_inheritance(before: &HashSet<u64>) -> String {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-int out-array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: the child reads /proc, writes one line to the pipe and `_exit`s (a benchmark:
    // allocation in the child is fine here, both libcs' mallocs reset their locks in a child).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
        let rss_total: u64 = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let (mut maps, mut new_maps, mut new_rss) = (0u64, 0u64, 0u64);
        let mut list = String::new();
        let mut cur: Option<(u64, String)> = None;
        let mut flush = |cur: &mut Option<(u64, String)>, rss: u64, list: &mut String| {
            if let Some((start, head)) = cur.take() {
                if !before.contains(&start) {
                    new_maps += 1;
                    new_rss += rss;
                    list.push_str(&format!(" [{head} rss={rss}kB]"));
                }
            }
        };
        let mut rss = 0;
        for l in smaps.lines() {
            let first = l.split_whitespace().next().unwrap_or("");
            if first.contains('-') && !first.ends_with(':') {
                flush(&mut cur, rss, &mut list);
                rss = 0;
                maps += 1;
                let mut f = l.split_whitespace();
                let range = f.next().unwrap_or("");
                let perms = f.next().unwrap_or("");
                let name = f.nth(3).unwrap_or("anon");
                let (a, b) = range.split_once('-').unwrap_or(("0", "0"));
                let (a, b) = (
                    u64::from_str_radix(a, 16).unwrap_or(0),
                    u64::from_str_radix(b, 16).unwrap_or(0),
                );
                cur = Some((a, format!("{}KiB {perms} {name}", (b - a) >> 10)));
            } else if let Some(v) = l.strip_prefix("Rss:") {
                rss = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            }
        }
        flush(&mut cur, rss, &mut list);
        let line = format!(
            "child rss {rss_total} kB, {maps} mappings; made by the set-up: {new_maps} mappings, {new_rss} kB resident:{list}\n"
        );
        // SAFETY: writing our own buffer to the pipe, then ending the child.
        unsafe {
            libc::write(fds[1], line.as_ptr().cast(), line.len());
            libc::_exit(0);
        }
    }
    assert!(pid > 0, "fork failed");
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into our own buffer.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: closing the read end; reaping our child.
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

/// Gives this process the footprint of a small interpreter host (measured here: python3 with
/// json, ssl, socket, threading, http.client, hashlib loaded has 163 mappings and 21 MB
/// resident): 20 MiB of touched heap and 130 more mappings.
fn host_footprint() {
    let heap = vec![1u8; 20 << 20];
    std::mem::forget(std::hint::black_box(heap));
    for _ in 0..65 {
        // SAFETY: a fresh private anonymous mapping of two pages, written and leaked; the
        // second page made read-only so the kernel keeps two mappings that do not merge.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "mmap");
            *(p as *mut u8) = 1;
            *(p as *mut u8).add(4096) = 1;
            libc::mprotect(p.cast::<u8>().add(4096).cast(), 4096, libc::PROT_READ);
        }
    }
}

fn run_phase(phase: &str, n: usize) {
    if std::env::args().any(|a| a == "--footprint") {
        host_footprint();
    }
    // The stacks' names are the benchmark's, not the profiler's: made before the snapshot so
    // that where malloc maps its own blocks (musl) they do not count as the set-up's.
    let names = Names::new();
    let before = mapping_starts();
    let mut inherited = String::new();
    let lat = match phase {
        "bare" => {
            inherited = child_inheritance(&before);
            fork_loop(n)
        }
        p if p.starts_with("profiled") => {
            let stacks = p
                .strip_prefix("profiled-")
                .map(|k| {
                    k.trim_end_matches('k')
                        .parse::<usize>()
                        .expect("profiled-<N>k")
                        * 1000
                })
                .unwrap_or(0);
            let (lat, inh) = profiled(n, stacks, &names, &before);
            inherited = inh;
            lat
        }
        // Diagnostics: which part of the profiled setup costs what.
        "started" => {
            let p = start_profiler(
                Arc::new(DiscardFactory(forkprof::Compression::Zstd)),
                8 << 20,
            );
            let lat = fork_loop(n);
            drop(p);
            lat
        }
        "host" => {
            let stop = Arc::new(AtomicBool::new(false));
            let t = host_thread(None, stop.clone());
            inherited = child_inheritance(&before);
            let lat = fork_loop(n);
            stop.store(true, Ordering::Relaxed);
            t.join().expect("host thread");
            lat
        }
        "threads" => {
            // No profiler: two threads that allocate and exit, as any multi-threaded host has.
            let hs: Vec<_> = (0..2)
                .map(|_| std::thread::spawn(|| std::hint::black_box(vec![1u8; 1 << 20]).len()))
                .collect();
            for h in hs {
                h.join().expect("thread");
            }
            fork_loop(n)
        }
        "mappings" => {
            // No thread: ten more anonymous mappings with a touched page each, to separate
            // the per-mapping cost of fork from anything thread-related.
            for _ in 0..10 {
                // SAFETY: a fresh private anonymous mapping, written once and leaked.
                unsafe {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        1 << 21,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    assert_ne!(p, libc::MAP_FAILED, "mmap");
                    *(p as *mut u8) = 1;
                    // Different protections keep the kernel from merging neighbours.
                    libc::mprotect(p.cast::<u8>().add(4096).cast(), 4096, libc::PROT_NONE);
                }
            }
            fork_loop(n)
        }
        "hooks" => {
            let p = start_profiler(
                Arc::new(DiscardFactory(forkprof::Compression::Zstd)),
                8 << 20,
            );
            p.stop(Duration::from_secs(5)).expect("stop");
            fork_loop(n)
        }
        other => panic!("unknown phase {other:?} (bare | host | profiled-<N>k)"),
    };
    println!("# {inherited}");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("");
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .count();
    eprintln!("{phase}: {rss}, {maps} mappings");
    if let Some(dir) = std::env::var_os("FORK_OVERHEAD_MAPS_DIR") {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let _ = std::fs::write(
            std::path::Path::new(&dir).join(format!("{phase}.maps")),
            maps,
        );
    }
    let mut out = String::with_capacity(lat.len() * 8);
    for v in lat {
        out.push_str(&v.to_string());
        out.push('\n');
    }
    print!("{out}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: stdout is flushed; `_exit` ends the process without running destructors, which
    // is what we want: the stalled uploader thread never returns.
    unsafe { libc::_exit(0) };
}

fn spawn_phase(phase: &str, n: usize, footprint: bool) -> (Vec<u64>, String) {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    if footprint {
        cmd.arg("--footprint");
    }
    let mut child = cmd
        .args(["--phase", phase, "--forks", &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn phase");
    let stdout = child.stdout.take().expect("child stdout");
    let reader = std::thread::spawn(move || {
        let mut lat = Vec::new();
        let mut note = String::new();
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = l.strip_prefix("# ") {
                note = rest.to_string();
            } else if let Ok(v) = l.trim().parse::<u64>() {
                lat.push(v);
            }
        }
        (lat, note)
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait phase") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{phase} phase did not finish within {CHILD_TIMEOUT:?} (deadlock in fork?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{phase} phase failed: {status}");
    let (v, note) = reader.join().expect("reader");
    assert_eq!(
        v.len(),
        n,
        "{phase} phase reported {} of {n} forks",
        v.len()
    );
    (v, note)
}

fn main() {
    let forks: usize = arg("--forks").and_then(|v| v.parse().ok()).unwrap_or(2000);
    if let Some(phase) = arg("--phase") {
        run_phase(&phase, forks);
        return;
    }
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(5);
    if let Some(list) = arg("--diagnose") {
        for r in 0..rounds {
            for phase in list.split(',') {
                let (mut v, _) = spawn_phase(phase, forks, false);
                v.sort_unstable();
                println!(
                    "round {r} {phase:<9} median {:>7.1} us  p99 {:>7.1} us",
                    quantile(&v, 0.5) as f64 / 1e3,
                    quantile(&v, 0.99) as f64 / 1e3
                );
            }
        }
        return;
    }
    compare(forks, rounds, false);
    let footprint_forks = arg("--footprint-forks")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    compare(footprint_forks, rounds, true);
}

const PHASES: [&str; 5] = [
    "bare",
    "host",
    "profiled-0k",
    "profiled-10k",
    "profiled-100k",
];

fn compare(forks: usize, rounds: usize, footprint: bool) {
    // `host` is the bare process plus the same 1 kHz sampling thread the profiled phases run,
    // recording nothing: it tells forkprof's share from what any host with a thread pays.
    let mut all: Vec<Vec<u64>> = vec![Vec::new(); PHASES.len()];
    let mut notes = vec![String::new(); PHASES.len()];
    println!(
        "fork + _exit + waitpid, {forks} forks per phase, {rounds} rounds (phase order rotates), {}",
        if footprint {
            "every process with a small interpreter's footprint (+20 MiB touched heap, +130 mappings)"
        } else {
            "minimal processes (~2 MiB resident, ~30 mappings)"
        }
    );
    for r in 0..rounds {
        let mut medians = [0u64; PHASES.len()];
        for k in 0..PHASES.len() {
            let i = (k + r) % PHASES.len();
            let (mut v, note) = spawn_phase(PHASES[i], forks, footprint);
            v.sort_unstable();
            medians[i] = quantile(&v, 0.5);
            all[i].extend(v);
            notes[i] = note;
        }
        let line: Vec<String> = PHASES
            .iter()
            .zip(medians)
            .map(|(p, m)| format!("{p} {:.1}", m as f64 / 1e3))
            .collect();
        println!("round {r}: median us: {}", line.join(", "));
    }
    let mut stats = Vec::new();
    for (name, v) in PHASES.iter().zip(all.iter_mut()) {
        v.sort_unstable();
        let (m, p99) = (quantile(v, 0.5), quantile(v, 0.99));
        println!(
            "{name:<14} median {:>8.1} us  p99 {:>8.1} us  max {:>8.1} us",
            m as f64 / 1e3,
            p99 as f64 / 1e3,
            *v.last().unwrap_or(&0) as f64 / 1e3
        );
        stats.push((m as f64, p99 as f64));
    }
    let (b, t) = (stats[0], stats[1]);
    for (k, name) in PHASES.iter().enumerate().skip(2) {
        let p = stats[k];
        println!(
            "{name:<14} / bare = {:.3} (goal <= 1.1, interpreter-sized)  p99 {:+.1} us   / host = {:.3} (goal <= 1.05)  p99 {:+.1} us (goal <= +50 us)",
            p.0 / b.0,
            (p.1 - b.1) / 1e3,
            p.0 / t.0,
            (p.1 - t.1) / 1e3
        );
    }
    let (p0, p100) = (stats[2], stats[4]);
    println!(
        "flat in profile size: profiled-100k / profiled-0k median = {:.3} (goal <= 1.05), p99 {:+.1} us",
        p100.0 / p0.0,
        (p100.1 - p0.1) / 1e3
    );
    println!(
        "what a child inherits, read from its own /proc/self/smaps right after fork (last round):"
    );
    for (name, note) in PHASES.iter().zip(&notes) {
        println!("  {name:<14} {note}");
    }
}
