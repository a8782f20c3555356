//! The byte format a host thread writes a sample in, and the collector reads it back from.
//!
//! Recording must be cheap and must not allocate per frame, so a sample is copied as one
//! contiguous record into a preallocated buffer: a fixed header, the values, the frames (text
//! or interned ids) and the labels. The collector decodes it on its own thread. Lengths are
//! little-endian; names longer than 64 KiB are cut (no host has such a function name).
//!
//! ```text
//! u32 record length | u8 flags | u8 n_values | u16 n_frames | u16 n_labels | u16 pad
//! u32 frames omitted by truncation | [i64 timestamp] | i64 × n_values
//! frames:  ids  → u32 function, u32 file, u32 line
//!          text → u32 line, u16 function len, u16 file len, function bytes, file bytes
//! labels:  u16 key len, key, u8 kind, then str: u16 len + bytes | num: i64 | num+unit: i64, u16 len + bytes
//! ```

use std::mem::MaybeUninit;

use crate::sample::{Frame, FrameIds, Label, LabelValue, Sample, Stack, StrId};
use crate::sample_cache::Key;

const FLAG_IDS: u8 = 1;
const FLAG_TIMESTAMP: u8 = 2;
const HEADER: usize = 16;
const MAX_NAME: usize = u16::MAX as usize;

const KIND_STR: u8 = 0;
const KIND_NUM: u8 = 1;
const KIND_NUM_UNIT: u8 = 2;

#[inline]
fn clip_name(b: &[u8]) -> &[u8] {
    &b[..b.len().min(MAX_NAME)]
}

/// The number of frames kept from a stack of `len` under `max_depth`, and how many are
/// omitted. When truncating, one slot is kept for the synthetic "N frames omitted" frame.
#[inline]
pub(crate) fn kept_frames(len: usize, max_depth: usize) -> (usize, usize) {
    if len <= max_depth {
        (len, 0)
    } else {
        let kept = max_depth - 1;
        (kept, len - kept)
    }
}

/// What `encode` will write for a sample: computed first, so the buffer can reserve exactly
/// `len` bytes before a single one is copied.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub len: usize,
    kept: usize,
    omitted: usize,
    /// Some name is longer than [`MAX_NAME`] and is cut (never, in practice: the common path
    /// copies names without clipping each one).
    clip: bool,
}

impl Plan {
    /// Frames are omitted (the stack is deeper than `max_depth`).
    pub fn truncates(&self) -> bool {
        self.omitted > 0
    }
}

/// The record `sample` becomes under `max_depth`.
#[inline]
pub(crate) fn plan(sample: &Sample<'_>, max_depth: usize) -> Plan {
    let (kept, omitted) = kept_frames(sample.stack.len(), max_depth);
    let mut n = HEADER + 8 * sample.values.len();
    if sample.timestamp_ns.is_some() {
        n += 8;
    }
    let mut clip = false;
    n += match sample.stack {
        Stack::Ids(_) => 12 * kept,
        Stack::Text(frames) => {
            let frames = &frames[..kept];
            // Lengths OR-ed together: one comparison tells whether any name needs cutting.
            let (mut sum, mut any) = (0, 0);
            for f in frames {
                sum += 8 + f.function.len() + f.file.len();
                any |= f.function.len() | f.file.len();
            }
            if any > MAX_NAME {
                clip = true;
                sum = frames
                    .iter()
                    .map(|f| 8 + clip_name(f.function).len() + clip_name(f.file).len())
                    .sum();
            }
            sum
        }
    };
    for l in sample.labels {
        n += 3 + clip_name(l.key.as_bytes()).len();
        n += match l.value {
            LabelValue::Str(s) => 2 + clip_name(s).len(),
            LabelValue::Num(_) => 8,
            LabelValue::NumUnit(_, u) => 10 + clip_name(u.as_bytes()).len(),
        };
    }
    Plan {
        len: n,
        kept,
        omitted,
        clip,
    }
}

