//! `forkprof torture` end to end: a short run must pass with no failed child, and a hung
//! child must turn into exit code 3 and a DEADLOCK report rather than a hang.

use std::process::Command;
use std::time::{Duration, Instant};

fn run(args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_forkprof"))
        .arg("torture")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // The run has its own watchdog; this limit only guards against that failing too.
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "DEADLOCK: forkprof torture {args:?} still running after {limit:?}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The "failed" column of the phase row `name`: the token after the max latency's unit
/// (`name forks rate p50 µs p99 µs max µs failed rss MiB`).
fn failed_children(stdout: &str, name: &str) -> Option<u64> {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(9))
        .and_then(|v| v.parse().ok())
}

#[test]
fn two_hundred_forks_from_four_threads_pass() {
    let (code, out, err) = run(
        &["--forks", "200", "--threads", "4"],
        Duration::from_secs(90),
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("RESULT: ok"), "{out}");
    for phase in ["bare", "profiled", "stopped"] {
        assert_eq!(failed_children(&out, phase), Some(0), "{phase}: {out}");
    }
    assert!(out.contains(": 0 lost"), "{out}");
    assert!(
        out.contains("children: 200 forked, 200 exited 0, 0 failed"),
        "{out}"
    );
}

#[test]
fn disable_policy_passes() {
    let (code, out, err) = run(
        &["--forks", "100", "--threads", "2", "--policy", "disable"],
        Duration::from_secs(90),
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(failed_children(&out, "profiled"), Some(0), "{out}");
}

#[test]
fn a_hung_child_is_reported_as_deadlock_with_exit_code_3() {
    let (code, out, err) = run(
        &[
            "--forks",
            "20",
            "--threads",
            "2",
            "--watchdog",
            "1",
            "--self-test-hang",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("DEADLOCK:"), "{err}");
    assert!(err.contains("waiting for child"), "{err}");
    assert!(err.contains("profiler collector thread"), "{err}");
    assert!(err.contains("fork state: ForkState"), "{err}");
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(run(&["--threads", "0"], Duration::from_secs(30)).0, 2);
    assert_eq!(
        run(&["--policy", "sometimes"], Duration::from_secs(30)).0,
        2
    );
    let (code, _, err) = run(
        &["--endpoint", "http://127.0.0.1:8126"],
        Duration::from_secs(30),
    );
    assert_eq!(code, 2);
    assert!(err.contains("not a torture option"), "{err}");
}
