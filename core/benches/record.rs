//! The per-sample costs BENCHMARKS.md sets goals for, measured side by side in one binary:
//!
//! - `record/text`: `Profiler::record` of an 18-frame stack given as text, 2 labels
//!   (target ≤ 0.25 µs on the host thread);
//! - `record/ids`: the same stack as pre-interned [`FrameIds`] (target ≤ 0.1 µs);
//! - `collector/add`: aggregating realistic samples into a [`ProfileBuilder`] (the
//!   collector thread's throughput; no target, reported as samples/s);
//! - `serialize_zstd/1000`: encoding 1000 timestamped samples to pprof and compressing them
//!   with zstd level 1 (target ≤ 0.3 µs per sample).
//!
//! The record benches run a real profiler (collector and uploader threads) on a bench-only
//! [`Platform`] that registers no fork hooks (these benches never fork) and keeps a sentinel
//! word, so `record` takes the same path as on Linux. Only the host thread's `record` calls
//! are timed: between timed batches the bench waits, untimed, for the collector to drain the
//! buffer, so every timed sample is stored (none dropped) and the figure is the cost of
//! storing a sample, not of dropping one.
//!
//! Times are the benchmarking thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time:
//! this project's machines are 2 shared vCPUs, where wall time mostly measures how long the
//! thread waited for a core. `core/benches/medians.sh` prints the per-sample medians.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use forkprof_core::compress::Compressor;
use forkprof_core::export::{Delivered, ExportContext, ExportFailure};
use forkprof_core::profile::{ProfFrame, ProfLabel, ProfileBuilder};
use forkprof_core::{
    intern_on, Compression, Config, EncodedProfile, Exporter, ExporterConfig, ExporterFactory,
    ForkStrategy, Frame, FrameIds, Label, Platform, Profiler, Result, Sample, SampleType,
};

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Criterion measurement: the benchmarking thread's CPU time.
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = Duration;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(thread_cpu_ns().saturating_sub(start))
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanos
    }
}

/// Formats CPU nanoseconds as criterion does wall time (ns, µs, ms, s).
struct Nanos;

impl ValueFormatter for Nanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = match typical {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e3, "µs"),
            t if t < 1e9 => (1e6, "ms"),
            _ => (1e9, "s"),
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let n = match throughput {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => *n,
        } as f64;
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v);
        "elem/s (cpu)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

struct BenchPlatform;

static SENTINEL: AtomicU64 = AtomicU64::new(0);

impl Platform for BenchPlatform {
    fn name(&self) -> &'static str {
        "bench"
    }
    fn fork_strategy(&self) -> ForkStrategy {
        ForkStrategy::Atfork
    }
    fn install_fork_hooks(&self) -> Result<()> {
        Ok(())
    }
    fn fork_sentinel(&self) -> Option<&'static AtomicU64> {
        Some(&SENTINEL)
    }
    fn thread_cpu_time_ns(&self) -> Option<u64> {
        None
    }
    fn monotonic_ns(&self) -> u64 {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

static PLATFORM: BenchPlatform = BenchPlatform;

/// Drops every profile: the benches measure forkprof, not the disk.
#[derive(Debug)]
struct Discard;

impl Exporter for Discard {
    fn export(
        &mut self,
        p: &EncodedProfile,
        _deadline: Option<Instant>,
    ) -> std::result::Result<Delivered, ExportFailure> {
        Ok(Delivered {
            bytes: p.bytes.len() as u64,
            retries: 0,
        })
    }
}

impl ExporterFactory for Discard {
    fn compression(&self) -> Compression {
        Compression::Zstd
    }
    fn create(&self, _ctx: &ExportContext<'_>) -> Result<Box<dyn Exporter>> {
        Ok(Box::new(Discard))
    }
}

const DEPTH: usize = 18;
/// The buffer the record benches run with; a timed batch fills at most half of it.
const BUFFER: usize = 64 << 20;

/// Realistic names: a PHP/Ruby-like stack of namespaced methods in their files.
fn names(depth: usize) -> Vec<(String, String, u32)> {
    (0..depth)
        .map(|i| {
            (
                format!("App\\Http\\Controllers\\Layer{i}Controller::handle{i}"),
                format!("/var/www/app/src/Http/Controllers/Layer{i}Controller.php"),
                10 + i as u32 * 7,
            )
        })
        .collect()
}

fn profiler() -> Profiler {
    let config = Config::builder("bench")
        .sample_type("wall-time", "nanoseconds")
        .sample_type("cpu-time", "nanoseconds")
        .buffer_capacity(BUFFER)
        .exporter(ExporterConfig::Custom(Arc::new(Discard)))
        .build()
        .expect("bench config");
    Profiler::start_on(config, &PLATFORM).expect("start the profiler")
}

/// Times `iters` calls of `record`, in batches that fit the buffer; the collector drains the
/// buffer between batches, outside the timed region.
fn timed_records(p: &Profiler, iters: u64, bytes_per_sample: usize, record: impl Fn()) -> Duration {
    let batch = (BUFFER / 2 / bytes_per_sample).max(1) as u64;
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(batch);
        let t = thread_cpu_ns();
        for _ in 0..n {
            record();
        }
        total += Duration::from_nanos(thread_cpu_ns() - t);
        left -= n;
        p.flush_sync(Duration::from_secs(60)).expect("drain");
    }
    total
}