/// Writes the record for `sample` into `out`, which is exactly `plan.len` bytes of the sample
/// buffer (`plan` made from the same sample).
///
/// Each field is a plain store into the reserved bytes, with no capacity check per field (the
/// host thread's cost is mostly this copy).
#[inline]
pub(crate) fn encode(sample: &Sample<'_>, plan: &Plan, out: &mut [MaybeUninit<u8>]) {
    let (kept, omitted) = (plan.kept, plan.omitted);
    let len = out.len();
    let mut w = Writer { buf: out, pos: 0 };
    let mut flags = 0;
    if matches!(sample.stack, Stack::Ids(_)) {
        flags |= FLAG_IDS;
    }
    if sample.timestamp_ns.is_some() {
        flags |= FLAG_TIMESTAMP;
    }
    let n_labels = sample.labels.len().min(u16::MAX as usize) as u16;
    let mut header = [0u8; HEADER];
    header[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    header[4] = flags;
    header[5] = sample.values.len() as u8;
    header[6..8].copy_from_slice(&(kept as u16).to_le_bytes());
    header[8..10].copy_from_slice(&n_labels.to_le_bytes());
    header[12..16].copy_from_slice(&(omitted.min(u32::MAX as usize) as u32).to_le_bytes());
    w.put(&header);
    if let Some(ts) = sample.timestamp_ns {
        w.put(&ts.to_le_bytes());
    }
    for v in sample.values {
        w.put(&v.to_le_bytes());
    }
    match sample.stack {
        Stack::Ids(frames) => match ids_as_wire_bytes(&frames[..kept]) {
            WireIds::Memory(bytes) => w.put(bytes),
            WireIds::PerFrame(frames) => {
                for f in frames {
                    let mut b = [0u8; 12];
                    b[0..4].copy_from_slice(&f.function.0.to_le_bytes());
                    b[4..8].copy_from_slice(&f.file.0.to_le_bytes());
                    b[8..12].copy_from_slice(&f.line.to_le_bytes());
                    w.put(&b);
                }
            }
        },
        Stack::Text(frames) if !plan.clip => {
            for f in &frames[..kept] {
                w.put_text_frame(f.line, f.function, f.file);
            }
        }
        Stack::Text(frames) => put_text_frames_cut(&mut w, &frames[..kept]),
    }
    for l in sample.labels.iter().take(u16::MAX as usize) {
        let key = clip_name(l.key.as_bytes());
        match l.value {
            LabelValue::Str(s) => w.put_label(key, KIND_STR, None, Some(clip_name(s))),
            LabelValue::Num(n) => w.put_label(key, KIND_NUM, Some(n), None),
            LabelValue::NumUnit(n, u) => {
                w.put_label(key, KIND_NUM_UNIT, Some(n), Some(clip_name(u.as_bytes())))
            }
        }
    }
    debug_assert_eq!(w.pos, len);
    // Whatever a wrongly computed length left unwritten is zeroed, so every byte the collector
    // reads is initialised.
    w.zero_rest();
}

/// Text frames with a name longer than [`MAX_NAME`]: never in practice, and out of line so
/// that the common loop stays free of the per-name cut.
#[cold]
#[inline(never)]
fn put_text_frames_cut(w: &mut Writer<'_>, frames: &[Frame<'_>]) {
    for f in frames {
        w.put_text_frame(f.line, clip_name(f.function), clip_name(f.file));
    }
}

// The wire's ids frame is `FrameIds` in memory: three little-endian u32s, no padding.
const _: () = assert!(std::mem::size_of::<FrameIds>() == 12);

