//! Flat / cumulative totals per function, per sample type: what `forkprof top` prints.
//!
//! "Flat" is the value of samples whose leaf is the function; "cum" is the value of samples
//! with the function anywhere on the stack, counted once per sample even when the function
//! is on the stack several times (recursion), as `go tool pprof -top` does. Functions are
//! grouped by name, so the same function seen in several profiles (or with several ids)
//! lands in one row.

use std::collections::HashMap;

use crate::decode::{Profile, StackIndex};

/// One function's totals for one sample type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionTotal {
    pub name: String,
    pub flat: i64,
    pub cum: i64,
}

/// Totals for one sample type, functions sorted by flat (then cum, then name), largest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Top {
    /// Sum of the value over every sample: the denominator of flat% and cum%.
    pub total: i64,
    pub functions: Vec<FunctionTotal>,
}

impl Top {
    /// Adds `other`'s totals to this one (e.g. several profiles of the same process).
    pub fn merge(&mut self, other: &Top) {
        let mut rows: HashMap<String, (i64, i64)> = self
            .functions
            .drain(..)
            .map(|f| (f.name, (f.flat, f.cum)))
            .collect();
        for f in &other.functions {
            let e = rows.entry(f.name.clone()).or_insert((0, 0));
            e.0 = e.0.saturating_add(f.flat);
            e.1 = e.1.saturating_add(f.cum);
        }
        self.total = self.total.saturating_add(other.total);
        self.functions = sorted(rows);
    }

    /// `part` as a percentage of the total (0 when the total is 0).
    pub fn percent(&self, part: i64) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            part as f64 * 100.0 / self.total as f64
        }
    }
}

fn sorted(rows: HashMap<String, (i64, i64)>) -> Vec<FunctionTotal> {
    let mut out: Vec<FunctionTotal> = rows
        .into_iter()
        .map(|(name, (flat, cum))| FunctionTotal { name, flat, cum })
        .collect();
    out.sort_by(|a, b| {
        b.flat
            .cmp(&a.flat)
            .then(b.cum.cmp(&a.cum))
            .then_with(|| a.name.cmp(&b.name))
    });
    out
}

/// The index of the sample type called `name`, if the profile has one.
pub fn sample_type_index(profile: &Profile, name: &str) -> Option<usize> {
    profile.sample_types.iter().position(|t| t.ty == name)
}

/// The index of the profile's `default_sample_type`, if it names one of its types.
pub fn default_sample_type_index(profile: &Profile) -> Option<usize> {
    sample_type_index(profile, profile.default_sample_type.as_deref()?)
}

