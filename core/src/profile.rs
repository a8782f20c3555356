//! One profile being aggregated on the collector thread: strings, functions, locations and
//! stacks deduplicated; samples with the same stack and labels summed; timestamped samples
//! kept one by one for the timeline.
//!
//! Stacks live in one flat arena of location ids with a hash chain over it, so 100,000 unique
//! 18-frame stacks cost about 8 MB rather than 100,000 boxed slices.
//!
//! Every table is a [`RegionVec`] (its own mapping, excluded from forked children when built
//! with [`Memory::fork_local`]) indexed by a [`HashIndex`] (linear hashing: no insert
//! rehashes the table). The collector keeps one builder for its whole life and [`reset`]s it
//! after writing each profile, so the next profile reuses pages already faulted in.
//!
//! Resolving a sample walks those tables frame by frame. The collector first asks the
//! builder's [`SampleCache`] whether it has seen the sample's recorded bytes before
//! ([`ProfileBuilder::add_if_seen`]): a repeated sample then costs one hash and one probe.
//!
//! A table that cannot grow (the kernel refuses the mapping) never aborts: the sample being
//! added is dropped and counted ([`ProfileBuilder::take_dropped`]), and what is already in
//! the profile stays consistent.
//!
//! [`reset`]: ProfileBuilder::reset

use std::hash::{Hash, Hasher};
use std::time::SystemTime;

use crate::config::SampleType;
use crate::hash::FastHasher;
use crate::hash_index::HashIndex;
pub use crate::region_vec::Memory;
use crate::region_vec::{OutOfMemory, RegionVec};
use crate::sample_cache::{Key, Resolved, SampleCache};
use crate::stack_arena::{StackArena, StackIds};
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
    types: Vec<SampleType>,
    sampling: Option<(SampleType, i64)>,
    pub(crate) strings: StringTable,
    pub(crate) sample_types: Vec<(StrIdx, StrIdx)>,
    pub(crate) period: Option<((StrIdx, StrIdx), i64)>,
    pub(crate) comments: Vec<StrIdx>,
    /// Index into `sample_types` of the default sample type.
    pub(crate) default_type: usize,
    /// Function id − 1 → (name, file).
    pub(crate) functions: RegionVec<(StrIdx, StrIdx)>,
    function_index: HashIndex,
    /// Location id − 1 → (function id, line).
    pub(crate) locations: RegionVec<(u32, u32)>,
    /// A frame maps to exactly one location (its function is its name and file), so one
    /// lookup per frame finds it; the function table is only consulted for a new location.
    location_index: HashIndex,
    pub(crate) stack_arena: StackArena,
    stack_index: HashIndex,
    label_arena: RegionVec<ProfLabel>,
    /// Label set id → (start, len) in `label_arena`.
    labelsets: RegionVec<(u32, u32)>,
    labelset_index: HashIndex,
    /// (stack, labelset) per aggregated sample, values in `values` at `i * n_values`.
    pub(crate) samples: RegionVec<(u32, u32)>,
    sample_index: HashIndex,
    pub(crate) values: RegionVec<i64>,
    /// (stack, labelset, timestamp) per timeline sample, values in `timeline_values`.
    pub(crate) timeline: RegionVec<(u32, u32, i64)>,
    pub(crate) timeline_values: RegionVec<i64>,
    pub(crate) timestamp_key: StrIdx,
    scratch: RegionVec<u32>,
    /// Samples seen more than once, by their recorded bytes (the collector's fast path).
    seen: SampleCache,
    /// A table refused to grow while this sample's strings or frames were added.
    failed: bool,
    /// The header (sample types, period, timestamp key) could not be interned: nothing is
    /// added until the next `reset`.
    broken: bool,
    dropped: u64,
}

