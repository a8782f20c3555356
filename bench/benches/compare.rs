//! forkprof against libdd-profiling 1.0.0, the same workloads in one criterion run.
//!
//! Every benchmark iteration handles `BATCH` (1000) samples; the summary printed at the end
//! divides by it. Groups:
//! - `add_text`: 18-frame stack + 2 labels with strings as text. forkprof's `record` is the
//!   host-thread cost only (the collector aggregates on its own thread), so the group also
//!   measures `record` plus the collector's CPU time for the same samples, and the collector's
//!   aggregation (`ProfileBuilder::add`) run in-thread.
//! - `add_ids`: the same with names interned beforehand.
//! - `serialize_zstd`: encode + zstd level 1 of 1000 timestamped samples (forkprof:
//!   `ProfileBuilder::encode_compressed`, what the collector runs); beside it forkprof's pprof
//!   and OTLP encodings into gzip (what the OTLP exporter sends).
//! - `intern_1059x2`: 1059 strings of a WordPress profile into a fresh table, twice.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, Criterion};
use forkprof::{Compression, FrameIds, Profiler};
use forkprof_bench::*;
use forkprof_core::profile::ProfileBuilder;
use libdd_profiling::collections::string_table::StringTable;

/// Flush (untimed) after this many iterations so the buffer never fills and no sample is
/// dropped: a dropped sample would make `record` look cheaper than it is.
const FLUSH_EVERY: u64 = 8;
const BUFFER: usize = 64 << 20;

/// Times `BATCH` calls of `record` per iteration (host thread only), flushing untimed now
/// and then.
fn time_record(p: &Profiler, iters: u64, mut one: impl FnMut(usize)) -> Duration {
    let mut total = Duration::ZERO;
    for it in 0..iters {
        let t = Instant::now();
        for i in 0..BATCH {
            one(i);
        }
        total += t.elapsed();
        if it % FLUSH_EVERY == FLUSH_EVERY - 1 {
            p.flush_sync(Duration::from_secs(30)).expect("flush");
        }
    }
    p.flush_sync(Duration::from_secs(30)).expect("flush");
    total
}

/// Times `BATCH` calls of `record` and adds the collector thread's CPU time for ingesting
/// them (each iteration is flushed, so the figure also carries one small profile rotation per
/// 1000 samples).
fn time_record_and_collect(p: &Profiler, iters: u64, mut one: impl FnMut(usize)) -> Duration {
    p.flush_sync(Duration::from_secs(30)).expect("flush");
    let collector = thread_id_by_name("forkprof-collect").expect("collector thread");
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let c0 = thread_cpu_ns(collector);
        let t = Instant::now();
        for i in 0..BATCH {
            one(i);
        }
        total += t.elapsed();
        p.flush_sync(Duration::from_secs(30)).expect("flush");
        total += Duration::from_nanos(thread_cpu_ns(collector) - c0);
    }
    total
}

