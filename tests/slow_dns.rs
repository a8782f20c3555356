//! A resolver that takes 5 s (as musl's does with an unreachable name server) must delay no
//! fork: not while `start()` is looking the endpoint up, not while uploads are in flight.
//! The lookup runs on the thread that calls `start()`, with no forkprof lock held; profiler
//! threads never resolve (docs/fork-protocol.md, rule 8).

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkprof::export::datadog::Datadog;
use forkprof::{Compression, Config, ExporterConfig, Frame, Profiler, Sample};
use support::*;

const LOOKUP: Duration = Duration::from_secs(5);

/// The injected resolver: blocks like a resolver waiting for a dead name server, then answers.
fn slow_lookup(_host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    std::thread::sleep(LOOKUP);
    Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
}

/// An agent that accepts and reads but never answers: every upload hangs.
fn hung_agent() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// Forks a child that exits at once; returns how long `fork()` took in the parent.
fn timed_fork() -> Duration {
    let t0 = Instant::now();
    // SAFETY: the child only calls `_exit`.
    let pid = unsafe { libc::fork() };
    let took = t0.elapsed();
    if pid == 0 {
        // SAFETY: leaving the child at once.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    took
}

fn summary(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let pct = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
    let max = *v.last().unwrap();
    eprintln!(
        "slow-dns {name:<10} forks={:<5} p50={:>8.1?} p99={:>8.1?} max={:>8.1?}",
        v.len(),
        pct(0.5),
        pct(0.99),
        max
    );
    max
}

#[test]
fn forks_never_wait_for_a_slow_lookup_or_a_hung_upload() {
    let _w = Watchdog::new(
        "forks_never_wait_for_a_slow_lookup",
        Duration::from_secs(60),
    );
    let dir = TempDir::new("slowdns");
    // A running profiler, so the fork handlers are active throughout.
    let files = Profiler::start(
        Config::builder("slowdns-files")
            .sample_type("samples", "count")
            .output_dir(dir.path(), Compression::Gzip)
            .build()
            .unwrap(),
    )
    .unwrap();
    let baseline: Vec<Duration> = (0..100).map(|_| timed_fork()).collect();

    let port = hung_agent();
    let url = format!("http://slow-dns.test:{port}");
    let config = Config::builder("slowdns")
        .sample_type("samples", "count")
        .period(Duration::from_millis(50))
        .exporter(ExporterConfig::from(
            Datadog::agent(&url).lookup_with(slow_lookup),
        ))
        .build()
        .unwrap();

    let started = Arc::new(AtomicBool::new(false));
    let starter = {
        let started = started.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let p = Profiler::start(config).expect("start with the slow lookup");
            started.store(true, Ordering::Release);
            (p, t0.elapsed())
        })
    };
    let mut during_lookup = Vec::new();
    while !started.load(Ordering::Acquire) {
        during_lookup.push(timed_fork());
        // Pacing only, so 2 cores are not spent on thousands of forks.
        std::thread::sleep(Duration::from_millis(2));
    }
    let (dd, start_took) = starter.join().unwrap();
    assert!(
        start_took >= LOOKUP,
        "start() did not run the injected lookup"
    );

    let frames = [Frame::new("upload_phase", "dns.rs", 1)];
    let mut during_uploads = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) || during_uploads.len() < 100 {
        dd.record(&Sample::new(&frames, &[1])).unwrap();
        files.record(&Sample::new(&frames, &[1])).unwrap();
        during_uploads.push(timed_fork());
    }
    let activity = dd.thread_activity();

    let base_max = summary("baseline", baseline);
    let lookup_max = summary("lookup", during_lookup.clone());
    let upload_max = summary("uploads", during_uploads);
    eprintln!(
        "slow-dns start() took {start_took:.1?}; uploader during the upload phase: {activity:?}"
    );
    assert!(
        during_lookup.len() >= 10,
        "only {} forks ran during the lookup",
        during_lookup.len()
    );
    // A fork that waited for the lookup or the upload would take seconds; the baseline is
    // microseconds. Half the lookup time separates the two whatever the machine's load.
    assert!(
        lookup_max < LOOKUP / 2,
        "a fork waited for the lookup: {lookup_max:?} (baseline max {base_max:?})"
    );
    assert!(
        upload_max < LOOKUP / 2,
        "a fork waited for an upload: {upload_max:?} (baseline max {base_max:?})"
    );

    let _ = dd.stop(Duration::from_millis(300));
    files.stop(Duration::from_secs(5)).unwrap();
}