/// A stack's hash from its location ids, the same whether they are stored narrow or wide.
#[inline]
fn stack_hash(mut ids: impl Iterator<Item = u32>) -> u64 {
    let mut h = FastHasher::default();
    // Two ids per mix: half the rounds of hashing them one by one.
    while let Some(a) = ids.next() {
        let b = ids.next().map(|b| (b as u64) << 32).unwrap_or(1 << 63);
        h.write_u64(a as u64 | b);
    }
    h.finish()
}

fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = FastHasher::default();
    v.hash(&mut h);
    h.finish()
}

impl ProfileBuilder {
    /// A builder in ordinary memory (children inherit it): for tools and tests. The
    /// collector uses [`ProfileBuilder::new_in`] with fork-local memory.
    pub fn new(
        sample_types: &[SampleType],
        sampling: Option<&(SampleType, i64)>,
        start: SystemTime,
    ) -> Self {
        Self::new_in(sample_types, sampling, start, Memory::inherited())
    }

    pub fn new_in(
        sample_types: &[SampleType],
        sampling: Option<&(SampleType, i64)>,
        start: SystemTime,
        mem: Memory,
    ) -> Self {
        let mut b = ProfileBuilder {
            start,
            n_values: sample_types.len(),
            types: sample_types.to_vec(),
            sampling: sampling.cloned(),
            strings: StringTable::new(mem),
            sample_types: Vec::new(),
            period: None,
            comments: Vec::new(),
            default_type: 0,
            functions: RegionVec::new(mem),
            function_index: HashIndex::dense(mem),
            locations: RegionVec::new(mem),
            location_index: HashIndex::dense(mem),
            stack_arena: StackArena::new(mem),
            stack_index: HashIndex::new(mem),
            label_arena: RegionVec::new(mem),
            labelsets: RegionVec::new(mem),
            labelset_index: HashIndex::new(mem),
            samples: RegionVec::new(mem),
            sample_index: HashIndex::new(mem),
            values: RegionVec::new(mem),
            timeline: RegionVec::new(mem),
            timeline_values: RegionVec::new(mem),
            timestamp_key: 0,
            scratch: RegionVec::new(mem),
            seen: SampleCache::new(mem),
            failed: false,
            broken: false,
            dropped: 0,
        };
        b.write_header();
        b
    }

    /// Empties the builder for a new profile starting at `start`, keeping every table's
    /// memory (already faulted in) for it. Comments go too; the drop count stays.
    pub fn reset(&mut self, start: SystemTime) {
        self.start = start;
        self.strings.clear();
        self.sample_types.clear();
        self.period = None;
        self.comments.clear();
        self.functions.clear();
        self.function_index.clear();
        self.locations.clear();
        self.location_index.clear();
        self.stack_arena.clear();
        self.stack_index.clear();
        self.label_arena.clear();
        self.labelsets.clear();
        self.labelset_index.clear();
        self.samples.clear();
        self.sample_index.clear();
        self.values.clear();
        self.timeline.clear();
        self.timeline_values.clear();
        self.scratch.clear();
        self.seen.clear();
        self.write_header();
    }

    fn write_header(&mut self) {
        self.failed = false;
        self.intern("");
        let types = std::mem::take(&mut self.types);
        for st in &types {
            let t = (self.intern(&st.name), self.intern(&st.unit));
            self.sample_types.push(t);
        }
        self.types = types;
        if let Some((st, p)) = self.sampling.take() {
            self.period = Some(((self.intern(&st.name), self.intern(&st.unit)), p));
            self.sampling = Some((st, p));
        }
        self.timestamp_key = self.intern(TIMESTAMP_LABEL);
        self.broken = self.failed;
        self.failed = false;
    }

    /// Turns the repeated-sample cache off, so every sample is resolved in full (tests
    /// compare both paths).
    #[cfg(test)]
    pub(crate) fn without_sample_cache(mut self) -> Self {
        self.seen = SampleCache::disabled(Memory::inherited());
        self
    }

    /// Samples the repeated-sample cache holds (tests).
    #[cfg(test)]
    pub(crate) fn samples_remembered(&self) -> usize {
        self.seen.len()
    }

