//! `forkprof flame` as a user runs it: profiles built here (hand-encoded pprof, so every
//! value is known), the SVG read back as XML, widths checked against the values, the
//! differential graph, the filters, and every way bad input must fail (one line, exit 1).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use forkprof::Compression;
use support::TempDir;

/// Horizontal room for frames in a 1200 px graph (10 px padding each side).
const ROOM: f64 = 1180.0;

fn forkprof(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forkprof"))
        .args(args)
        .output()
        .expect("run the forkprof binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// --- a minimal pprof encoder, so the tests control every id, value and label ---------------

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn int_field(out: &mut Vec<u8>, n: u64, v: u64) {
    varint(out, n << 3);
    varint(out, v);
}

fn bytes_field(out: &mut Vec<u8>, n: u64, b: &[u8]) {
    varint(out, (n << 3) | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Leaf-first function ids, one value per sample type, (label key, numeric value) pairs.
type RawSample = (Vec<u64>, Vec<i64>, Vec<(&'static str, i64)>);

#[derive(Default)]
struct P {
    types: Vec<(&'static str, &'static str)>,
    /// Function names; function i+1 sits at location i+1.
    funcs: Vec<String>,
    samples: Vec<RawSample>,
    comments: Vec<String>,
}

impl P {
    fn new(types: &[(&'static str, &'static str)], funcs: &[&str]) -> P {
        P {
            types: types.to_vec(),
            funcs: funcs.iter().map(|s| s.to_string()).collect(),
            ..P::default()
        }
    }

    /// A sample given root first by function name, as a flame graph reads it.
    fn sample(mut self, root_first: &[&str], values: &[i64]) -> P {
        let ids = root_first
            .iter()
            .rev()
            .map(|n| self.funcs.iter().position(|f| f == n).unwrap() as u64 + 1)
            .collect();
        self.samples.push((ids, values.to_vec(), vec![]));
        self
    }

    fn encode(&self) -> Vec<u8> {
        let mut strings: Vec<String> = vec![String::new()];
        let mut s = |x: &str| -> u64 {
            match strings.iter().position(|y| y == x) {
                Some(i) => i as u64,
                None => {
                    strings.push(x.to_string());
                    strings.len() as u64 - 1
                }
            }
        };
        let mut out = Vec::new();
        for (ty, unit) in &self.types {
            let mut m = Vec::new();
            int_field(&mut m, 1, s(ty));
            int_field(&mut m, 2, s(unit));
            bytes_field(&mut out, 1, &m);
        }
        for (locs, vals, labels) in &self.samples {
            let mut m = Vec::new();
            let mut packed = Vec::new();
            for &l in locs {
                varint(&mut packed, l);
            }
            bytes_field(&mut m, 1, &packed);
            let mut packed = Vec::new();
            for &v in vals {
                varint(&mut packed, v as u64);
            }
            bytes_field(&mut m, 2, &packed);
            for (k, v) in labels {
                let mut l = Vec::new();
                int_field(&mut l, 1, s(k));
                int_field(&mut l, 3, *v as u64);
                bytes_field(&mut m, 3, &l);
            }
            bytes_field(&mut out, 2, &m);
        }
        for i in 1..=self.funcs.len() as u64 {
            let mut line = Vec::new();
            int_field(&mut line, 1, i);
            int_field(&mut line, 2, 1);
            let mut loc = Vec::new();
            int_field(&mut loc, 1, i);
            bytes_field(&mut loc, 4, &line);
            bytes_field(&mut out, 4, &loc);
        }
        for (i, name) in self.funcs.iter().enumerate() {
            let mut f = Vec::new();
            int_field(&mut f, 1, i as u64 + 1);
            int_field(&mut f, 2, s(name));
            int_field(&mut f, 4, s("f.rs"));
            bytes_field(&mut out, 5, &f);
        }
        let comments: Vec<u64> = self.comments.iter().map(|c| s(c)).collect();
        for c in comments {
            int_field(&mut out, 13, c);
        }
        for st in &strings {
            bytes_field(&mut out, 6, st.as_bytes());
        }
        out
    }

    fn write(&self, dir: &Path, name: &str, c: Compression) -> PathBuf {
        let mut bytes = Vec::new();
        forkprof::compress::compress(c, &self.encode(), &mut bytes).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

/// `main` calls `parse` (which calls `hash`) and `render`; `samples` (a count) comes first so
/// the default sample type must skip it for wall-time.
fn known() -> P {
    P::new(
        &[
            ("samples", "count"),
            ("wall-time", "nanoseconds"),
            ("cpu-time", "nanoseconds"),
        ],
        &["main", "parse", "hash", "render"],
    )
    .sample(&["main", "parse"], &[1, 30, 5])
    .sample(&["main", "parse", "hash"], &[1, 20, 20])
    .sample(&["main", "render"], &[1, 40, 1])
    .sample(&["main"], &[1, 10, 0])
}

// --- reading the SVG back ---------------------------------------------------------------

#[derive(Debug, Clone)]
struct Drawn {
    name: String,
    title: String,
    x: f64,
    y: f64,
    w: f64,
    fill: (u8, u8, u8),
}

fn frames(svg: &str) -> Vec<Drawn> {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}\n{svg}"));
    let list = doc
        .descendants()
        .find(|n| n.attribute("id") == Some("frames"))
        .expect("a #frames group");
    list.children()
        .filter(|n| n.has_tag_name("g"))
        .map(|g| {
            let child = |tag: &str| g.children().find(|c| c.has_tag_name(tag)).unwrap();
            let title = child("title").text().unwrap_or_default().to_string();
            let rect = child("rect");
            let num = |a: &str| rect.attribute(a).unwrap().parse::<f64>().unwrap();
            let fill = rect.attribute("fill").unwrap();
            let rgb: Vec<u8> = fill
                .trim_start_matches("rgb(")
                .trim_end_matches(')')
                .split(',')
                .map(|c| c.parse().unwrap())
                .collect();
            Drawn {
                name: title.lines().next().unwrap_or_default().to_string(),
                title,
                x: num("x"),
                y: num("y"),
                w: num("width"),
                fill: (rgb[0], rgb[1], rgb[2]),
            }
        })
        .collect()
}

fn named<'a>(f: &'a [Drawn], name: &str) -> Vec<&'a Drawn> {
    f.iter().filter(|d| d.name == name).collect()
}

fn one<'a>(f: &'a [Drawn], name: &str) -> &'a Drawn {
    let v = named(f, name);
    assert_eq!(v.len(), 1, "{name}: {f:?}");
    v[0]
}

fn flame_ok(args: &[&str]) -> String {
    let out = forkprof(args);
    assert!(
        out.status.success(),
        "forkprof {args:?}: {}",
        text(&out.stderr)
    );
    let path = args[args.iter().position(|a| *a == "-o").unwrap() + 1];
    std::fs::read_to_string(path).unwrap()
}

fn assert_width(d: &Drawn, value: f64, total: f64) {
    let expect = value / total * ROOM;
    assert!(
        (d.w - expect).abs() <= 0.006,
        "{}: width {} for {value} of {total}, expected {expect:.3}",
        d.name,
        d.w
    );
}

#[test]
fn widths_are_proportional_to_the_sample_values() {
    let dir = TempDir::new("flame-widths");
    let file = known().write(dir.path(), "known.pprof", Compression::None);
    let out = dir.path().join("out.svg");
    let (f, o) = (file.to_str().unwrap(), out.to_str().unwrap());
    let svg = flame_ok(&["flame", f, "-o", o]);
    let fr = frames(&svg);
    assert_eq!(fr.len(), 5, "all, main, parse, hash, render: {fr:?}");
    // Default sample type: wall-time, the first that is not a count. Total 100.
    assert!(svg.contains("wall-time (nanoseconds)"), "{svg}");
    for (name, v) in [
        ("all", 100.0),
        ("main", 100.0),
        ("parse", 50.0),
        ("hash", 20.0),
        ("render", 40.0),
    ] {
        assert_width(one(&fr, name), v, 100.0);
    }
    // Children sit side by side from their parent's left edge, in name order, one row up.
    let (main, parse, render, hash) = (
        one(&fr, "main"),
        one(&fr, "parse"),
        one(&fr, "render"),
        one(&fr, "hash"),
    );
    assert!((parse.x - main.x).abs() < 0.006);
    assert!((render.x - (parse.x + parse.w)).abs() < 0.011);
    assert!((hash.x - parse.x).abs() < 0.006);
    assert_eq!(parse.y, main.y - 16.0);
    assert_eq!(hash.y, parse.y - 16.0);
    assert!(one(&fr, "all").y > main.y, "the root is at the bottom");
    assert!(
        parse.title.contains("50.00ns (50.00%), self 30.00ns"),
        "{}",
        parse.title
    );

    // Another sample type: other widths (cpu-time: parse 25, hash 20, render 1 of 26).
    let svg = flame_ok(&["flame", f, "--sample-type", "cpu-time", "-o", o]);
    let fr = frames(&svg);
    assert_width(one(&fr, "parse"), 25.0, 26.0);
    assert_width(one(&fr, "render"), 1.0, 26.0);
    assert!(named(&fr, "hash").len() == 1);
}

#[test]
fn several_files_in_every_compression_merge_into_one_graph() {
    let dir = TempDir::new("flame-merge");
    let p = known();
    let a = p.write(dir.path(), "a.pprof", Compression::None);
    let b = p.write(dir.path(), "b.pprof.gz", Compression::Gzip);
    let c = known().sample(&["main", "render"], &[1, 100, 0]).write(
        dir.path(),
        "c.pprof.zst",
        Compression::Zstd,
    );
    let out = dir.path().join("out.svg");
    let o = out.to_str().unwrap();
    let files = [&a, &b, &c].map(|p| p.to_str().unwrap().to_string());
    let svg = flame_ok(&["flame", &files[0], &files[1], &files[2], "-o", o]);
    let fr = frames(&svg);
    // 100 + 100 + 200; render: 40 + 40 + 140.
    assert_width(one(&fr, "render"), 220.0, 400.0);
    assert_width(one(&fr, "parse"), 150.0, 400.0);
    assert!(svg.contains("3 files"), "{svg}");
    // A directory stands for its profiles: the same graph.
    let again = flame_ok(&["flame", dir.path().to_str().unwrap(), "-o", o]);
    assert_width(one(&frames(&again), "render"), 220.0, 400.0);
    // To standard output with `-o -`.
    let out = forkprof(&["flame", &files[0], "-o", "-", "--title", "A <title> & more"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let svg = text(&out.stdout);
    assert!(svg.contains("A &lt;title&gt; &amp; more"), "{svg}");
    assert_eq!(frames(&svg).len(), 5);
}

#[test]
fn a_diff_of_a_profile_against_itself_shows_no_growth() {
    let dir = TempDir::new("flame-diff-self");
    let f = known().write(dir.path(), "p.pprof.gz", Compression::Gzip);
    let f = f.to_str().unwrap();
    let out = dir.path().join("diff.svg");
    let o = out.to_str().unwrap();
    for extra in [&[][..], &["--normalize"]] {
        let mut args = vec!["flame", "--diff", f, f, "-o", o];
        args.extend_from_slice(extra);
        let fr = frames(&flame_ok(&args));
        assert_eq!(fr.len(), 5);
        for d in &fr {
            let (r, g, b) = d.fill;
            assert!(r == g && g == b, "{}: coloured {:?}", d.name, d.fill);
            if d.name != "all" {
                assert!(d.title.contains("no change"), "{}", d.title);
            }
        }
        assert_width(one(&fr, "render"), 40.0, 100.0);
    }
}

#[test]
fn a_diff_colours_what_grew_and_what_shrank() {
    let dir = TempDir::new("flame-diff");
    let before = known().write(dir.path(), "before.pprof", Compression::None);
    // After: render doubled (+40), hash gone (-20), parse's own time the same.
    let after = P::new(
        &[("wall-time", "nanoseconds")],
        &["main", "parse", "hash", "render"],
    )
    .sample(&["main", "parse"], &[30])
    .sample(&["main", "render"], &[80])
    .sample(&["main"], &[10])
    .write(dir.path(), "after.pprof", Compression::None);
    let out = dir.path().join("diff.svg");
    let (b, a, o) = (
        before.to_str().unwrap(),
        after.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let svg = flame_ok(&["flame", "--diff", b, a, "-o", o]);
    let fr = frames(&svg);
    let render = one(&fr, "render");
    let parse = one(&fr, "parse");
    assert!(
        render.fill.0 > render.fill.2,
        "render grew: {:?}",
        render.fill
    );
    assert!(
        parse.fill.2 > parse.fill.0,
        "parse shrank: {:?}",
        parse.fill
    );
    assert!(render.title.contains("+40.00ns"), "{}", render.title);
    // Widths are AFTER's (total 120); hash is not in AFTER, so it is not drawn.
    assert_width(render, 80.0, 120.0);
    assert!(named(&fr, "hash").is_empty());
    assert!(svg.contains("red grew, blue shrank"), "{svg}");
}

#[test]
fn pid_and_service_filters_read_labels_comments_and_file_names() {
    let dir = TempDir::new("flame-filter");
    let mut p = P::new(&[("wall-time", "nanoseconds")], &["main", "a", "b"]);
    p.samples.push((vec![2, 1], vec![10], vec![("pid", 101)]));
    p.samples.push((vec![3, 1], vec![30], vec![("pid", 102)]));
    p.comments = vec!["service:api".into(), "pid:100".into()];
    p.samples.push((vec![1], vec![5], vec![]));
    let labelled = p.write(dir.path(), "labelled.pprof", Compression::None);
    // No comments: the pid and service come from the file name.
    let named_file = P::new(&[("wall-time", "nanoseconds")], &["main", "c"])
        .sample(&["main", "c"], &[7])
        .write(dir.path(), "worker-svc-200-0.pprof.gz", Compression::Gzip);
    let out = dir.path().join("f.svg");
    let (l, n, o) = (
        labelled.to_str().unwrap(),
        named_file.to_str().unwrap(),
        out.to_str().unwrap(),
    );

    let fr = frames(&flame_ok(&["flame", l, n, "--pid", "102", "-o", o]));
    assert_eq!(
        fr.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["all", "main", "b"]
    );
    let fr = frames(&flame_ok(&[
        "flame", l, n, "--pid", "100", "--pid", "200", "-o", o,
    ]));
    assert!(named(&fr, "c").len() == 1 && named(&fr, "a").is_empty());
    assert_width(one(&fr, "main"), 12.0, 12.0);
    let fr = frames(&flame_ok(&[
        "flame",
        l,
        n,
        "--service",
        "worker-svc",
        "-o",
        o,
    ]));
    assert_eq!(fr.len(), 3, "{fr:?}");
    assert!(named(&fr, "c").len() == 1);
    let fr = frames(&flame_ok(&["flame", l, n, "--service", "api", "-o", o]));
    assert!(named(&fr, "c").is_empty() && named(&fr, "a").len() == 1);

    let out = forkprof(&["flame", l, n, "--pid", "999", "-o", o]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("--pid 999") && err.contains("100, 101, 102, 200"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn deep_stacks_and_hostile_names_stay_bounded_and_well_formed() {
    let dir = TempDir::new("flame-hostile");
    let names = [
        "main",
        "]]><script>alert(1)</script>",
        "ctl\u{1}\u{7}name & \"q\"",
    ];
    let mut p = P::new(&[("wall-time", "nanoseconds")], &names);
    // 20,000 frames deep: main, then the two hostile names alternating.
    let mut stack: Vec<u64> = (0..20_000).map(|i| 2 + (i % 2)).collect();
    stack.push(1);
    p.samples.push((stack, vec![1_000], vec![]));
    let file = p.write(dir.path(), "deep.pprof", Compression::Zstd);
    let out = dir.path().join("deep.svg");
    let svg = flame_ok(&["flame", file.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let fr = frames(&svg);
    // The root, 1023 frames of the stack, and one for the rest.
    assert_eq!(fr.len(), 1025);
    assert_eq!(fr.last().unwrap().name, "[deeper frames omitted]");
    assert!(
        named(&fr, names[1]).len() > 500,
        "escaped names read back as they were"
    );
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("script"))
            .count(),
        1,
        "a name cannot add a script"
    );
    assert!(svg.len() < 2 << 20, "{} bytes", svg.len());
}

// --- bad input: one line naming the file or value, exit 1 (2 for usage) -------------------

fn assert_fails(args: &[&str], code: i32, names: &str, expect: &str) {
    let out = forkprof(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    // clap's usage errors name a missing argument on the line after `error: ...`.
    let first: String = err.lines().take(if code == 2 { 2 } else { 1 }).collect();
    assert!(
        first.contains(names) && first.contains(expect),
        "{args:?}: `{first}` should name `{names}` and say `{expect}`:\n{err}"
    );
    if code == 1 {
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn bad_files_fail_with_one_line_naming_the_file() {
    let dir = TempDir::new("flame-bad");
    let o = dir.path().join("o.svg");
    let o = o.to_str().unwrap();
    let good = known().write(dir.path(), "good.pprof.gz", Compression::Gzip);
    let g = good.to_str().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };

    let missing = dir.path().join("missing.pprof");
    let m = missing.to_str().unwrap();
    assert_fails(&["flame", m, "-o", o], 1, m, "cannot read");
    // A bad file among good ones fails the whole graph: no partial picture.
    assert_fails(&["flame", g, m, "-o", o], 1, m, "cannot read");
    assert!(!Path::new(o).exists());

    let garbage = write("garbage.pprof", b"this is not a profile at all\n");
    assert_fails(
        &["flame", &garbage, "-o", o],
        1,
        &garbage,
        "not a valid pprof",
    );
    let empty = write("empty.pprof", b"");
    assert_fails(&["flame", &empty, "-o", o], 1, &empty, "not a valid pprof");
    let bytes = std::fs::read(&good).unwrap();
    let truncated = write("truncated.pprof.gz", &bytes[..bytes.len() / 2]);
    assert_fails(&["flame", &truncated, "-o", o], 1, &truncated, "decompress");
    // A field whose length runs far past the end of the file.
    let past = write("past.pprof", &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]);
    assert_fails(&["flame", &past, "-o", o], 1, &past, "length past the end");
    // A sample with fewer values than sample types.
    let mut p = known();
    p.samples[0].1.pop();
    let short = p.write(dir.path(), "short.pprof", Compression::None);
    let s = short.to_str().unwrap();
    assert_fails(&["flame", s, "-o", o], 1, s, "value count");

    assert_fails(
        &["flame", g, "--sample-type", "alloc-space", "-o", o],
        1,
        g,
        "no sample type `alloc-space` (it has: samples, wall-time, cpu-time)",
    );
    assert_fails(
        &["flame", "--diff", &garbage, g, "-o", o],
        1,
        &garbage,
        "not a valid pprof",
    );
    let nothing = P::new(&[("wall-time", "nanoseconds")], &["main"])
        .sample(&["main"], &[0])
        .write(dir.path(), "zero.pprof", Compression::None);
    let z = nothing.to_str().unwrap();
    assert_fails(&["flame", z, "-o", o], 1, z, "nothing to draw");
    let sub = dir.path().join("empty-dir");
    std::fs::create_dir(&sub).unwrap();
    let d = sub.to_str().unwrap();
    assert_fails(&["flame", d, "-o", o], 1, d, "no .pprof files");
    let nodir = dir.path().join("no-such-dir").join("o.svg");
    let nd = nodir.to_str().unwrap();
    assert_fails(&["flame", g, "-o", nd], 1, nd, "cannot write");
}

/// The size cap `top` has holds for `flame`: gzip members of 1 MiB of zeros, 1025 times
/// over, decompress past 1 GiB and are refused instead of read into memory.
#[test]
fn a_decompression_bomb_is_refused() {
    use std::io::Write;
    let dir = TempDir::new("flame-bomb");
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    member.write_all(&vec![0u8; 1 << 20]).unwrap();
    let member = member.finish().unwrap();
    let bomb = dir.path().join("bomb.pprof.gz");
    std::fs::write(&bomb, member.repeat(1025)).unwrap();
    let b = bomb.to_str().unwrap();
    let o = dir.path().join("o.svg");
    assert_fails(
        &["flame", b, "-o", o.to_str().unwrap()],
        1,
        b,
        "decompressed size exceeds 1073741824 bytes",
    );
}

#[test]
fn usage_errors_exit_2_and_name_the_value() {
    assert_fails(&["flame"], 2, "<FILE>", "required");
    assert_fails(&["flame", "f", "--width", "5"], 2, "5", "--width");
    assert_fails(&["flame", "f", "--pid", "x"], 2, "'x'", "--pid");
    assert_fails(&["flame", "f", "--normalize"], 2, "--diff", "required");
    assert_fails(&["flame", "f", "--bogus"], 2, "--bogus", "unexpected");
    assert_fails(&["completions", "tcsh"], 2, "'tcsh'", "invalid value");
    assert_fails(&["frobnicate"], 2, "frobnicate", "unrecognized subcommand");
    let out = forkprof(&["flame", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for opt in [
        "--output",
        "--sample-type",
        "--pid",
        "--service",
        "--title",
        "--diff",
    ] {
        assert!(help.contains(opt), "{opt} missing from:\n{help}");
    }
}

#[test]
fn version_help_and_completions() {
    let out = forkprof(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("forkprof {}", env!("CARGO_PKG_VERSION"))
    );
    for sub in ["demo", "torture", "top", "flame", "completions"] {
        let out = forkprof(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        assert!(
            text(&out.stdout).contains(&format!("Usage: forkprof {sub}")),
            "{sub}: {}",
            text(&out.stdout)
        );
    }
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef forkprof"),
        ("fish", "complete -c forkprof"),
    ] {
        let out = forkprof(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("sample-type"),
            "{shell} completes flame's options"
        );
        // The shell itself accepts the script, where that shell is installed.
        let (sh, flag) = match shell {
            "fish" => ("fish", "--no-execute"),
            other => (other, "-n"),
        };
        let dir = TempDir::new("flame-completions");
        let file = dir.path().join(format!("forkprof.{shell}"));
        std::fs::write(&file, &script).unwrap();
        match Command::new(sh).arg(flag).arg(&file).output() {
            Ok(o) => assert!(o.status.success(), "{sh}: {}", text(&o.stderr)),
            Err(e) => eprintln!("{sh} not run: {e}"),
        }
    }
}
