//! One profile being aggregated on the collector thread: strings, functions, locations and
//! stacks deduplicated; samples with the same stack and labels summed; timestamped samples
//! kept one by one for the timeline.
//!
//! Stacks live in one flat arena of location ids with a hash chain over it, so 100,000 unique
//! 18-frame stacks cost about 8 MB rather than 100,000 boxed slices.

use std::hash::{Hash, Hasher};
use std::time::SystemTime;

use crate::config::SampleType;
use crate::hash::{fast_map, FastHasher, FastMap};
use crate::strings::StringTable;

/// Index into the profile's string table; 0 is "".
pub type StrIdx = u32;

/// A frame with its strings already in this profile's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfFrame {
    pub function: StrIdx,
    pub file: StrIdx,
    pub line: u32,
}

/// A label with its strings in this profile's table (`str` or `num`, as pprof has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfLabel {
    pub key: StrIdx,
    pub str: StrIdx,
    pub num: i64,
    pub num_unit: StrIdx,
}

/// The label timestamped samples carry (Unix epoch nanoseconds), as Datadog reads it.
pub const TIMESTAMP_LABEL: &str = "end_timestamp_ns";

const NONE: u32 = u32::MAX;

pub struct ProfileBuilder {
    pub(crate) start: SystemTime,
    n_values: usize,
    pub(crate) strings: StringTable,
    pub(crate) sample_types: Vec<(StrIdx, StrIdx)>,
    pub(crate) period: Option<((StrIdx, StrIdx), i64)>,
    pub(crate) comments: Vec<StrIdx>,
    /// Function id − 1 → (name, file).
    pub(crate) functions: Vec<(StrIdx, StrIdx)>,
    function_ids: FastMap<(StrIdx, StrIdx), u32>,
    /// Location id − 1 → (function id, line).
    pub(crate) locations: Vec<(u32, u32)>,
    /// A frame maps to exactly one location (its function is its name and file), so one
    /// lookup per frame finds it; the function table is only consulted for a new location.
    location_ids: FastMap<ProfFrame, u32>,
    pub(crate) stack_arena: Vec<u32>,
    pub(crate) stacks: Vec<(u32, u32)>,
    stack_next: Vec<u32>,
    stack_heads: FastMap<u64, u32>,
    pub(crate) labelsets: Vec<Box<[ProfLabel]>>,
    labelset_ids: FastMap<Box<[ProfLabel]>, u32>,
    /// (stack, labelset) per aggregated sample, values in `values` at `i * n_values`.
    pub(crate) samples: Vec<(u32, u32)>,
    sample_ids: FastMap<(u32, u32), u32>,
    pub(crate) values: Vec<i64>,
    /// (stack, labelset, timestamp) per timeline sample, values in `timeline_values`.
    pub(crate) timeline: Vec<(u32, u32, i64)>,
    pub(crate) timeline_values: Vec<i64>,
    pub(crate) timestamp_key: StrIdx,
    scratch: Vec<u32>,
}

impl ProfileBuilder {
    pub fn new(
        sample_types: &[SampleType],
        sampling: Option<&(SampleType, i64)>,
        start: SystemTime,
    ) -> Self {
        let mut b = ProfileBuilder {
            start,
            n_values: sample_types.len(),
            strings: StringTable::new(),
            sample_types: Vec::new(),
            period: None,
            comments: Vec::new(),
            functions: Vec::new(),
            function_ids: fast_map(),
            locations: Vec::new(),
            location_ids: fast_map(),
            stack_arena: Vec::new(),
            stacks: Vec::new(),
            stack_next: Vec::new(),
            stack_heads: fast_map(),
            labelsets: Vec::new(),
            labelset_ids: fast_map(),
            samples: Vec::new(),
            sample_ids: fast_map(),
            values: Vec::new(),
            timeline: Vec::new(),
            timeline_values: Vec::new(),
            timestamp_key: 0,
            scratch: Vec::new(),
        };
        b.intern("");
        for st in sample_types {
            let t = (b.intern(&st.name), b.intern(&st.unit));
            b.sample_types.push(t);
        }
        if let Some((st, p)) = sampling {
            b.period = Some(((b.intern(&st.name), b.intern(&st.unit)), *p));
        }
        b.timestamp_key = b.intern(TIMESTAMP_LABEL);
        b
    }

    pub fn intern(&mut self, s: &str) -> StrIdx {
        self.strings.intern(s)
    }

