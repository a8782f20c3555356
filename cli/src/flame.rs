//! `forkprof flame`: an interactive SVG flame graph of pprof files (raw, gzip or zstd),
//! merged, or a differential one of AFTER files against a BEFORE.
//!
//! The SVG is forkprof's own (`flame/svg.rs`, with the zoom and search script of
//! `flame/flame.js`) rather than inferno's: inferno is CDDL-1.0, a file-level copyleft whose
//! terms would travel with every forkprof binary, while forkprof is Apache-2.0; and drawing
//! from the call tree directly lets the differential graph and the size bounds below be ours.

mod origin;
mod svg;
mod tree;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use forkprof::pprof::Profile;

use origin::Origin;
use tree::{Side, Stacks, Tree};

/// The options (their help text is in main.rs, on the subcommand).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// pprof files, or directories of them (their *.pprof* files).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Where to write the SVG (`-` for standard output).
    #[arg(short, long, value_name = "OUT.svg", default_value = "flame.svg")]
    output: PathBuf,
    /// The sample type to draw (default: the first whose unit is not `count`, e.g. wall-time).
    #[arg(long, value_name = "NAME")]
    sample_type: Option<String>,
    /// Only samples of this process (repeat for several; both sides of a --diff): from the
    /// samples' pid labels, the profiles' `pid:N` comments, or file names
    /// `<service>-<pid>-<stamp>-<seq>.pprof`.
    #[arg(long, value_name = "PID")]
    pid: Vec<u32>,
    /// Only samples of this service (repeat for several): from `service:NAME` comments or the
    /// file names.
    #[arg(long, value_name = "NAME")]
    service: Vec<String>,
    /// The graph's title.
    #[arg(long, value_name = "TEXT")]
    title: Option<String>,
    /// A differential graph: compare the FILEs (AFTER) against this profile (or directory).
    #[arg(long, value_name = "BEFORE")]
    diff: Option<PathBuf>,
    /// With --diff: scale BEFORE to AFTER's total first, to compare shares rather than
    /// amounts (e.g. a parent's profile against a shorter-lived child's).
    #[arg(long, requires = "diff")]
    normalize: bool,
    /// Width of the graph in pixels.
    #[arg(long, value_name = "PX", default_value_t = 1200, value_parser = clap::value_parser!(u32).range(200..=20_000))]
    width: u32,
}

pub fn main(a: Args) -> i32 {
    match run(&a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("forkprof flame: {e}");
            1
        }
    }
}

/// What to draw: the parts of [`Args`] that the demo sets too.
pub struct Request<'a> {
    pub files: &'a [PathBuf],
    pub before: Option<&'a Path>,
    pub sample_type: Option<&'a str>,
    pub pids: &'a [u32],
    pub services: &'a [String],
    pub title: Option<&'a str>,
    pub normalize: bool,
    pub width: u32,
}

/// What was drawn.
pub struct Drawn {
    pub svg: String,
    pub frames: usize,
    pub sample_type: String,
    pub total: String,
}

fn run(a: &Args) -> Result<(), String> {
    let drawn = draw(&Request {
        files: &a.files,
        before: a.diff.as_deref(),
        sample_type: a.sample_type.as_deref(),
        pids: &a.pid,
        services: &a.service,
        title: a.title.as_deref(),
        normalize: a.normalize,
        width: a.width,
    })?;
    let size = drawn.svg.len();
    if a.output == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(drawn.svg.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to standard output: {e}"))?;
    } else {
        write_atomically(&a.output, drawn.svg.as_bytes())?;
    }
    eprintln!(
        "forkprof flame: wrote {} ({} frames, {:.1} KiB, {} total {})",
        a.output.display(),
        drawn.frames,
        size as f64 / 1024.0,
        drawn.sample_type,
        drawn.total
    );
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file beside it, so a reader never sees half
/// a graph and a failed run leaves any earlier graph in place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = path.display();
    let file_name = path
        .file_name()
        .ok_or_else(|| format!("{name}: not a file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{name}: cannot write: {e}")
        })
}

