//! The profile builder and pprof encoder exactly as they were before the tables moved into
//! fork-excluded regions (heap `Vec`s and `HashMap`s), kept as the reference that the
//! property test in `profile.rs` compares today's output against, byte for byte. Test-only.
#![allow(dead_code, clippy::all)]

pub(crate) mod strings {

    use std::hash::Hasher;

    use crate::hash::{fast_map, FastHasher, FastMap};

    const NONE: u32 = u32::MAX;

    pub(crate) struct StringTable {
        text: String,
        /// (start, len) in `text`, by index.
        spans: Vec<(u32, u32)>,
        /// Chain per hash: the newest index, then `next[index]`.
        heads: FastMap<u64, u32>,
        next: Vec<u32>,
        /// Invalid UTF-8 byte strings seen, by the index of their lossy replacement (rare).
        invalid: FastMap<Box<[u8]>, u32>,
    }

    fn hash(b: &[u8]) -> u64 {
        let mut h = FastHasher::default();
        h.write(b);
        h.finish()
    }

    impl StringTable {
        pub fn new() -> Self {
            StringTable {
                text: String::new(),
                spans: Vec::new(),
                heads: fast_map(),
                next: Vec::new(),
                invalid: fast_map(),
            }
        }

        fn bytes(&self, i: u32) -> &[u8] {
            let (start, len) = self.spans[i as usize];
            &self.text.as_bytes()[start as usize..(start + len) as usize]
        }

        pub fn get(&self, i: u32) -> &str {
            let (start, len) = self.spans[i as usize];
            &self.text[start as usize..(start + len) as usize]
        }

        pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
            (0..self.spans.len() as u32).map(move |i| self.get(i))
        }

        fn find(&self, b: &[u8], h: u64) -> Option<u32> {
            let mut cur = self.heads.get(&h).copied().unwrap_or(NONE);
            while cur != NONE {
                if self.bytes(cur) == b {
                    return Some(cur);
                }
                cur = self.next[cur as usize];
            }
            None
        }

        fn push(&mut self, s: &str, h: u64) -> u32 {
            let i = self.spans.len() as u32;
            self.spans.push((self.text.len() as u32, s.len() as u32));
            self.text.push_str(s);
            let head = self.heads.insert(h, i).unwrap_or(NONE);
            self.next.push(head);
            i
        }

        pub fn intern(&mut self, s: &str) -> u32 {
            let h = hash(s.as_bytes());
            match self.find(s.as_bytes(), h) {
                Some(i) => i,
                None => self.push(s, h),
            }
        }

        /// Interns bytes, replacing invalid UTF-8 lossily; valid text is validated only when new.
        pub fn intern_bytes(&mut self, b: &[u8]) -> u32 {
            let h = hash(b);
            if let Some(i) = self.find(b, h) {
                return i;
            }
            match std::str::from_utf8(b) {
                Ok(s) => self.push(s, h),
                Err(_) => {
                    if let Some(&i) = self.invalid.get(b) {
                        return i;
                    }
                    let i = self.intern(&String::from_utf8_lossy(b));
                    self.invalid.insert(b.into(), i);
                    i
                }
            }
        }
    }
}

pub(crate) mod profile {

    use std::hash::{Hash, Hasher};
    use std::time::SystemTime;

    use super::strings::StringTable;
    use crate::config::SampleType;
    use crate::hash::{fast_map, FastHasher, FastMap};
    use crate::profile::{ProfFrame, ProfLabel, StrIdx, TIMESTAMP_LABEL};

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

        /// Encodes the profile as pprof protobuf (uncompressed) into `out`.
        pub fn encode(&self, end: SystemTime, out: &mut Vec<u8>) {
            super::encode::encode(self, end, out)
        }
    }
}

pub(crate) mod encode {

    use std::io;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::profile::ProfileBuilder;
    use crate::profile::ProfLabel;

    const WIRE_VARINT: u64 = 0;
    const WIRE_LEN: u64 = 2;

    #[inline]
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    #[inline]
    fn varint_len(v: u64) -> usize {
        (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
    }

    #[inline]
    fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
        varint(out, (field << 3) | wire);
    }

    /// A varint field, skipped when zero (proto3 default).
    #[inline]
    fn uint_field(out: &mut Vec<u8>, field: u64, v: u64) {
        if v != 0 {
            key(out, field, WIRE_VARINT);
            varint(out, v);
        }
    }

    #[inline]
    fn uint_field_len(field: u64, v: u64) -> usize {
        if v == 0 {
            0
        } else {
            varint_len(field << 3) + varint_len(v)
        }
    }