fn record_benches(c: &mut Criterion<ThreadCpu>) {
    let p = profiler();
    let names = names(DEPTH);
    let frames: Vec<Frame<'_>> = names
        .iter()
        .map(|(f, file, line)| Frame::new(f, file, *line))
        .collect();
    let ids: Vec<FrameIds> = names
        .iter()
        .map(|(f, file, line)| FrameIds {
            function: intern_on(f.as_bytes(), &PLATFORM).unwrap(),
            file: intern_on(file.as_bytes(), &PLATFORM).unwrap(),
            line: *line,
        })
        .collect();
    let labels = [
        Label::num("thread id", 140_234_112),
        Label::str("thread name", "php-fpm: pool www"),
    ];
    let values = [10_000_000i64, 9_200_000];
    // Upper bounds of one record's bytes in the buffer (header, values, frames, labels).
    let text_bytes = 64
        + names
            .iter()
            .map(|(f, file, _)| 8 + f.len() + file.len())
            .sum::<usize>();
    let id_bytes = 64 + 12 * DEPTH + 64;

    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("text_18_frames_2_labels", |b| {
        b.iter_custom(|iters| {
            timed_records(&p, iters, text_bytes, || {
                let s = Sample::new(black_box(&frames), &values).labels(&labels);
                p.record(black_box(&s)).unwrap();
            })
        })
    });
    g.bench_function("ids_18_frames_2_labels", |b| {
        b.iter_custom(|iters| {
            timed_records(&p, iters, id_bytes, || {
                let s = Sample::with_ids(black_box(&ids), &values).labels(&labels);
                p.record(black_box(&s)).unwrap();
            })
        })
    });
    g.finish();
    let stats = p.stop(Duration::from_secs(60)).unwrap();
    eprintln!(
        "record benches: {} samples stored, {} dropped, {} too large",
        stats.samples_recorded, stats.samples_dropped, stats.samples_too_large
    );
    assert_eq!(stats.samples_dropped, 0, "a timed sample was dropped");
}

/// A builder with `names` interned, and `stacks` distinct 18-frame stacks over a pool of
/// functions (shared roots, varied leaves), as a web app's profile looks.
struct Workload {
    builder: ProfileBuilder,
    stacks: Vec<Vec<ProfFrame>>,
    labels: Vec<[ProfLabel; 2]>,
}

