//! Trace context end to end: samples recorded with a span carry its labels in the written
//! profile; endpoints registered after the samples (by local root span id) are in it too; the
//! Datadog upload has the labels Datadog reads and `endpoint_counts`; Pyroscope gets `span_id`
//! in hex and `span_name`; a forked child keeps an endpoint table of its own.

mod export_support;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use export_support::*;
use forkprof::export::{Datadog, Pyroscope};
use forkprof::trace::{LOCAL_ROOT_SPAN_ID, SPAN_ID, TRACE_ENDPOINT, TRACE_ID_HIGH, TRACE_ID_LOW};
use forkprof::{
    pprof, ChildPolicy, Config, Frame, Label, Profiler, Sample, TraceContext, TracedLabels,
};
use support::*;

const TRACE_A: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;

fn ctx(span: u64, root: u64) -> TraceContext {
    TraceContext {
        trace_id: TRACE_A ^ root as u128,
        span_id: span,
        local_root_span_id: root,
    }
}

/// Records `n` samples of `function` with a thread label and `ctx`'s span (none if empty).
fn record_traced(p: &Profiler, function: &str, ctx: &TraceContext, n: usize) {
    let frames = [
        Frame::new(function, "app.rs", 3),
        Frame::new("main", "main.rs", 1),
    ];
    let host = [Label::str("thread name", "worker-1")];
    let labels = TracedLabels::<8>::new(&host, ctx).unwrap();
    for _ in 0..n {
        p.record(&Sample::new(&frames, &[1]).labels(labels.as_slice()))
            .unwrap();
    }
}

/// Every sample of `profiles` as (leaf function, labels as `key → value`, numbers as text).
fn samples(profiles: &[&pprof::Profile]) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for p in profiles {
        for s in &p.samples {
            let leaf = p.stack_names(s).into_iter().next().unwrap_or_default();
            let labels = s
                .labels
                .iter()
                .map(|l| {
                    let v = if l.str.is_empty() {
                        l.num.to_string()
                    } else {
                        l.str.clone()
                    };
                    (l.key.clone(), v)
                })
                .collect();
            out.push((leaf, labels));
        }
    }
    out
}

fn labels_of<'a>(
    s: &'a [(String, BTreeMap<String, String>)],
    leaf: &str,
) -> &'a BTreeMap<String, String> {
    &s.iter()
        .find(|(l, _)| l == leaf)
        .unwrap_or_else(|| panic!("no sample of {leaf}: {s:?}"))
        .1
}

fn num(v: u64) -> String {
    (v as i64).to_string()
}

#[test]
fn file_profiles_carry_the_span_and_endpoints_registered_after_the_samples() {
    let _w = Watchdog::new("trace context to files", Duration::from_secs(60));
    let dir = TempDir::new("trace-file");
    let p = Profiler::start(file_config("trace", dir.path(), ChildPolicy::Restart)).unwrap();
    let big = TraceContext {
        trace_id: u128::MAX - 1,
        span_id: u64::MAX,
        local_root_span_id: 1 << 63,
    };
    record_traced(&p, "handle_a", &ctx(11, 10), 3);
    record_traced(&p, "handle_b", &ctx(21, 20), 2);
    record_traced(&p, "handle_big", &big, 1);
    record_traced(&p, "idle", &TraceContext::default(), 1);
    // The endpoints become known when the root spans end, after their samples.
    p.set_endpoint(10, "GET /a").unwrap();
    p.set_endpoint(1 << 63, "GET /big").unwrap();
    // Registered in this period, used by a sample of the next one.
    p.set_endpoint(40, "GET /next").unwrap();
    assert!(p.set_endpoint(0, "GET /none").is_err(), "0 is no span");
    p.flush_sync(Duration::from_secs(10)).unwrap();
    record_traced(&p, "handle_next", &ctx(41, 40), 1);
    p.flush_sync(Duration::from_secs(10)).unwrap();
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.profiles_written, 2, "{stats:?}");
    assert_eq!(stats.endpoints_dropped, 0);
    assert!(
        p.set_endpoint(10, "GET /late").is_err(),
        "a stopped profiler says so"
    );

    let files = read_profiles(dir.path());
    let profiles: Vec<&pprof::Profile> = files.iter().map(|(_, p)| p).collect();
    let s = samples(&profiles);
    let a = labels_of(&s, "handle_a");
    assert_eq!(a[SPAN_ID], "11");
    assert_eq!(a[LOCAL_ROOT_SPAN_ID], "10");
    assert_eq!(a[TRACE_ID_HIGH], num((TRACE_A >> 64) as u64));
    assert_eq!(a[TRACE_ID_LOW], num((TRACE_A ^ 10) as u64));
    assert_eq!(a[TRACE_ENDPOINT], "GET /a");
    assert_eq!(a["thread name"], "worker-1");
    let b = labels_of(&s, "handle_b");
    assert_eq!(b[SPAN_ID], "21");
    assert!(!b.contains_key(TRACE_ENDPOINT), "root 20 has no endpoint");
    let big_labels = labels_of(&s, "handle_big");
    assert_eq!(big_labels[SPAN_ID], num(u64::MAX), "every bit of the id");
    assert_eq!(big_labels[TRACE_ID_HIGH], num(u64::MAX));
    assert_eq!(big_labels[TRACE_ID_LOW], num(u64::MAX - 1));
    assert_eq!(big_labels[TRACE_ENDPOINT], "GET /big");
    let idle = labels_of(&s, "idle");
    assert_eq!(idle.keys().collect::<Vec<_>>(), ["thread name"]);
    assert_eq!(labels_of(&s, "handle_next")[TRACE_ENDPOINT], "GET /next");
}