    #[inline]
    fn len_prefix(out: &mut Vec<u8>, field: u64, len: usize) {
        key(out, field, WIRE_LEN);
        varint(out, len as u64);
    }

    /// A ValueType message {type, unit} as field `field`.
    fn value_type(out: &mut Vec<u8>, field: u64, (ty, unit): (u32, u32)) {
        let len = uint_field_len(1, ty as u64) + uint_field_len(2, unit as u64);
        len_prefix(out, field, len);
        uint_field(out, 1, ty as u64);
        uint_field(out, 2, unit as u64);
    }

    fn label_len(l: &ProfLabel) -> usize {
        uint_field_len(1, l.key as u64)
            + uint_field_len(2, l.str as u64)
            + uint_field_len(3, l.num as u64)
            + uint_field_len(4, l.num_unit as u64)
    }

    /// A Label message as field 3; `len` is `label_len(l)`.
    fn label(out: &mut Vec<u8>, l: &ProfLabel, len: usize) {
        len_prefix(out, 3, len);
        uint_field(out, 1, l.key as u64);
        uint_field(out, 2, l.str as u64);
        uint_field(out, 3, l.num as u64);
        uint_field(out, 4, l.num_unit as u64);
    }

    /// One Sample message: location ids (packed), values (packed), labels. `locations` and
    /// `labels` arrive already encoded as whole fields (see [`FieldCache`]); `extra` is one more
    /// label written here (the timeline's timestamp).
    fn sample(
        out: &mut Vec<u8>,
        locations: &[u8],
        values: &[i64],
        labels: &[u8],
        extra: Option<&ProfLabel>,
    ) {
        let val_len: usize = values.iter().map(|&v| varint_len(v as u64)).sum();
        let mut len = locations.len() + labels.len();
        if val_len > 0 {
            len += 1 + varint_len(val_len as u64) + val_len;
        }
        let extra_len = extra.map(label_len);
        if let Some(ll) = extra_len {
            len += 1 + varint_len(ll as u64) + ll;
        }
        out.reserve(len + 10);
        len_prefix(out, 2, len);
        out.extend_from_slice(locations);
        if val_len > 0 {
            len_prefix(out, 2, val_len);
            for &v in values {
                varint(out, v as u64);
            }
        }
        out.extend_from_slice(labels);
        if let (Some(l), Some(ll)) = (extra, extra_len) {
            label(out, l, ll);
        }
    }

    /// The packed `location_id` field of a stack.
    fn locations_field(out: &mut Vec<u8>, locations: &[u32]) {
        let loc_len: usize = locations.iter().map(|&l| varint_len(l as u64)).sum();
        if loc_len > 0 {
            len_prefix(out, 1, loc_len);
            for &l in locations {
                varint(out, l as u64);
            }
        }
    }

    /// The `label` fields of a label set.
    fn labels_field(out: &mut Vec<u8>, labels: &[ProfLabel]) {
        for l in labels {
            label(out, l, label_len(l));
        }
    }

    /// Encoded fields per stack or label-set id, written once and copied for every sample that
    /// uses them: a timeline repeats the same few stacks thousands of times. Used for timeline
    /// samples only; aggregated rows are unique (stack, labels) pairs, where a cache would only
    /// add memory.
    struct FieldCache {
        bytes: Vec<u8>,
        /// id → (start, len) in `bytes`; `start == u32::MAX` when not yet encoded.
        spans: Vec<(u32, u32)>,
    }

    impl FieldCache {
        fn new(ids: usize) -> Self {
            FieldCache {
                bytes: Vec::new(),
                spans: vec![(u32::MAX, 0); ids],
            }
        }

        fn get(&mut self, id: u32, write: impl FnOnce(&mut Vec<u8>)) -> (usize, usize) {
            let Some(span) = self.spans.get_mut(id as usize) else {
                return (0, 0);
            };
            if span.0 == u32::MAX {
                let start = self.bytes.len();
                write(&mut self.bytes);
                *span = (start as u32, (self.bytes.len() - start) as u32);
            }
            (span.0 as usize, span.1 as usize)
        }
    }

    fn nanos_since_epoch(t: SystemTime) -> i64 {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }

    pub(crate) fn encode(p: &ProfileBuilder, end: SystemTime, out: &mut Vec<u8>) {
        let never: &mut dyn FnMut(&[u8]) -> io::Result<()> = &mut |_| Ok(());
        // With `spill_at` = MAX nothing is spilled, so nothing can fail.
        let _ = encode_spilling(p, end, out, usize::MAX, never);
    }

