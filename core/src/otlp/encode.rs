//! Protobuf encoding of a [`ProfileBuilder`] as an OTLP `ExportProfilesServiceRequest`. Field
//! numbers are those of opentelemetry-proto v1.10.0 (`profiles.proto`, `common.proto`,
//! `resource.proto`, `profiles_service.proto`).
//!
//! Unlike pprof, the request nests: the profiles sit three messages deep, each prefixed by its
//! length. Rather than building a message to learn its length (the whole uncompressed profile
//! in memory), every nested message is written twice by the same function: first into a
//! [`Count`], which only adds up bytes, then for real. The output is therefore still streamed
//! to the compressor 64 KiB at a time, and the only memory is the per-profile tables below,
//! sized by label sets and links, not by samples.

use std::hash::{Hash, Hasher};
use std::io;
use std::time::SystemTime;

use super::{Resource, SCOPE_NAME};
use crate::hash::FastHasher;
use crate::hash_index::HashIndex;
use crate::pprof::encode::{
    key, len_prefix, nanos_since_epoch, no_memory, spill_if_full, uint_field, uint_field_len,
    varint, varint_len, Out, WIRE_VARINT,
};
use crate::profile::{ProfLabel, ProfileBuilder};
use crate::region_vec::{Memory, OutOfMemory, RegionVec};
use crate::stack_arena::StackIds;
use crate::trace::{TraceContext, LOCAL_ROOT_SPAN_ID, SPAN_ID, TRACE_ID_HIGH, TRACE_ID_LOW};

const WIRE_FIXED64: u64 = 1;

/// Adds up the bytes a message would take: the first of the two passes.
struct Count(usize);

impl Out for Count {
    #[inline]
    fn push(&mut self, _: u8) {
        self.0 += 1;
    }
    #[inline]
    fn extend_from_slice(&mut self, s: &[u8]) {
        self.0 += s.len();
    }
    fn reserve(&mut self, _: usize) {}
    fn len(&self) -> usize {
        self.0
    }
    fn bytes(&self) -> &[u8] {
        &[]
    }
    fn clear(&mut self) {}
    fn ok(&self) -> bool {
        true
    }
}

/// Where a message is written: counted, or output that is handed to the compressor whenever
/// it is full (between two messages, never inside one's length prefix).
trait Sink {
    type O: Out + ?Sized;
    fn out(&mut self) -> &mut Self::O;
    /// Called after each table entry or sample.
    fn step(&mut self) -> io::Result<()>;
    /// When only counting: adds `n` bytes known without writing them, and says so.
    fn counted(&mut self, n: usize) -> bool;
}

impl Sink for Count {
    type O = Count;
    #[inline]
    fn out(&mut self) -> &mut Count {
        self
    }
    #[inline]
    fn step(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn counted(&mut self, n: usize) -> bool {
        self.0 += n;
        true
    }
}

struct Spill<'a, O: Out + ?Sized> {
    out: &'a mut O,
    at: usize,
    spill: &'a mut dyn FnMut(&[u8]) -> io::Result<()>,
}

impl<O: Out + ?Sized> Sink for Spill<'_, O> {
    type O = O;
    #[inline]
    fn out(&mut self) -> &mut O {
        self.out
    }
    #[inline]
    fn step(&mut self) -> io::Result<()> {
        spill_if_full(self.out, self.at, self.spill)
    }
    fn counted(&mut self, _: usize) -> bool {
        false
    }
}

/// Writes `$f(sink, args…)` as the length-delimited field `$field`: counted first, then
/// written.
macro_rules! nested {
    ($s:expr, $field:expr, $f:ident($($a:expr),* $(,)?)) => {{
        let mut count = Count(0);
        $f(&mut count, $($a),*)?;
        len_prefix($s.out(), $field, count.0);
        $f($s, $($a),*)?;
    }};
}

/// The per-profile tables the OTLP request needs beyond the builder's own: attributes and
/// links deduplicated, and per label set its attribute indices and link. Kept between
/// profiles (the collector's live in fork-local memory), so steady state maps nothing.
pub(crate) struct OtlpScratch {
    /// `attribute_table[i + 1]`.
    attrs: RegionVec<ProfLabel>,
    attr_index: HashIndex,
    /// `link_table[i + 1]`: (trace id, span id).
    links: RegionVec<(u128, u64)>,
    link_index: HashIndex,
    /// Attribute indices of all label sets, one after the other.
    set_attrs: RegionVec<u32>,
    /// Per label set id: (start, len) in `set_attrs`, link index (0: none).
    sets: RegionVec<(u32, u32, u32)>,
    /// Per sample type: the encoded length of its `Profile`.
    profile_lens: RegionVec<usize>,
}

fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = FastHasher::default();
    v.hash(&mut h);
    h.finish()
}