    /// Makes the next [`ProfileBuilder::add`] drop its sample as out of memory (the caller's
    /// own scratch could not grow).
    pub fn mark_failed(&mut self) {
        self.failed = true;
    }

    /// Samples dropped since the last call because a table could not grow.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Bytes of address space the tables have mapped (an upper bound on their resident size).
    pub fn mapped_bytes(&self) -> usize {
        self.strings.mapped_bytes()
            + self.functions.mapped_bytes()
            + self.function_index.mapped_bytes()
            + self.locations.mapped_bytes()
            + self.location_index.mapped_bytes()
            + self.stack_arena.mapped_bytes()
            + self.stack_index.mapped_bytes()
            + self.label_arena.mapped_bytes()
            + self.labelsets.mapped_bytes()
            + self.labelset_index.mapped_bytes()
            + self.samples.mapped_bytes()
            + self.sample_index.mapped_bytes()
            + self.values.mapped_bytes()
            + self.timeline.mapped_bytes()
            + self.timeline_values.mapped_bytes()
            + self.scratch.mapped_bytes()
            + self.seen.mapped_bytes()
    }

    #[inline]
    fn check(&mut self, r: Result<u32, OutOfMemory>) -> u32 {
        match r {
            Ok(i) => i,
            Err(OutOfMemory) => {
                self.failed = true;
                0
            }
        }
    }

    /// Interns a string. If the table cannot grow, returns 0 ("") and the next [`add`]
    /// drops its sample (counted), so a sample never lands with a wrong name.
    ///
    /// [`add`]: ProfileBuilder::add
    pub fn intern(&mut self, s: &str) -> StrIdx {
        let r = self.strings.intern(s);
        self.check(r)
    }

    /// Interns bytes, replacing invalid UTF-8 lossily (names recorded as text are found
    /// without validating their UTF-8 again; only a new name is validated). Out of memory:
    /// as [`ProfileBuilder::intern`].
    pub fn intern_bytes(&mut self, b: &[u8]) -> StrIdx {
        let r = self.strings.intern_bytes(b);
        self.check(r)
    }

    pub fn add_comment(&mut self, s: &str) {
        self.failed = false;
        let i = self.intern(s);
        if !self.failed {
            self.comments.push(i);
        }
        self.failed = false;
    }

    /// Which sample type (an index into those the builder was made with) tools show when
    /// none is named; the first by default. An index out of range is ignored.
    pub fn set_default_sample_type(&mut self, index: usize) {
        if index < self.n_values {
            self.default_type = index;
        }
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

    /// The location ids of stack `id`.
    #[inline]
    pub(crate) fn stack(&self, id: u32) -> crate::stack_arena::StackIds<'_> {
        self.stack_arena.get(id)
    }

    pub(crate) fn stack_count(&self) -> usize {
        self.stack_arena.count()
    }

    pub(crate) fn labelset_count(&self) -> usize {
        self.labelsets.len()
    }

    /// The labels of label set `id` (none for `NONE`).
    #[inline]
    pub(crate) fn labelset(&self, id: u32) -> &[ProfLabel] {
        match self.labelsets.get(id as usize) {
            Some(&(start, len)) => &self.label_arena[start as usize..(start + len) as usize],
            None => &[],
        }
    }

    /// The index of `s` if this profile holds it (nothing is interned).
    pub(crate) fn lookup_string(&self, s: &str) -> Option<StrIdx> {
        self.strings.lookup(s)
    }

    /// Interns `s`, or says the table could not grow (the sample being built is not marked).
    pub(crate) fn try_intern(&mut self, s: &str) -> Result<StrIdx, OutOfMemory> {
        self.strings.intern(s)
    }

