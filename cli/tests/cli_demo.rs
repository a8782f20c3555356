//! `forkprof demo` end to end: the master and its plain-fork()ed workers each write their own
//! profiles, holding only their own pid and samples, readable by `go tool pprof`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forkprof::pprof::Profile;
use support::{go_pprof_check, read_profiles, TempDir};

const MASTER_FUNCS: &[&str] = &[
    "master_main",
    "spawn_workers",
    "supervise",
    "wait_for_events",
    "reap_workers",
    "report_progress",
];
const WORKER_FUNCS: &[&str] = &[
    "worker_main",
    "serve_requests",
    "handle_request",
    "read_request",
    "parse_request",
    "parse_headers",
    "parse_body",
    "hash_payload",
    "compress_body",
    "render_response",
    "escape_html",
];

/// Runs the demo as a subprocess; a run that outlives `limit` is killed and fails the test.
fn run_demo(args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_forkprof"))
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start forkprof demo");
    let until = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
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

fn num_label(s: &forkprof::pprof::decode::Sample, key: &str) -> Option<i64> {
    s.labels.iter().find(|l| l.key == key).map(|l| l.num)
}

fn str_label<'a>(s: &'a forkprof::pprof::decode::Sample, key: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|l| l.key == key)
        .map(|l| l.str.as_str())
}

#[test]
fn every_process_writes_its_own_profile() {
    let dir = TempDir::new("demo");
    let out_dir = dir.path().to_str().unwrap();
    let (code, stdout, stderr) = run_demo(
        &["--duration", "2", "--workers", "2", "--out", out_dir],
        Duration::from_secs(90),
    );
    assert_eq!(code, 0, "demo failed:\n{stdout}\n{stderr}");

    // The master names itself first; the summary has one row per worker with its pid.
    let master_pid: u32 = stdout
        .split("master pid ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no master pid in:\n{stdout}"));
    let mut workers: BTreeMap<u32, i64> = BTreeMap::new(); // pid → worker index
    for line in stdout.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 3 && cols[1] == "worker" {
            if let (Ok(pid), Ok(idx)) = (cols[0].parse(), cols[2].parse()) {
                workers.insert(pid, idx);
            }
        }
    }
    assert_eq!(workers.len(), 2, "two worker rows expected in:\n{stdout}");
    assert!(
        stdout.contains("samples: master"),
        "no progress line:\n{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");

    let profiles = read_profiles(dir.path());
    let mut by_pid: BTreeMap<u32, Vec<(PathBuf, Profile)>> = BTreeMap::new();
    for (path, prof) in profiles {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let pid: u32 = name
            .strip_prefix("forkprof-demo-")
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected file {name}"));
        by_pid.entry(pid).or_default().push((path, prof));
    }
    let expected: BTreeSet<u32> = workers.keys().copied().chain([master_pid]).collect();
    assert_eq!(
        by_pid.keys().copied().collect::<BTreeSet<_>>(),
        expected,
        "one or more files per process (master {master_pid}, workers {workers:?})"
    );

    for (pid, files) in &by_pid {
        let worker = workers.get(pid).copied();
        let (allowed, role, expect): (&[&str], &str, &[&str]) = match worker {
            Some(_) => (WORKER_FUNCS, "worker", &["handle_request", "compress_body"]),
            None => (MASTER_FUNCS, "master", &["supervise"]),
        };
        let mut seen = BTreeSet::new();
        let mut wall = 0i64;
        for (path, p) in files {
            // The profile belongs to this process and no other.
            let pids: Vec<&String> = p
                .comments
                .iter()
                .filter(|c| c.starts_with("pid:"))
                .collect();
            assert_eq!(pids, [&format!("pid:{pid}")], "{}", path.display());
            for f in &p.functions {
                assert!(
                    allowed.contains(&f.name.as_str()),
                    "{}: `{}` is not a {role} function",
                    path.display(),
                    f.name
                );
                seen.insert(f.name.clone());
            }
            for s in &p.samples {
                assert_eq!(str_label(s, "role"), Some(role), "{}", path.display());
                assert_eq!(num_label(s, "worker id"), worker, "{}", path.display());
                assert!(num_label(s, "thread id").is_some());
                wall += s.values[0];
            }
            go_pprof_check(path, expect);
        }
        assert!(wall > 0, "pid {pid}: no wall time recorded");
        for f in expect {
            assert!(
                seen.contains(*f),
                "pid {pid}: `{f}` never sampled: {seen:?}"
            );
        }
        assert!(
            stdout.contains(&format!("{pid}  ")),
            "pid {pid} missing from summary"
        );
    }

    // flame.svg beside the profiles: every worker merged, the master left out, each function
    // as wide as its share of the workers' wall time.
    let svg_path = std::fs::canonicalize(dir.path().join("flame.svg")).expect("flame.svg written");
    assert!(
        stdout.contains(&format!("{}", svg_path.display())),
        "the path of flame.svg is not printed:\n{stdout}"
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let workers_only: Vec<&Profile> = by_pid
        .iter()
        .filter(|(pid, _)| workers.contains_key(pid))
        .flat_map(|(_, files)| files.iter().map(|(_, p)| p))
        .collect();
    check_flame(&svg, &workers_only);
    // --pid picks one worker out of the directory.
    let (&w0, _) = workers.iter().next().unwrap();
    let one = dir.path().join("one.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_forkprof"))
        .args(["flame", out_dir, "--pid", &w0.to_string(), "-o"])
        .arg(&one)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = std::fs::read_to_string(&one).unwrap();
    check_flame(
        &one,
        &by_pid[&w0].iter().map(|(_, p)| p).collect::<Vec<_>>(),
    );
}

