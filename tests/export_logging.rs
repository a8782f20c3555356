//! Nothing reaches the host's `log` logger from a forkprof thread, dependencies included: a
//! host logger takes a lock of its own, and a fork landing while a forkprof thread holds it
//! would leave the child's logging hung for ever. The logger here notes every call made on a
//! thread whose name starts with `forkprof-` (the collector and the uploader), at every level
//! and target, while uploads run through every HTTP path (TCP, Unix socket, retries, failures,
//! Retry-After, a forked child's own uploads, and TLS handshakes when built with the `tls`
//! feature) and the file exporter.
//!
//! The test first proves the logger would catch such a call: a custom exporter, which runs on
//! the real uploader thread, logs once, and that call must be the one noted.

mod export_support;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use export_support::*;
use forkprof::export::{Datadog, Delivered, ExportContext, ExportFailure, Pyroscope};
use forkprof::{
    ChildPolicy, Compression, Config, EncodedProfile, Exporter, ExporterConfig, ExporterFactory,
    Profiler,
};
use support::*;

/// Calls made on a forkprof thread: (thread name, record).
static ON_FORKPROF_THREADS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Calls made on any other thread (forkprof's messages, delivered on the host's threads).
static ELSEWHERE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The calling thread's name, as the kernel has it (forkprof names its threads itself, not
/// through std).
fn thread_name() -> String {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_to_string("/proc/thread-self/comm")
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut buf = [0 as libc::c_char; 64];
        // SAFETY: `buf` is writable for its length, which is passed with it.
        unsafe { libc::pthread_getname_np(libc::pthread_self(), buf.as_mut_ptr(), buf.len()) };
        // SAFETY: pthread_getname_np NUL-terminates within the buffer.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }
}

struct Tripwire;

impl log::Log for Tripwire {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        let name = thread_name();
        let line = format!("[{name}] {} {}: {}", r.level(), r.target(), r.args());
        if name.starts_with("forkprof-") {
            ON_FORKPROF_THREADS.lock().unwrap().push(line);
        } else {
            ELSEWHERE.lock().unwrap().push(line);
        }
    }
    fn flush(&self) {}
}

fn taken(list: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *list.lock().unwrap())
}

/// An exporter that logs from the uploader thread: what the tripwire must catch.
#[derive(Debug)]
struct LoggingFactory {
    exported: Arc<AtomicBool>,
}

struct LoggingExporter(Arc<AtomicBool>);

impl Exporter for LoggingExporter {
    fn export(
        &mut self,
        p: &EncodedProfile,
        _: Option<std::time::Instant>,
    ) -> Result<Delivered, ExportFailure> {
        log::info!(target: "selftest", "exporting {} bytes", p.bytes.len());
        self.0.store(true, Ordering::SeqCst);
        Ok(Delivered {
            bytes: p.bytes.len() as u64,
            retries: 0,
        })
    }
}

impl ExporterFactory for LoggingFactory {
    fn compression(&self) -> Compression {
        Compression::None
    }
    fn create(&self, _: &ExportContext<'_>) -> forkprof::Result<Box<dyn Exporter>> {
        Ok(Box::new(LoggingExporter(self.exported.clone())))
    }
}

fn run(exporter: ExporterConfig, service: &str) -> forkprof::Stats {
    let cfg = Config::builder(service)
        .sample_type("samples", "count")
        .child_policy(ChildPolicy::Restart)
        .exporter(exporter)
        .build()
        .unwrap();
    let p = Profiler::start(cfg).unwrap();
    record(&p, "logging_check", 3);
    let _ = p.flush_sync(Duration::from_secs(20));
    record(&p, "logging_check_again", 2);
    p.stop(Duration::from_secs(10)).unwrap()
}

