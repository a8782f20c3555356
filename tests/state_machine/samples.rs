//! The samples a `Record` operation sends, derived from a seed so the model and the real
//! profiler see exactly the same ones (and a failing case prints as a seed, not 40 stacks).

use std::collections::BTreeMap;

use forkprof::{pprof, Frame, FrameIds, Label, Profiler, Sample, StrId};

/// A small pool of names, so samples share stacks and the collector aggregates them.
pub const NAMES: [&str; 6] = ["main", "serve", "handle", "parse", "alloc", "gc"];
const WORKERS: [&str; 3] = ["worker-1", "worker-2", "io"];
/// Timestamped samples carry this label in the profile (one sample each on the timeline).
pub const TIMESTAMP_LABEL: &str = "end_timestamp_ns";

#[derive(Clone, Debug)]
pub enum LabelSpec {
    Str(&'static str, &'static str),
    Num(&'static str, i64),
    NumUnit(&'static str, i64, &'static str),
}

#[derive(Clone, Debug)]
pub struct Spec {
    /// Leaf first.
    pub frames: Vec<&'static str>,
    pub labels: Vec<LabelSpec>,
    /// One per possible sample type; a profiler with k types sends the first k.
    pub values: [i64; 3],
    pub timestamp_ns: Option<i64>,
    /// Send the stack as interned ids rather than text.
    pub ids: bool,
}

/// splitmix64: tiny, deterministic, good enough to spread choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn specs(seed: u32, n: usize) -> Vec<Spec> {
    let mut r = Rng(u64::from(seed) << 16 | n as u64);
    (0..n)
        .map(|_| {
            let depth = 1 + r.below(8) as usize;
            let frames = (0..depth)
                .map(|_| NAMES[r.below(NAMES.len() as u64) as usize])
                .collect();
            let mut labels = Vec::new();
            if r.below(2) == 0 {
                labels.push(LabelSpec::Str(
                    "thread name",
                    WORKERS[r.below(WORKERS.len() as u64) as usize],
                ));
            }
            match r.below(3) {
                0 => labels.push(LabelSpec::Num("span id", r.below(4) as i64)),
                1 => labels.push(LabelSpec::NumUnit(
                    "allocation",
                    512 * r.below(3) as i64,
                    "bytes",
                )),
                _ => {}
            }
            let values = [
                1 + r.below(3) as i64,
                1 + r.below(1000) as i64,
                1 + r.below(1000) as i64,
            ];
            let timestamp_ns =
                (r.below(4) == 0).then(|| 1_700_000_000_000_000_000 + r.below(1 << 30) as i64);
            Spec {
                frames,
                labels,
                values,
                timestamp_ns,
                ids: r.below(3) == 0,
            }
        })
        .collect()
}

/// Sums of each value column, per key. Keys carry the sample-type count so profiles of
/// differently configured sessions never mix.
pub type Totals = BTreeMap<String, [i64; 3]>;

fn labels_key(mut labels: Vec<String>) -> String {
    labels.sort();
    labels.join(",")
}

/// The key a sample must appear under in the exported profile: its stack as the profiler
/// keeps it (cut to `max_depth` with an "omitted" marker), its labels and its timestamp.
pub fn key(spec: &Spec, types: usize, max_depth: usize) -> String {
    let mut names: Vec<String> = spec.frames.iter().map(|s| s.to_string()).collect();
    if names.len() > max_depth {
        let kept = max_depth - 1;
        let omitted = names.len() - kept;
        names.truncate(kept);
        names.push(format!("[{omitted} frames omitted]"));
    }
    let labels = spec
        .labels
        .iter()
        .map(|l| match l {
            LabelSpec::Str(k, v) => format!("{k}={v}"),
            LabelSpec::Num(k, n) => format!("{k}=#{n}"),
            LabelSpec::NumUnit(k, n, u) => format!("{k}=#{n} {u}"),
        })
        .collect();
    let mut key = format!("t{types}|{}|{}", names.join(";"), labels_key(labels));
    if let Some(ts) = spec.timestamp_ns {
        key.push_str(&format!("|ts={ts}"));
    }
    key
}

pub fn add(totals: &mut Totals, key: String, values: &[i64]) {
    let slot = totals.entry(key).or_insert([0; 3]);
    for (s, v) in slot.iter_mut().zip(values) {
        *s += v;
    }
}

/// What one decoded profile holds, in the model's terms, and how many timeline samples.
pub fn profile_totals(p: &pprof::Profile) -> (Totals, u64) {
    let types = p.sample_types.len();
    let mut totals = Totals::new();
    let mut timeline = 0;
    for s in &p.samples {
        let mut labels = Vec::new();
        let mut ts = None;
        for l in &s.labels {
            if l.key == TIMESTAMP_LABEL {
                timeline += 1;
                ts = Some(l.num);
            } else if !l.str.is_empty() {
                labels.push(format!("{}={}", l.key, l.str));
            } else if !l.num_unit.is_empty() {
                labels.push(format!("{}=#{} {}", l.key, l.num, l.num_unit));
            } else {
                labels.push(format!("{}=#{}", l.key, l.num));
            }
        }
        let mut key = format!(
            "t{types}|{}|{}",
            p.stack_names(s).join(";"),
            labels_key(labels)
        );
        if let Some(ts) = ts {
            key.push_str(&format!("|ts={ts}"));
        }
        add(&mut totals, key, &s.values);
    }
    (totals, timeline)
}