/// The files a FILE argument stands for: itself, or a directory's profiles.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let entries =
            std::fs::read_dir(p).map_err(|e| format!("{}: cannot list: {e}", p.display()))?;
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|f| {
                let n = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                n.contains(".pprof") && !n.starts_with('.') && f.is_file()
            })
            .collect();
        if found.is_empty() {
            return Err(format!(
                "{}: no .pprof files in this directory",
                p.display()
            ));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// One side of the graph being folded in, file by file.
struct Fold<'r> {
    req: &'r Request<'r>,
    /// The sample type drawn, with its unit and the file it was chosen from.
    chosen: Option<(String, String, PathBuf)>,
    matched: u64,
    pids_seen: BTreeSet<u32>,
    services_seen: BTreeSet<String>,
    files: usize,
    stack: Vec<u32>,
}

impl<'r> Fold<'r> {
    fn new(req: &'r Request<'r>) -> Fold<'r> {
        Fold {
            req,
            chosen: None,
            matched: 0,
            pids_seen: BTreeSet::new(),
            services_seen: BTreeSet::new(),
            files: 0,
            stack: Vec::new(),
        }
    }

    fn sample_type(&mut self, path: &Path, p: &Profile) -> Result<usize, String> {
        let name = path.display();
        let want = match (&self.chosen, self.req.sample_type) {
            (Some((ty, _, _)), _) => Some(ty.as_str()),
            (None, Some(ty)) => Some(ty),
            (None, None) => None,
        };
        let idx = match want {
            Some(ty) => p
                .sample_types
                .iter()
                .position(|t| t.ty == ty)
                .ok_or_else(|| {
                    let have: Vec<&str> = p.sample_types.iter().map(|t| t.ty.as_str()).collect();
                    format!(
                        "{name}: no sample type `{ty}` (it has: {})",
                        have.join(", ")
                    )
                })?,
            // The profile's default type, as `go tool pprof` reads it; a profile without one
            // (older forkprof, other writers): the first that is not a count.
            None => forkprof::pprof::top::default_sample_type_index(p).unwrap_or_else(|| {
                p.sample_types
                    .iter()
                    .position(|t| t.unit != "count")
                    .unwrap_or(0)
            }),
        };
        let st = p
            .sample_types
            .get(idx)
            .ok_or_else(|| format!("{name}: the profile has no sample types"))?;
        match &self.chosen {
            Some((ty, unit, first)) if *unit != st.unit => {
                return Err(format!(
                    "{name}: sample type `{ty}` is in {} here but in {unit} in {}: they cannot be added",
                    st.unit,
                    first.display()
                ))
            }
            Some(_) => {}
            None => self.chosen = Some((st.ty.clone(), st.unit.clone(), path.to_path_buf())),
        }
        Ok(idx)
    }

    fn add(&mut self, tree: &mut Tree, side: Side, path: &Path) -> Result<(), String> {
        let p = crate::top::load(path)?;
        let idx = self.sample_type(path, &p)?;
        let origin = Origin::of(path, &p);
        let mut stacks = Stacks::new(&p);
        self.files += 1;
        for s in &p.samples {
            let pid = origin.pid_of(s);
            let service = origin.service_of(s);
            if let Some(pid) = pid {
                self.pids_seen.insert(pid);
            }
            if let Some(sv) = service {
                if !self.services_seen.contains(sv) {
                    self.services_seen.insert(sv.to_string());
                }
            }
            let pid_ok =
                self.req.pids.is_empty() || pid.is_some_and(|p| self.req.pids.contains(&p));
            let service_ok = self.req.services.is_empty()
                || service.is_some_and(|sv| self.req.services.iter().any(|w| w == sv));
            if !(pid_ok && service_ok) {
                continue;
            }
            self.matched += 1;
            let v = s.values.get(idx).copied().unwrap_or(0);
            // Widths cannot be negative; a value of 0 draws nothing.
            if v > 0 {
                stacks.root_first(tree, &s.location_ids, &mut self.stack);
                tree.add(&self.stack, v, side);
            }
        }
        Ok(())
    }

    /// Why nothing can be drawn, when nothing can.
    fn check(&self, tree: &Tree, side: Side, what: &str) -> Result<(), String> {
        if tree.total(side) > 0 {
            return Ok(());
        }
        let ty = self.chosen.as_ref().map(|c| c.0.as_str()).unwrap_or("?");
        if self.matched == 0 && !(self.req.pids.is_empty() && self.req.services.is_empty()) {
            let list = |s: Vec<String>| {
                if s.is_empty() {
                    "none".to_string()
                } else {
                    s.join(", ")
                }
            };
            return Err(format!(
                "no sample of {what} matches{}{} (pids in them: {}; services: {})",
                self.req
                    .pids
                    .iter()
                    .map(|p| format!(" --pid {p}"))
                    .collect::<String>(),
                self.req
                    .services
                    .iter()
                    .map(|s| format!(" --service {s}"))
                    .collect::<String>(),
                list(self.pids_seen.iter().map(|p| p.to_string()).collect()),
                list(self.services_seen.iter().cloned().collect()),
            ));
        }
        Err(format!(
            "{what}: nothing to draw: no sample has a {ty} value above 0"
        ))
    }
}