    /// Hands `out` to `spill` and empties it once it holds `spill_at` bytes.
    #[inline]
    fn spill_if_full(
        out: &mut Vec<u8>,
        spill_at: usize,
        spill: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if out.len() >= spill_at {
            spill(out)?;
            out.clear();
        }
        Ok(())
    }

    /// Like [`encode`], but whenever `out` holds `spill_at` bytes they go to `spill` (a
    /// compressor) and `out` starts again, so a large profile never sits uncompressed in memory
    /// all at once. Messages are never split; what is left in `out` at the end is the caller's.
    pub(crate) fn encode_spilling(
        p: &ProfileBuilder,
        end: SystemTime,
        out: &mut Vec<u8>,
        spill_at: usize,
        spill: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        for &st in &p.sample_types {
            value_type(out, 1, st);
        }
        let n = p.n_values();
        let no_labels: &[ProfLabel] = &[];
        let labels_of = |id: u32| -> &[ProfLabel] {
            p.labelsets
                .get(id as usize)
                .map(|b| &b[..])
                .unwrap_or(no_labels)
        };
        let stack_of = |id: u32| -> &[u32] {
            let (start, len) = p.stacks[id as usize];
            &p.stack_arena[start as usize..(start + len) as usize]
        };
        let mut fields = Vec::new();
        for (i, &(stack, labels)) in p.samples.iter().enumerate() {
            fields.clear();
            locations_field(&mut fields, stack_of(stack));
            let locs_end = fields.len();
            labels_field(&mut fields, labels_of(labels));
            sample(
                out,
                &fields[..locs_end],
                &p.values[i * n..(i + 1) * n],
                &fields[locs_end..],
                None,
            );
            spill_if_full(out, spill_at, spill)?;
        }
        if !p.timeline.is_empty() {
            let mut stacks = FieldCache::new(p.stacks.len());
            let mut labelsets = FieldCache::new(p.labelsets.len());
            for (i, &(stack, labels, ts)) in p.timeline.iter().enumerate() {
                let tl = ProfLabel {
                    key: p.timestamp_key,
                    str: 0,
                    num: ts,
                    num_unit: 0,
                };
                let (ls, ll) = stacks.get(stack, |b| locations_field(b, stack_of(stack)));
                let (bs, bl) = labelsets.get(labels, |b| labels_field(b, labels_of(labels)));
                sample(
                    out,
                    &stacks.bytes[ls..ls + ll],
                    &p.timeline_values[i * n..(i + 1) * n],
                    &labelsets.bytes[bs..bs + bl],
                    Some(&tl),
                );
                spill_if_full(out, spill_at, spill)?;
            }
        }
        for (i, &(func, line)) in p.locations.iter().enumerate() {
            let id = i as u64 + 1;
            let line_len = uint_field_len(1, func as u64) + uint_field_len(2, line as u64);
            let len = uint_field_len(1, id) + 1 + varint_len(line_len as u64) + line_len;
            len_prefix(out, 4, len);
            uint_field(out, 1, id);
            len_prefix(out, 4, line_len);
            uint_field(out, 1, func as u64);
            uint_field(out, 2, line as u64);
            spill_if_full(out, spill_at, spill)?;
        }
        for (i, &(name, file)) in p.functions.iter().enumerate() {
            let id = i as u64 + 1;
            let len = uint_field_len(1, id)
                + uint_field_len(2, name as u64)
                + uint_field_len(3, name as u64)
                + uint_field_len(4, file as u64);
            len_prefix(out, 5, len);
            uint_field(out, 1, id);
            uint_field(out, 2, name as u64);
            uint_field(out, 3, name as u64);
            uint_field(out, 4, file as u64);
            spill_if_full(out, spill_at, spill)?;
        }
        for s in p.strings.iter() {
            len_prefix(out, 6, s.len());
            out.extend_from_slice(s.as_bytes());
            spill_if_full(out, spill_at, spill)?;
        }
        let start = nanos_since_epoch(p.start);
        uint_field(out, 9, start as u64);
        uint_field(out, 10, (nanos_since_epoch(end) - start).max(0) as u64);
        if let Some((pt, period)) = p.period {
            value_type(out, 11, pt);
            uint_field(out, 12, period as u64);
        }
        for &c in &p.comments {
            uint_field(out, 13, c as u64);
        }
        if let Some(&(name, _)) = p.sample_types.first() {
            uint_field(out, 14, name as u64);
        }
        Ok(())
    }
}
