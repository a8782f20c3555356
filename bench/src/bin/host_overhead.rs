//! What profiling at 100 Hz costs a CPU-bound host: the same workload (parse + hash, with a
//! shadow stack of named frames like an interpreter keeps) with the profiler off and on.
//!
//! "On" means: the profiler runs (collector, uploader, a discard exporter with zstd), a ticker
//! thread raises a flag every 10 ms, and the workload records its shadow stack at the next
//! safe point. "Off" runs the very same code with no profiler and no ticker: the flag checks
//! stay. CPU time is the whole process's (getrusage: every thread, profiler threads included),
//! measured from before `start` to after `stop`. A third mode runs the ticker without the
//! profiler, to separate the host's timer from the profiler. The modes rotate within each
//! repetition; the figure is the median of the per-repetition ratios. The profiler runs with
//! its default 60 s period, so each run ends with one profile encoded and compressed at `stop`.
//!
//! `cargo run -p forkprof-bench --release --bin host_overhead -- [--reps N] [--work N]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkprof::{Compression, Config, ExporterConfig, Frame, Label, Profiler, Sample};
use forkprof_bench::*;

static TICK: AtomicBool = AtomicBool::new(false);

/// The interpreter-like state: a shadow stack of frames and, when profiling, where to record.
struct Vm<'p> {
    stack: Vec<Frame<'static>>,
    profiler: Option<&'p Profiler>,
    last_cpu: u64,
    samples: u64,
}

impl Vm<'_> {
    #[inline(always)]
    fn enter(&mut self, function: &'static str, line: u32) {
        self.stack.push(Frame::new(function, "app/worker.rb", line));
    }

    #[inline(always)]
    fn leave(&mut self) {
        self.stack.pop();
    }

    /// A safe point: a relaxed load, and a sample when the ticker has fired.
    #[inline(always)]
    fn safe_point(&mut self) {
        if TICK.load(Ordering::Relaxed) {
            self.sample();
        }
    }

    #[cold]
    fn sample(&mut self) {
        TICK.store(false, Ordering::Relaxed);
        let Some(p) = self.profiler else { return };
        let now = forkprof::thread_cpu_time_ns().unwrap_or(0);
        let cpu = now.saturating_sub(self.last_cpu) as i64;
        self.last_cpu = now;
        // Leaf first, as pprof wants it.
        let mut frames = [Frame::new("", "", 0); 64];
        let n = self.stack.len().min(frames.len());
        for (slot, f) in frames.iter_mut().zip(self.stack.iter().rev()) {
            *slot = *f;
        }
        let labels = [
            Label::str("thread name", "main"),
            Label::num("thread id", 1),
        ];
        let _ = p.record(&Sample::new(&frames[..n], &[1, cpu]).labels(&labels));
        self.samples += 1;
    }
}

/// FNV-1a over a slice.
#[inline]
fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn parse_numbers(vm: &mut Vm, line: &[u8]) -> u64 {
    vm.enter("Parser#numbers", 41);
    let mut sum = 0u64;
    let mut cur = 0u64;
    for &b in line {
        if b.is_ascii_digit() {
            cur = cur * 10 + (b - b'0') as u64;
        } else {
            sum = sum.wrapping_add(cur);
            cur = 0;
        }
    }
    vm.safe_point();
    vm.leave();
    sum.wrapping_add(cur)
}

fn hash_record(vm: &mut Vm, line: &[u8], seed: u64) -> u64 {
    vm.enter("Digest#hash_record", 77);
    let mut h = seed;
    for _ in 0..4 {
        vm.enter("Digest#round", 80);
        h = fnv(line, h);
        vm.safe_point();
        vm.leave();
    }
    vm.leave();
    h
}

fn handle(vm: &mut Vm, lines: &[Vec<u8>], depth: u32, seed: u64) -> u64 {
    // Recursion gives the sampled stacks some depth, as a framework's middleware chain does.
    if depth > 0 {
        vm.enter("Middleware#call", 12 + depth);
        let r = handle(vm, lines, depth - 1, seed);
        vm.leave();
        return r;
    }
    vm.enter("Controller#handle", 30);
    let mut acc = seed;
    for line in lines {
        let n = parse_numbers(vm, line);
        acc ^= hash_record(vm, line, n);
    }
    vm.leave();
    acc
}

fn workload(vm: &mut Vm, lines: &[Vec<u8>], requests: usize) -> u64 {
    vm.enter("main", 1);
    vm.enter("Server#run", 5);
    let mut acc = 0u64;
    for r in 0..requests {
        acc = acc.wrapping_add(handle(vm, lines, 8 + (r % 5) as u32, r as u64));
    }
    vm.leave();
    vm.leave();
    acc
}

