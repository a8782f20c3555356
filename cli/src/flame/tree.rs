//! The call tree a flame graph draws: every stack merged root first, one node per distinct
//! path, with a value per side (the graph's own and, for a differential graph, the baseline's).

use std::collections::HashMap;

use forkprof::pprof::Profile;
use forkprof::pprof::StackIndex;

/// Frames deeper than this (root first) are folded into one `[deeper frames omitted]` frame,
/// so a hostile stack of a million frames cannot make a million rows of SVG.
pub const MAX_DEPTH: usize = 1024;
/// Names longer than this are cut (a frame cannot show more, and a hostile name stays small).
const MAX_NAME_CHARS: usize = 512;

pub const ROOT: usize = 0;

/// Which value of a node a sample adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// What the graph's widths show (the AFTER of a differential graph).
    Main = 0,
    /// The BEFORE of a differential graph.
    Base = 1,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: u32,
    /// Inclusive values: this frame and everything called from it, per [`Side`].
    pub value: [i64; 2],
    pub children: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: Vec<Node>,
    names: Vec<String>,
    name_ids: HashMap<String, u32>,
    child_of: HashMap<(usize, u32), usize>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        let mut t = Tree {
            nodes: Vec::new(),
            names: Vec::new(),
            name_ids: HashMap::new(),
            child_of: HashMap::new(),
        };
        let all = t.intern("all");
        t.nodes.push(Node {
            name: all,
            value: [0, 0],
            children: Vec::new(),
        });
        t
    }

    pub fn name(&self, node: usize) -> &str {
        &self.names[self.nodes[node].name as usize]
    }

    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.name_ids.insert(name.to_string(), id);
        id
    }

    /// Adds `value` to every node on `stack` (name ids, root first) and to the root.
    pub fn add(&mut self, stack: &[u32], value: i64, side: Side) {
        let s = side as usize;
        let mut at = ROOT;
        self.nodes[at].value[s] = self.nodes[at].value[s].saturating_add(value);
        for &name in stack {
            at = match self.child_of.get(&(at, name)) {
                Some(&c) => c,
                None => {
                    let c = self.nodes.len();
                    self.nodes.push(Node {
                        name,
                        value: [0, 0],
                        children: Vec::new(),
                    });
                    self.nodes[at].children.push(c);
                    self.child_of.insert((at, name), c);
                    c
                }
            };
            self.nodes[at].value[s] = self.nodes[at].value[s].saturating_add(value);
        }
    }

    /// Children in name order, as flame graphs lay them out: the same function lands in the
    /// same place whatever order the samples came in, which keeps two graphs comparable.
    pub fn sort(&mut self) {
        let names = &self.names;
        for n in 0..self.nodes.len() {
            let mut ch = std::mem::take(&mut self.nodes[n].children);
            ch.sort_by(|&a, &b| {
                names[self.nodes[a].name as usize].cmp(&names[self.nodes[b].name as usize])
            });
            self.nodes[n].children = ch;
        }
    }

    pub fn total(&self, side: Side) -> i64 {
        self.nodes[ROOT].value[side as usize]
    }
}

/// Turns a profile's samples into root-first stacks of the tree's name ids, once per profile
/// (lookups by id are built once, not per sample).
pub struct Stacks<'p> {
    index: StackIndex<'p>,
    /// Function id → interned name id, filled as met.
    named: HashMap<u64, u32>,
    unknown: Option<u32>,
    deeper: Option<u32>,
}