fn add_text(c: &mut Criterion, p: &Profiler, w: &Workload) {
    let frames: Vec<Vec<forkprof::Frame<'_>>> = (0..STACKS).map(|s| w.frames(s)).collect();
    let mut g = c.benchmark_group("add_text");
    g.bench_function("forkprof_record", |b| {
        b.iter_custom(|iters| time_record(p, iters, |i| fp_record_text(p, &frames, w, i)))
    });
    g.bench_function("forkprof_record_and_collector", |b| {
        b.iter_custom(|iters| {
            time_record_and_collect(p, iters, |i| fp_record_text(p, &frames, w, i))
        })
    });
    g.bench_function("forkprof_builder_add", |b| {
        let mut scratch = Vec::new();
        b.iter_batched(
            fp_builder,
            |mut pb| {
                for i in 0..BATCH {
                    fp_builder_add_text(&mut pb, w, &mut scratch, i, None);
                }
                pb
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("libdatadog_try_add_sample", |b| {
        b.iter_batched(
            dd_profile,
            |mut dp| {
                for i in 0..BATCH {
                    dd_add_text(&mut dp, w, i, None);
                }
                dp
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn add_ids(c: &mut Criterion, p: &Profiler, w: &Workload) {
    let ids: Vec<Vec<FrameIds>> = w.frame_ids();
    let managed = DdManaged::new(w);
    let interned = DdInterned { w };
    let mut g = c.benchmark_group("add_ids");
    g.bench_function("forkprof_record", |b| {
        b.iter_custom(|iters| time_record(p, iters, |i| fp_record_ids(p, &ids, w, i)))
    });
    g.bench_function("forkprof_record_and_collector", |b| {
        b.iter_custom(|iters| time_record_and_collect(p, iters, |i| fp_record_ids(p, &ids, w, i)))
    });
    g.bench_function("libdatadog_add_string_id_sample", |b| {
        b.iter_batched(
            || managed.profile(),
            |mut dp| {
                for i in 0..BATCH {
                    managed.add(&mut dp, i);
                }
                dp
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("libdatadog_interning_api", |b| {
        b.iter_batched(
            || interned.profile(),
            |mut dp| {
                for i in 0..BATCH {
                    dp.add(i);
                }
                dp
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

const TS0: i64 = 1_750_000_000_000_000_000;

/// A builder holding `BATCH` timestamped samples, what the serialize rows encode.
fn timeline_builder(w: &Workload) -> ProfileBuilder {
    let mut pb = fp_builder();
    let mut scratch = Vec::new();
    for i in 0..BATCH {
        let ts = TS0 + i as i64 * 10_000_000;
        fp_builder_add_text(&mut pb, w, &mut scratch, i, Some(ts));
    }
    pb
}

fn serialize(c: &mut Criterion, w: &Workload) {
    let mut g = c.benchmark_group("serialize_zstd");
    g.bench_function("forkprof", |b| {
        b.iter_batched(
            || timeline_builder(w),
            |pb| {
                let mut out = Vec::new();
                pb.encode_compressed(SystemTime::now(), Compression::Zstd, &mut out)
                    .expect("zstd");
                (pb, out)
            },
            BatchSize::SmallInput,
        )
    });
    // The OTLP exporter's path (OTLP request, gzip), beside pprof + gzip to tell the encoder's
    // share from the compressor's.
    for (name, format) in [
        ("forkprof-pprof-gzip", forkprof::ProfileFormat::Pprof),
        ("forkprof-otlp-gzip", forkprof::ProfileFormat::Otlp),
    ] {
        g.bench_function(name, |b| {
            let resource = forkprof::otlp::Resource {
                service: "bench",
                pid: 1,
                host: Some("bench-host"),
                tags: &[],
            };
            let mut serializer = forkprof_core::serialize::Serializer::new();
            b.iter_batched(
                || timeline_builder(w),
                |pb| {
                    let mut out = Vec::new();
                    serializer
                        .encode_as(
                            format,
                            &pb,
                            SystemTime::now(),
                            Some(&resource),
                            Compression::Gzip,
                            &mut out,
                        )
                        .expect("gzip");
                    (pb, out)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("libdatadog", |b| {
        b.iter_batched(
            || {
                let mut dp = dd_profile();
                for i in 0..BATCH {
                    dd_add_text(&mut dp, w, i, Some(TS0 + i as i64 * 10_000_000));
                }
                dp
            },
            |dp| {
                dp.serialize_into_compressed_pprof(None, None)
                    .expect("dd serialize")
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn intern_strings(c: &mut Criterion) {
    let mut g = c.benchmark_group("intern_1059x2");
    g.bench_function("forkprof", |b| {
        b.iter(|| {
            let mut t = ProfileBuilder::new(&[], None, SystemTime::UNIX_EPOCH);
            for _ in 0..2 {
                for s in WORDPRESS_STRINGS {
                    black_box(t.intern(s));
                }
            }
            t
        })
    });
    g.bench_function("libdatadog", |b| {
        b.iter(|| {
            let mut t = StringTable::new();
            for _ in 0..2 {
                for s in WORDPRESS_STRINGS {
                    black_box(t.intern(s));
                }
            }
            t
        })
    });
    g.finish();
}

/// Median of a criterion result, in ns per iteration, from
/// `target/criterion/<group>/<bench>/new/estimates.json`.
fn median_ns(dir: &std::path::Path, group: &str, bench: &str) -> Option<f64> {
    let text =
        std::fs::read_to_string(dir.join(group).join(bench).join("new/estimates.json")).ok()?;
    let at = text.find("\"median\"")?;
    let rest = &text[at..];
    let pe = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let num: String = rest[pe..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        .collect();
    num.parse().ok()
}

fn criterion_dir() -> std::path::PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return h.into();
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return std::path::PathBuf::from(t).join("criterion");
    }
    // target/<profile>/deps/compare-<hash>
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map(|t| t.join("criterion"))
        .unwrap_or_else(|| "target/criterion".into())
}

fn summary(p: &Profiler) {
    let dir = criterion_dir();
    let per = |g: &str, b: &str| median_ns(&dir, g, b).map(|ns| ns / BATCH as f64);
    println!();
    println!("== forkprof vs libdd-profiling 1.0.0 (criterion medians, per sample) ==");
    let line = |what: &str, fp: Option<f64>, dd: Option<f64>, goal: &str| {
        if let (Some(fp), Some(dd)) = (fp, dd) {
            println!(
                "{what:<58} forkprof {fp:>8.1} ns  libdatadog {dd:>8.1} ns  forkprof / libdatadog = {:.3}  (speed-up {:.1}x){goal}",
                fp / dd,
                dd / fp
            );
        }
    };
    let dd_text = per("add_text", "libdatadog_try_add_sample");
    line(
        "add, text: record (host thread) vs try_add_sample",
        per("add_text", "forkprof_record"),
        dd_text,
        "  goal: <= 0.1 (>= 10x) and <= 250 ns",
    );
    line(
        "add, text: record + collector CPU vs try_add_sample",
        per("add_text", "forkprof_record_and_collector"),
        dd_text,
        "",
    );
    line(
        "add, text: ProfileBuilder::add in-thread vs try_add_sample",
        per("add_text", "forkprof_builder_add"),
        dd_text,
        "",
    );
    let dd_ids = per("add_ids", "libdatadog_add_string_id_sample");
    let dd_int = per("add_ids", "libdatadog_interning_api");
    line(
        "add, ids: record (host) vs add_string_id_sample",
        per("add_ids", "forkprof_record"),
        dd_ids,
        "  goal: <= 100 ns",
    );
    line(
        "add, ids: record (host) vs interning API",
        per("add_ids", "forkprof_record"),
        dd_int,
        "",
    );
    line(
        "add, ids: record + collector CPU vs add_string_id_sample",
        per("add_ids", "forkprof_record_and_collector"),
        dd_ids,
        "",
    );
    line(
        "add, ids: record + collector CPU vs interning API",
        per("add_ids", "forkprof_record_and_collector"),
        dd_int,
        "",
    );
    line(
        "serialize + zstd-1, 1000 timestamped samples",
        per("serialize_zstd", "forkprof"),
        per("serialize_zstd", "libdatadog"),
        "  goal: <= 300 ns",
    );
    let i1 = median_ns(&dir, "intern_1059x2", "forkprof");
    let i2 = median_ns(&dir, "intern_1059x2", "libdatadog");
    if let (Some(a), Some(b)) = (i1, i2) {
        println!(
            "{:<58} forkprof {:>8.1} us  libdatadog {:>8.1} us  forkprof / libdatadog = {:.3}",
            "intern 1059 strings twice (whole run)",
            a / 1000.0,
            b / 1000.0,
            a / b
        );
    }
    let st = p.stats();
    println!(
        "forkprof counters over the run: recorded {} dropped {} too_large {} (dropped must be 0 for the record figures to stand)",
        st.samples_recorded, st.samples_dropped, st.samples_too_large
    );
}

fn main() {
    let w = Workload::new();
    let p = start_profiler(Arc::new(DiscardFactory(Compression::Zstd)), BUFFER);
    let mut c = Criterion::default().configure_from_args();
    add_text(&mut c, &p, &w);
    add_ids(&mut c, &p, &w);
    serialize(&mut c, &w);
    intern_strings(&mut c);
    c.final_summary();
    summary(&p);
    let _ = p.stop(Duration::from_secs(10));
}
