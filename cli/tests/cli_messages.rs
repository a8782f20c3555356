//! The CLI as a host: forkprof's messages reach stderr while `forkprof demo` runs, at the
//! level `--log-level` or `RUST_LOG` sets (info by default).

#[path = "../../tests/export_support/mod.rs"]
mod export_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use export_support::{free_port, Reply, TestServer};

/// Runs `forkprof demo` with one worker for half a second against `endpoint`; a run that
/// outlives a minute is killed and fails the test. Returns (exit code, stdout, stderr).
fn demo(endpoint: &str, extra: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forkprof"));
    cmd.args(["demo", "--duration", "0.5", "--workers", "1", "--endpoint"])
        .arg(endpoint)
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start forkprof demo");
    let limit = Duration::from_secs(60);
    let until = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "DEADLOCK? forkprof demo still running after {limit:?}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lines forkprof's logger wrote: `[LEVEL pid N] forkprof: ...`.
fn messages(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("] forkprof: "))
        .collect()
}

#[test]
fn an_agent_answering_429_with_retry_after_is_shown_with_the_wait() {
    // The first upload is throttled for a second; every later one is taken.
    let server = TestServer::tcp(|n| {
        if n == 0 {
            Reply::StatusWith(429, "Retry-After: 1".into())
        } else {
            Reply::Status(202)
        }
    });
    let (code, stdout, stderr) = demo(&server.url(), &[], &[]);
    assert_eq!(code, 0, "the retry succeeds:\n{stdout}\n{stderr}");
    let lines = messages(&stderr);
    let retry = lines
        .iter()
        .find(|l| l.contains("forkprof: export retry: "))
        .unwrap_or_else(|| panic!("no retry message on stderr:\n{stderr}"));
    assert!(retry.starts_with("[INFO pid "), "{retry}");
    assert!(
        retry.contains("HTTP 429")
            && retry.contains("retrying in 1.0 s as the server asked (Retry-After)"),
        "{retry}"
    );
    // Both processes uploaded in the end: the worker's throttled profile and the master's.
    assert!(server.requests().len() >= 3, "{stdout}");
    println!("{retry}");
}

#[test]
fn a_refused_connection_says_why_nothing_was_uploaded() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let (code, stdout, stderr) = demo(&url, &[], &[]);
    assert_eq!(
        code, 1,
        "nothing uploaded is a failure:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("FAILED: uploaded no profile"), "{stdout}");
    let lines = messages(&stderr);
    let failed: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("[WARN pid ") && l.contains("forkprof: export failed: "))
        .collect();
    // One per process (master and worker), each naming the refused connection.
    assert_eq!(failed.len(), 2, "{stderr}");
    for l in &failed {
        assert!(
            l.contains(&format!("POST {url}/profiling/v1/input: connecting: "))
                && l.contains("Connection refused")
                && l.contains("dropped"),
            "{l}"
        );
    }
    println!("{}", failed[0]);
}

#[test]
fn the_level_comes_from_the_flag_then_rust_log() {
    let url = format!("http://127.0.0.1:{}", free_port());
    // RUST_LOG's directive for forkprof: warnings are below `error`.
    let (code, _, stderr) = demo(&url, &[], &[("RUST_LOG", "debug,forkprof=error")]);
    assert_eq!(code, 1);
    assert!(messages(&stderr).is_empty(), "{stderr}");
    // The flag wins over RUST_LOG: debug shows the routine retries too.
    let (code, _, stderr) = demo(
        &url,
        &["--log-level", "debug"],
        &[("RUST_LOG", "forkprof=off")],
    );
    assert_eq!(code, 1);
    let lines = messages(&stderr);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[DEBUG pid ") && l.contains("forkprof: export retry: ")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("forkprof: export failed: ")),
        "{stderr}"
    );
    // A bad level is a usage error, before anything runs.
    let (code, _, stderr) = demo(&url, &["--log-level", "loud"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`loud` is not a log level"), "{stderr}");
}
