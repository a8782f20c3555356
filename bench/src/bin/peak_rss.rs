//! Peak RSS of one profile of 100,000 unique 18-frame stacks drawn from 5,000 function names,
//! built and serialized (zstd level 1): forkprof against libdd-profiling 1.0.0.
//!
//! Each measurement is a fresh child process (this binary re-executed with `--mode`), so
//! VmHWM (from /proc/self/status) is that of one profile alone:
//! - `baseline`: generates the same stacks and throws them away (the process's floor);
//! - `forkprof`: a running `Profiler` (buffer, collector, uploader) records every sample, then
//!   `flush_sync` encodes and compresses the profile; what a host process pays (the burst
//!   fills the whole 8 MiB sample buffer, which a host sampling at 100 Hz never does; the
//!   `forkprof-1MiB-buf` row shows the same with a 1 MiB buffer);
//! - `forkprof-builder`: the collector's `ProfileBuilder` fed on this thread, then
//!   `encode_compressed` (zstd, streamed as the collector does it), timed (the serialize
//!   figure);
//! - `builder-unstreamed`: the same, encoding the whole pprof into one buffer and then
//!   compressing it (how the collector worked before; for comparison);
//! - `libdatadog`: `Profile::try_add_sample` for every sample, then
//!   `serialize_into_compressed_pprof`, timed.
//!
//! `cargo run -p forkprof-bench --release --bin peak_rss`

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use forkprof::export::{Delivered, ExportContext, ExportFailure};
use forkprof::{
    Compression, EncodedProfile, Exporter, ExporterFactory, Frame, Label, Sample, SampleType,
};
use forkprof_bench::*;
use forkprof_core::profile::{ProfFrame, ProfLabel};
use libdd_profiling::api;

const SAMPLES: usize = 100_000;

static COMPRESSED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct SizeFactory;
struct Size;

impl Exporter for Size {
    fn export(
        &mut self,
        p: &EncodedProfile,
        _deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        COMPRESSED.store(p.bytes.len() as u64, Ordering::Relaxed);
        Ok(Delivered {
            bytes: p.bytes.len() as u64,
            retries: 0,
        })
    }
}

impl ExporterFactory for SizeFactory {
    fn compression(&self) -> Compression {
        Compression::Zstd
    }
    fn create(&self, _ctx: &ExportContext<'_>) -> forkprof::Result<Box<dyn Exporter>> {
        Ok(Box::new(Size))
    }
}

struct Outcome {
    /// VmHWM when the profile is built, before serializing (0 where not measured).
    hwm_before_serialize: u64,
    compressed: u64,
    build: Duration,
    serialize: Option<Duration>,
}

fn baseline(n: &Names) -> Outcome {
    let t = Instant::now();
    let mut idx = [0; DEPTH];
    let mut acc = 0usize;
    for i in 0..SAMPLES {
        n.stack(i, &mut idx);
        acc = acc.wrapping_add(idx.iter().sum::<usize>());
    }
    std::hint::black_box(acc);
    Outcome {
        hwm_before_serialize: 0,
        compressed: 0,
        build: t.elapsed(),
        serialize: None,
    }
}