#[test]
fn no_log_record_comes_from_a_forkprof_thread() {
    let _w = Watchdog::new("export logging", Duration::from_secs(120));
    log::set_logger(&Tripwire).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    forkprof::messages::set_rate_limit(Duration::ZERO);

    // The tripwire works: a call from the real uploader thread is caught.
    let exported = Arc::new(AtomicBool::new(false));
    let stats = run(
        ExporterConfig::Custom(Arc::new(LoggingFactory {
            exported: exported.clone(),
        })),
        "selftest",
    );
    assert!(exported.load(Ordering::SeqCst), "{stats:?}");
    let caught = taken(&ON_FORKPROF_THREADS);
    assert!(
        !caught.is_empty()
            && caught
                .iter()
                .all(|l| l.starts_with("[forkprof-upload] INFO selftest: exporting")),
        "the tripwire did not catch the uploader's own call: {caught:?}"
    );
    taken(&ELSEWHERE);

    // Every HTTP path: success, retried 5xx, Retry-After, a final 4xx, a Unix socket.
    let ok = TestServer::tcp(|_| Reply::Status(200));
    run(
        Datadog::agent(&ok.url()).http_options(fast_http(2)).into(),
        "tcp-ok",
    );
    let flaky = TestServer::tcp(|n| match n % 3 {
        0 => Reply::Status(500),
        1 => Reply::StatusWith(429, "Retry-After: 0".into()),
        _ => Reply::Status(200),
    });
    run(
        Datadog::agent(&flaky.url())
            .http_options(fast_http(3))
            .into(),
        "tcp-flaky",
    );
    let refused = TestServer::tcp(|_| Reply::Echo(403));
    let s = run(
        Pyroscope::new(&refused.url(), "app")
            .bearer_token("tok")
            .http_options(fast_http(1))
            .into(),
        "pyroscope-403",
    );
    assert!(s.profiles_failed >= 1, "{s:?}");
    let dir = TempDir::new("export-logging");
    let sock = dir.path().join("agent.socket");
    let unix = TestServer::unix(&sock, |_| Reply::Status(202));
    run(
        Datadog::agent(&unix.url())
            .http_options(fast_http(1))
            .into(),
        "unix",
    );
    run(
        ExporterConfig::file(dir.path().join("files"), Compression::Gzip),
        "files",
    );
    assert!(ok.requests().len() >= 2 && unix.requests().len() >= 2);
    // https (the `tls` feature): the TLS client runs its handshake against a server that
    // does not speak TLS, and fails.
    #[cfg(feature = "tls")]
    {
        let plain = TestServer::tcp(|_| Reply::Status(200));
        let s = run(
            Datadog::agent(&plain.url().replace("http://", "https://"))
                .http_options(fast_http(1))
                .into(),
            "tls",
        );
        assert!(s.profiles_failed >= 1, "{s:?}");
    }
    assert!(flaky.attempts() >= 3);

    let caught = taken(&ON_FORKPROF_THREADS);
    assert!(
        caught.is_empty(),
        "logged from a forkprof thread: {caught:#?}"
    );

    // A forked child uploads through its own client; its logger is the same tripwire.
    let child_server = TestServer::tcp(|_| Reply::Status(200));
    let cfg = Config::builder("fork")
        .sample_type("samples", "count")
        .child_policy(ChildPolicy::Restart)
        .exporter(
            Datadog::agent(&child_server.url())
                .http_options(fast_http(1))
                .into(),
        )
        .build()
        .unwrap();
    let p = Profiler::start(cfg).unwrap();
    record(&p, "parent", 2);
    let child = fork_and_run(|| {
        record(&p, "child", 2);
        let uploaded = p.flush_sync(Duration::from_secs(10)).is_ok();
        let stopped = p.stop(Duration::from_secs(10)).is_ok();
        let caught = ON_FORKPROF_THREADS.lock().map(|l| l.len()).unwrap_or(1);
        match (uploaded && stopped, caught) {
            (true, 0) => 0,
            (false, _) => 2,
            (true, _) => 3,
        }
    });
    expect_exit_0(
        child,
        "a child uploading with the tripwire installed (3: it was tripped)",
    );
    p.stop(Duration::from_secs(10)).unwrap();
    assert!(child_server.requests().len() >= 2);

    forkprof::drain_messages();
    let caught = taken(&ON_FORKPROF_THREADS);
    assert!(
        caught.is_empty(),
        "logged from a forkprof thread: {caught:#?}"
    );
    // The logger was listening: forkprof's own messages arrived, on this thread.
    let elsewhere = taken(&ELSEWHERE);
    assert!(
        elsewhere
            .iter()
            .any(|l| l.contains(" forkprof: ") && l.contains("export failed")),
        "{elsewhere:#?}"
    );
}
