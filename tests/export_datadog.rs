//! The Datadog exporter against real servers on loopback: the Datadog test agent
//! (`ddapm-test-agent`), an agent on a Unix socket, an intake that checks the API key, and a
//! forked child uploading through its own connection.

mod export_support;
mod support;

use forkprof::export::ExporterConfigExt;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use export_support::*;
use forkprof::export::Datadog;
use forkprof::{pprof, ChildPolicy, Config, ExporterConfig, Profiler};
use support::*;

fn start(exporter: ExporterConfig, service: &str) -> Profiler {
    let cfg = Config::builder(service)
        .sample_type("samples", "count")
        .tag("region:eu")
        .child_policy(ChildPolicy::Restart)
        .exporter(exporter)
        .build()
        .unwrap();
    Profiler::start(cfg).unwrap()
}

/// What one upload held, checked against the wire format the agent expects.
struct Upload {
    event: serde_json::Value,
    profile: pprof::Profile,
    raw_pprof: Vec<u8>,
}

fn check_upload(headers: &[(String, String)], body: &[u8]) -> Upload {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("header {name} missing: {headers:?}"))
    };
    assert_eq!(get("DD-EVP-ORIGIN"), "forkprof");
    assert!(!get("DD-EVP-ORIGIN-VERSION").is_empty());
    assert!(get("User-Agent").starts_with("forkprof/"));
    let ct = get("Content-Type");
    assert!(ct.starts_with("multipart/form-data; boundary="), "{ct}");
    let parts = parse_multipart(&ct, body);
    assert_eq!(parts.len(), 2, "{parts:?}");
    let event = &parts[0];
    assert_eq!(event.name, "event");
    assert_eq!(event.filename.as_deref(), Some("event.json"));
    assert_eq!(event.content_type.as_deref(), Some("application/json"));
    let event: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
    assert_eq!(event["attachments"], serde_json::json!(["profile.pprof"]));
    assert_eq!(event["version"], "4");
    assert_eq!(event["family"], "native");
    for key in ["start", "end"] {
        let t = event[key].as_str().unwrap();
        // 2026-11-27T10:57:14.123456789Z
        assert_eq!(t.len(), 30, "{t}");
        assert!(
            t.ends_with('Z') && &t[10..11] == "T" && &t[19..20] == ".",
            "{t}"
        );
    }
    assert!(event["start"].as_str() <= event["end"].as_str());
    let pprof_part = &parts[1];
    assert_eq!(pprof_part.name, "profile.pprof");
    assert_eq!(pprof_part.filename.as_deref(), Some("profile.pprof"));
    assert_eq!(
        &pprof_part.data[..4],
        &[0x28, 0xb5, 0x2f, 0xfd],
        "zstd-compressed"
    );
    let raw = forkprof::compress::decompress_any(&pprof_part.data, 1 << 30).unwrap();
    let profile = pprof::decode(&raw).unwrap();
    Upload {
        event,
        profile,
        raw_pprof: raw,
    }
}

fn tags(u: &Upload) -> Vec<String> {
    u.event["tags_profiler"]
        .as_str()
        .unwrap()
        .split(',')
        .map(String::from)
        .collect()
}

