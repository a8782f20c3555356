//! Protobuf encoding of a [`ProfileBuilder`]. Field numbers are those of `profile.proto`.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::profile::{ProfLabel, ProfileBuilder};
use crate::region_vec::{Memory, RegionVec};
use crate::stack_arena::StackIds;

/// Where encoded bytes go: a `Vec` (tests, tools) or a fork-local region (the collector).
pub(crate) trait Out {
    fn push(&mut self, b: u8);
    fn extend_from_slice(&mut self, s: &[u8]);
    fn reserve(&mut self, n: usize);
    fn len(&self) -> usize;
    fn bytes(&self) -> &[u8];
    fn clear(&mut self);
    /// False once a write was lost because memory could not be had.
    fn ok(&self) -> bool;
}

impl Out for Vec<u8> {
    #[inline]
    fn push(&mut self, b: u8) {
        Vec::push(self, b)
    }
    #[inline]
    fn extend_from_slice(&mut self, s: &[u8]) {
        Vec::extend_from_slice(self, s)
    }
    #[inline]
    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n)
    }
    #[inline]
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn bytes(&self) -> &[u8] {
        self
    }
    fn clear(&mut self) {
        Vec::clear(self)
    }
    fn ok(&self) -> bool {
        true
    }
}

/// Bytes in a [`RegionVec`]; a write that cannot get memory is dropped and remembered, so
/// the encoder fails cleanly at its next check instead of aborting.
pub(crate) struct RegionBytes {
    v: RegionVec<u8>,
    lost: bool,
}

impl RegionBytes {
    pub fn new(mem: Memory) -> Self {
        RegionBytes {
            v: RegionVec::new(mem),
            lost: false,
        }
    }
    pub fn reset(&mut self) {
        self.v.clear();
        self.lost = false;
    }
}

impl Out for RegionBytes {
    #[inline]
    fn push(&mut self, b: u8) {
        if self.v.push(b).is_err() {
            self.lost = true;
        }
    }
    #[inline]
    fn extend_from_slice(&mut self, s: &[u8]) {
        if self.v.extend_from_slice(s).is_err() {
            self.lost = true;
        }
    }
    #[inline]
    fn reserve(&mut self, n: usize) {
        if self.v.reserve(n).is_err() {
            self.lost = true;
        }
    }
    #[inline]
    fn len(&self) -> usize {
        self.v.len()
    }
    fn bytes(&self) -> &[u8] {
        &self.v
    }
    fn clear(&mut self) {
        self.v.clear()
    }
    fn ok(&self) -> bool {
        !self.lost
    }
}

pub(crate) fn no_memory() -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        "the encoder's buffer could not grow",
    )
}

pub(crate) const WIRE_VARINT: u64 = 0;
pub(crate) const WIRE_LEN: u64 = 2;

