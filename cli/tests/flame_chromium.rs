//! The demo's flame graph in a real browser: headless Chromium (Debian's `chromium`) renders
//! `flame.svg` to a PNG with no script error, the PNG holds the graph's colours where the
//! frames are, and the page's script runs: a zoom and a search asked for in the URL show in
//! the DOM Chromium dumps.
//!
//! Skipped when Chromium is missing, unless `FORKPROF_REQUIRE_CHROMIUM=1` (ci/test sets it
//! and installs the package).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::TempDir;

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var_os("FORKPROF_REQUIRE_CHROMIUM").is_none(),
            "chromium is required (FORKPROF_REQUIRE_CHROMIUM set) but not found"
        );
        eprintln!("skipped: no chromium on PATH");
    }
    found
}

/// Runs `cmd` with stdout and stderr in files (a browser can print more than a pipe holds),
/// killing it after `limit`. Returns the exit code, stdout and stderr.
fn run_limited(mut cmd: Command, dir: &Path, tag: &str, limit: Duration) -> (i32, String, String) {
    let out_path = dir.join(format!("{tag}.stdout"));
    let err_path = dir.join(format!("{tag}.stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{tag}: cannot start: {e}"));
    let until = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{tag} still running after {limit:?}:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

fn browser(exe: &Path, profile_dir: &Path) -> Command {
    let mut c = Command::new(exe);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile_dir.display()));
    c
}

/// Console messages Chromium logged for the page (the script logs none of its own).
fn console_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

#[test]
fn chromium_renders_the_demo_flame_graph() {
    let Some(exe) = chromium() else {
        return;
    };
    let dir = TempDir::new("flame-chromium");
    let out = dir.path().join("profiles");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_forkprof"));
    demo.args(["demo", "--duration", "2", "--workers", "2", "--out"])
        .arg(&out);
    let (code, stdout, stderr) = run_limited(demo, dir.path(), "demo", Duration::from_secs(90));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let svg_path = std::fs::canonicalize(out.join("flame.svg")).unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let root = doc.root_element();
    let width: u32 = root.attribute("width").unwrap().parse().unwrap();
    let height: u32 = root.attribute("height").unwrap().parse::<f64>().unwrap() as u32;
    let frames = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("rect")
                && n.parent()
                    .and_then(|p| p.parent())
                    .and_then(|p| p.attribute("id"))
                    == Some("frames")
        })
        .count();
    let url = format!("file://{}", svg_path.display());

    // 1. A screenshot, no script error.
    let png_path = dir.path().join("flame.png");
    let mut shot = browser(&exe, &dir.path().join("chrome-1"));
    shot.arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png_path.display()))
        .arg(&url);
    let (code, _, err) = run_limited(shot, dir.path(), "screenshot", Duration::from_secs(120));
    assert_eq!(code, 0, "chromium --screenshot failed:\n{err}");
    assert!(
        console_errors(&err).is_empty(),
        "{:?}",
        console_errors(&err)
    );
    if let Some(keep) = std::env::var_os("FORKPROF_FLAME_PNG") {
        std::fs::copy(&png_path, keep).unwrap();
    }

    // The picture: the right size, and the frames' warm colours filling the frame rows.
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (width, height));
    let channels = info.color_type.samples();
    // The bottom three rows (all, worker_main, serve_requests) span the whole width; their
    // 1-pixel gaps and black labels are the rest.
    let (bottom, mut warm, mut all) = (height - 28, 0u64, 0u64);
    for y in bottom - 3 * 16..bottom {
        for x in 10..width - 10 {
            let i = y as usize * info.line_size + x as usize * channels;
            let (r, g, b) = (buf[i], buf[i + 1], buf[i + 2]);
            all += 1;
            if r >= 200 && b <= 80 && g <= 235 {
                warm += 1;
            }
        }
    }
    assert!(
        warm * 10 > all * 7,
        "only {warm} of {all} pixels of the frame rows have flame colours"
    );

    // 2. The script ran: zoomed into handle_request and searched for compress_body, as the URL
    //    asks; the DOM after load says so.
    let mut dump = browser(&exe, &dir.path().join("chrome-2"));
    dump.arg("--dump-dom")
        .arg(format!("{url}?z=handle_request&s=compress_body"));
    let (code, dom, err) = run_limited(dump, dir.path(), "dump-dom", Duration::from_secs(120));
    assert_eq!(code, 0, "chromium --dump-dom failed:\n{err}");
    assert!(
        console_errors(&err).is_empty(),
        "{:?}",
        console_errors(&err)
    );
    assert!(
        dom.contains(&format!("data-fg-ready=\"{frames}\"")),
        "the script did not start on {frames} frames:\n{dom}"
    );
    let matched = dom
        .split("<text id=\"matched\"")
        .nth(1)
        .and_then(|s| s.split("Matched: ").nth(1))
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no search result in:\n{dom}"));
    assert!(matched > 0.0 && matched <= 100.0, "{matched}");
    assert!(
        dom.contains("class=\"parent\""),
        "no ancestor faded by the zoom"
    );
    assert!(dom.contains("Reset Zoom"), "{dom}");
    assert!(
        !dom.contains("id=\"unzoom\" class=\"hide\""),
        "zoom not applied"
    );
}