    /// Gives label set `id` new labels, for every sample that uses it. The last step before
    /// the profile is encoded (trace labels finished per exporter, `endpoints.rs`): the label
    /// set index is not updated, so nothing may be added after it until [`reset`].
    ///
    /// [`reset`]: ProfileBuilder::reset
    pub(crate) fn replace_labelset(
        &mut self,
        id: u32,
        labels: &[ProfLabel],
    ) -> Result<(), OutOfMemory> {
        let start = self.label_arena.len();
        if id as usize >= self.labelsets.len() || start + labels.len() > u32::MAX as usize {
            return Err(OutOfMemory);
        }
        self.label_arena.extend_from_slice(labels)?;
        self.labelsets[id as usize] = (start as u32, labels.len() as u32);
        Ok(())
    }

    #[inline]
    fn location(&mut self, f: ProfFrame) -> Result<u32, OutOfMemory> {
        let h = hash_of(&f);
        let (locations, functions) = (&self.locations, &self.functions);
        let found = self.location_index.find(h, |i| {
            let (func, line) = locations[i as usize];
            line == f.line && functions[func as usize - 1] == (f.function, f.file)
        });
        match found {
            Some(i) => Ok(i + 1),
            None => self.new_location(f, h),
        }
    }

    #[cold]
    fn new_location(&mut self, f: ProfFrame, h: u64) -> Result<u32, OutOfMemory> {
        let key = (f.function, f.file);
        let fh = hash_of(&key);
        let functions = &self.functions;
        let func = match self
            .function_index
            .find(fh, |i| functions[i as usize] == key)
        {
            Some(i) => i + 1,
            None => {
                self.functions.reserve(1)?;
                self.function_index.reserve_one()?;
                self.functions.push_reserved(key);
                let functions = &self.functions;
                self.function_index
                    .insert(fh, |i| hash_of(&functions[i as usize]))
                    + 1
            }
        };
        self.locations.reserve(1)?;
        self.location_index.reserve_one()?;
        self.locations.push_reserved((func, f.line));
        let (locations, functions) = (&self.locations, &self.functions);
        Ok(self.location_index.insert(h, |i| {
            let (func, line) = locations[i as usize];
            let (function, file) = functions[func as usize - 1];
            hash_of(&ProfFrame {
                function,
                file,
                line,
            })
        }) + 1)
    }

    fn stack_id(&mut self) -> Result<u32, OutOfMemory> {
        let hash = stack_hash(self.scratch.iter().copied());
        let (arena, scratch) = (&self.stack_arena, &self.scratch);
        if let Some(i) = self.stack_index.find(hash, |i| arena.eq(i, scratch)) {
            return Ok(i);
        }
        self.stack_index.reserve_one()?;
        self.stack_arena.push(&self.scratch)?;
        let arena = &self.stack_arena;
        Ok(self.stack_index.insert(hash, |i| match arena.get(i) {
            StackIds::Narrow(s) => stack_hash(s.iter().map(|&x| x as u32)),
            StackIds::Wide(s) => stack_hash(s.iter().copied()),
        }))
    }

    fn labelset_id(&mut self, labels: &[ProfLabel]) -> Result<u32, OutOfMemory> {
        if labels.is_empty() {
            return Ok(NONE);
        }
        let hash = hash_of(labels);
        let (sets, arena) = (&self.labelsets, &self.label_arena);
        let found = self.labelset_index.find(hash, |i| {
            let (start, len) = sets[i as usize];
            arena[start as usize..(start + len) as usize] == *labels
        });
        if let Some(i) = found {
            return Ok(i);
        }
        let start = self.label_arena.len();
        if start + labels.len() > u32::MAX as usize {
            return Err(OutOfMemory);
        }
        self.label_arena.reserve(labels.len())?;
        self.labelsets.reserve(1)?;
        self.labelset_index.reserve_one()?;
        self.label_arena.extend_from_slice(labels)?;
        self.labelsets
            .push_reserved((start as u32, labels.len() as u32));
        let (sets, arena) = (&self.labelsets, &self.label_arena);
        Ok(self.labelset_index.insert(hash, |i| {
            let (start, len) = sets[i as usize];
            hash_of(&arena[start as usize..(start + len) as usize])
        }))
    }