fn forkprof_profiler(n: &Names, buffer: usize) -> Outcome {
    let p = start_profiler(Arc::new(SizeFactory), buffer);
    let t = Instant::now();
    let mut idx = [0; DEPTH];
    let mut frames = [Frame::new("", "", 0); DEPTH];
    for i in 0..SAMPLES {
        n.stack(i, &mut idx);
        for (d, (f, &x)) in frames.iter_mut().zip(&idx).enumerate() {
            *f = Frame::new(&n.functions[x], n.file(x), Names::line(x, d));
        }
        let labels = [
            Label::str(LABEL_STR_KEY, &n.threads[i % 8]),
            Label::num(LABEL_NUM_KEY, Workload::thread_id(i)),
        ];
        // A host records some hundreds of samples a second, not 100,000 in a burst: when the
        // buffer is full (the collector is behind), wait and record the same sample again,
        // so every stack lands in the profile exactly once.
        loop {
            let before = p.stats().samples_dropped;
            p.record(&Sample::new(&frames, &VALUES).labels(&labels))
                .expect("record");
            if p.stats().samples_dropped == before {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let build = t.elapsed();
    p.flush_sync(Duration::from_secs(120)).expect("flush");
    let st = p.stats();
    assert_eq!(st.samples_recorded, SAMPLES as u64);
    eprintln!(
        "forkprof: {} samples re-recorded after the buffer was full",
        st.samples_dropped
    );
    Outcome {
        hwm_before_serialize: 0,
        compressed: COMPRESSED.load(Ordering::Relaxed),
        build,
        serialize: None,
    }
}

/// How `forkprof_builder` serializes.
#[derive(Clone, Copy, PartialEq)]
enum Serialize {
    /// `encode_compressed`, what the collector does (the encoder hands 64 KiB at a time to zstd).
    Streamed,
    /// The whole pprof encoded into one buffer, then compressed.
    Unstreamed,
    /// An OTLP request, streamed into gzip, what the collector does for the OTLP exporter.
    Otlp,
}

fn forkprof_builder(n: &Names, how: Serialize) -> Outcome {
    let types: Vec<SampleType> = SAMPLE_TYPES
        .iter()
        .map(|&(t, u)| SampleType::new(t, u))
        .collect();
    // The collector's memory: fork-local regions grown in place.
    let mut b = fp_builder_fork_local(&types);
    let t = Instant::now();
    let mut idx = [0; DEPTH];
    let mut frames = Vec::with_capacity(DEPTH);
    for i in 0..SAMPLES {
        n.stack(i, &mut idx);
        frames.clear();
        for (d, &x) in idx.iter().enumerate() {
            frames.push(ProfFrame {
                function: b.intern_bytes(n.functions[x].as_bytes()),
                file: b.intern_bytes(n.file(x).as_bytes()),
                line: Names::line(x, d),
            });
        }
        let labels = [
            ProfLabel {
                key: b.intern(LABEL_STR_KEY),
                str: b.intern_bytes(n.threads[i % 8].as_bytes()),
                num: 0,
                num_unit: 0,
            },
            ProfLabel {
                key: b.intern(LABEL_NUM_KEY),
                str: 0,
                num: Workload::thread_id(i),
                num_unit: 0,
            },
        ];
        b.add(frames.iter().copied(), &VALUES, &labels, None);
    }
    let build = t.elapsed();
    let hwm_before_serialize = vm_hwm_kib();
    let t = Instant::now();
    let mut out = Vec::new();
    let mut serializer = forkprof_core::serialize::Serializer::new_in(
        forkprof_core::Memory::fork_local(forkprof::platform()),
    );
    if how == Serialize::Streamed {
        serializer
            .encode_compressed(&b, SystemTime::now(), Compression::Zstd, &mut out)
            .expect("zstd");
    } else if how == Serialize::Otlp {
        let resource = forkprof::otlp::Resource {
            service: "bench",
            pid: std::process::id(),
            host: Some("bench-host"),
            tags: &[],
        };
        serializer
            .encode_as(
                forkprof::ProfileFormat::Otlp,
                &b,
                SystemTime::now(),
                Some(&resource),
                Compression::Gzip,
                &mut out,
            )
            .expect("otlp");
    } else {
        let mut raw = Vec::new();
        b.encode(SystemTime::now(), &mut raw);
        forkprof_core::compress::compress(Compression::Zstd, &raw, &mut out).expect("zstd");
    }
    let serialize = t.elapsed();
    Outcome {
        hwm_before_serialize,
        compressed: out.len() as u64,
        build,
        serialize: Some(serialize),
    }
}

fn libdatadog(n: &Names) -> Outcome {
    let mut p = dd_profile();
    let t = Instant::now();
    let mut idx = [0; DEPTH];
    for i in 0..SAMPLES {
        n.stack(i, &mut idx);
        let locations = idx
            .iter()
            .enumerate()
            .map(|(d, &x)| api::Location {
                function: api::Function {
                    name: &n.functions[x],
                    system_name: "",
                    filename: n.file(x),
                },
                line: Names::line(x, d) as i64,
                ..Default::default()
            })
            .collect();
        let sample = api::Sample {
            locations,
            values: &VALUES,
            labels: vec![
                api::Label {
                    key: LABEL_STR_KEY,
                    str: &n.threads[i % 8],
                    ..Default::default()
                },
                api::Label {
                    key: LABEL_NUM_KEY,
                    num: Workload::thread_id(i),
                    ..Default::default()
                },
            ],
        };
        p.try_add_sample(sample, None).expect("libdatadog add");
    }
    let build = t.elapsed();
    let hwm_before_serialize = vm_hwm_kib();
    let t = Instant::now();
    let enc = p
        .serialize_into_compressed_pprof(None, None)
        .expect("serialize");
    let serialize = t.elapsed();
    Outcome {
        hwm_before_serialize,
        compressed: enc.buffer.len() as u64,
        build,
        serialize: Some(serialize),
    }
}

fn child(mode: &str) {
    let names = Names::new();
    let o = match mode {
        "baseline" => baseline(&names),
        "forkprof" => forkprof_profiler(&names, forkprof::config::DEFAULT_BUFFER_CAPACITY),
        "forkprof-1MiB-buf" => forkprof_profiler(&names, 1 << 20),
        "forkprof-builder" => forkprof_builder(&names, Serialize::Streamed),
        "builder-unstreamed" => forkprof_builder(&names, Serialize::Unstreamed),
        "builder-otlp-gzip" => forkprof_builder(&names, Serialize::Otlp),
        "libdatadog" => libdatadog(&names),
        other => panic!("unknown mode {other:?}"),
    };
    println!(
        "{} {} {} {} {}",
        vm_hwm_kib(),
        o.hwm_before_serialize,
        o.compressed,
        o.build.as_micros(),
        o.serialize.map(|d| d.as_micros() as i64).unwrap_or(-1)
    );
}

struct Row {
    hwm_kib: u64,
    hwm_before_kib: u64,
    compressed: u64,
    build_us: u64,
    serialize_us: i64,
}

fn measure(mode: &str) -> Row {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args(["--mode", mode])
        .output()
        .expect("spawn child");
    assert!(
        out.status.success(),
        "{mode} child failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<i64> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(v.len(), 5, "{mode} child printed {text:?}");
    Row {
        hwm_kib: v[0] as u64,
        hwm_before_kib: v[1] as u64,
        compressed: v[2] as u64,
        build_us: v[3] as u64,
        serialize_us: v[4],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--mode") {
        child(args.get(i + 1).map(String::as_str).unwrap_or(""));
        return;
    }
    println!(
        "one profile: {SAMPLES} unique {DEPTH}-frame stacks, {UNIQUE_FUNCTIONS} function names, 2 labels; each row a fresh process"
    );
    let modes = [
        "baseline",
        "forkprof",
        "forkprof-1MiB-buf",
        "forkprof-builder",
        "builder-unstreamed",
        "builder-otlp-gzip",
        "libdatadog",
    ];
    let rows: Vec<(&str, Row)> = modes.iter().map(|&m| (m, measure(m))).collect();
    for (m, r) in &rows {
        let ser = if r.serialize_us >= 0 {
            format!("{:.3} s", r.serialize_us as f64 / 1e6)
        } else {
            "-".into()
        };
        let before = if r.hwm_before_kib > 0 {
            format!("{:>6.1} MiB", r.hwm_before_kib as f64 / 1024.0)
        } else {
            "     -    ".into()
        };
        println!(
            "{m:<18} peak RSS {:>6.1} MiB (before serialize {before})   compressed {:>5.2} MB   add {:>6.3} s   serialize {ser}",
            r.hwm_kib as f64 / 1024.0,
            r.compressed as f64 / 1e6,
            r.build_us as f64 / 1e6,
        );
    }
    let get = |m: &str| &rows.iter().find(|(n, _)| *n == m).expect("row").1;
    let (fp, fb, dd) = (get("forkprof"), get("forkprof-builder"), get("libdatadog"));
    println!(
        "peak RSS forkprof (Profiler) / libdatadog = {:.3} (goal < 1)   forkprof (ProfileBuilder) / libdatadog = {:.3}",
        fp.hwm_kib as f64 / dd.hwm_kib as f64,
        fb.hwm_kib as f64 / dd.hwm_kib as f64
    );
    println!(
        "serialize forkprof / libdatadog = {:.3}   compressed size forkprof / libdatadog = {:.3}",
        fb.serialize_us as f64 / dd.serialize_us as f64,
        fb.compressed as f64 / dd.compressed as f64
    );
}