impl<'p> Stacks<'p> {
    pub fn new(p: &'p Profile) -> Stacks<'p> {
        Stacks {
            index: StackIndex::new(p),
            named: HashMap::new(),
            unknown: None,
            deeper: None,
        }
    }

    /// The sample's frames, root first, into `out`. Inlined lines are expanded (a location's
    /// lines are innermost first); an unknown location id is skipped, as `top` does; a
    /// location or function without a name is `[unknown]`.
    pub fn root_first(&mut self, tree: &mut Tree, location_ids: &[u64], out: &mut Vec<u32>) {
        out.clear();
        for f in self.index.leaf_first(location_ids) {
            let name = match f {
                Some(f) if !f.name.is_empty() => match self.named.get(&f.id) {
                    Some(&n) => n,
                    None => {
                        let n = tree.intern(&clip(&f.name));
                        self.named.insert(f.id, n);
                        n
                    }
                },
                _ => *self.unknown.get_or_insert_with(|| tree.intern("[unknown]")),
            };
            out.push(name);
        }
        out.reverse();
        if out.len() > MAX_DEPTH {
            out.truncate(MAX_DEPTH - 1);
            let d = *self
                .deeper
                .get_or_insert_with(|| tree.intern("[deeper frames omitted]"));
            out.push(d);
        }
    }
}

fn clip(name: &str) -> String {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((i, _)) => format!("{}…", &name[..i]),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use forkprof::pprof::decode::{Function, Line, Location, Sample};

    fn profile(names: &[&str], samples: &[(&[u64], i64)]) -> Profile {
        Profile {
            functions: names
                .iter()
                .enumerate()
                .map(|(i, n)| Function {
                    id: i as u64 + 1,
                    name: n.to_string(),
                    filename: String::new(),
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
                .map(|(l, v)| Sample {
                    location_ids: l.to_vec(),
                    values: vec![*v],
                    labels: vec![],
                })
                .collect(),
            ..Profile::default()
        }
    }

    fn build(p: &Profile) -> Tree {
        let mut t = Tree::new();
        let mut st = Stacks::new(p);
        let mut buf = Vec::new();
        for s in &p.samples {
            st.root_first(&mut t, &s.location_ids, &mut buf);
            t.add(&buf, s.values[0], Side::Main);
        }
        t.sort();
        t
    }

    fn child(t: &Tree, of: usize, name: &str) -> usize {
        *t.nodes[of]
            .children
            .iter()
            .find(|&&c| t.name(c) == name)
            .unwrap_or_else(|| panic!("no {name} under {}", t.name(of)))
    }

    #[test]
    fn stacks_merge_root_first_with_inclusive_values() {
        // leaf first: parse <- main, hash <- main, hash <- parse <- main
        let p = profile(
            &["main", "parse", "hash"],
            &[(&[2, 1], 30), (&[3, 1], 50), (&[3, 2, 1], 20), (&[9], 7)],
        );
        let t = build(&p);
        assert_eq!(t.total(Side::Main), 107);
        let main = child(&t, ROOT, "main");
        assert_eq!(t.nodes[main].value[0], 100);
        let order: Vec<&str> = t.nodes[main].children.iter().map(|&c| t.name(c)).collect();
        assert_eq!(order, ["hash", "parse"]);
        let parse = child(&t, main, "parse");
        assert_eq!(t.nodes[parse].value[0], 50);
        assert_eq!(t.nodes[child(&t, parse, "hash")].value[0], 20);
        // The unknown location id 9 adds to the root only.
        assert_eq!(t.nodes[ROOT].children.len(), 1);
    }

    #[test]
    fn deep_stacks_and_long_names_are_bounded() {
        let long = "x".repeat(10_000);
        let p = profile(&["f", &long], &[]);
        let mut t = Tree::new();
        let mut st = Stacks::new(&p);
        let mut buf = Vec::new();
        let ids = vec![1u64; 5000];
        st.root_first(&mut t, &ids, &mut buf);
        assert_eq!(buf.len(), MAX_DEPTH);
        assert_eq!(
            t.names[*buf.last().unwrap() as usize],
            "[deeper frames omitted]"
        );
        st.root_first(&mut t, &[2], &mut buf);
        assert_eq!(t.names[buf[0] as usize].chars().count(), MAX_NAME_CHARS + 1);
    }
}