    /// Adds one sample. `values.len()` must equal the number of sample types (the profiler
    /// checks this on the host thread); extra values are ignored, missing ones count as 0.
    ///
    /// If a table cannot grow (here, or while this sample's strings were interned), the
    /// sample is dropped and counted instead ([`ProfileBuilder::take_dropped`]).
    pub fn add(
        &mut self,
        frames: impl IntoIterator<Item = ProfFrame>,
        values: &[i64],
        labels: &[ProfLabel],
        timestamp_ns: Option<i64>,
    ) {
        self.add_resolving(frames, values, labels, timestamp_ns);
    }

    /// Adds a sample the collector already holds as `key` (its recorded bytes) if this
    /// profile has seen those bytes more than once: no frame, name or label is looked up.
    /// Returns false, adding nothing, when `key` is not remembered; the caller then resolves
    /// the sample and adds it with [`ProfileBuilder::add_remembering`].
    #[inline]
    pub(crate) fn add_if_seen(
        &mut self,
        key: &Key<'_>,
        values: impl Iterator<Item = i64>,
        timestamp_ns: Option<i64>,
    ) -> bool {
        if self.broken {
            return false;
        }
        let Some(entry) = self.seen.find(key) else {
            return false;
        };
        let r = self.seen.get(entry);
        match self.add_values(r.stack, r.labelset, r.row, values, timestamp_ns) {
            Ok(row) if row != r.row => self.seen.set_row(entry, row),
            Ok(_) => {}
            Err(OutOfMemory) => self.dropped += 1,
        }
        true
    }

    /// [`ProfileBuilder::add`], remembering the sample under `key` when its stack and its
    /// labels were both already in the profile (its second sight), so that it is found by
    /// [`ProfileBuilder::add_if_seen`] from then on.
    pub(crate) fn add_remembering(
        &mut self,
        key: &Key<'_>,
        frames: impl IntoIterator<Item = ProfFrame>,
        values: &[i64],
        labels: &[ProfLabel],
        timestamp_ns: Option<i64>,
    ) {
        let (stacks, labelsets) = (self.stack_arena.count(), self.labelsets.len());
        if let Some(resolved) = self.add_resolving(frames, values, labels, timestamp_ns) {
            if self.stack_arena.count() == stacks && self.labelsets.len() == labelsets {
                self.seen.remember(key, resolved);
            }
        }
    }

    /// Resolves and adds a sample; what it resolved to, or `None` if it was dropped.
    fn add_resolving(
        &mut self,
        frames: impl IntoIterator<Item = ProfFrame>,
        values: &[i64],
        labels: &[ProfLabel],
        timestamp_ns: Option<i64>,
    ) -> Option<Resolved> {
        let failed = std::mem::take(&mut self.failed);
        let added = if failed || self.broken {
            Err(OutOfMemory)
        } else {
            self.add_checked(frames, values, labels, timestamp_ns)
        };
        match added {
            Ok(r) => Some(r),
            Err(OutOfMemory) => {
                self.dropped += 1;
                None
            }
        }
    }

    fn add_checked(
        &mut self,
        frames: impl IntoIterator<Item = ProfFrame>,
        values: &[i64],
        labels: &[ProfLabel],
        timestamp_ns: Option<i64>,
    ) -> Result<Resolved, OutOfMemory> {
        self.scratch.clear();
        for f in frames {
            let loc = self.location(f)?;
            self.scratch.push(loc)?;
        }
        let stack = self.stack_id()?;
        let labelset = self.labelset_id(labels)?;
        let row = self.add_values(stack, labelset, NONE, values.iter().copied(), timestamp_ns)?;
        Ok(Resolved {
            stack,
            labelset,
            row,
        })
    }

