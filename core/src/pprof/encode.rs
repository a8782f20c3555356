//! Protobuf encoding of a [`ProfileBuilder`]. Field numbers are those of `profile.proto`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::profile::{ProfLabel, ProfileBuilder};

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

fn label(out: &mut Vec<u8>, l: &ProfLabel) {
    len_prefix(out, 3, label_len(l));
    uint_field(out, 1, l.key as u64);
    uint_field(out, 2, l.str as u64);
    uint_field(out, 3, l.num as u64);
    uint_field(out, 4, l.num_unit as u64);
}

/// One Sample message: location ids (packed), values (packed), labels.
fn sample(
    out: &mut Vec<u8>,
    locations: &[u32],
    values: &[i64],
    labels: &[ProfLabel],
    extra: Option<&ProfLabel>,
) {
    let loc_len: usize = locations.iter().map(|&l| varint_len(l as u64)).sum();
    let val_len: usize = values.iter().map(|&v| varint_len(v as u64)).sum();
    let mut len = 0;
    if loc_len > 0 {
        len += 1 + varint_len(loc_len as u64) + loc_len;
    }
    if val_len > 0 {
        len += 1 + varint_len(val_len as u64) + val_len;
    }
    for l in labels.iter().chain(extra) {
        let ll = label_len(l);
        len += 1 + varint_len(ll as u64) + ll;
    }
    len_prefix(out, 2, len);
    if loc_len > 0 {
        len_prefix(out, 1, loc_len);
        for &l in locations {
            varint(out, l as u64);
        }
    }
    if val_len > 0 {
        len_prefix(out, 2, val_len);
        for &v in values {
            varint(out, v as u64);
        }
    }
    for l in labels.iter().chain(extra) {
        label(out, l);
    }
}

fn nanos_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn encode(p: &ProfileBuilder, end: SystemTime, out: &mut Vec<u8>) {
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
    for (i, &(stack, labels)) in p.samples.iter().enumerate() {
        sample(
            out,
            stack_of(stack),
            &p.values[i * n..(i + 1) * n],
            labels_of(labels),
            None,
        );
    }
    for (i, &(stack, labels, ts)) in p.timeline.iter().enumerate() {
        let tl = ProfLabel {
            key: p.timestamp_key,
            str: 0,
            num: ts,
            num_unit: 0,
        };
        sample(
            out,
            stack_of(stack),
            &p.timeline_values[i * n..(i + 1) * n],
            labels_of(labels),
            Some(&tl),
        );
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
    }
    for s in &p.strings {
        len_prefix(out, 6, s.len());
        out.extend_from_slice(s.as_bytes());
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
}