/// Interned frames as the wire has them. On a little-endian machine that is their memory,
/// copied in one go (a third of `record`'s instructions for 18 frames, frame by frame).
#[inline]
fn ids_as_wire_bytes(frames: &[FrameIds]) -> WireIds<'_> {
    if cfg!(target_endian = "little") {
        // SAFETY: `FrameIds` is `repr(C)` of three `u32` (`StrId` is `repr(transparent)`),
        // 12 bytes with no padding (asserted above), so its slice is `12 * len` initialised
        // bytes, laid out as the wire's little-endian (function, file, line).
        WireIds::Memory(unsafe {
            std::slice::from_raw_parts(frames.as_ptr().cast::<u8>(), 12 * frames.len())
        })
    } else {
        WireIds::PerFrame(frames)
    }
}

enum WireIds<'a> {
    Memory(&'a [u8]),
    PerFrame(&'a [FrameIds]),
}

/// Fills a record's reserved, uninitialised bytes front to back: plain stores, without the
/// zero-fill a `resize` would cost or a capacity check per field. A write past the end (a
/// length computed wrongly) is skipped, never a panic on the host thread; `debug_assert`s
/// catch it in tests.
struct Writer<'a> {
    buf: &'a mut [MaybeUninit<u8>],
    /// Bytes initialised so far, from the front.
    pos: usize,
}

impl Writer<'_> {
    #[inline(always)]
    fn put(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.pos..self.pos + b.len()) {
            Some(dst) => {
                copy_bytes(dst, b);
                self.pos += b.len();
            }
            None => debug_assert!(false, "wire record longer than its computed length"),
        }
    }

    /// One text frame: its 8-byte header and both names, with one bounds check for all
    /// three (the host's record is mostly this, 18 times over).
    #[inline(always)]
    fn put_text_frame(&mut self, line: u32, func: &[u8], file: &[u8]) {
        let n = 8 + func.len() + file.len();
        match self.buf.get_mut(self.pos..self.pos + n) {
            Some(dst) => {
                let header = (line as u64) | (func.len() as u64) << 32 | (file.len() as u64) << 48;
                let at = dst.as_mut_ptr();
                // SAFETY: `dst` is exactly `8 + func.len() + file.len()` bytes of the reserved
                // record: the header's 8, then the two names back to back, each sub-slice
                // within it (no bounds check per piece: this runs 18 times per sample).
                unsafe {
                    at.cast::<u64>().write_unaligned(header.to_le());
                    copy_bytes(std::slice::from_raw_parts_mut(at.add(8), func.len()), func);
                    copy_bytes(
                        std::slice::from_raw_parts_mut(at.add(8 + func.len()), file.len()),
                        file,
                    );
                }
                self.pos += n;
            }
            None => debug_assert!(false, "wire record longer than its computed length"),
        }
    }

    /// One label: key, kind, then its number and/or string, with one bounds check.
    #[inline(always)]
    fn put_label(&mut self, key: &[u8], kind: u8, num: Option<i64>, text: Option<&[u8]>) {
        let n = 3 + key.len() + num.map_or(0, |_| 8) + text.map_or(0, |t| 2 + t.len());
        let start = self.pos;
        let Some(dst) = self.buf.get_mut(start..start + n) else {
            debug_assert!(false, "wire record longer than its computed length");
            return;
        };
        self.pos += n;
        let (len, rest) = dst.split_at_mut(2);
        copy_bytes(len, &(key.len() as u16).to_le_bytes());
        let (k, rest) = rest.split_at_mut(key.len());
        copy_bytes(k, key);
        rest[0].write(kind);
        let mut rest = &mut rest[1..];
        if let Some(v) = num {
            let (a, b) = rest.split_at_mut(8);
            copy_bytes(a, &v.to_le_bytes());
            rest = b;
        }
        if let Some(t) = text {
            let (a, b) = rest.split_at_mut(2);
            copy_bytes(a, &(t.len() as u16).to_le_bytes());
            copy_bytes(b, t);
        }
    }

    #[inline(always)]
    fn zero_rest(&mut self) {
        if self.pos < self.buf.len() {
            self.zero_rest_cold();
        }
    }

    #[cold]
    fn zero_rest_cold(&mut self) {
        let from = self.pos.min(self.buf.len());
        for b in &mut self.buf[from..] {
            b.write(0);
        }
        self.pos = self.buf.len();
    }
}

