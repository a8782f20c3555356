//! `forkprof demo --endpoint` against the Datadog test agent: every process's profiles
//! arrive, each tagged with the pid of the process that recorded it.

#[path = "../../tests/export_support/mod.rs"]
mod export_support;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::Command;

use base64::Engine;
use export_support::{http_get, parse_multipart, TestAgent};

#[test]
fn demo_delivers_every_workers_profiles_to_the_test_agent() {
    let Some(agent) = TestAgent::start() else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_forkprof"))
        .args([
            "demo",
            "--duration",
            "2",
            "--workers",
            "2",
            "--period",
            "1",
            "--endpoint",
        ])
        .arg(agent.url())
        .output()
        .expect("run forkprof demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The summary rows: pid, role, samples, dropped, profiles.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for line in stdout.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 5
            && cols[0].parse::<u32>().is_ok()
            && (cols[1] == "master" || cols[1] == "worker")
        {
            let profiles = if cols[1] == "worker" {
                cols[5]
            } else {
                cols[4]
            };
            expected.insert(cols[0].to_string(), profiles.parse().unwrap());
        }
    }
    assert_eq!(
        expected.len(),
        3,
        "master and 2 workers in the summary:\n{stdout}"
    );
    assert!(
        expected.values().all(|&n| n >= 1),
        "every process uploaded:\n{stdout}"
    );

    let (status, body) = http_get(agent.port, "/test/session/requests").expect("query the agent");
    assert_eq!(status, 200);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    let mut received: BTreeMap<String, u64> = BTreeMap::new();
    for r in list.iter().filter(|r| {
        r["url"]
            .as_str()
            .unwrap_or("")
            .ends_with("/profiling/v1/input")
    }) {
        let headers = r["headers"].as_object().unwrap();
        let content_type = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .and_then(|(_, v)| v.as_str())
            .unwrap();
        let body = base64::engine::general_purpose::STANDARD
            .decode(r["body"].as_str().unwrap())
            .unwrap();
        let parts = parse_multipart(content_type, &body);
        let event = parts
            .iter()
            .find(|p| p.name == "event")
            .expect("event part");
        let event: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
        let tags = event["tags_profiler"].as_str().unwrap();
        let pid = tags
            .split(',')
            .find_map(|t| t.strip_prefix("process_id:"))
            .expect("process_id tag")
            .to_string();
        let pprof = parts
            .iter()
            .find(|p| p.name == "profile.pprof")
            .expect("profile part");
        let raw = forkprof::compress::decompress_any(&pprof.data, 1 << 30).unwrap();
        forkprof::pprof::decode(&raw).expect("a valid pprof");
        *received.entry(pid).or_insert(0) += 1;
    }
    assert_eq!(
        received, expected,
        "uploads per pid (agent) vs profiles per process (summary)"
    );
}
