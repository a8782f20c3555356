//! Secrets never leak: API keys, basic-auth passwords, bearer tokens and extra header values
//! are sent where they belong and appear nowhere else. Every endpoint here fails and echoes the
//! request's headers back in its error body (as some proxies do); everything that reaches the
//! `log` facade (at trace level, any target) and everything a host can format (`Debug` of the
//! configurations, error messages, stats) is searched for each secret and for the base64 form
//! basic auth puts on the wire.

mod export_support;
mod support;

use forkprof::export::ExporterConfigExt;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use export_support::*;
use forkprof::export::{Datadog, Pyroscope};
use forkprof::{Config, ExporterConfig, Profiler};
use support::*;

static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        LOGGED
            .lock()
            .unwrap()
            .push(format!("{} {}: {}", r.level(), r.target(), r.args()));
    }
    fn flush(&self) {}
}

const API_KEY: &str = "ddkey-S3CRET-0001";
const PASSWORD: &str = "pw-S3CRET-0002";
const URL_PASSWORD: &str = "urlpw-S3CRET-0003";
const TOKEN: &str = "tok-S3CRET-0004";
const HEADER_VALUE: &str = "hdr-S3CRET-0005";

fn secrets() -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    vec![
        API_KEY.into(),
        PASSWORD.into(),
        URL_PASSWORD.into(),
        TOKEN.into(),
        HEADER_VALUE.into(),
        b64(&format!("grafana:{PASSWORD}")),
        b64(&format!("urluser:{URL_PASSWORD}")),
        "S3CRET".into(),
    ]
}

fn run(exporter: ExporterConfig, formatted: &mut Vec<String>) {
    let cfg = Config::builder("secrets")
        .sample_type("samples", "count")
        .exporter(exporter.clone())
        .clone();
    formatted.push(format!("{cfg:?}"));
    let cfg = cfg.build().unwrap();
    formatted.push(format!("{cfg:?}"));
    formatted.push(format!("{exporter:?}"));
    let p = Profiler::start(cfg).unwrap();
    record(&p, "leak_check", 2);
    if let Err(e) = p.flush_sync(Duration::from_secs(30)) {
        formatted.push(e.to_string());
    }
    let stats = p.stop(Duration::from_secs(5)).unwrap();
    formatted.push(format!("{stats:?}"));
    assert_eq!(stats.profiles_failed, 1, "{stats:?}");
}

#[test]
fn no_secret_appears_in_any_message_error_debug_or_stats() {
    let _w = Watchdog::new("secrets", Duration::from_secs(120));
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    forkprof::messages::set_rate_limit(Duration::ZERO);
    let mut formatted = Vec::new();
    let mut sent = Vec::new();

    // The Datadog intake (over http to a loopback proxy), 403 echoing the headers.
    let server = TestServer::tcp(|_| Reply::Echo(403));
    run(
        Datadog::intake(&server.url(), API_KEY)
            .http_options(fast_http(1))
            .into(),
        &mut formatted,
    );
    sent.extend(server.requests());

    // Pyroscope with basic auth from settings and a tenant; 500 (retried) echoing.
    let server = TestServer::tcp(|_| Reply::Echo(500));
    run(
        Pyroscope::new(&server.url(), "app")
            .basic_auth("grafana", PASSWORD)
            .tenant_id("tenant-1")
            .header("X-Gateway-Key", HEADER_VALUE)
            .http_options(fast_http(1))
            .into(),
        &mut formatted,
    );
    let pyro = server.requests();
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("grafana:{PASSWORD}"))
    );
    assert_eq!(pyro[0].header("Authorization"), Some(want.as_str()));
    assert_eq!(pyro[0].header("X-Scope-OrgID"), Some("tenant-1"));
    assert_eq!(pyro[0].header("X-Gateway-Key"), Some(HEADER_VALUE));
    sent.extend(pyro);

    // Pyroscope with basic auth in the URL, then with a bearer token.
    let server = TestServer::tcp(|_| Reply::Echo(401));
    let url = server
        .url()
        .replace("http://", &format!("http://urluser:{URL_PASSWORD}@"));
    run(
        Pyroscope::new(&url, "app")
            .http_options(fast_http(0))
            .into(),
        &mut formatted,
    );
    let from_url = server.requests();
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("urluser:{URL_PASSWORD}"))
    );
    assert_eq!(from_url[0].header("Authorization"), Some(want.as_str()));
    sent.extend(from_url);
    let server = TestServer::tcp(|_| Reply::Echo(401));
    run(
        Pyroscope::new(&server.url(), "app")
            .bearer_token(TOKEN)
            .http_options(fast_http(0))
            .into(),
        &mut formatted,
    );
    let bearer = server.requests();
    assert_eq!(
        bearer[0].header("Authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    sent.extend(bearer);

    // Configuration errors that involve a secret.
    for bad in [
        ExporterConfig::pyroscope(&format!("http://u:{URL_PASSWORD}@h:99999"), "a"),
        ExporterConfig::datadog_agent(&format!("http://u:{URL_PASSWORD}@h:1")),
        Pyroscope::new("http://h:1", "a")
            .header("X-Key", format!("{HEADER_VALUE}\n"))
            .into(),
        Pyroscope::new("http://h:1", "a")
            .basic_auth("u", PASSWORD)
            .bearer_token(TOKEN)
            .into(),
    ] {
        let err = Config::builder("s")
            .sample_type("a", "b")
            .exporter(bad)
            .build()
            .unwrap_err();
        formatted.push(err.to_string());
        formatted.push(format!("{err:?}"));
    }

    forkprof::drain_messages();
    let logged = LOGGED.lock().unwrap().clone();
    // The failures did reach the log, with the echoed bodies (scrubbed).
    let ours: Vec<&String> = logged
        .iter()
        .filter(|l| l.contains(" forkprof: "))
        .collect();
    assert!(ours.len() >= 4, "{logged:#?}");
    // Every failure echoed a secret, and every message shows it scrubbed.
    let failed: Vec<&&String> = ours
        .iter()
        .filter(|l| l.contains("export failed"))
        .collect();
    assert_eq!(failed.len(), 4, "{ours:#?}");
    for l in &failed {
        assert!(l.contains("<redacted>"), "{l}");
    }
    // Only forkprof's own messages reach the logger: no dependency logs (the HTTP client's
    // used to hex-dump the request, auth headers included, at TRACE).
    assert_eq!(ours.len(), logged.len(), "{logged:#?}");
    for s in secrets() {
        for l in logged.iter().chain(&formatted) {
            assert!(!l.contains(&s), "`{s}` leaked into: {l}");
        }
    }
    // The server did get them: the scrubbing is not hiding a request that never carried them.
    let wire: String = sent
        .iter()
        .flat_map(|r| r.headers.iter().map(|(k, v)| format!("{k}: {v}\n")))
        .collect();
    for s in [API_KEY, HEADER_VALUE, TOKEN] {
        assert!(wire.contains(s), "{s} was not sent");
    }
    println!("{}", ours[0]);
}