/// The index of `v` in a table whose entry 0 is the zero value (so `values[i]` is entry
/// `i + 1`), added if new.
fn dedup<T: Copy + Eq + Hash>(
    values: &mut RegionVec<T>,
    index: &mut HashIndex,
    v: T,
) -> Result<u32, OutOfMemory> {
    let h = hash_of(&v);
    if let Some(i) = index.find(h, |i| values[i as usize] == v) {
        return Ok(i + 1);
    }
    values.reserve(1)?;
    index.reserve_one()?;
    values.push_reserved(v);
    let values = &*values;
    Ok(index.insert(h, |i| hash_of(&values[i as usize])) + 1)
}

fn is_trace_key(k: &str) -> bool {
    [SPAN_ID, LOCAL_ROOT_SPAN_ID, TRACE_ID_HIGH, TRACE_ID_LOW].contains(&k)
}

impl OtlpScratch {
    pub fn new(mem: Memory) -> Self {
        OtlpScratch {
            attrs: RegionVec::new(mem),
            attr_index: HashIndex::new(mem),
            links: RegionVec::new(mem),
            link_index: HashIndex::new(mem),
            set_attrs: RegionVec::new(mem),
            sets: RegionVec::new(mem),
            profile_lens: RegionVec::new(mem),
        }
    }

    fn clear(&mut self) {
        self.attrs.clear();
        self.attr_index.clear();
        self.links.clear();
        self.link_index.clear();
        self.set_attrs.clear();
        self.sets.clear();
        self.profile_lens.clear();
    }

    /// Index in `attribute_table` of `l`, added if new.
    fn attr(&mut self, l: ProfLabel) -> Result<u32, OutOfMemory> {
        dedup(&mut self.attrs, &mut self.attr_index, l)
    }

    /// Index in `link_table` of `link`, added if new.
    fn link(&mut self, link: (u128, u64)) -> Result<u32, OutOfMemory> {
        dedup(&mut self.links, &mut self.link_index, link)
    }

    /// Fills the tables for `p`: one pass over its label sets.
    fn prepare(&mut self, p: &ProfileBuilder) -> Result<(), OutOfMemory> {
        self.clear();
        let key_of = |l: &ProfLabel| p.strings.get(l.key);
        for id in 0..p.labelset_count() as u32 {
            let labels = p.labelset(id);
            let ctx = TraceContext::from_num_labels(
                labels
                    .iter()
                    .filter(|l| l.str == 0)
                    .map(|l| (key_of(l), l.num)),
            );
            // A link needs both ids (OTLP rejects all-zero ones); without one the labels stay
            // attributes.
            let link = if ctx.span_id != 0 && ctx.trace_id != 0 {
                self.link((ctx.trace_id, ctx.span_id))?
            } else {
                0
            };
            let start = self.set_attrs.len() as u32;
            for &l in labels {
                if link != 0 && l.str == 0 && is_trace_key(key_of(&l)) {
                    continue;
                }
                let a = self.attr(l)?;
                self.set_attrs.push(a)?;
            }
            let len = self.set_attrs.len() as u32 - start;
            self.sets.push((start, len, link))?;
        }
        Ok(())
    }

    /// Attribute indices and link of label set `id` (none for a sample without labels).
    #[inline]
    fn set(&self, id: u32) -> (&[u32], u32) {
        match self.sets.get(id as usize) {
            Some(&(start, len, link)) => (
                &self.set_attrs[start as usize..(start + len) as usize],
                link,
            ),
            None => (&[], 0),
        }
    }
}

/// What every section of the request reads.
struct Tables<'a> {
    p: &'a ProfileBuilder,
    x: &'a OtlpScratch,
}

#[inline]
fn string_field<O: Out + ?Sized>(out: &mut O, field: u64, s: &str) {
    if !s.is_empty() {
        len_prefix(out, field, s.len());
        out.extend_from_slice(s.as_bytes());
    }
}

/// An `AnyValue` with a string (field 1) or an int (field 3); written even when empty or zero,
/// since the value is a `oneof`.
enum Value<'a> {
    Str(&'a str),
    Int(i64),
}

fn any_value<S: Sink>(s: &mut S, v: &Value<'_>) -> io::Result<()> {
    let out = s.out();
    match v {
        Value::Str(v) => {
            len_prefix(out, 1, v.len());
            out.extend_from_slice(v.as_bytes());
        }
        Value::Int(v) => {
            key(out, 3, WIRE_VARINT);
            varint(out, *v as u64);
        }
    }
    Ok(())
}

/// A `common.v1.KeyValue` body.
fn key_value<S: Sink>(s: &mut S, k: &str, v: &Value<'_>) -> io::Result<()> {
    string_field(s.out(), 1, k);
    nested!(s, 2, any_value(v));
    Ok(())
}