pub fn merge(into: &mut Totals, from: &Totals) {
    for (k, v) in from {
        add(into, k.clone(), v);
    }
}

/// Removes all-zero rows so "nothing" compares equal to "no entry".
pub fn normalized(t: &Totals) -> Totals {
    t.iter()
        .filter(|(_, v)| v.iter().any(|x| *x != 0))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Differences between two totals, for a failure message that says where they differ.
pub fn diff(expected: &Totals, actual: &Totals) -> Vec<String> {
    let (e, a) = (normalized(expected), normalized(actual));
    let mut out = Vec::new();
    for (k, v) in &e {
        match a.get(k) {
            Some(w) if w == v => {}
            other => out.push(format!("  {k}: expected {v:?}, got {other:?}")),
        }
    }
    for (k, w) in &a {
        if !e.contains_key(k) {
            out.push(format!("  {k}: not expected, got {w:?}"));
        }
    }
    out
}

/// Samples that did not make it into the buffer (full or too large), as the profiler
/// counted them: they must be nowhere in the output.
#[derive(Clone, Debug, Default)]
pub struct Drops {
    pub totals: Totals,
    pub timeline: u64,
    pub count: u64,
}

/// Records `specs` through `p` one by one, attributing every drop to its sample by the
/// counters it moved (only valid while no other thread records into `p`).
pub fn record_all(
    p: &Profiler,
    specs: &[Spec],
    types: usize,
    max_depth: usize,
) -> Result<Drops, String> {
    let mut drops = Drops::default();
    let texts: Vec<Vec<Frame<'static>>> = specs
        .iter()
        .map(|s| {
            s.frames
                .iter()
                .enumerate()
                .map(|(i, f)| Frame::new(f, "pool.rs", i as u32 + 1))
                .collect()
        })
        .collect();
    for (spec, frames) in specs.iter().zip(&texts) {
        let before = p.stats();
        send(p, spec, frames, types)?;
        let after = p.stats();
        let stored = after.samples_recorded - before.samples_recorded;
        let lost = (after.samples_dropped - before.samples_dropped)
            + (after.samples_too_large - before.samples_too_large);
        let ignored = after.samples_ignored - before.samples_ignored;
        if stored + lost + ignored != 1 {
            return Err(format!(
                "one record() moved the counters by recorded {stored}, dropped {lost}, ignored {ignored}: \
                 every sample must be counted exactly once"
            ));
        }
        if lost == 1 {
            add(
                &mut drops.totals,
                key(spec, types, max_depth),
                &spec.values[..types],
            );
            drops.timeline += spec.timestamp_ns.is_some() as u64;
            drops.count += 1;
        }
    }
    Ok(drops)
}

/// Records without per-sample accounting (for several threads at once).
pub fn record_unchecked(p: &Profiler, specs: &[Spec], types: usize) -> Result<(), String> {
    for spec in specs {
        let frames: Vec<Frame<'static>> = spec
            .frames
            .iter()
            .enumerate()
            .map(|(i, f)| Frame::new(f, "pool.rs", i as u32 + 1))
            .collect();
        send(p, spec, &frames, types)?;
    }
    Ok(())
}

fn intern(name: &str) -> Result<StrId, String> {
    forkprof::intern(name).map_err(|e| format!("intern({name}): {e}"))
}

fn send(p: &Profiler, spec: &Spec, frames: &[Frame<'_>], types: usize) -> Result<(), String> {
    let labels: Vec<Label<'_>> = spec
        .labels
        .iter()
        .map(|l| match *l {
            LabelSpec::Str(k, v) => Label::str(k, v),
            LabelSpec::Num(k, n) => Label::num(k, n),
            LabelSpec::NumUnit(k, n, u) => Label::num_unit(k, n, u),
        })
        .collect();
    let ids: Vec<FrameIds>;
    let mut sample = if spec.ids {
        let file = intern("pool.rs")?;
        ids = frames
            .iter()
            .map(|f| {
                Ok(FrameIds {
                    function: intern(std::str::from_utf8(f.function).unwrap_or("?"))?,
                    file,
                    line: f.line,
                })
            })
            .collect::<Result<_, String>>()?;
        Sample::with_ids(&ids, &spec.values[..types])
    } else {
        Sample::new(frames, &spec.values[..types])
    };
    sample = sample.labels(&labels);
    if let Some(ts) = spec.timestamp_ns {
        sample = sample.timestamp_ns(ts);
    }
    p.record(&sample).map_err(|e| format!("record: {e}"))
}