/// `svg` draws exactly `profiles`' wall time: only worker functions, the ones every worker
/// runs present, and each as wide as its share of the samples whose stacks hold it.
fn check_flame(svg: &str, profiles: &[&Profile]) {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}"));
    let mut widths: BTreeMap<String, f64> = BTreeMap::new();
    for g in doc
        .descendants()
        .find(|n| n.attribute("id") == Some("frames"))
        .expect("#frames")
        .children()
        .filter(|n| n.has_tag_name("g"))
    {
        let title = g.children().find(|c| c.has_tag_name("title")).unwrap();
        let name = title.text().unwrap().lines().next().unwrap().to_string();
        let rect = g.children().find(|c| c.has_tag_name("rect")).unwrap();
        let w: f64 = rect.attribute("width").unwrap().parse().unwrap();
        *widths.entry(name).or_default() += w;
    }
    for name in widths.keys() {
        assert!(
            name == "all" || WORKER_FUNCS.contains(&name.as_str()),
            "`{name}` in a flame graph of workers"
        );
    }
    let total: i64 = profiles
        .iter()
        .flat_map(|p| p.samples.iter().map(|s| s.values[0]))
        .sum();
    for f in ["worker_main", "handle_request", "compress_body"] {
        let with_f: i64 = profiles
            .iter()
            .flat_map(|p| p.samples.iter().map(move |s| (p, s)))
            .filter(|(p, s)| p.stack_names(s).iter().any(|n| n == f))
            .map(|(_, s)| s.values[0])
            .sum();
        let drawn = widths.get(f).copied().unwrap_or(0.0) / 1180.0;
        let expect = with_f as f64 / total as f64;
        assert!(
            expect > 0.0 && (drawn - expect).abs() < 0.002,
            "{f}: drawn {drawn:.4} of the width, {expect:.4} of the wall time"
        );
    }
}

#[test]
fn bad_options_are_refused() {
    let (code, _, stderr) = run_demo(&["--workers", "0"], Duration::from_secs(30));
    assert_eq!(code, 2);
    assert!(stderr.contains("--workers"), "{stderr}");
}

/// Runs the demo and sends `signal` to the worker whose announcement line starts with
/// `announce` as soon as it is printed. Returns the exit code and stdout; a run still going
/// after 90 s is killed and fails the test.
fn run_demo_acting(args: &[&str], announce: &str, signal: i32) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_forkprof"))
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start forkprof demo");
    let reader = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let mut stdout = String::new();
    let mut signalled = false;
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(pid) = line.strip_prefix(announce) {
                    let pid: i32 = pid.trim().parse().unwrap();
                    // SAFETY: signalling the demo's own worker process, which is alive: it
                    // runs until --duration passes and the master has not reaped it.
                    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
                    signalled = true;
                }
                stdout += &line;
                stdout.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("DEADLOCK? forkprof demo still running after 90 s:\n{stdout}");
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(signalled, "`{announce}` never printed:\n{stdout}");
    (status.code(), stdout)
}

/// A worker that dies (here: SIGKILL from outside, as the OOM killer would) is reported, and
/// the master still finishes, writes its own profile and exits non-zero.
#[test]
fn a_failed_worker_is_reported_and_fails_the_run() {
    let dir = TempDir::new("demo-fail");
    let out = dir.path().to_str().unwrap();
    let (code, stdout) = run_demo_acting(
        &["--duration", "3", "--workers", "2", "--out", out],
        "worker 1 started: pid ",
        libc::SIGKILL,
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("killed by signal 9"), "{stdout}");
    assert!(stdout.contains("1 of 3 processes FAILED"), "{stdout}");
    let pid = stdout
        .split("worker 1 started: pid ")
        .nth(1)
        .and_then(|s| s.lines().next())
        .unwrap()
        .trim()
        .to_string();
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{pid} ")))
        .unwrap_or_else(|| panic!("no summary row for {pid}:\n{stdout}"));
    assert!(row.contains("worker 1"), "{row}");
    // The master and worker 0 still wrote their profiles.
    let master_pid = stdout
        .split("master pid ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .trim()
        .to_string();
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&format!("forkprof-demo-{master_pid}-"))),
        "{files:?}"
    );
}

/// A worker that never exits (here: stopped with SIGSTOP) is killed by the master's watchdog
/// after `--duration` + `--watchdog`, and reported; nothing hangs.
#[test]
fn a_hung_worker_is_killed_by_the_watchdog() {
    let dir = TempDir::new("demo-hang");
    let out = dir.path().to_str().unwrap();
    let (code, stdout) = run_demo_acting(
        &[
            "--duration",
            "1",
            "--workers",
            "2",
            "--watchdog",
            "1",
            "--out",
            out,
        ],
        "worker 0 started: pid ",
        libc::SIGSTOP,
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("killed by the watchdog"), "{stdout}");
    assert!(stdout.contains("1 of 3 processes FAILED"), "{stdout}");
}
