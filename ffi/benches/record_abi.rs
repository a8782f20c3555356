//! What the C ABI adds on the host thread: `forkprof_record` / `forkprof_record_ids` against
//! `Profiler::record` with the same sample (18 frames, 2 labels), interleaved in one process so
//! machine noise hits both alike. Prints ns per sample and the ratio; asserts nothing.
//!
//! Run: cargo bench -p forkprof-ffi --bench record_abi

// The bench compiles the ABI's modules in as its own (the library is cdylib/staticlib only,
// so there is no rlib to link), at the crate root where their `crate::` paths expect them.
#![allow(non_camel_case_types, dead_code)]

#[path = "../src/args.rs"]
mod args;
#[path = "../src/config.rs"]
mod config;
#[path = "../src/datadog.rs"]
mod datadog;
#[path = "../src/fork.rs"]
mod fork;
#[path = "../src/profiler.rs"]
mod profiler;
#[path = "../src/sized.rs"]
mod sized;
#[path = "../src/status.rs"]
mod status;
#[path = "../src/version.rs"]
mod version;

use std::hint::black_box;
use std::time::{Duration, Instant};

use forkprof::{Compression, Config, Frame, FrameIds, Label, Profiler, Sample};
use profiler::*;

const PER_ROUND: usize = 20_000;
const ROUNDS: usize = 15;

fn main() {
    let dir = std::env::temp_dir().join(format!("forkprof-bench-abi-{}", std::process::id()));
    let config = Config::builder("bench-abi")
        .sample_type("wall-time", "nanoseconds")
        .buffer_capacity(256 << 20)
        .output_dir(&dir, Compression::Gzip)
        .build()
        .expect("config");
    let names: Vec<String> = (0..18).map(|i| format!("function_{i}")).collect();
    let frames: Vec<Frame<'_>> = names.iter().map(|n| Frame::new(n, "bench.rs", 7)).collect();
    let ids: Vec<FrameIds> = names
        .iter()
        .map(|n| FrameIds {
            function: forkprof::intern(n).unwrap(),
            file: forkprof::intern("bench.rs").unwrap(),
            line: 7,
        })
        .collect();
    let labels = [
        Label::num("thread id", 7),
        Label::str("thread name", "worker-1"),
    ];
    let c_frames: Vec<forkprof_frame> = names
        .iter()
        .map(|n| forkprof_frame {
            size: size_of::<forkprof_frame>() as u32,
            function: n.as_ptr().cast(),
            function_len: n.len(),
            file: "bench.rs".as_ptr().cast(),
            file_len: 8,
            line: 7,
        })
        .collect();
    let c_ids: Vec<forkprof_frame_ids> = ids
        .iter()
        .map(|f| forkprof_frame_ids {
            size: size_of::<forkprof_frame_ids>() as u32,
            function: f.function.as_u32(),
            file: f.file.as_u32(),
            line: 7,
        })
        .collect();
    let c_labels = [
        forkprof_label {
            size: size_of::<forkprof_label>() as u32,
            key: "thread id".as_ptr().cast(),
            key_len: 9,
            kind: FORKPROF_LABEL_NUM,
            str: std::ptr::null(),
            str_len: 0,
            num: 7,
            unit: std::ptr::null(),
            unit_len: 0,
        },
        forkprof_label {
            size: size_of::<forkprof_label>() as u32,
            key: "thread name".as_ptr().cast(),
            key_len: 11,
            kind: FORKPROF_LABEL_STR,
            str: "worker-1".as_ptr().cast(),
            str_len: 8,
            num: 0,
            unit: std::ptr::null(),
            unit_len: 0,
        },
    ];
    let values = [100i64];

    let mut best = [Duration::MAX; 4];
    for _ in 0..ROUNDS {
        // A fresh profiler per round so the buffer never fills (a dropped sample is cheaper).
        let prof = Profiler::start(config.clone()).expect("start");
        let h = forkprof_profiler::wrap(prof.clone());
        let runs: [&dyn Fn(); 4] = [
            &|| {
                prof.record(&Sample::new(&frames, &values).labels(&labels))
                    .unwrap()
            },
            // SAFETY: every pointer is a live slice with its exact length.
            &|| unsafe {
                forkprof_record(
                    h,
                    c_frames.as_ptr(),
                    18,
                    values.as_ptr(),
                    1,
                    c_labels.as_ptr(),
                    2,
                    0,
                );
            },
            &|| {
                prof.record(&Sample::with_ids(&ids, &values).labels(&labels))
                    .unwrap()
            },
            // SAFETY: as above.
            &|| unsafe {
                forkprof_record_ids(
                    h,
                    c_ids.as_ptr(),
                    18,
                    values.as_ptr(),
                    1,
                    c_labels.as_ptr(),
                    2,
                    0,
                );
            },
        ];
        for (i, run) in runs.iter().enumerate() {
            let t0 = Instant::now();
            for _ in 0..PER_ROUND {
                run();
                black_box(());
            }
            best[i] = best[i].min(t0.elapsed());
        }
        // SAFETY: `h` came from `wrap` and no run uses it any more.
        unsafe { forkprof_free(h) };
        let stats = prof.stop(Duration::from_secs(30)).expect("stop");
        assert_eq!(stats.samples_dropped, 0, "buffer too small for the bench");
    }
    let ns = |d: Duration| d.as_nanos() as f64 / PER_ROUND as f64;
    println!("record, 18 frames + 2 labels (best of {ROUNDS} rounds of {PER_ROUND}):");
    println!(
        "  text: Rust API {:7.1} ns   C ABI {:7.1} ns   ratio {:.2}",
        ns(best[0]),
        ns(best[1]),
        ns(best[1]) / ns(best[0])
    );
    println!(
        "  ids:  Rust API {:7.1} ns   C ABI {:7.1} ns   ratio {:.2}",
        ns(best[2]),
        ns(best[3]),
        ns(best[3]) / ns(best[2])
    );
    let _ = std::fs::remove_dir_all(&dir);
}
