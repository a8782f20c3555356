//! Instructions per sample, counted by callgrind: the same workloads as the criterion bench,
//! in a form that a loaded, shared machine cannot blur.
//!
//! The parent re-runs this binary under `valgrind --tool=callgrind` once per workload and
//! batch count. Host-thread figures use `--toggle-collect` on the `batch_*` function of the
//! workload, so only instructions executed inside it count (the collector thread's work is
//! excluded). "total" figures count the whole process, every thread, and take the difference
//! between 6 batches and 1 so that start-up cancels out: they include the collector's ingest
//! and one flush.
//!
//! `cargo run -p forkprof-bench --profile bench --bin icount`

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use forkprof::{Compression, Frame, FrameIds, Profiler};
use forkprof_bench::*;
use forkprof_core::profile::ProfileBuilder;
use libdd_profiling::collections::string_table::StringTable;
use libdd_profiling::internal::Profile as DdProfile;

const TS0: i64 = 1_750_000_000_000_000_000;

#[inline(never)]
fn batch_fp_record_text(p: &Profiler, frames: &[Vec<Frame<'_>>], w: &Workload) {
    for i in 0..BATCH {
        fp_record_text(p, frames, w, i);
    }
}

#[inline(never)]
fn batch_fp_record_traced(p: &Profiler, frames: &[Vec<Frame<'_>>], w: &Workload) {
    for i in 0..BATCH {
        fp_record_traced(p, frames, w, i);
    }
}

#[inline(never)]
fn batch_fp_record_ids(p: &Profiler, ids: &[Vec<FrameIds>], w: &Workload) {
    for i in 0..BATCH {
        fp_record_ids(p, ids, w, i);
    }
}

#[inline(never)]
fn batch_fp_builder(b: &mut ProfileBuilder, w: &Workload) {
    let mut scratch = Vec::new();
    for i in 0..BATCH {
        fp_builder_add_text(b, w, &mut scratch, i, None);
    }
}

#[inline(never)]
fn batch_dd_text(p: &mut DdProfile, w: &Workload) {
    for i in 0..BATCH {
        dd_add_text(p, w, i, None);
    }
}

#[inline(never)]
fn batch_dd_managed(m: &DdManaged, p: &mut DdProfile) {
    for i in 0..BATCH {
        m.add(p, i);
    }
}

#[inline(never)]
fn batch_dd_interning(p: &mut DdInternedProfile) {
    for i in 0..BATCH {
        p.add(i);
    }
}

#[inline(never)]
fn batch_fp_serialize(b: &ProfileBuilder) -> usize {
    let mut out = Vec::new();
    b.encode_compressed(SystemTime::now(), Compression::Zstd, &mut out)
        .expect("zstd");
    out.len()
}

/// `format` into gzip, as the OTLP exporter's collector does.
fn fp_serialize_gzip(b: &ProfileBuilder, format: forkprof::ProfileFormat) -> usize {
    let resource = forkprof::otlp::Resource {
        service: "bench",
        pid: 1,
        host: Some("bench-host"),
        tags: &[],
    };
    let mut out = Vec::new();
    forkprof_core::serialize::Serializer::new()
        .encode_as(
            format,
            b,
            SystemTime::now(),
            Some(&resource),
            Compression::Gzip,
            &mut out,
        )
        .expect("gzip");
    out.len()
}

#[inline(never)]
fn batch_fp_serialize_otlp(b: &ProfileBuilder) -> usize {
    fp_serialize_gzip(b, forkprof::ProfileFormat::Otlp)
}

#[inline(never)]
fn batch_fp_serialize_pprof_gzip(b: &ProfileBuilder) -> usize {
    fp_serialize_gzip(b, forkprof::ProfileFormat::Pprof)
}

#[inline(never)]
fn batch_dd_serialize(p: DdProfile) -> usize {
    p.serialize_into_compressed_pprof(None, None)
        .expect("serialize")
        .buffer
        .len()
}

#[inline(never)]
fn batch_fp_intern() -> ProfileBuilder {
    let mut t = ProfileBuilder::new(&[], None, SystemTime::UNIX_EPOCH);
    for _ in 0..2 {
        for s in WORDPRESS_STRINGS {
            std::hint::black_box(t.intern(s));
        }
    }
    t
}

#[inline(never)]
fn batch_dd_intern() -> StringTable {
    let mut t = StringTable::new();
    for _ in 0..2 {
        for s in WORDPRESS_STRINGS {
            std::hint::black_box(t.intern(s));
        }
    }
    t
}

fn profiler() -> Profiler {
    start_profiler(Arc::new(DiscardFactory(Compression::Zstd)), 64 << 20)
}

fn run(mode: &str, batches: usize) {
    let w = Workload::new();
    match mode {
        "fp_record_text" | "fp_total_text" => {
            let p = profiler();
            let frames: Vec<Vec<Frame<'_>>> = (0..STACKS).map(|s| w.frames(s)).collect();
            for _ in 0..batches {
                batch_fp_record_text(&p, &frames, &w);
            }
            p.flush_sync(Duration::from_secs(600)).expect("flush");
            assert_eq!(p.stats().samples_dropped, 0, "samples dropped");
            p.stop(Duration::from_secs(60)).expect("stop");
        }
        "fp_record_traced" => {
            let p = profiler();
            let frames: Vec<Vec<Frame<'_>>> = (0..STACKS).map(|s| w.frames(s)).collect();
            for _ in 0..batches {
                batch_fp_record_traced(&p, &frames, &w);
            }
            p.flush_sync(Duration::from_secs(600)).expect("flush");
            assert_eq!(p.stats().samples_dropped, 0, "samples dropped");
            p.stop(Duration::from_secs(60)).expect("stop");
        }
        "fp_record_ids" | "fp_total_ids" => {
            let p = profiler();
            let ids = w.frame_ids();
            for _ in 0..batches {
                batch_fp_record_ids(&p, &ids, &w);
            }
            p.flush_sync(Duration::from_secs(600)).expect("flush");
            assert_eq!(p.stats().samples_dropped, 0, "samples dropped");
            p.stop(Duration::from_secs(60)).expect("stop");
        }
        "fp_builder_text" => {
            for _ in 0..batches {
                let mut b = fp_builder();
                batch_fp_builder(&mut b, &w);
            }
        }
        "dd_text" => {
            for _ in 0..batches {
                let mut p = dd_profile();
                batch_dd_text(&mut p, &w);
            }
        }
        "dd_managed" => {
            let m = DdManaged::new(&w);
            for _ in 0..batches {
                let mut p = m.profile();
                batch_dd_managed(&m, &mut p);
            }
        }
        "dd_interning" => {
            let it = DdInterned { w: &w };
            for _ in 0..batches {
                let mut p = it.profile();
                batch_dd_interning(&mut p);
            }
        }
        "fp_serialize" | "fp_serialize_otlp" | "fp_serialize_pprof_gzip" => {
            for _ in 0..batches {
                let mut b = fp_builder();
                let mut scratch = Vec::new();
                for i in 0..BATCH {
                    let ts = TS0 + i as i64 * 10_000_000;
                    fp_builder_add_text(&mut b, &w, &mut scratch, i, Some(ts));
                }
                std::hint::black_box(match mode {
                    "fp_serialize_otlp" => batch_fp_serialize_otlp(&b),
                    "fp_serialize_pprof_gzip" => batch_fp_serialize_pprof_gzip(&b),
                    _ => batch_fp_serialize(&b),
                });
            }
        }
        "dd_serialize" => {
            for _ in 0..batches {
                let mut p = dd_profile();
                for i in 0..BATCH {
                    dd_add_text(&mut p, &w, i, Some(TS0 + i as i64 * 10_000_000));
                }
                std::hint::black_box(batch_dd_serialize(p));
            }
        }
        "fp_intern" => {
            for _ in 0..batches {
                std::hint::black_box(batch_fp_intern());
            }
        }
        "dd_intern" => {
            for _ in 0..batches {
                std::hint::black_box(batch_dd_intern());
            }
        }
        other => panic!("unknown mode {other:?}"),
    }
}

/// Instructions callgrind collected for `mode` with `batches` batches.
fn collected(mode: &str, batches: usize, toggle: Option<&str>) -> u64 {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--callgrind-out-file=/dev/null"]);
    if let Some(t) = toggle {
        cmd.arg(format!("--toggle-collect=*{t}*"));
    }
    let out = cmd
        .arg(exe)
        .args(["--mode", mode, "--batches", &batches.to_string()])
        .output()
        .expect("run valgrind (is it installed?)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{mode} under callgrind failed:\n{err}"
    );
    err.lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 'Collected' line from callgrind:\n{err}"))
}

/// Instructions per sample (per 1000-sample batch / 1000), from 6 batches minus 1.
fn per_sample(mode: &str, toggle: Option<&str>) -> f64 {
    let one = collected(mode, 1, toggle);
    let six = collected(mode, 6, toggle);
    (six.saturating_sub(one)) as f64 / (5 * BATCH) as f64
}

/// What is compared, then forkprof's mode and toggle, then libdatadog's.
type Row = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--mode") {
        let batches = args
            .iter()
            .position(|a| a == "--batches")
            .and_then(|j| args.get(j + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        run(&args[i + 1], batches);
        return;
    }
    println!("instructions per sample (callgrind; 1000-sample batches, 6 batches minus 1)");
    let rows: [Row; 9] = [
        (
            "add, text: record (host thread) vs try_add_sample",
            "fp_record_text",
            Some("batch_fp_record_text"),
            "dd_text",
            Some("batch_dd_text"),
        ),
        (
            "add, text: record + collector (whole process) vs try_add_sample",
            "fp_total_text",
            None,
            "dd_text",
            Some("batch_dd_text"),
        ),
        (
            "add, text: ProfileBuilder::add in-thread vs try_add_sample",
            "fp_builder_text",
            Some("batch_fp_builder"),
            "dd_text",
            Some("batch_dd_text"),
        ),
        (
            "add, ids: record (host thread) vs interning API",
            "fp_record_ids",
            Some("batch_fp_record_ids"),
            "dd_interning",
            Some("batch_dd_interning"),
        ),
        (
            "add, ids: record + collector (whole process) vs add_string_id_sample",
            "fp_total_ids",
            None,
            "dd_managed",
            Some("batch_dd_managed"),
        ),
        (
            "serialize + zstd-1, 1000 timestamped samples",
            "fp_serialize",
            Some("batch_fp_serialize"),
            "dd_serialize",
            Some("batch_dd_serialize"),
        ),
        (
            "serialize + gzip, pprof, 1000 timestamped samples (vs dd pprof + zstd)",
            "fp_serialize_pprof_gzip",
            Some("batch_fp_serialize_pprof_gzip"),
            "dd_serialize",
            Some("batch_dd_serialize"),
        ),
        (
            "serialize + gzip, OTLP, 1000 timestamped samples (vs dd pprof + zstd)",
            "fp_serialize_otlp",
            Some("batch_fp_serialize_otlp"),
            "dd_serialize",
            Some("batch_dd_serialize"),
        ),
        (
            "intern 1059 strings twice (per string, per pass)",
            "fp_intern",
            Some("batch_fp_intern"),
            "dd_intern",
            Some("batch_dd_intern"),
        ),
    ];
    let mut cache: Vec<(String, f64)> = Vec::new();
    let mut get = |mode: &str, toggle: Option<&str>| -> f64 {
        if let Some((_, v)) = cache.iter().find(|(m, _)| m == mode) {
            return *v;
        }
        let mut v = per_sample(mode, toggle);
        if mode.ends_with("intern") {
            // A batch is 2 × 1059 strings, not 1000 samples.
            v *= BATCH as f64 / (2 * WORDPRESS_STRINGS.len()) as f64;
        }
        cache.push((mode.to_string(), v));
        v
    };
    // `--rows TEXT`: only the rows whose description holds TEXT.
    let only = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1).cloned());
    for (what, fm, ft, dm, dt) in rows {
        if only.as_deref().is_some_and(|o| !what.contains(o)) {
            continue;
        }
        let f = get(fm, ft);
        let d = get(dm, dt);
        println!(
            "{what:<70} forkprof {f:>8.0} instr  libdatadog {d:>8.0} instr  forkprof / libdatadog = {:.3}",
            f / d
        );
    }
    // What a span costs the host when it is attached (a sample without one runs the same
    // record as before: trace context adds nothing to it).
    let plain = get("fp_record_text", Some("batch_fp_record_text"));
    let traced = get("fp_record_traced", Some("batch_fp_record_traced"));
    println!(
        "{:<70} without {plain:>8.0} instr  with {traced:>8.0} instr  with / without = {:.3}",
        "trace context, text: record (host thread) without vs with a span's 4 labels",
        traced / plain
    );
}
