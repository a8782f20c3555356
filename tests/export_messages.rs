//! forkprof's messages as a host sees them: what an export failure says, that the host's
//! logger only ever runs on the host's own threads (inside a forkprof call it made), that a
//! fork landing while a host thread is inside the logger leaves the child able to profile and
//! log, and the other message kinds (queue full, child disabled, restart failed).

mod export_support;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use export_support::*;
use forkprof::export::{Datadog, HttpOptions};
use forkprof::messages::{self, Delivery, Kind, Level, Message};
use forkprof::{ChildPolicy, Config, Profiler};
use support::*;

/// One delivered message and the name of the thread it was delivered on.
#[derive(Debug, Clone)]
struct Got {
    kind: Kind,
    level: Level,
    text: String,
    thread: String,
}

type Log = Arc<Mutex<Vec<Got>>>;

fn capture() -> Log {
    let got: Log = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    messages::set_rate_limit(Duration::ZERO);
    messages::set_sink(Some((
        Box::new(move |m: &Message<'_>| {
            g.lock().unwrap().push(Got {
                kind: m.kind,
                level: m.level,
                text: m.text.to_string(),
                thread: std::thread::current().name().unwrap_or("").to_string(),
            })
        }),
        Level::Debug,
    )));
    got
}

fn profiler(url: &str, http: HttpOptions, max_pending: usize) -> Profiler {
    let cfg = Config::builder("msgs")
        .sample_type("samples", "count")
        .drain_interval(Duration::from_millis(10))
        .max_pending_profiles(max_pending)
        .exporter(Datadog::agent(url).http_options(http).into())
        .build()
        .unwrap();
    Profiler::start(cfg).unwrap()
}

fn texts(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|g| g.text.clone()).collect()
}