/// Flat and cumulative totals of value `value` (an index into `sample_types`) per function.
/// A value index past the sample's values counts as 0; unknown location or function ids are
/// skipped, never a panic.
pub fn top(profile: &Profile, value: usize) -> Top {
    // Names are deduplicated to small indices so each sample costs hash lookups on integers.
    let mut names: Vec<&str> = Vec::new();
    let mut name_idx: HashMap<&str, usize> = HashMap::new();
    let mut func_name: HashMap<u64, usize> = HashMap::new();
    for f in &profile.functions {
        let next = names.len();
        let i = *name_idx.entry(f.name.as_str()).or_insert(next);
        if i == next {
            names.push(f.name.as_str());
        }
        func_name.insert(f.id, i);
    }
    let stacks = StackIndex::new(profile);
    let mut flat = vec![0i64; names.len()];
    let mut cum = vec![0i64; names.len()];
    // The sample number that last added to each function's cum: counts recursion once.
    let mut seen_in = vec![usize::MAX; names.len()];
    let mut total = 0i64;
    for (n, s) in profile.samples.iter().enumerate() {
        let v = s.values.get(value).copied().unwrap_or(0);
        total = total.saturating_add(v);
        let mut leaf = true;
        for f in stacks.leaf_first(&s.location_ids).flatten() {
            let f = func_name[&f.id];
            if leaf {
                flat[f] = flat[f].saturating_add(v);
                leaf = false;
            }
            if seen_in[f] != n {
                seen_in[f] = n;
                cum[f] = cum[f].saturating_add(v);
            }
        }
    }
    let rows = names
        .iter()
        .enumerate()
        .filter(|&(i, _)| flat[i] != 0 || cum[i] != 0)
        .map(|(i, name)| (name.to_string(), (flat[i], cum[i])))
        .collect();
    Top {
        total,
        functions: sorted(rows),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Function, Line, Location, Sample, ValueType};

    /// A profile with functions named `names` (ids 1..), one location per function (same id),
    /// and samples given as leaf-first lists of function ids with one value each.
    fn profile(names: &[&str], samples: &[(&[u64], i64)]) -> Profile {
        Profile {
            sample_types: vec![ValueType {
                ty: "wall-time".into(),
                unit: "nanoseconds".into(),
            }],
            functions: names
                .iter()
                .enumerate()
                .map(|(i, n)| Function {
                    id: i as u64 + 1,
                    name: n.to_string(),
                    filename: "f.rs".into(),
                })
                .collect(),
            locations: (1..=names.len() as u64)
                .map(|id| Location {
                    id,
                    lines: vec![Line {
                        function_id: id,
                        line: 1,
                    }],
                })
                .collect(),
            samples: samples
                .iter()
                .map(|(locs, v)| Sample {
                    location_ids: locs.to_vec(),
                    values: vec![*v],
                    labels: vec![],
                })
                .collect(),
            ..Profile::default()
        }
    }

    fn row(t: &Top, name: &str) -> (i64, i64) {
        let f = t.functions.iter().find(|f| f.name == name).unwrap();
        (f.flat, f.cum)
    }

    #[test]
    fn flat_is_the_leaf_cum_is_the_whole_stack() {
        // 1 = main, 2 = parse, 3 = hash
        let p = profile(
            &["main", "parse", "hash"],
            &[(&[2, 1], 30), (&[3, 1], 50), (&[3, 2, 1], 20)],
        );
        let t = top(&p, 0);
        assert_eq!(t.total, 100);
        assert_eq!(row(&t, "hash"), (70, 70));
        assert_eq!(row(&t, "parse"), (30, 50));
        assert_eq!(row(&t, "main"), (0, 100));
        let order: Vec<&str> = t.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(order, ["hash", "parse", "main"]);
        assert_eq!(t.percent(70), 70.0);
    }

    #[test]
    fn recursion_counts_once_per_sample() {
        // walk → walk → walk → main: cum of walk is the sample's value, not three times it.
        let p = profile(&["main", "walk"], &[(&[2, 2, 2, 1], 10), (&[1], 5)]);
        let t = top(&p, 0);
        assert_eq!(row(&t, "walk"), (10, 10));
        assert_eq!(row(&t, "main"), (5, 15));
        assert_eq!(t.total, 15);
    }

    #[test]
    fn same_name_under_different_ids_is_one_row() {
        let mut p = profile(&["work", "work", "main"], &[(&[1, 3], 4), (&[2, 3], 6)]);
        p.functions[1].filename = "other.rs".into();
        let t = top(&p, 0);
        assert_eq!(row(&t, "work"), (10, 10));
        assert_eq!(t.functions.len(), 2);
    }

    #[test]
    fn unknown_ids_and_missing_values_do_not_panic() {
        let mut p = profile(&["a"], &[(&[1, 99], 3)]);
        p.samples.push(Sample {
            location_ids: vec![1],
            values: vec![],
            labels: vec![],
        });
        let t = top(&p, 0);
        assert_eq!(row(&t, "a"), (3, 3));
        assert_eq!(top(&p, 7).total, 0);
        assert_eq!(sample_type_index(&p, "wall-time"), Some(0));
        assert_eq!(sample_type_index(&p, "cpu-time"), None);
    }

    #[test]
    fn merge_sums_by_name() {
        let a = top(&profile(&["x", "m"], &[(&[1, 2], 5)]), 0);
        let b = top(&profile(&["m", "y"], &[(&[2, 1], 7), (&[1], 1)]), 0);
        let mut t = a.clone();
        t.merge(&b);
        assert_eq!(t.total, 13);
        assert_eq!(row(&t, "y"), (7, 7));
        assert_eq!(row(&t, "x"), (5, 5));
        assert_eq!(row(&t, "m"), (1, 13));
    }
}