fn input() -> Vec<Vec<u8>> {
    (0..64)
        .map(|i| {
            format!(
                "{i},{},{},user-{},GET /api/v1/items/{} 200 {}ms",
                i * 7919,
                i * 104_729,
                i % 13,
                i * 31,
                i % 250
            )
            .into_bytes()
        })
        .collect()
}

fn config() -> Config {
    Config::builder("host-overhead")
        .sample_type("sample", "count")
        .sample_type("cpu-time", "nanoseconds")
        .exporter(ExporterConfig::Custom(Arc::new(DiscardFactory(
            Compression::Zstd,
        ))))
        .build()
        .expect("config")
}

struct Run {
    cpu_ns: u64,
    main_cpu_ns: u64,
    wall: Duration,
    samples: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No profiler, no ticker: the flag checks only.
    Off,
    /// The ticker runs and safe points take the sampling branch, but nothing is recorded:
    /// what the host's own timer costs, to tell it from the profiler's share.
    Ticker,
    /// Profiler running, ticker at 100 Hz, every tick recorded.
    On,
}

fn run(mode: Mode, lines: &[Vec<u8>], requests: usize) -> Run {
    TICK.store(false, Ordering::Relaxed);
    let cpu0 = process_cpu_ns();
    let main0 = forkprof::thread_cpu_time_ns().unwrap_or(0);
    let t0 = Instant::now();
    let profiler = (mode == Mode::On).then(|| Profiler::start(config()).expect("start"));
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = (mode != Mode::Off).then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                TICK.store(true, Ordering::Relaxed);
            }
        })
    });
    let mut vm = Vm {
        stack: Vec::with_capacity(64),
        profiler: profiler.as_ref(),
        last_cpu: forkprof::thread_cpu_time_ns().unwrap_or(0),
        samples: 0,
    };
    std::hint::black_box(workload(&mut vm, lines, requests));
    let samples = vm.samples;
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = ticker {
        t.join().expect("ticker");
    }
    if let Some(p) = &profiler {
        let st = p.stop(Duration::from_secs(10)).expect("stop");
        assert_eq!(st.samples_dropped, 0, "samples dropped");
        assert!(st.profiles_written > 0, "no profile written");
    }
    Run {
        cpu_ns: process_cpu_ns() - cpu0,
        main_cpu_ns: forkprof::thread_cpu_time_ns().unwrap_or(0) - main0,
        wall: t0.elapsed(),
        samples,
    }
}

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() {
    let reps = arg("--reps").unwrap_or(7);
    let lines = input();
    // Calibrate the request count to about a second of CPU.
    let cal = run(Mode::Off, &lines, 200);
    let requests = arg("--work")
        .unwrap_or_else(|| (200.0 * 1.0e9 / cal.cpu_ns.max(1) as f64).round().max(1.0) as usize);
    println!(
        "host workload: {requests} requests per run (~1 s CPU), {reps} repetitions of off / ticker only / on, sampling at 100 Hz"
    );
    let mut ratios = Vec::new();
    let mut main_ratios = Vec::new();
    let mut profiler_ratios = Vec::new();
    for r in 0..reps {
        // Rotate the order so drift on a shared machine does not favour one mode.
        let order = [Mode::Off, Mode::Ticker, Mode::On];
        let mut res: [Option<Run>; 3] = [None, None, None];
        for k in 0..3 {
            let m = order[(k + r) % 3];
            res[m as usize] = Some(run(m, &lines, requests));
        }
        let [Some(off), Some(tick), Some(on)] = res else {
            unreachable!("every mode ran")
        };
        let ratio = on.cpu_ns as f64 / off.cpu_ns as f64;
        let main_ratio = on.main_cpu_ns as f64 / off.main_cpu_ns as f64;
        let profiler_ratio = on.cpu_ns as f64 / tick.cpu_ns as f64;
        println!(
            "rep {r}: CPU off {:.3} s, ticker only {:.3} s, on {:.3} s ({} samples, {:.2} s wall); on/off {:.4}, on/ticker {:.4}, host thread on/off {:.4}",
            off.cpu_ns as f64 / 1e9,
            tick.cpu_ns as f64 / 1e9,
            on.cpu_ns as f64 / 1e9,
            on.samples,
            on.wall.as_secs_f64(),
            ratio,
            profiler_ratio,
            main_ratio
        );
        ratios.push(ratio);
        main_ratios.push(main_ratio);
        profiler_ratios.push(profiler_ratio);
    }
    let m = median_f64(&mut ratios);
    let mm = median_f64(&mut main_ratios);
    let mp = median_f64(&mut profiler_ratios);
    println!(
        "host overhead: median CPU ratio on / off = {:.4} ({:+.2} %, goal <= +1 %); on / ticker only = {:.4} ({:+.2} %, the profiler's own share); host thread alone on / off = {:.4} ({:+.2} %)",
        m,
        (m - 1.0) * 100.0,
        mp,
        (mp - 1.0) * 100.0,
        mm,
        (mm - 1.0) * 100.0
    );
}