/// Copies `src` into `dst` (same length). Names are short (10–100 bytes): copying them with
/// overlapping 16-byte loads and stores, inline, avoids a `memcpy` call per name, which is
/// cheap in glibc but costs tens of cycles each in musl (it was most of `record()` there).
/// The common lengths, 33–64 bytes, take one comparison and four copies.
#[inline(always)]
fn copy_bytes(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    let n = src.len();
    debug_assert_eq!(dst.len(), n);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr().cast::<u8>());
    // SAFETY (for `copy16`'s callers below): `dst` and `src` are `n` valid bytes each and do
    // not overlap (the host owns `src`, `dst` is the sample buffer); every access lies within
    // `0..n` and is unaligned-tolerant.
    #[inline(always)]
    unsafe fn copy16(s: *const u8, d: *mut u8, at: usize) {
        // SAFETY: the caller keeps `at + 16` within both buffers.
        unsafe {
            d.add(at)
                .cast::<u128>()
                .write_unaligned(s.add(at).cast::<u128>().read_unaligned())
        }
    }
    // SAFETY: as stated above; each branch touches only offsets below `n`.
    unsafe {
        if n.wrapping_sub(33) < 32 {
            // 33..=64: [0, 32) ∪ [n−32, n).
            copy16(s, d, 0);
            copy16(s, d, 16);
            copy16(s, d, n - 32);
            copy16(s, d, n - 16);
        } else if n.wrapping_sub(17) < 16 {
            // 17..=32: [0, 16) ∪ [n−16, n).
            copy16(s, d, 0);
            copy16(s, d, n - 16);
        } else if n > 64 {
            let mut at = 0;
            while at + 16 < n {
                copy16(s, d, at);
                at += 16;
            }
            copy16(s, d, n - 16);
        } else if n >= 8 {
            let (a, b) = (
                s.cast::<u64>().read_unaligned(),
                s.add(n - 8).cast::<u64>().read_unaligned(),
            );
            d.cast::<u64>().write_unaligned(a);
            d.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let (a, b) = (
                s.cast::<u32>().read_unaligned(),
                s.add(n - 4).cast::<u32>().read_unaligned(),
            );
            d.cast::<u32>().write_unaligned(a);
            d.add(n - 4).cast::<u32>().write_unaligned(b);
        } else {
            for i in 0..n {
                *d.add(i) = *s.add(i);
            }
        }
    }
}

/// A record read back by the collector. Borrowed from the drained buffer.
pub(crate) struct Record<'a> {
    pub timestamp_ns: Option<i64>,
    pub omitted: u32,
    values: &'a [u8],
    /// The frames, then the labels, as the host wrote them: split only when the sample is
    /// resolved in full (a sample the profile has seen is found by these bytes alone).
    body: &'a [u8],
    n_frames: u16,
    ids: bool,
    n_labels: u16,
}

/// A decoded frame: either interned ids or text.
pub(crate) enum RecordFrame<'a> {
    Ids(FrameIds),
    Text(Frame<'a>),
}

