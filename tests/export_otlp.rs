//! The OTLP profiles exporter against a loopback receiver: what it posts is decoded by the
//! reference Python bindings (PyPI `opentelemetry-proto`, see ci/otlp-proto.sh and
//! tests/python/otlp_decode.py) and compared, field by field, with what was recorded, in a
//! parent and in its forked child (each its own resource).

mod export_support;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use export_support::*;
use forkprof::export::{ExporterConfigExt, Otlp};
use forkprof::{Config, ExporterConfig, Frame, Label, Profiler, Sample, SampleType};
use forkprof_core::TraceContext;
use serde_json::{json, Value};
use support::*;

/// The Python with the pinned bindings: `FORKPROF_OTLP_PYTHON`, else ci/otlp-proto.sh's venv.
/// `None` (the test is skipped) when neither exists, unless `FORKPROF_REQUIRE_OTLP_PROTO=1`
/// (set by CI), which makes that a failure.
fn decoder_python() -> Option<PathBuf> {
    let path = match std::env::var_os("FORKPROF_OTLP_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/forkprof/otlp-venv/bin/python3"),
    };
    if path.exists() {
        return Some(path);
    }
    let required = std::env::var_os("FORKPROF_REQUIRE_OTLP_PROTO").is_some_and(|v| v == "1");
    assert!(
        !required,
        "{} is missing (FORKPROF_REQUIRE_OTLP_PROTO=1); ci/otlp-proto.sh installs it",
        path.display()
    );
    eprintln!("{} is missing: skipping (ci/otlp-proto.sh)", path.display());
    None
}