fn functions(p: &pprof::Profile) -> Vec<String> {
    let mut names: Vec<String> = p
        .samples
        .iter()
        .flat_map(|s| p.stack_names(s))
        .map(|n| n.to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn go_check(u: &Upload, dir: &Path, name: &str, expect: &[&str]) {
    let file = dir.join(name);
    std::fs::write(&file, &u.raw_pprof).unwrap();
    go_pprof_check(&file, expect);
}

#[test]
fn the_datadog_test_agent_receives_every_profile() {
    let _w = Watchdog::new("datadog test agent", Duration::from_secs(120));
    let Some(agent) = TestAgent::start() else {
        return;
    };
    let exporter = Datadog::agent(&agent.url())
        .env("test")
        .version("1.2.3")
        .tag("team", "profiling")
        // A tag without a value (`DD_TAGS=canary`): its bare key, which the agent accepts.
        .tag("canary", "")
        .into();
    let p = start(exporter, "dd-test");
    let names = ["alpha_fn", "beta_fn", "gamma_fn"];
    for (i, f) in names.iter().enumerate() {
        record(&p, f, 10 * (i + 1));
        p.flush_sync(Duration::from_secs(30)).unwrap();
    }
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.profiles_written, 3, "{stats:?}");
    assert_eq!(stats.profiles_failed, 0, "{stats:?}");
    assert!(stats.bytes_written > 0);

    let (status, body) = http_get(agent.port, "/test/session/requests").unwrap();
    assert_eq!(status, 200);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    let mut uploads: Vec<Upload> = list
        .iter()
        .filter(|r| r["url"].as_str().unwrap().ends_with("/profiling/v1/input"))
        .map(|r| {
            assert_eq!(r["method"], "POST");
            let headers: Vec<(String, String)> = r["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let body = base64::engine::general_purpose::STANDARD
                .decode(r["body"].as_str().unwrap())
                .unwrap();
            check_upload(&headers, &body)
        })
        .collect();
    assert_eq!(uploads.len(), 3, "every upload arrives exactly once");
    uploads.sort_by(|a, b| a.event["start"].as_str().cmp(&b.event["start"].as_str()));

    let dir = TempDir::new("dd-agent");
    let pid = std::process::id();
    let first_tags = tags(&uploads[0]);
    let runtime_id = first_tags
        .iter()
        .find(|t| t.starts_with("runtime-id:"))
        .expect("runtime-id tag")
        .clone();
    for (i, u) in uploads.iter().enumerate() {
        let t = tags(u);
        for want in [
            "service:dd-test",
            "env:test",
            "version:1.2.3",
            "region:eu",
            "team:profiling",
            "canary",
            &format!("process_id:{pid}"),
            &runtime_id,
        ] {
            assert!(t.iter().any(|x| x == want), "{want} missing from {t:?}");
        }
        assert!(t.iter().any(|x| x.starts_with("host:")), "{t:?}");
        let f = functions(&u.profile);
        assert!(f.contains(&names[i].to_string()), "{f:?}");
        let total: i64 = u.profile.samples.iter().map(|s| s.values[0]).sum();
        assert_eq!(total, 10 * (i as i64 + 1));
        go_check(
            u,
            dir.path(),
            &format!("upload-{i}.pprof"),
            &[names[i], "main"],
        );
    }
}

#[test]
fn an_agent_on_a_unix_socket_gets_the_profile_without_dns() {
    let _w = Watchdog::new("unix socket agent", Duration::from_secs(60));
    let dir = TempDir::new("dd-uds");
    let sock = dir.path().join("apm.socket");
    let server = TestServer::unix(&sock, |_| Reply::Status(200));
    assert!(server.url().starts_with("unix:///"));
    let p = start(ExporterConfig::datadog_agent(&server.url()), "uds-test");
    record(&p, "over_the_socket", 5);
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.profiles_written, 1, "{stats:?}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/profiling/v1/input");
    assert_eq!(r.header("Host"), Some("localhost"));
    let u = check_upload(&r.headers, &r.body);
    assert!(functions(&u.profile).contains(&"over_the_socket".to_string()));
    go_check(&u, dir.path(), "uds.pprof", &["over_the_socket"]);
}

#[test]
fn the_intake_gets_the_api_key_in_a_header_only() {
    let key = "0123456789abcdef-test-key";
    let server = TestServer::tcp(|n| Reply::Status(if n == 0 { 403 } else { 202 }));
    let exporter: ExporterConfig = Datadog::intake(&server.url(), key)
        .http_options(fast_http(0))
        .into();
    assert!(!format!("{exporter:?}").contains(key));
    let p = start(exporter, "intake-test");
    assert!(!format!("{:?}", p.config()).contains(key));
    record(&p, "first", 1);
    p.flush_sync(Duration::from_secs(10)).unwrap();
    record(&p, "second", 1);
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.profiles_failed, 1, "403 is not retried: {stats:?}");
    assert_eq!(stats.uploads_retried, 0);
    assert_eq!(stats.profiles_written, 1);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.target, "/api/v2/profile");
        assert_eq!(r.header("DD-API-KEY"), Some(key));
        assert!(!r.target.contains(key));
        check_upload(&r.headers, &r.body);
    }
}

#[test]
fn a_profile_over_the_size_limit_is_refused_not_sent() {
    let server = TestServer::tcp(|_| Reply::Status(200));
    let exporter = Datadog::agent(&server.url()).max_request_bytes(64).into();
    let p = start(exporter, "too-large");
    record(&p, "a_function_name_long_enough_to_pass_the_limit", 3);
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.profiles_too_large, 1, "{stats:?}");
    assert_eq!(stats.profiles_written, 0);
    assert_eq!(server.attempts(), 0, "nothing is sent");
}

#[test]
fn https_without_the_tls_feature_is_a_config_error() {
    if cfg!(feature = "tls") {
        return;
    }
    let err = Config::builder("x")
        .sample_type("s", "count")
        .exporter(ExporterConfig::datadog_agentless("datadoghq.eu", "k"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("tls"), "{err}");
}

#[test]
fn bad_urls_are_reported_by_build_naming_the_field() {
    for url in ["localhost:8126", "ftp://x", "unix://relative/path"] {
        let err = Config::builder("x")
            .sample_type("s", "count")
            .exporter(ExporterConfig::from_url(url))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("`endpoint`"), "{url}: {err}");
    }
}