    /// Adds a resolved sample's values: to the timeline when timestamped, else summed into
    /// the (stack, label set) row, `row` when the caller knows it (`NONE`: looked up). Returns
    /// the row summed into (`row` as given for a timeline sample).
    #[inline]
    fn add_values(
        &mut self,
        stack: u32,
        labelset: u32,
        row: u32,
        values: impl Iterator<Item = i64>,
        timestamp_ns: Option<i64>,
    ) -> Result<u32, OutOfMemory> {
        let n = self.n_values;
        let vals = values.chain(std::iter::repeat(0)).take(n);
        if let Some(ts) = timestamp_ns {
            self.timeline.reserve(1)?;
            self.timeline_values.reserve(n)?;
            self.timeline.push_reserved((stack, labelset, ts));
            for v in vals {
                self.timeline_values.push_reserved(v);
            }
            return Ok(row);
        }
        let row = if row != NONE {
            row
        } else {
            let key = (stack, labelset);
            let hash = hash_of(&key);
            let samples = &self.samples;
            match self.sample_index.find(hash, |i| samples[i as usize] == key) {
                Some(i) => i,
                None => {
                    self.samples.reserve(1)?;
                    self.values.reserve(n)?;
                    self.sample_index.reserve_one()?;
                    self.samples.push_reserved(key);
                    let samples = &self.samples;
                    let i = self
                        .sample_index
                        .insert(hash, |i| hash_of(&samples[i as usize]));
                    for _ in 0..n {
                        self.values.push_reserved(0);
                    }
                    i
                }
            }
        };
        let at = row as usize * n;
        for (slot, v) in self.values[at..at + n].iter_mut().zip(vals) {
            *slot = slot.wrapping_add(v);
        }
        Ok(row)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::profile_reference::profile::ProfileBuilder as Reference;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// One generated sample: frames as (function, file, line) indexes into small name pools
    /// (so stacks, locations and label sets repeat), values, labels, optional timestamp.
    #[derive(Debug, Clone)]
    struct Gen {
        frames: Vec<(u8, u8, u8)>,
        values: Vec<i64>,
        labels: Vec<(u8, Option<u8>, i64)>,
        ts: Option<i64>,
    }

    fn gen_sample() -> impl Strategy<Value = Gen> {
        (
            proptest::collection::vec((0u8..40, 0u8..5, 0u8..4), 0..12),
            proptest::collection::vec(any::<i64>(), 0..4),
            proptest::collection::vec((0u8..3, proptest::option::of(0u8..4), -3i64..3), 0..3),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(frames, values, labels, ts)| Gen {
                frames,
                values,
                labels,
                ts,
            })
    }

    /// Feeds the same samples, interned in the same order, to a builder of either kind.
    macro_rules! feed {
        ($b:expr, $samples:expr) => {{
            let b = $b;
            for g in $samples {
                let frames: Vec<ProfFrame> = g
                    .frames
                    .iter()
                    .map(|&(f, file, line)| ProfFrame {
                        function: b.intern(&format!("fn_{f}")),
                        file: b.intern_bytes(format!("file_{file}.rs").as_bytes()),
                        line: line as u32,
                    })
                    .collect();
                let labels: Vec<ProfLabel> = g
                    .labels
                    .iter()
                    .map(|&(k, s, n)| ProfLabel {
                        key: b.intern(&format!("key_{k}")),
                        str: s.map(|s| b.intern(&format!("val_{s}"))).unwrap_or(0),
                        num: if s.is_some() { 0 } else { n },
                        num_unit: 0,
                    })
                    .collect();
                b.add(frames, &g.values, &labels, g.ts);
            }
        }};
    }

    /// The sample types every builder test uses (the collector's tests too).
    pub(crate) fn types() -> Vec<SampleType> {
        vec![
            SampleType::new("wall-time", "nanoseconds"),
            SampleType::new("samples", "count"),
        ]
    }

    pub(crate) fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn reference_bytes(samples: &[Gen], sampling: Option<&(SampleType, i64)>) -> Vec<u8> {
        let mut r = Reference::new(&types(), sampling, t0());
        r.add_comment("service:test");
        feed!(&mut r, samples);
        let mut out = Vec::new();
        r.encode(t0() + Duration::from_secs(60), &mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Byte for byte the pprof the heap-table builder wrote, for random samples: directly,
        /// through the streaming compressor, and after a reset that reuses the tables.
        #[test]
        fn pprof_output_is_identical_to_the_reference(
            first in proptest::collection::vec(gen_sample(), 0..60),
            second in proptest::collection::vec(gen_sample(), 0..60),
            with_period in any::<bool>(),
        ) {
            let period = (SampleType::new("wall-time", "nanoseconds"), 10_000_000);
            let sampling = with_period.then_some(&period);
            let end = t0() + Duration::from_secs(60);
            let mut b = ProfileBuilder::new(&types(), sampling, t0());
            b.add_comment("service:test");
            feed!(&mut b, &first);
            let mut out = Vec::new();
            b.encode(end, &mut out);
            prop_assert_eq!(&out, &reference_bytes(&first, sampling));

            b.reset(t0());
            b.add_comment("service:test");
            feed!(&mut b, &second);
            let want = reference_bytes(&second, sampling);
            out.clear();
            b.encode(end, &mut out);
            prop_assert_eq!(&out, &want);
            let mut streamed = Vec::new();
            crate::serialize::Serializer::new()
                .encode_compressed(&b, end, crate::export::Compression::None, &mut streamed)
                .unwrap();
            prop_assert_eq!(&streamed, &want);
            prop_assert_eq!(b.take_dropped(), 0);
        }
    }

    /// Past 65,535 locations the stack arena widens its ids mid-profile; the output does not
    /// change.
    #[test]
    fn more_locations_than_narrow_ids_hold_encode_as_the_reference() {
        let samples: Vec<Gen> = (0..9_000u32)
            .map(|i| Gen {
                frames: (0..9u32)
                    .map(|d| {
                        (
                            ((i * 9 + d) % 251) as u8,
                            (i % 5) as u8,
                            ((i * 9 + d) / 251) as u8,
                        )
                    })
                    .collect(),
                values: vec![1, i as i64],
                labels: vec![],
                ts: (i % 3 == 0).then_some(i as i64),
            })
            .collect();
        // 251 functions × 5 files × up to 256 lines: more than 65,535 distinct locations.
        let mut b = ProfileBuilder::new(&types(), None, t0());
        b.add_comment("service:test");
        feed!(&mut b, &samples);
        assert!(
            b.locations.len() > 65_535,
            "{} locations",
            b.locations.len()
        );
        let mut out = Vec::new();
        b.encode(t0() + Duration::from_secs(60), &mut out);
        assert!(out == reference_bytes(&samples, None), "outputs differ");
    }

    #[test]
    fn a_table_that_cannot_grow_drops_the_sample_and_keeps_the_profile_consistent() {
        let mut b = ProfileBuilder::new(&types(), None, t0());
        let ok = |b: &mut ProfileBuilder, name: &str| {
            let f = ProfFrame {
                function: b.intern(name),
                file: 0,
                line: 1,
            };
            b.add([f], &[1, 1], &[], None);
        };
        ok(&mut b, "kept");
        // Limit the location table to what it holds: the next new frame cannot be added.
        b.locations = {
            let mut v = RegionVec::fixed(1, Memory::inherited());
            v.push(b.locations[0]).unwrap();
            v
        };
        ok(&mut b, "refused");
        assert_eq!(b.take_dropped(), 1);
        ok(&mut b, "kept");
        assert_eq!(b.take_dropped(), 0);
        b.mark_failed();
        ok(&mut b, "kept");
        assert_eq!(b.take_dropped(), 1);
        let mut out = Vec::new();
        b.encode(t0(), &mut out);
        let p = crate::pprof::decode(&out).unwrap();
        assert_eq!(p.samples.len(), 1);
        assert_eq!(p.samples[0].values, [2, 2]);
        assert_eq!(p.stack_names(&p.samples[0]), ["kept"]);
    }
}