/// Decodes request bodies with the reference bindings.
fn decode(python: &Path, bodies: &[&[u8]]) -> Vec<Value> {
    let dir = TempDir::new("otlp");
    let mut args =
        vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/otlp_decode.py")];
    for (i, b) in bodies.iter().enumerate() {
        let f = dir.path().join(format!("request-{i}.bin"));
        std::fs::write(&f, b).unwrap();
        args.push(f);
    }
    let out = Command::new(python).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "otlp_decode.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// One decoded or expected sample of one sample type, as a comparable string.
fn sample(
    ty: &str,
    stack: &[&str],
    attrs: Value,
    link: Option<(u128, u64)>,
    value: i64,
    ts: Option<u64>,
) -> String {
    json!({
        "type": ty,
        "stack": stack,
        "attrs": attrs,
        "link": link.map(|(t, s)| vec![format!("{t:032x}"), format!("{s:016x}")]),
        "value": value,
        "timestamp": ts,
    })
    .to_string()
}

fn decoded_samples(request: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in request["profiles"].as_array().unwrap() {
        for s in p["samples"].as_array().unwrap() {
            let stack: Vec<&str> = s["stack"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            let link = s["link"].as_array().map(|l| {
                (
                    u128::from_str_radix(l[0].as_str().unwrap(), 16).unwrap(),
                    u64::from_str_radix(l[1].as_str().unwrap(), 16).unwrap(),
                )
            });
            out.push(sample(
                p["type"].as_str().unwrap(),
                &stack,
                s["attrs"].clone(),
                link,
                s["value"].as_i64().unwrap(),
                s["timestamp"].as_u64(),
            ));
        }
    }
    out.sort();
    out
}

const TYPES: [(&str, &str); 2] = [("wall-time", "nanoseconds"), ("cpu-time", "nanoseconds")];

#[test]
fn requests_decode_to_what_was_recorded_in_parent_and_child() {
    let _w = Watchdog::new("otlp export across a fork", Duration::from_secs(120));
    let Some(python) = decoder_python() else {
        return;
    };
    let server = TestServer::tcp(|_| Reply::Status(200));
    let exporter: ExporterConfig = Otlp::new(&server.url())
        .header("Authorization", "Bearer otlp-token")
        .into();
    let cfg = Config::builder("otlp-svc")
        .sample_type(TYPES[0].0, TYPES[0].1)
        .sample_type(TYPES[1].0, TYPES[1].1)
        .sampling_period(SampleType::new("wall-time", "nanoseconds"), 10_000_000)
        .tag("env:prod")
        .tag("zone:b")
        // Resource keys are unique: a repeated tag and one named like forkprof's own
        // attributes are left out.
        .tag("env:staging")
        .tag("service.name:other")
        .exporter(exporter)
        .build()
        .unwrap();
    let before = SystemTime::now();
    let p = Profiler::start(cfg).unwrap();

    let main = Frame::new("main", "main.rs", 1);
    let a = [Frame::new("leaf_a", "a.rs", 3), main];
    let b = [Frame::new("leaf_b", "b.rs", 4), main];
    let c = [Frame::new("leaf_c", "c.rs", 5), main];
    let d = [Frame::new("leaf_d", "d.rs", 6), main];
    let traced = TraceContext {
        trace_id: 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
        span_id: 0xb7ad_6b71_6920_3331,
        local_root_span_id: 0x1111,
    };
    let mut trace_labels = [Label::num("", 0); 4];
    assert_eq!(traced.write_labels(&mut trace_labels), 4);
    // A span id without a trace id (a host that only knows Datadog's ids): no Link.
    let untraced = TraceContext {
        trace_id: 0,
        span_id: 77,
        local_root_span_id: 78,
    };
    let mut span_only = [Label::num("", 0); 4];
    untraced.write_labels(&mut span_only);

    let thread = [Label::str("thread", "t1")];
    for _ in 0..3 {
        p.record(&Sample::new(&a, &[100, 0]).labels(&thread))
            .unwrap();
    }
    let b_labels = [
        Label::num("request", 42),
        Label::num_unit("size", 9, "bytes"),
        trace_labels[0],
        trace_labels[1],
        trace_labels[2],
        trace_labels[3],
    ];
    p.record(&Sample::new(&b, &[5, 7]).labels(&b_labels))
        .unwrap();
    let ts0 = nanos(SystemTime::now()) as i64;
    for i in 0..2 {
        p.record(
            &Sample::new(&c, &[11 + i, 13])
                .labels(&trace_labels)
                .timestamp_ns(ts0 + i),
        )
        .unwrap();
    }
    p.record(&Sample::new(&d, &[1, 1]).labels(&span_only))
        .unwrap();

    let child = fork_and_run(|| {
        let e = [
            Frame::new("child_leaf", "e.rs", 8),
            Frame::new("main", "main.rs", 1),
        ];
        p.record(&Sample::new(&e, &[2, 3])).unwrap();
        match p.stop(Duration::from_secs(10)) {
            Ok(s) if s.profiles_written == 1 => 0,
            _ => 2,
        }
    });
    expect_exit_0(child, "forked child exporting OTLP");
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    let after = SystemTime::now();
    assert_eq!(stats.profiles_written, 1, "{stats:?}");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "one request from each process");
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/v1development/profiles");
        assert_eq!(r.header("Content-Type"), Some("application/x-protobuf"));
        assert_eq!(r.header("Content-Encoding"), Some("gzip"));
        assert_eq!(r.header("Authorization"), Some("Bearer otlp-token"));
    }
    let bodies: Vec<&[u8]> = reqs.iter().map(|r| r.body.as_slice()).collect();
    let decoded = decode(&python, &bodies);
    let by_pid: BTreeMap<i64, &Value> = decoded
        .iter()
        .map(|d| (d["resource"]["process.pid"].as_i64().unwrap(), d))
        .collect();
    let me = std::process::id() as i64;
    let child_pid = child as i64;
    let (parent, child) = (by_pid[&me], by_pid[&child_pid]);

    let host = forkprof::export::host_name().expect("a host name");
    for (req, pid) in [(parent, me), (child, child_pid)] {
        assert_eq!(
            req["resource"],
            json!({"service.name": "otlp-svc", "process.pid": pid, "host.name": host, "env": "prod", "zone": "b"})
        );
        assert_eq!(
            req["scope"],
            json!({"name": "forkprof", "version": env!("CARGO_PKG_VERSION")})
        );
        for prof in req["profiles"].as_array().unwrap() {
            let start = prof["time_unix_nano"].as_u64().unwrap();
            let end = start + prof["duration_nano"].as_u64().unwrap();
            assert!(nanos(before) <= start && end <= nanos(after), "{prof}");
            assert_eq!(prof["period_type"], json!(["wall-time", "nanoseconds"]));
            assert_eq!(prof["period"], 10_000_000);
        }
        let types: Vec<(&str, &str)> = req["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["type"].as_str().unwrap(), p["unit"].as_str().unwrap()))
            .collect();
        assert_eq!(types, TYPES, "one profile per sample type, in order");
    }

    let (wall, cpu) = ("wall-time", "cpu-time");
    let stack = |leaf| [leaf, "main@main.rs:1"];
    let sa = stack("leaf_a@a.rs:3");
    let sb = stack("leaf_b@b.rs:4");
    let sc = stack("leaf_c@c.rs:5");
    let sd = stack("leaf_d@d.rs:6");
    let link = Some((traced.trace_id, traced.span_id));
    let b_attrs = json!({"request": 42, "size": "9 bytes"});
    let d_attrs =
        json!({"span id": 77, "local root span id": 78, "trace id high": 0, "trace id low": 0});
    let mut want = vec![
        // cpu-time 0 for stack a: not in the cpu-time profile.
        sample(wall, &sa, json!({"thread": "t1"}), None, 300, None),
        sample(wall, &sb, b_attrs.clone(), link, 5, None),
        sample(cpu, &sb, b_attrs, link, 7, None),
        sample(wall, &sd, d_attrs.clone(), None, 1, None),
        sample(cpu, &sd, d_attrs, None, 1, None),
    ];
    for i in 0..2 {
        let ts = Some((ts0 + i) as u64);
        want.push(sample(wall, &sc, json!({}), link, 11 + i, ts));
        want.push(sample(cpu, &sc, json!({}), link, 13, ts));
    }
    want.sort();
    assert_eq!(decoded_samples(parent), want);

    let se = stack("child_leaf@e.rs:8");
    let mut want_child = vec![
        sample(wall, &se, json!({}), None, 2, None),
        sample(cpu, &se, json!({}), None, 3, None),
    ];
    want_child.sort();
    assert_eq!(
        decoded_samples(child),
        want_child,
        "the child sends its own samples only"
    );
}

#[test]
fn from_url_and_retry_after_work_as_for_the_other_exporters() {
    let _w = Watchdog::new("otlp retry", Duration::from_secs(60));
    let server = TestServer::tcp(|n| match n {
        0 => Reply::StatusWith(429, "Retry-After: 1".into()),
        _ => Reply::Status(200),
    });
    let exporter = ExporterConfig::from_url(&format!("otlp+{}/base/", server.url()))
        .with_http_options(fast_http(3))
        .unwrap();
    assert_eq!(exporter.format(), forkprof::export::ProfileFormat::Otlp);
    let cfg = Config::builder("svc")
        .sample_type("samples", "count")
        .exporter(exporter)
        .build()
        .unwrap();
    let p = Profiler::start(cfg).unwrap();
    record(&p, "f", 3);
    let stats = p.stop(Duration::from_secs(20)).unwrap();
    assert_eq!(stats.profiles_written, 1, "{stats:?}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "a 429 then the retry");
    assert!(reqs
        .iter()
        .all(|r| r.target == "/base/v1development/profiles"));
    assert_eq!(reqs[0].body, reqs[1].body);
}