#[test]
fn an_export_failure_says_where_what_and_how_often() {
    let _s = serial();
    let _w = Watchdog::new("export failed message", Duration::from_secs(60));
    let log = capture();
    let server = TestServer::tcp(|_| Reply::Status(503));
    let p = profiler(&server.url(), fast_http(2), 8);
    record(&p, "f", 3);
    p.flush_sync(Duration::from_secs(20)).unwrap();
    let got = log.lock().unwrap().clone();
    let failed: Vec<&Got> = got
        .iter()
        .filter(|g| g.kind == Kind::ExportFailed)
        .collect();
    assert_eq!(failed.len(), 1, "{got:#?}");
    let f = failed[0];
    assert_eq!(f.level, Level::Warn);
    let want_prefix = format!(
        "forkprof: export failed: POST {}/profiling/v1/input: HTTP 503: status 503 (gave up after 3 attempts); profile 0 of pid {}",
        server.url(),
        std::process::id()
    );
    assert!(
        f.text.starts_with(&want_prefix),
        "{}\n{want_prefix}",
        f.text
    );
    // The two retries were announced at debug level, each with its next pause.
    let retries: Vec<&Got> = got.iter().filter(|g| g.kind == Kind::ExportRetry).collect();
    assert_eq!(retries.len(), 2, "{got:#?}");
    assert!(
        retries[0].text.contains("(attempt 1 of 3); retrying in "),
        "{}",
        retries[0].text
    );
    assert_eq!(retries[0].level, Level::Debug);
    println!("{}\n{}", retries[0].text, f.text);
    p.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn the_host_logger_runs_only_on_host_threads() {
    let _s = serial();
    let _w = Watchdog::new("host threads only", Duration::from_secs(60));
    let log = capture();
    let port = free_port(); // refused
    let p = profiler(&format!("http://127.0.0.1:{port}"), fast_http(2), 8);
    let host = std::thread::Builder::new()
        .name("host-worker".into())
        .spawn({
            let p = p.clone();
            move || {
                for _ in 0..3 {
                    record(&p, "f", 1);
                    p.flush_sync(Duration::from_secs(20)).unwrap();
                }
            }
        })
        .unwrap();
    host.join().unwrap();
    p.stop(Duration::from_secs(5)).unwrap();
    let got = log.lock().unwrap().clone();
    assert!(got.len() >= 3, "{got:#?}");
    for g in &got {
        assert!(
            !g.thread.starts_with("forkprof"),
            "delivered on a forkprof thread: {g:?}"
        );
    }
    assert!(got.iter().any(|g| g.thread == "host-worker"), "{got:#?}");
}

#[test]
fn record_never_delivers_and_stats_does_unless_the_host_drains_itself() {
    let _s = serial();
    let _w = Watchdog::new("record delivers nothing", Duration::from_secs(60));
    let log = capture();
    let port = free_port();
    let p = profiler(&format!("http://127.0.0.1:{port}"), fast_http(0), 8);

    // DrainOnly: neither record nor stats calls the host's logger; drain does.
    messages::set_delivery(Delivery::DrainOnly);
    record(&p, "f", 1);
    p.flush().unwrap();
    assert!(eventually(Duration::from_secs(10), || p
        .stats()
        .profiles_failed
        == 1));
    record(&p, "g", 5);
    assert!(texts(&log).is_empty(), "{:?}", texts(&log));
    assert_eq!(p.drain_messages(), 1);
    assert_eq!(texts(&log).len(), 1);

    // A second failure, waited for without delivering it.
    p.flush().unwrap();
    assert!(eventually(Duration::from_secs(10), || p
        .stats()
        .profiles_failed
        == 2));
    assert_eq!(texts(&log).len(), 1);
    // OnCalls (the default): record still delivers nothing (it may run in a signal handler,
    // where the host's logger must not); the next stats does.
    messages::set_delivery(Delivery::OnCalls);
    record(&p, "h", 1);
    assert_eq!(texts(&log).len(), 1, "record called the host's logger");
    let _ = p.stats();
    assert_eq!(texts(&log).len(), 2, "{:?}", texts(&log));
    assert_eq!(forkprof::drain_messages(), 0, "nothing left");
    let _ = p.stop(Duration::from_secs(5));
}

#[test]
fn a_full_export_queue_says_a_profile_was_dropped() {
    let _s = serial();
    let _w = Watchdog::new("queue full message", Duration::from_secs(60));
    let log = capture();
    let server = TestServer::tcp(|_| Reply::Hang);
    let mut http = fast_http(0);
    http.request_timeout = Duration::from_secs(30);
    let p = profiler(&server.url(), http, 1);
    record(&p, "first", 1);
    p.flush().unwrap();
    assert!(eventually(Duration::from_secs(10), || server.attempts() >= 1));
    let done = eventually(Duration::from_secs(20), || {
        record(&p, "queued", 1);
        p.flush().unwrap();
        p.stats().profiles_dropped >= 1
    });
    assert!(done, "{:?}", p.stats());
    forkprof::drain_messages();
    let got = log.lock().unwrap().clone();
    let dropped: Vec<&Got> = got
        .iter()
        .filter(|g| g.kind == Kind::ProfileDropped)
        .collect();
    assert!(!dropped.is_empty(), "{got:#?}");
    assert!(
        dropped[0].text.starts_with(
            "forkprof: profile dropped: the export queue was full (1 profiles waiting"
        ),
        "{}",
        dropped[0].text
    );
    println!("{}", dropped[0].text);
    let _ = p.stop(Duration::from_millis(200));
}

#[test]
fn one_message_per_kind_per_minute_by_default() {
    let _s = serial();
    let _w = Watchdog::new("rate limit", Duration::from_secs(60));
    let log = capture();
    messages::set_rate_limit(messages::DEFAULT_RATE_LIMIT);
    let port = free_port();
    let p = profiler(&format!("http://127.0.0.1:{port}"), fast_http(0), 8);
    for n in 1..=5 {
        record(&p, "f", 1);
        p.flush_sync(Duration::from_secs(20)).unwrap();
        assert_eq!(p.stats().profiles_failed, n);
    }
    let failed: Vec<String> = texts(&log)
        .into_iter()
        .filter(|t| t.contains("export failed"))
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "a dead agent logs once a minute: {failed:?}"
    );
    assert!(messages::stats().suppressed >= 4, "{:?}", messages::stats());
    let _ = p.stop(Duration::from_secs(5));
}

