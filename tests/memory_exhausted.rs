//! A profile whose memory cannot grow: the kernel refuses the collector's mappings (a low
//! `RLIMIT_AS`, set in a subprocess so the test runner keeps its own address space). The
//! samples that no longer fit are dropped and counted in `Stats::samples_dropped_no_memory`;
//! nothing aborts, panics or hangs, and the profiler stops cleanly.
#![cfg(target_os = "linux")] // RLIMIT_AS and /proc are Linux's

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkprof::export::{Delivered, ExportContext, ExportFailure};
use forkprof::{
    Compression, Config, EncodedProfile, Exporter, ExporterConfig, ExporterFactory, Frame,
    Profiler, Sample,
};
use support::Watchdog;

const CHILD_ENV: &str = "FORKPROF_TEST_MEMORY_EXHAUSTED_CHILD";
const DEPTH: usize = 18;
const FUNCTIONS: usize = 5000;
/// More unique stacks than fit in the address space left to the child.
const STACKS: usize = 150_000;

static DELIVERED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Counting;
struct CountingExporter;

impl Exporter for CountingExporter {
    fn export(
        &mut self,
        p: &EncodedProfile,
        _deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        DELIVERED.fetch_add(1, Ordering::Relaxed);
        Ok(Delivered {
            bytes: p.bytes.len() as u64,
            retries: 0,
        })
    }
}

impl ExporterFactory for Counting {
    // zstd: the compressor's path whose every buffer grows fallibly.
    fn compression(&self) -> Compression {
        Compression::Zstd
    }
    fn create(&self, _ctx: &ExportContext<'_>) -> forkprof::Result<Box<dyn Exporter>> {
        Ok(Box::new(CountingExporter))
    }
}

fn vm_size_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib << 10)
        .expect("VmSize in /proc/self/status")
}

fn stack(i: usize, out: &mut [usize; DEPTH]) {
    out[0] = i % FUNCTIONS;
    out[1] = i / FUNCTIONS;
    let mut x = i as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for slot in out.iter_mut().skip(2) {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *slot = ((x >> 33) % FUNCTIONS as u64) as usize;
    }
}

/// The subprocess: profiles, lowers its address-space limit, then records more unique stacks
/// than the collector can map. Run by the test below, never on its own.
#[test]
#[ignore = "run as a subprocess by a_collector_that_cannot_map_drops_and_counts_samples"]
fn memory_exhausted_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let config = Config::builder("memexhausted")
        .sample_type("samples", "count")
        .period(Duration::from_secs(3600))
        .exporter(ExporterConfig::Custom(Arc::new(Counting)))
        .build()
        .unwrap();
    let p = Profiler::start(config).unwrap();
    // Everything this thread needs is allocated before the limit: names, frames.
    let names: Vec<String> = (0..FUNCTIONS)
        .map(|i| format!("App\\Module{}\\Service::handle_{i}", i % 50))
        .collect();
    // Stack `i`, recorded with frames on this thread's stack (no allocation).
    let one = |p: &Profiler, i: usize| {
        let mut idx = [0usize; DEPTH];
        stack(i, &mut idx);
        let mut frames = [Frame::new("", "", 0); DEPTH];
        for (d, (f, &x)) in frames.iter_mut().zip(idx.iter()).enumerate() {
            *f = Frame::new(&names[x], "app.php", d as u32 + 1);
        }
        p.record(&Sample::new(&frames[..], &[1])).is_ok()
    };
    // A first profile with memory to spare: the collector's tables, zstd context and threads
    // all exist before the limit.
    for i in 0..1000 {
        one(&p, i);
    }
    p.flush_sync(Duration::from_secs(20)).unwrap();
    assert_eq!(DELIVERED.load(Ordering::Relaxed), 1);

    let limit = vm_size_bytes() + (8 << 20);
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit for this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);

    let mut recorded = 0u64;
    for i in 1000..1000 + STACKS {
        // A full buffer (the collector is behind) is not what this test is about: wait and
        // record the same stack again, so that every stack reaches the collector.
        loop {
            let before = p.stats().samples_dropped;
            assert!(one(&p, i), "record failed");
            if p.stats().samples_dropped == before {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        recorded += 1;
    }
    let st = p.stop(Duration::from_secs(30)).unwrap();
    println!(
        "recorded {recorded}, stats: recorded {} dropped(full) {} dropped(no memory) {} written {} failed {}",
        st.samples_recorded,
        st.samples_dropped,
        st.samples_dropped_no_memory,
        st.profiles_written,
        st.profiles_failed
    );
    assert!(
        st.samples_dropped_no_memory > 0,
        "the limit never refused the collector a mapping: {st:?}"
    );
    assert_eq!(st.samples_recorded, 1000 + recorded);
    assert!(st.samples_dropped_no_memory < recorded);
    // The last profile was written, or its encoding failed cleanly and was counted.
    assert_eq!(st.profiles_written + st.profiles_failed, 2, "{st:?}");
}

#[test]
fn a_collector_that_cannot_map_drops_and_counts_samples() {
    let _w = Watchdog::new("memory_exhausted subprocess", Duration::from_secs(120));
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "memory_exhausted_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "subprocess failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "the subprocess did not run its test:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("dropped(no memory)"), "{stdout}");
}