fn resource<S: Sink>(s: &mut S, r: &Resource<'_>) -> io::Result<()> {
    const OWN: [&str; 3] = ["service.name", "process.pid", "host.name"];
    nested!(s, 1, key_value(OWN[0], &Value::Str(r.service)));
    nested!(s, 1, key_value(OWN[1], &Value::Int(r.pid as i64)));
    if let Some(h) = r.host {
        nested!(s, 1, key_value(OWN[2], &Value::Str(h)));
    }
    for (i, (k, v)) in r.tags.iter().enumerate() {
        // Resource keys are unique: the first tag of a key wins, ours win over tags.
        let repeated = r.tags[..i].iter().any(|(earlier, _)| earlier == k);
        if !OWN.contains(&k.as_str()) && !repeated {
            nested!(s, 1, key_value(k, &Value::Str(v)));
        }
    }
    Ok(())
}

fn scope<S: Sink>(s: &mut S) -> io::Result<()> {
    string_field(s.out(), 1, SCOPE_NAME);
    string_field(s.out(), 2, env!("CARGO_PKG_VERSION"));
    Ok(())
}

/// A `ValueType` body.
fn value_type<S: Sink>(s: &mut S, (ty, unit): (u32, u32)) -> io::Result<()> {
    uint_field(s.out(), 1, ty as u64);
    uint_field(s.out(), 2, unit as u64);
    Ok(())
}

/// A packed repeated varint field.
fn packed<O: Out + ?Sized>(out: &mut O, field: u64, ids: impl Iterator<Item = u64> + Clone) {
    let len: usize = ids.clone().map(varint_len).sum();
    if len > 0 {
        len_prefix(out, field, len);
        for v in ids {
            varint(out, v);
        }
    }
}

/// A `Sample` body: stack, attributes, link, its one value and its timestamp if any.
fn sample<S: Sink>(
    s: &mut S,
    t: &Tables<'_>,
    stack: u32,
    labels: u32,
    value: i64,
    ts: Option<i64>,
) -> io::Result<()> {
    let out = s.out();
    let (attrs, link) = t.x.set(labels);
    uint_field(out, 1, stack as u64 + 1);
    packed(out, 2, attrs.iter().map(|&a| a as u64));
    uint_field(out, 3, link as u64);
    len_prefix(out, 4, varint_len(value as u64));
    varint(out, value as u64);
    if let Some(ts) = ts {
        len_prefix(out, 5, 8);
        out.extend_from_slice(&(ts as u64).to_le_bytes());
    }
    Ok(())
}

/// A `Profile` body for sample type `ty`: the samples whose value for it is not zero.
fn profile<S: Sink>(
    s: &mut S,
    t: &Tables<'_>,
    ty: usize,
    (start, duration): (i64, u64),
) -> io::Result<()> {
    let p = t.p;
    let n = p.n_values();
    nested!(s, 1, value_type(p.sample_types[ty]));
    for (i, &(stack, labels)) in p.samples.iter().enumerate() {
        let v = p.values[i * n + ty];
        if v != 0 {
            nested!(s, 2, sample(t, stack, labels, v, None));
            s.step()?;
        }
    }
    for (i, &(stack, labels, ts)) in p.timeline.iter().enumerate() {
        let v = p.timeline_values[i * n + ty];
        if v != 0 {
            nested!(s, 2, sample(t, stack, labels, v, Some(ts)));
            s.step()?;
        }
    }
    let out = s.out();
    key(out, 3, WIRE_FIXED64);
    out.extend_from_slice(&(start as u64).to_le_bytes());
    uint_field(out, 4, duration);
    if let Some((pt, period)) = p.period {
        nested!(s, 5, value_type(pt));
        uint_field(s.out(), 6, period as u64);
    }
    Ok(())
}

fn scope_profiles<S: Sink>(s: &mut S, t: &Tables<'_>, span: (i64, u64)) -> io::Result<()> {
    nested!(s, 1, scope());
    for ty in 0..t.p.n_values() {
        // Counted once in `encode_otlp`: the samples are the bulk of the request.
        let len = t.x.profile_lens[ty];
        len_prefix(s.out(), 2, len);
        if !s.counted(len) {
            profile(s, t, ty, span)?;
        }
    }
    Ok(())
}

fn resource_profiles<S: Sink>(
    s: &mut S,
    t: &Tables<'_>,
    r: &Resource<'_>,
    span: (i64, u64),
) -> io::Result<()> {
    nested!(s, 1, resource(r));
    nested!(s, 2, scope_profiles(t, span));
    Ok(())
}

fn stack<S: Sink>(s: &mut S, ids: StackIds<'_>) -> io::Result<()> {
    let out = s.out();
    match ids {
        StackIds::Narrow(ids) => packed(out, 1, ids.iter().map(|&l| l as u64)),
        StackIds::Wide(ids) => packed(out, 1, ids.iter().map(|&l| l as u64)),
    }
    Ok(())
}

