//! The Pyroscope exporter against a loopback ingest endpoint that records query and body.

mod export_support;
mod support;

use forkprof::export::ExporterConfigExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use export_support::*;
use forkprof::export::Pyroscope;
use forkprof::{pprof, Config, ExporterConfig, Profiler};
use support::*;

#[test]
fn ingest_gets_the_series_name_the_time_range_and_a_gzip_pprof() {
    let _w = Watchdog::new("pyroscope ingest", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Status(200));
    let exporter: ExporterConfig = Pyroscope::new(&format!("{}/", server.url()), "my-app")
        .tag("zone", "b")
        // No value, no label form in a series name: left out.
        .tag("canary", "")
        .into();
    let cfg = Config::builder("ignored-service")
        .sample_type("samples", "count")
        .tag("env:prod")
        .exporter(exporter)
        .build()
        .unwrap();
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let p = Profiler::start(cfg).unwrap();
    record(&p, "pyro_leaf", 7);
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(stats.profiles_written, 1, "{stats:?}");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert!(r.target.starts_with("/ingest?"), "{}", r.target);
    assert_eq!(r.query("name").as_deref(), Some("my-app{env=prod,zone=b}"));
    assert_eq!(r.query("format").as_deref(), Some("pprof"));
    let from: u64 = r.query("from").unwrap().parse().unwrap();
    let until: u64 = r.query("until").unwrap().parse().unwrap();
    assert!(
        before <= from && from < until && until <= after + 1,
        "{from} {until}"
    );
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(&r.body[..2], &[0x1f, 0x8b], "gzip body");

    let raw = forkprof::compress::decompress_any(&r.body, 1 << 30).unwrap();
    let prof = pprof::decode(&raw).unwrap();
    let totals = totals_by_stack([&prof], 0);
    assert_eq!(totals["pyro_leaf;main"], 7);
    let dir = TempDir::new("pyro");
    let file = dir.path().join("ingest.pprof.gz");
    std::fs::write(&file, &r.body).unwrap();
    go_pprof_check(&file, &["pyro_leaf"]);
}

#[test]
fn the_service_name_is_the_default_application_name() {
    let server = TestServer::tcp(|_| Reply::Status(200));
    let cfg = Config::builder("svc-name")
        .sample_type("samples", "count")
        .exporter(ExporterConfig::from_url(&format!(
            "pyroscope+{}",
            server.url()
        )))
        .build()
        .unwrap();
    let p = Profiler::start(cfg).unwrap();
    record(&p, "f", 1);
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.profiles_written, 1);
    assert_eq!(
        server.requests()[0].query("name").as_deref(),
        Some("svc-name{}")
    );
}