#[inline]
pub(crate) fn varint<O: Out + ?Sized>(out: &mut O, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
pub(crate) fn key<O: Out + ?Sized>(out: &mut O, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

/// A varint field, skipped when zero (proto3 default).
#[inline]
pub(crate) fn uint_field<O: Out + ?Sized>(out: &mut O, field: u64, v: u64) {
    if v != 0 {
        key(out, field, WIRE_VARINT);
        varint(out, v);
    }
}

#[inline]
pub(crate) fn uint_field_len(field: u64, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        varint_len(field << 3) + varint_len(v)
    }
}

#[inline]
pub(crate) fn len_prefix<O: Out + ?Sized>(out: &mut O, field: u64, len: usize) {
    key(out, field, WIRE_LEN);
    varint(out, len as u64);
}

/// A ValueType message {type, unit} as field `field`.
fn value_type<O: Out + ?Sized>(out: &mut O, field: u64, (ty, unit): (u32, u32)) {
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
fn label<O: Out + ?Sized>(out: &mut O, l: &ProfLabel, len: usize) {
    len_prefix(out, 3, len);
    uint_field(out, 1, l.key as u64);
    uint_field(out, 2, l.str as u64);
    uint_field(out, 3, l.num as u64);
    uint_field(out, 4, l.num_unit as u64);
}

/// One Sample message: location ids (packed), values (packed), labels. `locations` and
/// `labels` arrive already encoded as whole fields (see [`FieldCache`]); `extra` is one more
/// label written here (the timeline's timestamp).
fn sample<O: Out + ?Sized>(
    out: &mut O,
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
fn locations_field<O: Out + ?Sized>(out: &mut O, locations: StackIds<'_>) {
    match locations {
        StackIds::Narrow(s) => locations_field_of(out, s.iter().map(|&l| l as u64)),
        StackIds::Wide(s) => locations_field_of(out, s.iter().map(|&l| l as u64)),
    }
}

#[inline]
fn locations_field_of<O: Out + ?Sized>(out: &mut O, ids: impl Iterator<Item = u64> + Clone) {
    let loc_len: usize = ids.clone().map(varint_len).sum();
    if loc_len > 0 {
        len_prefix(out, 1, loc_len);
        for l in ids {
            varint(out, l);
        }
    }
}

/// The `label` fields of a label set.
fn labels_field<O: Out + ?Sized>(out: &mut O, labels: &[ProfLabel]) {
    for l in labels {
        label(out, l, label_len(l));
    }
}

/// Encoded fields per stack or label-set id, written once and copied for every sample that
/// uses them: a timeline repeats the same few stacks thousands of times. Used for timeline
/// samples only; aggregated rows are unique (stack, labels) pairs, where a cache would only
/// add memory.
pub(crate) struct FieldCache {
    bytes: RegionBytes,
    /// id → (start, len) in `bytes`; `start == u32::MAX` when not yet encoded.
    spans: RegionVec<(u32, u32)>,
}

impl FieldCache {
    fn new(mem: Memory) -> Self {
        FieldCache {
            bytes: RegionBytes::new(mem),
            spans: RegionVec::new(mem),
        }
    }

    fn prepare(&mut self, ids: usize) -> io::Result<()> {
        self.bytes.reset();
        self.spans.clear();
        self.spans
            .extend_with(ids, (u32::MAX, 0))
            .map_err(|_| no_memory())
    }

    fn get(&mut self, id: u32, write: impl FnOnce(&mut RegionBytes)) -> (usize, usize) {
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

/// The encoder's working memory, kept between profiles (the collector's lives in fork-local
/// regions, so encoding a profile maps nothing in steady state).
pub(crate) struct EncodeScratch {
    fields: RegionBytes,
    stacks: FieldCache,
    labelsets: FieldCache,
}

impl EncodeScratch {
    pub fn new(mem: Memory) -> Self {
        EncodeScratch {
            fields: RegionBytes::new(mem),
            stacks: FieldCache::new(mem),
            labelsets: FieldCache::new(mem),
        }
    }
}

pub(crate) fn nanos_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn encode(p: &ProfileBuilder, end: SystemTime, out: &mut Vec<u8>) {
    let never: &mut dyn FnMut(&[u8]) -> io::Result<()> = &mut |_| Ok(());
    let mut scratch = EncodeScratch::new(Memory::inherited());
    // With `spill_at` = MAX nothing is spilled; only the scratch could fail to grow (then the
    // output is cut short, as a Vec's own growth failure would have aborted).
    let _ = encode_spilling(p, end, out, usize::MAX, never, &mut scratch);
}

/// Hands `out` to `spill` and empties it once it holds `spill_at` bytes.
#[inline]
pub(crate) fn spill_if_full<O: Out + ?Sized>(
    out: &mut O,
    spill_at: usize,
    spill: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    if out.len() >= spill_at {
        if !out.ok() {
            return Err(no_memory());
        }
        spill(out.bytes())?;
        out.clear();
    }
    Ok(())
}

/// Like [`encode`], but whenever `out` holds `spill_at` bytes they go to `spill` (a
/// compressor) and `out` starts again, so a large profile never sits uncompressed in memory
/// all at once. Messages are never split; what is left in `out` at the end is the caller's.
pub(crate) fn encode_spilling<O: Out + ?Sized>(
    p: &ProfileBuilder,
    end: SystemTime,
    out: &mut O,
    spill_at: usize,
    spill: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    scratch: &mut EncodeScratch,
) -> io::Result<()> {
    for &st in &p.sample_types {
        value_type(out, 1, st);
    }
    let n = p.n_values();
    let labels_of = |id: u32| -> &[ProfLabel] { p.labelset(id) };
    let stack_of = |id: u32| p.stack(id);
    let fields = &mut scratch.fields;
    fields.reset();
    for (i, &(stack, labels)) in p.samples.iter().enumerate() {
        fields.clear();
        locations_field(fields, stack_of(stack));
        let locs_end = fields.len();
        labels_field(fields, labels_of(labels));
        if !fields.ok() {
            return Err(no_memory());
        }
        let f = fields.bytes();
        sample(
            out,
            &f[..locs_end],
            &p.values[i * n..(i + 1) * n],
            &f[locs_end..],
            None,
        );
        spill_if_full(out, spill_at, spill)?;
    }
    if !p.timeline.is_empty() {
        let (stacks, labelsets) = (&mut scratch.stacks, &mut scratch.labelsets);
        stacks.prepare(p.stack_count())?;
        labelsets.prepare(p.labelset_count())?;
        for (i, &(stack, labels, ts)) in p.timeline.iter().enumerate() {
            let tl = ProfLabel {
                key: p.timestamp_key,
                str: 0,
                num: ts,
                num_unit: 0,
            };
            let (ls, ll) = stacks.get(stack, |b| locations_field(b, stack_of(stack)));
            let (bs, bl) = labelsets.get(labels, |b| labels_field(b, labels_of(labels)));
            if !stacks.bytes.ok() || !labelsets.bytes.ok() {
                return Err(no_memory());
            }
            sample(
                out,
                &stacks.bytes.bytes()[ls..ls + ll],
                &p.timeline_values[i * n..(i + 1) * n],
                &labelsets.bytes.bytes()[bs..bs + bl],
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
    // The type's name, as `go tool pprof` reads it: without it, tools show the last type.
    if let Some(&(name, _)) = p.sample_types.get(p.default_type) {
        uint_field(out, 14, name as u64);
    }
    if !out.ok() {
        return Err(no_memory());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    /// Aggregated rows and timeline samples (repeating stacks and label sets, which the
    /// encoder writes from its per-id cache) decode back to what was added.
    #[test]
    fn profiles_decode_back() {
        use crate::config::SampleType;
        use crate::profile::{ProfFrame, TIMESTAMP_LABEL};
        let types = [
            SampleType::new("wall-time", "nanoseconds"),
            SampleType::new("cpu-time", "nanoseconds"),
        ];
        let mut b = ProfileBuilder::new(&types, None, SystemTime::now());
        let f = |b: &mut ProfileBuilder, name: &str, line| ProfFrame {
            function: b.intern(name),
            file: b.intern("x.rs"),
            line,
        };
        let (leaf, mid, root) = (
            f(&mut b, "leaf", 3),
            f(&mut b, "mid", 2),
            f(&mut b, "root", 1),
        );
        let big: Vec<ProfFrame> = (0..200).map(|i| f(&mut b, &format!("fn{i}"), i)).collect();
        let key = b.intern("thread");
        let t1 = b.intern("t1");
        let l1 = [ProfLabel {
            key,
            str: t1,
            num: 0,
            num_unit: 0,
        }];
        let l2 = [ProfLabel {
            key,
            str: 0,
            num: -7,
            num_unit: 0,
        }];
        b.add([leaf, mid, root], &[10, 1], &l1, None);
        b.add([leaf, mid, root], &[5, 2], &l1, None);
        b.add([mid, root], &[1_000_000_000_000, 0], &[], None);
        b.add(big.iter().copied(), &[1, 1], &l2, None);
        for i in 0..6 {
            let labels: &[ProfLabel] = if i % 2 == 0 { &l1 } else { &l2 };
            let stack: Vec<ProfFrame> = if i % 3 == 0 {
                vec![leaf, root]
            } else {
                big.clone()
            };
            b.add(stack, &[i, -i], labels, Some(1_700_000_000_000_000_000 + i));
        }
        let mut out = Vec::new();
        b.encode(SystemTime::now(), &mut out);
        let p = crate::pprof::decode(&out).unwrap();
        assert_eq!(p.samples.len(), 3 + 6);
        let big_names: Vec<String> = (0..200).map(|i| format!("fn{i}")).collect();
        let names = |i: usize| p.stack_names(&p.samples[i]);
        assert_eq!(names(0), ["leaf", "mid", "root"]);
        assert_eq!(p.samples[0].values, [15, 3]);
        assert_eq!(p.samples[0].labels.len(), 1);
        assert_eq!(
            (
                p.samples[0].labels[0].key.as_str(),
                p.samples[0].labels[0].str.as_str()
            ),
            ("thread", "t1")
        );
        assert_eq!(names(1), ["mid", "root"]);
        assert_eq!(p.samples[1].values, [1_000_000_000_000, 0]);
        assert!(p.samples[1].labels.is_empty());
        assert_eq!(names(2), big_names);
        assert_eq!(p.samples[2].labels[0].num, -7);
        for i in 0..6usize {
            let s = &p.samples[3 + i];
            let expect: Vec<String> = if i % 3 == 0 {
                vec!["leaf".into(), "root".into()]
            } else {
                big_names.clone()
            };
            assert_eq!(names(3 + i), expect, "timeline sample {i}");
            assert_eq!(s.values, [i as i64, -(i as i64)]);
            assert_eq!(s.labels.len(), 2);
            if i % 2 == 0 {
                assert_eq!(s.labels[0].str, "t1");
            } else {
                assert_eq!(s.labels[0].num, -7);
            }
            assert_eq!(s.labels[1].key, TIMESTAMP_LABEL);
            assert_eq!(s.labels[1].num, 1_700_000_000_000_000_000 + i as i64);
        }
    }
}