#[test]
fn datadog_gets_the_labels_it_reads_and_endpoint_counts() {
    let _w = Watchdog::new("trace context to datadog", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Status(200));
    let cfg = Config::builder("dd-trace")
        .sample_type("samples", "count")
        .exporter(Datadog::agent(&server.url()).into())
        .build()
        .unwrap();
    let p = Profiler::start(cfg).unwrap();
    record_traced(&p, "handle_a", &ctx(11, 10), 2);
    p.set_endpoint(10, "GET /a").unwrap();
    p.count_endpoint("GET /a", 2).unwrap();
    p.count_endpoint("GET \"quoted\"", 1).unwrap();
    p.count_endpoint("GET /a", 1).unwrap();
    p.flush_sync(Duration::from_secs(10)).unwrap();
    record_traced(&p, "uncounted", &TraceContext::default(), 1);
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.profiles_written, 2, "{stats:?}");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let mut uploads = Vec::new();
    for r in &reqs {
        let parts = parse_multipart(r.header("Content-Type").unwrap(), &r.body);
        let event: serde_json::Value = serde_json::from_slice(&parts[0].data).unwrap();
        let raw = forkprof::compress::decompress_any(&parts[1].data, 1 << 30).unwrap();
        uploads.push((event, pprof::decode(&raw).unwrap()));
    }
    uploads.sort_by_key(|(e, _)| e["start"].as_str().unwrap().to_string());
    let (event, profile) = &uploads[0];
    assert_eq!(
        event["endpoint_counts"],
        serde_json::json!({"GET /a": 3, "GET \"quoted\"": 1})
    );
    let s = samples(&[profile]);
    let a = labels_of(&s, "handle_a");
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        [LOCAL_ROOT_SPAN_ID, SPAN_ID, "thread name", TRACE_ENDPOINT],
        "the trace id halves are not sent to Datadog"
    );
    assert_eq!(a[TRACE_ENDPOINT], "GET /a");
    assert_eq!(a[SPAN_ID], "11");
    let (event, _) = &uploads[1];
    assert!(
        event.get("endpoint_counts").is_none(),
        "counts belong to one period: {event}"
    );
}

#[test]
fn pyroscope_gets_span_id_in_hex_and_the_endpoint_as_span_name() {
    let _w = Watchdog::new("trace context to pyroscope", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Status(200));
    let cfg = Config::builder("pyro-trace")
        .sample_type("samples", "count")
        .exporter(Pyroscope::new(&server.url(), "app").into())
        .build()
        .unwrap();
    let p = Profiler::start(cfg).unwrap();
    record_traced(&p, "handle_a", &ctx(0x00c0_ffee_0000_0011, 10), 2);
    record_traced(&p, "handle_b", &ctx(0xab, 20), 1);
    p.set_endpoint(10, "GET /a").unwrap();
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.profiles_written, 1, "{stats:?}");
    let reqs = server.requests();
    let raw = forkprof::compress::decompress_any(&reqs[0].body, 1 << 30).unwrap();
    let profile = pprof::decode(&raw).unwrap();
    let s = samples(&[&profile]);
    let a = labels_of(&s, "handle_a");
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        ["span_id", "span_name", "thread name"]
    );
    assert_eq!(a["span_id"], "00c0ffee00000011");
    assert_eq!(a["span_name"], "GET /a");
    assert_eq!(labels_of(&s, "handle_b")["span_id"], "00000000000000ab");
}

#[test]
fn a_forked_child_has_an_endpoint_table_of_its_own() {
    let _w = Watchdog::new("trace context across fork", Duration::from_secs(60));
    let dir = TempDir::new("trace-fork");
    let p = Profiler::start(file_config("trace-fork", dir.path(), ChildPolicy::Restart)).unwrap();
    p.set_endpoint(10, "parent endpoint").unwrap();
    let child = fork_and_run(|| {
        record_traced(&p, "child_a", &ctx(11, 10), 1);
        record_traced(&p, "child_b", &ctx(31, 30), 1);
        if p.set_endpoint(30, "child endpoint").is_err() {
            return 2;
        }
        match p.stop(Duration::from_secs(10)) {
            Ok(s) if s.profiles_written == 1 => 0,
            _ => 3,
        }
    });
    expect_exit_0(child, "child recording traced samples");
    record_traced(&p, "parent_a", &ctx(12, 10), 1);
    p.stop(Duration::from_secs(10)).unwrap();

    let files = read_profiles(dir.path());
    let of = |pid: u32| {
        let ps = profiles_of(&files, "trace-fork", pid);
        samples(&ps.iter().collect::<Vec<_>>())
    };
    let child_samples = of(child as u32);
    assert!(
        !labels_of(&child_samples, "child_a").contains_key(TRACE_ENDPOINT),
        "the parent's registration stays the parent's"
    );
    assert_eq!(
        labels_of(&child_samples, "child_b")[TRACE_ENDPOINT],
        "child endpoint"
    );
    let parent_samples = of(std::process::id());
    assert_eq!(
        labels_of(&parent_samples, "parent_a")[TRACE_ENDPOINT],
        "parent endpoint"
    );
    assert!(parent_samples.iter().all(|(l, _)| !l.starts_with("child")));
}