impl<'a> Record<'a> {
    /// What identifies this sample's stack and labels: its frames and labels as recorded.
    #[inline]
    pub fn key(&self) -> Key<'a> {
        Key::new(
            self.n_frames,
            self.n_labels,
            self.ids,
            self.omitted,
            self.body,
        )
    }

    pub fn values(&self) -> impl Iterator<Item = i64> + 'a {
        self.values
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
    }

    pub fn frames(&self) -> impl Iterator<Item = RecordFrame<'a>> + 'a {
        let mut cur = Cursor(self.body);
        let ids = self.ids;
        (0..self.n_frames).map_while(move |_| {
            if ids {
                let function = StrId(cur.u32()?);
                let file = StrId(cur.u32()?);
                let line = cur.u32()?;
                Some(RecordFrame::Ids(FrameIds {
                    function,
                    file,
                    line,
                }))
            } else {
                let line = cur.u32()?;
                let fl = cur.u16()? as usize;
                let sl = cur.u16()? as usize;
                let function = cur.take(fl)?;
                let file = cur.take(sl)?;
                Some(RecordFrame::Text(Frame {
                    function,
                    file,
                    line,
                }))
            }
        })
    }

    /// The bytes after the frames (a malformed frame section: none).
    fn label_bytes(&self) -> &'a [u8] {
        let frames_len = if self.ids {
            Some(12 * self.n_frames as usize)
        } else {
            let mut probe = Cursor(self.body);
            (0..self.n_frames)
                .try_for_each(|_| {
                    probe.u32()?;
                    let a = probe.u16()? as usize;
                    let b = probe.u16()? as usize;
                    probe.take(a + b).map(|_| ())
                })
                .map(|()| self.body.len() - probe.0.len())
        };
        frames_len
            .and_then(|n| self.body.get(n..))
            .unwrap_or_default()
    }

    pub fn labels(&self) -> impl Iterator<Item = Label<'a>> + 'a {
        let mut cur = Cursor(self.label_bytes());
        (0..self.n_labels).map_while(move |_| {
            let kl = cur.u16()? as usize;
            let key = std::str::from_utf8(cur.take(kl)?).unwrap_or("");
            let value = match cur.u8()? {
                KIND_STR => {
                    let n = cur.u16()? as usize;
                    LabelValue::Str(cur.take(n)?)
                }
                KIND_NUM => LabelValue::Num(cur.i64()?),
                _ => {
                    let v = cur.i64()?;
                    let n = cur.u16()? as usize;
                    LabelValue::NumUnit(v, std::str::from_utf8(cur.take(n)?).unwrap_or(""))
                }
            };
            Some(Label { key, value })
        })
    }
}