fn workload(stacks: usize, threads: usize) -> Workload {
    let types = [
        SampleType::new("wall-time", "nanoseconds"),
        SampleType::new("cpu-time", "nanoseconds"),
    ];
    let mut builder = ProfileBuilder::new(&types, None, SystemTime::now());
    let pool: Vec<ProfFrame> = (0..500)
        .map(|i| ProfFrame {
            function: builder.intern(&format!("App\\Service{}::method{}", i / 10, i)),
            file: builder.intern(&format!("/var/www/app/src/Service{}.php", i / 10)),
            line: 10 + i % 90,
        })
        .collect();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let stacks = (0..stacks)
        .map(|_| {
            // Leaf first: varied leaves, a common framework root.
            (0..DEPTH)
                .map(|d| {
                    if d >= DEPTH - 6 {
                        pool[d]
                    } else {
                        pool[next(pool.len())]
                    }
                })
                .collect()
        })
        .collect();
    let (tid, tname) = (builder.intern("thread id"), builder.intern("thread name"));
    let labels = (0..threads)
        .map(|t| {
            let name = builder.intern(&format!("worker-{t}"));
            [
                ProfLabel {
                    key: tid,
                    str: 0,
                    num: 1000 + t as i64,
                    num_unit: 0,
                },
                ProfLabel {
                    key: tname,
                    str: name,
                    num: 0,
                    num_unit: 0,
                },
            ]
        })
        .collect();
    Workload {
        builder,
        stacks,
        labels,
    }
}

fn collector_benches(c: &mut Criterion<ThreadCpu>) {
    // 1000 distinct stacks over 8 threads: most samples aggregate into an existing row.
    let mut w = workload(1000, 8);
    let values = [10_000_000i64, 9_000_000];
    let mut i = 0usize;
    let mut g = c.benchmark_group("collector");
    g.throughput(Throughput::Elements(1));
    g.bench_function("add_18_frames_2_labels", |b| {
        b.iter(|| {
            let s = &w.stacks[i % w.stacks.len()];
            let l = &w.labels[i % w.labels.len()];
            i = i.wrapping_add(7);
            w.builder
                .add(s.iter().copied(), black_box(&values), l, None);
        })
    });
    g.finish();
}

fn serialize_benches(c: &mut Criterion<ThreadCpu>) {
    const SAMPLES: usize = 1000;
    let mut w = workload(100, 4);
    let ts0 = 1_700_000_000_000_000_000i64;
    for i in 0..SAMPLES {
        let s = w.stacks[(i * 7) % w.stacks.len()].clone();
        let l = w.labels[i % w.labels.len()];
        w.builder.add(
            s,
            &[10_000_000, 9_000_000],
            &l,
            Some(ts0 + i as i64 * 10_000_000),
        );
    }
    let mut raw = Vec::new();
    let mut out = Vec::new();
    // One compressor for the run, as the collector keeps one for its life.
    let mut zstd = Compressor::new();
    let mut g = c.benchmark_group("serialize_zstd");
    g.throughput(Throughput::Elements(SAMPLES as u64));
    g.bench_function("1000_timestamped_samples", |b| {
        b.iter(|| {
            raw.clear();
            w.builder.encode(SystemTime::now(), &mut raw);
            zstd.compress(Compression::Zstd, &raw, &mut out).unwrap();
            black_box(out.len())
        })
    });
    // The two halves on their own, to see which one a change should target.
    g.bench_function("encode_only", |b| {
        b.iter(|| {
            raw.clear();
            w.builder.encode(SystemTime::now(), &mut raw);
            black_box(raw.len())
        })
    });
    g.bench_function("zstd_only", |b| {
        b.iter(|| {
            zstd.compress(Compression::Zstd, black_box(&raw), &mut out)
                .unwrap();
            black_box(out.len())
        })
    });
    g.finish();
    if raw.is_empty() {
        return; // filtered out
    }
    eprintln!(
        "serialize_zstd: {} samples → {} bytes of pprof → {} bytes zstd",
        SAMPLES,
        raw.len(),
        out.len()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = record_benches, collector_benches, serialize_benches
}
criterion_main!(benches);