#[test]
fn a_child_under_disable_says_so_and_a_failed_restart_says_why() {
    let _s = serial();
    let _w = Watchdog::new("child messages", Duration::from_secs(60));
    let _log = capture();
    let dir = TempDir::new("msg-child");
    let out = dir.path().join("profiles");
    let p = Profiler::start(file_config("disabled", &out, ChildPolicy::Disable)).unwrap();
    let child = fork_and_run(|| {
        let got = capture();
        record(&p, "child", 1); // turns profiling off here
        assert_eq!(forkprof::drain_messages(), 1);
        let g = got.lock().unwrap()[0].clone();
        assert_eq!((g.kind, g.level), (Kind::ChildDisabled, Level::Info));
        let want = format!(
            "forkprof: child profiling disabled: pid {}: the child policy is Disable",
            std::process::id()
        );
        assert_eq!(g.text, want);
        println!("{}", g.text);
        0
    });
    expect_exit_0(child, "disabled child");
    p.stop(Duration::from_secs(5)).unwrap();

    // A child whose restart cannot create its exporter: the output directory is a file now.
    let out2 = dir.path().join("gone");
    let p = Profiler::start(file_config("restart", &out2, ChildPolicy::Restart)).unwrap();
    std::fs::remove_dir_all(&out2).unwrap();
    std::fs::write(&out2, b"not a directory").unwrap();
    let child = fork_and_run(|| {
        let got = capture();
        record(&p, "child", 1);
        assert!(!p.is_running());
        assert_eq!(forkprof::drain_messages(), 1);
        let g = got.lock().unwrap()[0].clone();
        assert_eq!((g.kind, g.level), (Kind::RestartFailed, Level::Error));
        assert!(
            g.text
                .contains("the forked child's profiler could not start")
                && g.text.contains("output_dir"),
            "{}",
            g.text
        );
        println!("{}", g.text);
        0
    });
    expect_exit_0(child, "child whose restart fails");
    let _ = p.stop(Duration::from_secs(5));
}

/// The hazard the delivery design exists for. A host thread is inside the host's logger,
/// holding the logger's lock, when another thread forks. The child inherits that lock held by a
/// thread it does not have; a host re-creates its logger after fork (as CPython's `logging`
/// re-initialises its locks), and then the child must profile and log normally: nothing of
/// forkprof's may still be "in delivery" there, and the parent's pending messages stay the
/// parent's.
#[test]
fn a_fork_landing_while_a_host_thread_is_inside_the_logger() {
    let _s = serial();
    let _w = Watchdog::new("fork during delivery", Duration::from_secs(90));
    messages::set_rate_limit(Duration::ZERO);
    // The parent's logger: a lock held across the (blocking) write, like a logger writing to
    // a slow pipe under its mutex.
    let lines: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let block = Arc::new(AtomicBool::new(true));
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    {
        let lines = lines.clone();
        let block = block.clone();
        messages::set_sink(Some((
            Box::new(move |m: &Message<'_>| {
                let mut held = lines.lock().unwrap();
                held.push(m.text.to_string());
                if block.swap(false, Ordering::AcqRel) {
                    entered_tx.send(()).unwrap();
                    // Blocks with the logger's lock held until the test releases it.
                    release_rx.lock().unwrap().recv().unwrap();
                }
            }),
            Level::Warn,
        )));
    }
    let port = free_port();
    let p = profiler(&format!("http://127.0.0.1:{port}"), fast_http(0), 8);

    // Thread A: its flush_sync delivers the first failure and blocks inside the logger.
    let a = std::thread::spawn({
        let p = p.clone();
        move || {
            record(&p, "a", 1);
            let _ = p.flush_sync(Duration::from_secs(20));
        }
    });
    entered_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("A entered the logger");
    // A second failure is queued while A is still inside: pending at fork time.
    record(&p, "b", 1);
    p.flush().unwrap(); // A delivers for this process: this call does not wait for it
    assert!(eventually(Duration::from_secs(10), || p
        .stats()
        .profiles_failed
        == 2));

    let child = fork_and_run(|| {
        // The host's own after-fork step: a fresh logger (the old one's lock is held for ever
        // by a thread that is not here).
        let fresh: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let f = fresh.clone();
        messages::set_sink(Some((
            Box::new(move |m: &Message<'_>| f.lock().unwrap().push(m.text.to_string())),
            Level::Warn,
        )));
        // The parent's pending failure is not the child's to deliver.
        assert_eq!(forkprof::drain_messages(), 0);
        // The child profiles (its own threads, its own exporter) and logs its own failure.
        record(&p, "child", 1);
        p.flush_sync(Duration::from_secs(20)).unwrap();
        assert_eq!(p.stats().profiles_failed, 1);
        let got = fresh.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{got:?}");
        let me = format!("of pid {}", std::process::id());
        assert!(
            got[0].contains("export failed") && got[0].contains(&me),
            "{got:?}"
        );
        0
    });
    expect_exit_0(
        child,
        "child forked while a host thread was inside the logger",
    );

    release_tx.send(()).unwrap();
    a.join().unwrap();
    // A went on and delivered the second failure too, in order, in the parent.
    let got = lines.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].contains("profile 0 of pid") && got[1].contains("profile 1 of pid"),
        "{got:?}"
    );
    p.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_profile_too_large_for_the_destination_is_reported_not_sent() {
    let _s = serial();
    let _w = Watchdog::new("too large message", Duration::from_secs(60));
    let log = capture();
    let server = TestServer::tcp(|_| Reply::Status(200));
    let cfg = Config::builder("msgs")
        .sample_type("samples", "count")
        .exporter(Datadog::agent(&server.url()).max_request_bytes(64).into())
        .build()
        .unwrap();
    let p = Profiler::start(cfg).unwrap();
    record(&p, "big", 3);
    let stats = p.stop(Duration::from_secs(5)).unwrap();
    assert_eq!(stats.profiles_too_large, 1, "{stats:?}");
    assert_eq!(server.attempts(), 0);
    let got = log.lock().unwrap().clone();
    let big: Vec<&Got> = got
        .iter()
        .filter(|g| g.kind == Kind::ProfileTooLarge)
        .collect();
    assert_eq!(big.len(), 1, "{got:#?}");
    assert!(
        big[0]
            .text
            .starts_with("forkprof: profile too large: profile of ")
            && big[0]
                .text
                .contains("exceeds the Datadog limit of 64 bytes; not sent"),
        "{}",
        big[0].text
    );
    println!("{}", big[0].text);
}