/// Splits a drained buffer into records. A malformed tail (impossible unless memory is
/// corrupted) ends the iteration instead of panicking.
pub(crate) fn records(buf: &[u8]) -> impl Iterator<Item = Record<'_>> + '_ {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let mut cur = Cursor(rest);
        let len = cur.u32()? as usize;
        if len < HEADER || len > rest.len() {
            return None;
        }
        let (rec, tail) = rest.split_at(len);
        rest = tail;
        let mut cur = Cursor(&rec[4..]);
        let flags = cur.u8()?;
        let n_values = cur.u8()? as usize;
        let n_frames = cur.u16()?;
        let n_labels = cur.u16()?;
        cur.u16()?;
        let omitted = cur.u32()?;
        let timestamp_ns = if flags & FLAG_TIMESTAMP != 0 {
            Some(cur.i64()?)
        } else {
            None
        };
        let values = cur.take(8 * n_values)?;
        Some(Record {
            timestamp_ns,
            omitted,
            values,
            body: cur.0,
            n_frames,
            ids: flags & FLAG_IDS != 0,
            n_labels,
        })
    })
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    #[inline]
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    #[inline]
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    #[inline]
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    #[inline]
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The record `record()` would write for `sample` under `max_depth` (tests).
#[cfg(test)]
pub(crate) fn encode_to_vec(sample: &Sample<'_>, max_depth: usize) -> Vec<u8> {
    let plan = plan(sample, max_depth);
    let mut buf = vec![MaybeUninit::new(0u8); plan.len];
    encode(sample, &plan, &mut buf);
    buf.into_iter()
        // SAFETY: initialised by `vec!` and then by `encode`.
        .map(|b| unsafe { b.assume_init() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(sample: &Sample<'_>, max_depth: usize) -> Vec<u8> {
        encode_to_vec(sample, max_depth)
    }

    #[test]
    fn text_sample_roundtrips() {
        let frames = [
            Frame::new("leaf", "a.php", 3),
            Frame::new("main", "index.php", 1),
        ];
        let labels = [
            Label::str("thread", "w1"),
            Label::num("tid", 7),
            Label::num_unit("x", 2, "bytes"),
        ];
        let s = Sample::new(&frames, &[10, 20])
            .labels(&labels)
            .timestamp_ns(99);
        let buf = roundtrip(&s, 128);
        let recs: Vec<_> = records(&buf).collect();
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.timestamp_ns, Some(99));
        assert_eq!(r.values().collect::<Vec<_>>(), vec![10, 20]);
        let names: Vec<_> = r
            .frames()
            .map(|f| match f {
                RecordFrame::Text(f) => (f.function.to_vec(), f.line),
                RecordFrame::Ids(_) => unreachable!(),
            })
            .collect();
        assert_eq!(names, vec![(b"leaf".to_vec(), 3), (b"main".to_vec(), 1)]);
        assert_eq!(r.labels().collect::<Vec<_>>(), labels.to_vec());
    }

    #[test]
    fn truncation_keeps_leaf_side() {
        let frames: Vec<_> = (0..10)
            .map(|i| FrameIds {
                function: StrId(i),
                file: StrId(0),
                line: i,
            })
            .collect();
        let s = Sample::with_ids(&frames, &[1]);
        let buf = roundtrip(&s, 4);
        let r = records(&buf).next().unwrap();
        assert_eq!(r.omitted, 7);
        let lines: Vec<_> = r
            .frames()
            .map(|f| match f {
                RecordFrame::Ids(f) => f.line,
                RecordFrame::Text(_) => unreachable!(),
            })
            .collect();
        assert_eq!(lines, vec![0, 1, 2]);
    }

    #[test]
    fn a_name_longer_than_64_kib_is_cut_and_the_rest_of_the_record_stays_intact() {
        let long = "f".repeat(MAX_NAME + 10);
        let frames = [
            Frame::new(&long, "a.php", 3),
            Frame::new("main", "index.php", 1),
        ];
        let labels = [Label::str("thread", "w1")];
        let s = Sample::new(&frames, &[10]).labels(&labels);
        let buf = roundtrip(&s, 128);
        let r = records(&buf).next().unwrap();
        let names: Vec<_> = r
            .frames()
            .map(|f| match f {
                RecordFrame::Text(f) => (f.function.len(), f.file.to_vec()),
                RecordFrame::Ids(_) => unreachable!(),
            })
            .collect();
        assert_eq!(
            names,
            vec![(MAX_NAME, b"a.php".to_vec()), (4, b"index.php".to_vec())]
        );
        assert_eq!(r.labels().collect::<Vec<_>>(), labels.to_vec());
        assert_eq!(r.values().collect::<Vec<_>>(), vec![10]);
    }

    #[test]
    fn several_records_and_garbage_tail() {
        let frames = [Frame::new("f", "g", 1)];
        let s = Sample::new(&frames, &[5]);
        let mut buf = roundtrip(&s, 8);
        buf.extend(roundtrip(&s, 8));
        buf.extend_from_slice(&[200, 0, 0, 0, 1]);
        assert_eq!(records(&buf).count(), 2);
    }
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    #[test]
    fn copy_bytes_is_exact_for_every_length() {
        let src: Vec<u8> = (0..200u8).collect();
        for n in 0..=150 {
            let mut dst = vec![MaybeUninit::new(0xEEu8); n + 8];
            copy_bytes(&mut dst[4..4 + n], &src[..n]);
            // SAFETY: all initialised by `vec!`.
            let got: Vec<u8> = dst.iter().map(|b| unsafe { b.assume_init() }).collect();
            assert_eq!(&got[4..4 + n], &src[..n], "n = {n}");
            assert!(
                got[..4].iter().chain(&got[4 + n..]).all(|&b| b == 0xEE),
                "n = {n}: wrote outside"
            );
        }
    }
}