    /// Interns bytes, replacing invalid UTF-8 lossily (names recorded as text are found
    /// without validating their UTF-8 again; only a new name is validated).
    pub fn intern_bytes(&mut self, b: &[u8]) -> StrIdx {
        self.strings.intern_bytes(b)
    }

    pub fn add_comment(&mut self, s: &str) {
        let i = self.intern(s);
        self.comments.push(i);
    }

    pub fn n_values(&self) -> usize {
        self.n_values
    }

    /// Samples held: aggregated rows plus timeline entries.
    pub fn sample_count(&self) -> usize {
        self.samples.len() + self.timeline.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sample_count() == 0
    }

    #[inline]
    fn location(&mut self, f: ProfFrame) -> u32 {
        match self.location_ids.get(&f) {
            Some(&id) => id,
            None => self.new_location(f),
        }
    }

    #[cold]
    fn new_location(&mut self, f: ProfFrame) -> u32 {
        let func = match self.function_ids.get(&(f.function, f.file)) {
            Some(&id) => id,
            None => {
                self.functions.push((f.function, f.file));
                let id = self.functions.len() as u32;
                self.function_ids.insert((f.function, f.file), id);
                id
            }
        };
        self.locations.push((func, f.line));
        let id = self.locations.len() as u32;
        self.location_ids.insert(f, id);
        id
    }

    fn stack_id(&mut self) -> u32 {
        let mut h = FastHasher::default();
        self.scratch.hash(&mut h);
        let hash = h.finish();
        let mut cur = self.stack_heads.get(&hash).copied().unwrap_or(NONE);
        while cur != NONE {
            let (start, len) = self.stacks[cur as usize];
            if self.stack_arena[start as usize..(start + len) as usize] == self.scratch[..] {
                return cur;
            }
            cur = self.stack_next[cur as usize];
        }
        let id = self.stacks.len() as u32;
        let start = self.stack_arena.len() as u32;
        self.stack_arena.extend_from_slice(&self.scratch);
        self.stacks.push((start, self.scratch.len() as u32));
        let head = self.stack_heads.insert(hash, id).unwrap_or(NONE);
        self.stack_next.push(head);
        id
    }

    fn labelset_id(&mut self, labels: &[ProfLabel]) -> u32 {
        if labels.is_empty() {
            return NONE;
        }
        if let Some(&id) = self.labelset_ids.get(labels) {
            return id;
        }
        let id = self.labelsets.len() as u32;
        self.labelsets.push(labels.into());
        self.labelset_ids.insert(labels.into(), id);
        id
    }

    /// Adds one sample. `values.len()` must equal the number of sample types (the profiler
    /// checks this on the host thread); extra values are ignored, missing ones count as 0.
    pub fn add(
        &mut self,
        frames: impl IntoIterator<Item = ProfFrame>,
        values: &[i64],
        labels: &[ProfLabel],
        timestamp_ns: Option<i64>,
    ) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        for f in frames {
            scratch.push(self.location(f));
        }
        self.scratch = scratch;
        let stack = self.stack_id();
        let labelset = self.labelset_id(labels);
        let n = self.n_values;
        let vals = values.iter().copied().chain(std::iter::repeat(0)).take(n);
        match timestamp_ns {
            Some(ts) => {
                self.timeline.push((stack, labelset, ts));
                self.timeline_values.extend(vals);
            }
            None => match self.sample_ids.get(&(stack, labelset)) {
                Some(&i) => {
                    let row = &mut self.values[i as usize * n..(i as usize + 1) * n];
                    for (slot, v) in row.iter_mut().zip(vals) {
                        *slot = slot.wrapping_add(v);
                    }
                }
                None => {
                    let i = self.samples.len() as u32;
                    self.samples.push((stack, labelset));
                    self.sample_ids.insert((stack, labelset), i);
                    self.values.extend(vals);
                }
            },
        }
    }

    /// Encodes the profile as pprof and compresses it into `out`, streaming (what the
    /// collector does): see [`crate::compress::encode_compressed`].
    pub fn encode_compressed(
        &self,
        end: SystemTime,
        c: crate::export::Compression,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        crate::compress::encode_compressed(self, end, c, out)
    }

    /// Encodes the profile as pprof protobuf (uncompressed) into `out`.
    pub fn encode(&self, end: SystemTime, out: &mut Vec<u8>) {
        crate::pprof::encode(self, end, out)
    }
}