/// A child forked without anyone's fork hooks (a raw `clone`) turns profiling off and says so
/// on its next forkprof call that delivers. Nothing in that child allocates: the sink writes
/// into a static buffer (another parent thread may have held malloc's lock at the clone).
/// Linux only: a raw `clone` is how a test gets such a child there.
#[cfg(target_os = "linux")]
#[test]
fn a_child_forked_without_the_hooks_says_profiling_is_off() {
    use std::sync::atomic::AtomicUsize;
    static TEXT: Mutex<[u8; messages::MAX_MESSAGE_BYTES]> =
        Mutex::new([0; messages::MAX_MESSAGE_BYTES]);
    static LEN: AtomicUsize = AtomicUsize::new(0);
    let _s = serial();
    let _w = Watchdog::new("unobserved child message", Duration::from_secs(60));
    messages::set_rate_limit(Duration::ZERO);
    messages::set_sink(Some((
        Box::new(|m: &Message<'_>| {
            if m.kind == Kind::ChildDisabled {
                // A fresh lock in the child (the parent never held it: it only delivers here).
                let mut t = TEXT.lock().unwrap();
                t[..m.text.len()].copy_from_slice(m.text.as_bytes());
                LEN.store(m.text.len(), Ordering::Release);
            }
        }),
        Level::Info,
    )));
    let dir = TempDir::new("msg-unobserved");
    let p = Profiler::start(file_config("unobs", dir.path(), ChildPolicy::Restart)).unwrap();
    // SAFETY: a clone without CLONE_VM is a fork that runs no atfork handler; the child only
    // records, drains into the static buffer, compares bytes and `_exit`s.
    let pid = unsafe {
        libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) as libc::pid_t
    };
    assert!(pid >= 0);
    if pid == 0 {
        let f = [forkprof::Frame::new("unobserved", "u.rs", 1)];
        let _ = p.record(&forkprof::Sample::new(&f, &[1]));
        let code = if forkprof::drain_messages() != 1 {
            3
        } else {
            let t = TEXT.lock().unwrap();
            let text = &t[..LEN.load(Ordering::Acquire)];
            let want: &[u8] = b"forkprof: child profiling disabled: pid ";
            let why = forkprof::Disabled::UnobservedFork.as_str().as_bytes();
            if text.starts_with(want) && text.ends_with(why) {
                0
            } else {
                4
            }
        };
        // SAFETY: ends the clone child without running anything of the parent's.
        unsafe { libc::_exit(code) };
    }
    expect_exit_0(pid, "a child of a raw clone");
    p.stop(Duration::from_secs(5)).unwrap();
}