/// The files, for a message: their paths, so the user can find them.
fn describe(files: &[PathBuf]) -> String {
    match files {
        [one] => one.display().to_string(),
        [first, rest @ ..] => format!("{} and {} more", first.display(), rest.len()),
        [] => "no file".into(),
    }
}

/// The files, for the graph's subtitle: their names, which fit on one line.
fn short(files: &[PathBuf]) -> String {
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    match files {
        [one] => name(one),
        [first, rest @ ..] => format!("{} and {} more", name(first), rest.len()),
        [] => "no file".into(),
    }
}

/// Reads every file, merges it into one call tree and renders the SVG.
pub fn draw(req: &Request) -> Result<Drawn, String> {
    let after = expand(req.files)?;
    let mut tree = Tree::new();
    let mut fold = Fold::new(req);
    for f in &after {
        fold.add(&mut tree, Side::Main, f)?;
    }
    fold.check(&tree, Side::Main, &describe(&after))?;
    let (ty, unit, _) = fold.chosen.clone().unwrap_or_default();
    let filters = req
        .pids
        .iter()
        .map(|p| format!(", pid {p}"))
        .chain(req.services.iter().map(|s| format!(", service {s}")))
        .collect::<String>();
    let total = svg::amount(tree.total(Side::Main), &unit);
    let plural = |n: usize| if n == 1 { "" } else { "s" };

    let (diff, subtitle, default_title) = match req.before {
        None => (
            None,
            format!(
                "{ty} ({unit}), total {total}, {} file{}{filters}",
                after.len(),
                plural(after.len())
            ),
            "Flame graph",
        ),
        Some(before) => {
            let before_files = expand(&[before.to_path_buf()])?;
            let mut base = Fold::new(req);
            base.chosen = fold.chosen.clone();
            for f in &before_files {
                base.add(&mut tree, Side::Base, f)?;
            }
            base.check(&tree, Side::Base, &describe(&before_files))?;
            let k = if req.normalize {
                tree.total(Side::Main) as f64 / tree.total(Side::Base) as f64
            } else {
                1.0
            };
            (
                Some(k),
                format!(
                    "{ty}: widths are AFTER ({}, {total}); red grew, blue shrank against BEFORE ({}, {}{}){filters}",
                    short(&after),
                    short(&before_files),
                    svg::amount(tree.total(Side::Base), &unit),
                    if req.normalize { ", normalised to AFTER's total" } else { "" },
                ),
                "Differential flame graph",
            )
        }
    };
    tree.sort();
    let (svg, frames) = svg::render(
        &tree,
        &svg::Render {
            title: req.title.unwrap_or(default_title),
            subtitle: &subtitle,
            unit: &unit,
            width: req.width,
            diff,
        },
    );
    Ok(Drawn {
        svg,
        frames,
        sample_type: ty,
        total,
    })
}