#[test]
fn a_forked_child_uploads_its_own_profile_through_its_own_connection() {
    let _w = Watchdog::new("forked child upload", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Status(200));
    // `localhost`: no lookup in the parent, and none in the child.
    let url = server.url().replace("127.0.0.1", "localhost");
    let p = start(ExporterConfig::datadog_agent(&url), "fork-test");
    record(&p, "parent_before_fork", 4);
    // An upload before the fork (its connection is closed when it ends: nothing to inherit).
    p.flush_sync(Duration::from_secs(10)).unwrap();
    let child = fork_and_run(|| {
        record(&p, "child_work", 3);
        match p.stop(Duration::from_secs(10)) {
            Ok(s) if s.profiles_written == 1 && s.samples_recorded == 3 => 0,
            Ok(_) => 2,
            Err(_) => 3,
        }
    });
    record(&p, "parent_after_fork", 2);
    expect_exit_0(child, "forked child uploading");
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.profiles_written, 2, "{stats:?}");
    let uploads: Vec<Upload> = server
        .requests()
        .iter()
        .map(|r| check_upload(&r.headers, &r.body))
        .collect();
    assert_eq!(uploads.len(), 3);
    let of = |pid: u32| -> Vec<String> {
        uploads
            .iter()
            .filter(|u| tags(u).contains(&format!("process_id:{pid}")))
            .flat_map(|u| functions(&u.profile))
            .collect()
    };
    let child_fns = of(child as u32);
    assert!(
        child_fns.contains(&"child_work".to_string()),
        "{child_fns:?}"
    );
    assert!(
        !child_fns.iter().any(|f| f.starts_with("parent")),
        "{child_fns:?}"
    );
    let parent_fns = of(std::process::id());
    assert!(parent_fns.contains(&"parent_after_fork".to_string()));
    assert!(!parent_fns.contains(&"child_work".to_string()));
    // Each process has its own runtime id.
    let ids: std::collections::BTreeSet<String> = uploads
        .iter()
        .flat_map(tags)
        .filter(|t| t.starts_with("runtime-id:"))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    // One connection per upload: none is kept, none is shared across the fork.
    assert_eq!(server.connections(), 3);
}

/// A runtime uploading through forkprof (PHP here) names its family, its library and its
/// tracer's runtime id; a forked child is another runtime and gets an id of its own.
#[test]
fn the_host_sets_the_family_the_library_and_its_runtime_id() {
    let _w = Watchdog::new("family and runtime id", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Status(202));
    let id = "0b1d5e0c-6d3f-4a52-9f1e-1c2b3a4d5e6f";
    let exporter: ExporterConfig = Datadog::agent(&server.url())
        .family("php")
        .runtime_id(id)
        .library("forkprof-php", "0.3.1")
        .into();
    let p = start(exporter, "family-test");
    record(&p, "parent_work", 2);
    p.flush_sync(Duration::from_secs(10)).unwrap();
    let child = fork_and_run(|| {
        record(&p, "child_work", 1);
        match p.stop(Duration::from_secs(10)) {
            Ok(s) if s.profiles_written == 1 => 0,
            _ => 2,
        }
    });
    expect_exit_0(child, "forked child uploading");
    p.stop(Duration::from_secs(10)).unwrap();
    let reqs = server.requests();
    assert!(reqs.len() >= 2, "{}", reqs.len());
    let mut runtime_ids = std::collections::BTreeMap::new();
    for r in &reqs {
        assert_eq!(r.header("DD-EVP-ORIGIN"), Some("forkprof-php"));
        assert_eq!(r.header("DD-EVP-ORIGIN-VERSION"), Some("0.3.1"));
        let parts = parse_multipart(r.header("Content-Type").unwrap(), &r.body);
        let event: serde_json::Value = serde_json::from_slice(&parts[0].data).unwrap();
        assert_eq!(event["family"], "php");
        let tags: Vec<&str> = event["tags_profiler"]
            .as_str()
            .unwrap()
            .split(',')
            .collect();
        assert!(
            tags.contains(&concat!("profiler_version:", env!("CARGO_PKG_VERSION"))),
            "{tags:?}"
        );
        let pid = tags
            .iter()
            .find_map(|t| t.strip_prefix("process_id:"))
            .unwrap()
            .to_string();
        let rid = tags
            .iter()
            .find_map(|t| t.strip_prefix("runtime-id:"))
            .unwrap()
            .to_string();
        runtime_ids.insert(pid, rid);
    }
    assert_eq!(runtime_ids[&std::process::id().to_string()], id);
    let child_id = &runtime_ids[&child.to_string()];
    assert_ne!(child_id, id, "the child is another runtime");
    assert_eq!(child_id.len(), 36, "{child_id}");
}

#[test]
fn unusable_family_runtime_id_or_library_name_the_field() {
    for (d, field) in [
        (Datadog::agent("http://127.0.0.1:1").family(" "), "family"),
        (
            Datadog::agent("http://127.0.0.1:1").runtime_id(""),
            "runtime_id",
        ),
        (
            Datadog::agent("http://127.0.0.1:1").runtime_id("a,b"),
            "runtime_id",
        ),
        (
            Datadog::agent("http://127.0.0.1:1").library("x\r\ny", "1"),
            "library name",
        ),
        (
            Datadog::agent("http://127.0.0.1:1").library("x", ""),
            "library version",
        ),
    ] {
        let err = Config::builder("svc")
            .sample_type("samples", "count")
            .exporter(d.into())
            .build()
            .unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
}