/// A `Location` body: one line of one function.
fn location<S: Sink>(s: &mut S, func: u32, line: u32) -> io::Result<()> {
    nested!(s, 3, line_body(func, line));
    Ok(())
}

fn line_body<S: Sink>(s: &mut S, func: u32, line: u32) -> io::Result<()> {
    uint_field(s.out(), 1, func as u64);
    uint_field(s.out(), 2, line as u64);
    Ok(())
}

/// A `KeyValueAndUnit` body from a label: a string value, or the number.
fn attribute<S: Sink>(s: &mut S, p: &ProfileBuilder, l: ProfLabel) -> io::Result<()> {
    uint_field(s.out(), 1, l.key as u64);
    let v = if l.str != 0 {
        Value::Str(p.strings.get(l.str))
    } else {
        Value::Int(l.num)
    };
    nested!(s, 2, any_value(&v));
    uint_field(s.out(), 3, l.num_unit as u64);
    Ok(())
}

fn link<S: Sink>(s: &mut S, (trace_id, span_id): (u128, u64)) -> io::Result<()> {
    let out = s.out();
    // Ids as W3C trace context writes them: big-endian bytes.
    len_prefix(out, 1, 16);
    out.extend_from_slice(&trace_id.to_be_bytes());
    len_prefix(out, 2, 8);
    out.extend_from_slice(&span_id.to_be_bytes());
    Ok(())
}

/// The `ProfilesDictionary` body. Every table starts with its zero entry, as the format
/// requires; builder ids that start at 1 (locations, functions, strings at 0 = "") keep their
/// numbers, stacks and the scratch tables shift by one.
fn dictionary<S: Sink>(s: &mut S, t: &Tables<'_>) -> io::Result<()> {
    let (p, x) = (t.p, t.x);
    for field in [1, 2, 3, 4] {
        len_prefix(s.out(), field, 0);
    }
    for &(func, line) in p.locations.iter() {
        nested!(s, 2, location(func, line));
        s.step()?;
    }
    for &(name, file) in p.functions.iter() {
        let out = s.out();
        let len = uint_field_len(1, name as u64) * 2 + uint_field_len(3, file as u64);
        len_prefix(out, 3, len);
        uint_field(out, 1, name as u64);
        uint_field(out, 2, name as u64);
        uint_field(out, 3, file as u64);
        s.step()?;
    }
    for &l in x.links.iter() {
        nested!(s, 4, link(l));
    }
    for st in p.strings.iter() {
        let out = s.out();
        len_prefix(out, 5, st.len());
        out.extend_from_slice(st.as_bytes());
        s.step()?;
    }
    len_prefix(s.out(), 6, 0);
    for &a in x.attrs.iter() {
        nested!(s, 6, attribute(p, a));
        s.step()?;
    }
    len_prefix(s.out(), 7, 0);
    for id in 0..p.stack_count() as u32 {
        nested!(s, 7, stack(p.stack(id)));
        s.step()?;
    }
    Ok(())
}

/// Encodes `p` as an `ExportProfilesServiceRequest` for the process `r`, streaming: whenever
/// `out` holds `spill_at` bytes they go to `spill`. What is left in `out` at the end is the
/// caller's.
pub(crate) fn encode_spilling<O: Out + ?Sized>(
    p: &ProfileBuilder,
    end: SystemTime,
    r: &Resource<'_>,
    out: &mut O,
    spill_at: usize,
    spill: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    x: &mut OtlpScratch,
) -> io::Result<()> {
    x.prepare(p).map_err(|_| no_memory())?;
    let start = nanos_since_epoch(p.start);
    let span = (start, (nanos_since_epoch(end) - start).max(0) as u64);
    for ty in 0..p.n_values() {
        let mut c = Count(0);
        profile(&mut c, &Tables { p, x }, ty, span)?;
        x.profile_lens.push(c.0).map_err(|_| no_memory())?;
    }
    let t = Tables { p, x };
    let mut s = Spill {
        out,
        at: spill_at,
        spill,
    };
    nested!(&mut s, 1, resource_profiles(&t, r, span));
    nested!(&mut s, 2, dictionary(&t));
    if !s.out.ok() {
        return Err(no_memory());
    }
    Ok(())
}

/// [`encode_spilling`] into a `Vec`, for tests and tools.
pub(crate) fn encode(p: &ProfileBuilder, end: SystemTime, r: &Resource<'_>, out: &mut Vec<u8>) {
    let never: &mut dyn FnMut(&[u8]) -> io::Result<()> = &mut |_| Ok(());
    let mut x = OtlpScratch::new(Memory::inherited());
    let _ = encode_spilling(p, end, r, out, usize::MAX, never, &mut x);
}
