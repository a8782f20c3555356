//! Uploads against broken endpoints, each a tiny loopback server: refused connections, 500,
//! 429, an endpoint that accepts and never answers, one that resets mid-body, one that reads a
//! byte a second. The host never blocks, the counters are right, the queue stays bounded and
//! `stop()` keeps its deadline.

mod export_support;
mod support;

use std::time::{Duration, Instant};

use export_support::*;
use forkprof::export::{Datadog, HttpOptions};
use forkprof::{Config, Error, Profiler, Stats};
use support::*;

fn start(url: &str, http: HttpOptions, max_pending: usize) -> Profiler {
    let cfg = Config::builder("faults")
        .sample_type("samples", "count")
        .drain_interval(Duration::from_millis(10))
        .max_pending_profiles(max_pending)
        .exporter(Datadog::agent(url).http_options(http).into())
        .build()
        .unwrap();
    Profiler::start(cfg).unwrap()
}

/// Records one profile's worth and waits until the exporter is done with it.
fn one_profile(p: &Profiler) -> Stats {
    record(p, "fault_fn", 3);
    p.flush_sync(Duration::from_secs(20)).unwrap();
    p.stats()
}

#[test]
fn connection_refused_is_retried_then_counted_as_failed() {
    let _w = Watchdog::new("refused", Duration::from_secs(60));
    let port = free_port(); // nothing listens there any more
    let p = start(&format!("http://127.0.0.1:{port}"), fast_http(2), 8);
    let s = one_profile(&p);
    assert_eq!(
        (s.profiles_failed, s.uploads_retried, s.profiles_written),
        (1, 2, 0),
        "{s:?}"
    );
    p.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn server_errors_are_retried_up_to_the_limit() {
    let _w = Watchdog::new("500", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Status(500));
    let p = start(&server.url(), fast_http(3), 8);
    let s = one_profile(&p);
    assert_eq!((s.profiles_failed, s.uploads_retried), (1, 3), "{s:?}");
    assert_eq!(server.attempts(), 4, "one attempt and three retries");
    p.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn too_many_requests_then_success_is_delivered_with_its_retries_counted() {
    let _w = Watchdog::new("429", Duration::from_secs(60));
    let server = TestServer::tcp(|n| Reply::Status(if n < 2 { 429 } else { 200 }));
    let p = start(&server.url(), fast_http(3), 8);
    let s = one_profile(&p);
    assert_eq!(
        (s.profiles_written, s.profiles_failed, s.uploads_retried),
        (1, 0, 2),
        "{s:?}"
    );
    assert!(s.bytes_written > 0);
    assert_eq!(server.attempts(), 3);
    p.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_reset_mid_body_is_retried() {
    let _w = Watchdog::new("reset", Duration::from_secs(60));
    let server = TestServer::tcp(|n| {
        if n == 0 {
            Reply::ResetMidBody
        } else {
            Reply::Status(200)
        }
    });
    let p = start(&server.url(), fast_http(2), 8);
    let s = one_profile(&p);
    assert_eq!(
        (s.profiles_written, s.profiles_failed, s.uploads_retried),
        (1, 0, 1),
        "{s:?}"
    );
    assert_eq!(server.requests().len(), 1, "only the retry arrived whole");
    p.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn an_endpoint_that_never_answers_times_out_while_the_host_keeps_recording() {
    let _w = Watchdog::new("hang", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Hang);
    let p = start(&server.url(), fast_http(1), 8);
    record(&p, "before", 3);
    p.flush().unwrap();
    // While the upload hangs, record() keeps returning: count the calls that came back.
    assert!(eventually(Duration::from_secs(10), || server.attempts() >= 1));
    let mut returned = 0u64;
    while server.attempts() < 2 && returned < 5_000_000 {
        record(&p, "during_hang", 1);
        returned += 1;
    }
    let s = p.stats();
    assert_eq!(s.samples_recorded + s.samples_dropped, 3 + returned);
    p.flush_sync(Duration::from_secs(20)).unwrap();
    let s = p.stats();
    // The first profile: two attempts, both timed out. The second: the same.
    assert_eq!(s.profiles_failed, 2, "{s:?}");
    assert_eq!(s.uploads_retried, 2, "{s:?}");
    drop(server);
}

#[test]
fn a_server_reading_one_byte_a_second_times_out() {
    let _w = Watchdog::new("slow reader", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::SlowRead);
    let p = start(&server.url(), fast_http(0), 8);
    let s = one_profile(&p);
    assert_eq!((s.profiles_failed, s.uploads_retried), (1, 0), "{s:?}");
    p.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn stop_keeps_its_deadline_with_a_hung_upload_in_flight() {
    let _w = Watchdog::new("stop deadline", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Hang);
    // Default options: a 10 s request timeout, far beyond the stop deadline.
    let p = start(&server.url(), HttpOptions::default(), 8);
    record(&p, "in_flight", 3);
    p.flush().unwrap();
    assert!(eventually(Duration::from_secs(10), || server.attempts() >= 1));
    record(&p, "last", 3);
    let t0 = Instant::now();
    let r = p.stop(Duration::from_millis(500));
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "stop(500ms) took {took:?} with a hung endpoint"
    );
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
}

#[test]
fn the_last_export_during_stop_gives_up_at_the_deadline() {
    let _w = Watchdog::new("stop export deadline", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Hang);
    let p = start(&server.url(), HttpOptions::default(), 8);
    record(&p, "last", 3);
    let t0 = Instant::now();
    let _ = p.stop(Duration::from_millis(500));
    assert!(t0.elapsed() < Duration::from_secs(3));
    // The final export was handed the deadline: it fails at ~500 ms, not after the 10 s
    // request timeout, and is not retried past the deadline.
    assert!(
        eventually(Duration::from_secs(3), || p.stats().profiles_failed == 1),
        "{:?}",
        p.stats()
    );
    assert_eq!(p.stats().uploads_retried, 0);
    assert_eq!(server.attempts(), 1);
}

/// Attempt limits far beyond the stop's bound: a stop that waited for the hung agent's answer
/// would end in `Error::Timeout`, and with a failed or written profile in its counters.
fn patient_http() -> HttpOptions {
    HttpOptions {
        request_timeout: Duration::from_secs(120),
        retry_budget: Duration::from_secs(120),
        ..fast_http(0)
    }
}

/// The profile file of a Datadog upload, from the request the server read.
fn uploaded_profile(r: &Recorded) -> Vec<u8> {
    let ct = r.header("content-type").unwrap_or_default().to_string();
    parse_multipart(&ct, &r.body)
        .into_iter()
        .find(|p| p.filename.as_deref() == Some("profile.pprof"))
        .map(|p| p.data)
        .unwrap_or_default()
}

#[test]
fn stop_for_exit_returns_once_the_last_profile_is_sent_to_a_hung_agent() {
    let _w = Watchdog::new("stop_for_exit, hung agent", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Hang);
    let p = start(&server.url(), patient_http(), 8);
    record(&p, "last", 3);
    let s = p.stop_for_exit(Duration::from_secs(30)).unwrap();
    // Returned with the upload still waiting for its answer: neither written nor failed.
    assert_eq!((s.profiles_written, s.profiles_failed), (0, 0), "{s:?}");
    // Its request was written whole before that: the server reads all of it.
    assert!(eventually(Duration::from_secs(20), || server
        .requests()
        .len()
        == 1));
    let profile = uploaded_profile(&server.requests()[0]);
    assert!(!profile.is_empty(), "the request carries no profile");
    assert!(!p.is_running());
    drop(server);
}

#[test]
fn stop_for_exit_does_not_wait_for_an_upload_hung_before_the_stop() {
    let _w = Watchdog::new("stop_for_exit, upload in flight", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Hang);
    let p = start(&server.url(), patient_http(), 8);
    record(&p, "in_flight", 3);
    p.flush().unwrap();
    assert!(eventually(Duration::from_secs(10), || server
        .requests()
        .len()
        == 1));
    record(&p, "last", 3);
    let s = p.stop_for_exit(Duration::from_secs(30)).unwrap();
    assert_eq!((s.profiles_written, s.profiles_failed), (0, 0), "{s:?}");
    // The last profile stays queued behind the hung upload: it is never sent.
    assert_eq!(server.attempts(), 1);
    drop(server);
}

#[test]
fn stop_for_exit_hands_the_last_profile_to_an_answering_agent() {
    let _w = Watchdog::new("stop_for_exit, agent answers", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Status(200));
    let p = start(&server.url(), patient_http(), 8);
    record(&p, "last", 3);
    p.stop_for_exit(Duration::from_secs(30)).unwrap();
    assert!(eventually(Duration::from_secs(20), || server
        .requests()
        .len()
        == 1));
    assert!(!uploaded_profile(&server.requests()[0]).is_empty());
}

#[test]
fn a_stuck_endpoint_makes_the_queue_drop_the_oldest_not_grow() {
    let _w = Watchdog::new("queue bound", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Hang);
    let mut http = fast_http(0);
    http.request_timeout = Duration::from_secs(30);
    let p = start(&server.url(), http, 2);
    record(&p, "first", 1);
    p.flush().unwrap();
    assert!(eventually(Duration::from_secs(10), || server.attempts() >= 1));
    // The uploader is stuck on the first profile: every further profile goes to a queue of 2.
    let mut flushes = 0;
    let done = eventually(Duration::from_secs(20), || {
        record(&p, "queued", 1);
        p.flush().unwrap();
        flushes += 1;
        p.stats().profiles_dropped >= 3
    });
    assert!(done, "no drops after {flushes} flushes: {:?}", p.stats());
    let s = p.stats();
    assert_eq!(server.attempts(), 1, "the upload was still hung");
    assert_eq!(s.profiles_written + s.profiles_failed, 0, "{s:?}");
    let _ = p.stop(Duration::from_millis(200));
}

#[test]
fn a_unix_agent_whose_backlog_is_full_times_out_on_connect() {
    use std::os::fd::AsRawFd;
    let _w = Watchdog::new("unix backlog", Duration::from_secs(60));
    let dir = TempDir::new("uds-backlog");
    let path = dir.path().join("stuck.socket");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // SAFETY: listen(2) again on our listening socket only shrinks its backlog to the minimum.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    // Fill the backlog: this one is queued, never accepted; the next connect would block.
    let _queued = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let p = start(&format!("unix://{}", path.display()), fast_http(1), 8);
    let s = one_profile(&p);
    assert_eq!((s.profiles_failed, s.uploads_retried), (1, 1), "{s:?}");
    record(&p, "last", 1);
    let t0 = Instant::now();
    let _ = p.stop(Duration::from_millis(500));
    assert!(t0.elapsed() < Duration::from_secs(3));
}

/// An HTTP date (IMF-fixdate) `secs_from_now` seconds ahead. The weekday is not checked by
/// forkprof, so the date is built from the RFC 3339 form.
fn http_date_in(secs_from_now: u64) -> String {
    let at = std::time::SystemTime::now() + Duration::from_secs(secs_from_now);
    let t = forkprof::export::datadog::rfc3339(at); // 2026-12-02T01:02:03.123Z
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m: usize = t[5..7].parse().unwrap();
    format!(
        "Mon, {} {} {} {} GMT",
        &t[8..10],
        months[m - 1],
        &t[..4],
        &t[11..19]
    )
}

/// The pause between two recorded requests.
fn gap(server: &TestServer, a: usize, b: usize) -> Duration {
    let r = server.requests();
    r[b].at.duration_since(r[a].at)
}

#[test]
fn retry_after_seconds_on_429_is_waited_out() {
    let _w = Watchdog::new("retry-after 429", Duration::from_secs(60));
    let server = TestServer::tcp(|n| {
        if n == 0 {
            Reply::StatusWith(429, "Retry-After: 1".into())
        } else {
            Reply::Status(200)
        }
    });
    // A host logging at info (the CLI's default) hears of the wait: the server throttles it.
    let infos = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let i = infos.clone();
    forkprof::messages::set_sink(Some((
        Box::new(move |m: &forkprof::messages::Message<'_>| {
            i.lock().unwrap().push(m.text.to_string())
        }),
        forkprof::messages::Level::Info,
    )));
    // Backoff alone would pause 10-40 ms.
    let p = start(&server.url(), fast_http(3), 8);
    let s = one_profile(&p);
    assert_eq!((s.profiles_written, s.uploads_retried), (1, 1), "{s:?}");
    let waited = gap(&server, 0, 1);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    p.stop(Duration::from_secs(5)).unwrap();
    let infos = infos.lock().unwrap().clone();
    assert!(
        infos
            .iter()
            .any(|t| t.starts_with("forkprof: export retry: ")
                && t.contains("HTTP 429")
                && t.contains("retrying in 1.0 s as the server asked (Retry-After)")),
        "{infos:#?}"
    );
}

#[test]
fn retry_after_as_an_http_date_on_503_is_waited_out() {
    let _w = Watchdog::new("retry-after 503 date", Duration::from_secs(60));
    // Two seconds ahead at whole-second resolution: at least one second from any instant
    // of the current second.
    let date = http_date_in(2);
    let server = TestServer::tcp(move |n| {
        if n == 0 {
            Reply::StatusWith(503, format!("Retry-After: {date}"))
        } else {
            Reply::Status(200)
        }
    });
    let p = start(&server.url(), fast_http(3), 8);
    let s = one_profile(&p);
    assert_eq!((s.profiles_written, s.uploads_retried), (1, 1), "{s:?}");
    let waited = gap(&server, 0, 1);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    p.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn retry_after_beyond_the_budget_drops_the_profile_and_holds_the_next_one_back() {
    let _w = Watchdog::new("retry-after beyond budget", Duration::from_secs(60));
    let got = capture_messages();
    let server = TestServer::tcp(|_| Reply::StatusWith(429, "Retry-After: 120".into()));
    let p = start(&server.url(), fast_http(3), 8); // a 10 s budget
    let s = one_profile(&p);
    assert_eq!((s.profiles_failed, s.uploads_retried), (1, 0), "{s:?}");
    assert_eq!(
        server.attempts(),
        1,
        "not retried: the wait does not fit the budget"
    );
    // The next profile is not sent either: the server asked for two minutes of quiet.
    let s = one_profile(&p);
    assert_eq!(s.profiles_failed, 2, "{s:?}");
    assert_eq!(server.attempts(), 1);
    let log = got.lock().unwrap().join("\n");
    assert!(
        log.contains("HTTP 429")
            && log.contains("the server asked to retry after 120 s, beyond the retry budget"),
        "{log}"
    );
    assert!(
        log.contains("not sent: the server asked (Retry-After)"),
        "{log}"
    );
    println!("{log}");
    let _ = p.stop(Duration::from_millis(200));
}

#[test]
fn retry_after_beyond_the_stop_deadline_ends_the_last_export_within_it() {
    let _w = Watchdog::new("retry-after stop", Duration::from_secs(60));
    let got = capture_messages();
    let server = TestServer::tcp(|_| Reply::StatusWith(503, "Retry-After: 30".into()));
    let mut http = fast_http(3);
    http.retry_budget = Duration::from_secs(60);
    let p = start(&server.url(), http, 8);
    record(&p, "last", 3);
    let stats = p.stop(Duration::from_secs(2)).expect("stop ends in time");
    assert_eq!(stats.profiles_failed, 1, "{stats:?}");
    assert_eq!(server.attempts(), 1);
    let log = got.lock().unwrap().join("\n");
    assert!(log.contains("beyond the stop deadline"), "{log}");
}

#[test]
fn client_errors_other_than_408_and_429_are_not_retried() {
    let _w = Watchdog::new("4xx", Duration::from_secs(60));
    for (code, attempts) in [(400, 1), (401, 1), (403, 1), (404, 1), (408, 3), (429, 3)] {
        let server = TestServer::tcp(move |_| Reply::Status(code));
        let p = start(&server.url(), fast_http(2), 8);
        let s = one_profile(&p);
        assert_eq!(s.profiles_failed, 1, "{code}: {s:?}");
        assert_eq!(server.attempts(), attempts, "HTTP {code}");
        p.stop(Duration::from_secs(5)).unwrap();
    }
}

/// Every message forkprof delivers, as text.
fn capture_messages() -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use forkprof::messages::{self, Level, Message};
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    messages::set_rate_limit(Duration::ZERO);
    messages::set_sink(Some((
        Box::new(move |m: &Message<'_>| g.lock().unwrap().push(m.text.to_string())),
        Level::Debug,
    )));
    got
}

#[test]
fn a_stop_during_a_retry_after_pause_ends_it_and_keeps_the_deadline() {
    let _w = Watchdog::new("stop during retry-after", Duration::from_secs(60));
    let got = capture_messages();
    let server = TestServer::tcp(|_| Reply::StatusWith(429, "Retry-After: 20".into()));
    let mut http = fast_http(3);
    http.retry_budget = Duration::from_secs(60); // the 20 s wait fits: the uploader pauses
    let p = start(&server.url(), http, 8);
    record(&p, "first", 1);
    p.flush().unwrap();
    assert!(eventually(Duration::from_secs(10), || server.attempts() >= 1));
    record(&p, "last", 1);
    // The pause ends with the stop, so the threads finish and stop returns Ok, not Timeout.
    let stats = p
        .stop(Duration::from_secs(2))
        .expect("stop within its deadline");
    assert_eq!(stats.profiles_failed, 2, "{stats:?}");
    assert_eq!(
        server.attempts(),
        1,
        "nothing sent before the time the server gave"
    );
    let log = got.lock().unwrap().join("\n");
    assert!(log.contains("the profiler is stopping"), "{log}");
}
