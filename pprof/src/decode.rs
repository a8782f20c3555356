//! A pprof decoder: enough of `profile.proto` to read any profile back (ours or another
//! tool's), for `forkprof top` and the tests. Malformed input is an error, never a panic.

use crate::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueType {
    pub ty: String,
    pub unit: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Label {
    pub key: String,
    pub str: String,
    pub num: i64,
    pub num_unit: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub location_ids: Vec<u64>,
    pub values: Vec<i64>,
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Line {
    pub function_id: u64,
    pub line: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Location {
    pub id: u64,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Function {
    pub id: u64,
    pub name: String,
    pub filename: String,
}

/// A decoded profile with strings resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub sample_types: Vec<ValueType>,
    pub samples: Vec<Sample>,
    pub locations: Vec<Location>,
    pub functions: Vec<Function>,
    pub time_nanos: i64,
    pub duration_nanos: i64,
    pub period_type: Option<ValueType>,
    pub period: i64,
    pub comments: Vec<String>,
    /// The sample type tools show when none is named (`default_sample_type`), if written.
    pub default_sample_type: Option<String>,
}

impl Profile {
    pub fn function(&self, id: u64) -> Option<&Function> {
        self.functions.iter().find(|f| f.id == id)
    }
    pub fn location(&self, id: u64) -> Option<&Location> {
        self.locations.iter().find(|l| l.id == id)
    }
    /// Function names of a sample's stack, leaf first (inlined lines expanded; an unknown
    /// function is "").
    pub fn stack_names(&self, s: &Sample) -> Vec<String> {
        StackIndex::new(self)
            .leaf_first(&s.location_ids)
            .map(|f| f.map(|f| f.name.clone()).unwrap_or_default())
            .collect()
    }
}

/// Lookups from a sample's location ids to its functions, built once per profile: what every
/// reader of stacks (`top`, flame graphs, tests) walks.
pub struct StackIndex<'p> {
    functions: std::collections::HashMap<u64, &'p Function>,
    locations: std::collections::HashMap<u64, &'p Location>,
}

impl<'p> StackIndex<'p> {
    pub fn new(p: &'p Profile) -> StackIndex<'p> {
        StackIndex {
            functions: p.functions.iter().map(|f| (f.id, f)).collect(),
            locations: p.locations.iter().map(|l| (l.id, l)).collect(),
        }
    }

    /// A stack's frames, leaf first: each known location's lines, innermost (inlined) first,
    /// as their functions. `None` stands for a frame whose function is unknown, and for a
    /// location that has no line. Unknown location ids are skipped, never a panic.
    pub fn leaf_first<'a>(
        &'a self,
        location_ids: &'a [u64],
    ) -> impl Iterator<Item = Option<&'p Function>> + 'a {
        location_ids
            .iter()
            .filter_map(|id| self.locations.get(id).copied())
            .flat_map(move |loc| {
                let lines = loc
                    .lines
                    .iter()
                    .map(move |line| self.functions.get(&line.function_id).copied());
                let none = loc.lines.is_empty().then_some(None);
                lines.chain(none)
            })
    }
}

fn bad(what: &str) -> Error {
    Error(format!("not a valid pprof profile: {what}"))
}

struct Reader<'a> {
    buf: &'a [u8],
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| bad("truncated varint"))?;
            self.buf = rest;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(bad("length past the end"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        let v = match k & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let n = self.varint()? as usize;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return Err(bad("unknown wire type")),
        };
        Ok(Some((k >> 3, v)))
    }
}

fn each<'a>(buf: &'a [u8], mut f: impl FnMut(u64, Value<'a>) -> Result<()>) -> Result<()> {
    let mut r = Reader { buf };
    while let Some((n, v)) = r.field()? {
        f(n, v)?;
    }
    Ok(())
}

/// A repeated integer field, packed or not.
fn push_ints(v: Value<'_>, out: &mut Vec<u64>) -> Result<()> {
    match v {
        Value::Varint(x) => out.push(x),
        Value::Bytes(b) => {
            let mut r = Reader { buf: b };
            while !r.buf.is_empty() {
                out.push(r.varint()?);
            }
        }
        Value::Fixed => return Err(bad("fixed-width integer where a varint was expected")),
    }
    Ok(())
}

fn int(v: Value<'_>) -> u64 {
    match v {
        Value::Varint(x) => x,
        _ => 0,
    }
}

/// Decodes an uncompressed pprof protobuf.
pub fn decode(buf: &[u8]) -> Result<Profile> {
    let mut strings: Vec<String> = Vec::new();
    let mut raw_types = Vec::new();
    let mut raw_samples = Vec::new();
    let mut raw_locations = Vec::new();
    let mut raw_functions = Vec::new();
    let mut raw_period_type = None;
    let mut comments = Vec::new();
    let mut default_type = 0;
    let mut p = Profile::default();
    each(buf, |n, v| {
        match (n, v) {
            (1, Value::Bytes(b)) => raw_types.push(b),
            (2, Value::Bytes(b)) => raw_samples.push(b),
            (4, Value::Bytes(b)) => raw_locations.push(b),
            (5, Value::Bytes(b)) => raw_functions.push(b),
            (6, Value::Bytes(b)) => strings.push(String::from_utf8_lossy(b).into_owned()),
            (9, v) => p.time_nanos = int(v) as i64,
            (10, v) => p.duration_nanos = int(v) as i64,
            (11, Value::Bytes(b)) => raw_period_type = Some(b),
            (12, v) => p.period = int(v) as i64,
            (13, v) => push_ints(v, &mut comments)?,
            (14, v) => default_type = int(v),
            _ => {}
        }
        Ok(())
    })?;
    if strings.first().map(|s| !s.is_empty()).unwrap_or(true) {
        return Err(bad("string_table[0] must be the empty string"));
    }
    let s = |i: u64| -> Result<String> {
        strings
            .get(i as usize)
            .cloned()
            .ok_or_else(|| bad("string index out of range"))
    };
    let value_type = |b: &[u8]| -> Result<ValueType> {
        let (mut ty, mut unit) = (0, 0);
        each(b, |n, v| {
            match n {
                1 => ty = int(v),
                2 => unit = int(v),
                _ => {}
            }
            Ok(())
        })?;
        Ok(ValueType {
            ty: s(ty)?,
            unit: s(unit)?,
        })
    };
    for b in raw_types {
        p.sample_types.push(value_type(b)?);
    }
    if let Some(b) = raw_period_type {
        p.period_type = Some(value_type(b)?);
    }
    for b in raw_samples {
        let mut locs = Vec::new();
        let mut vals = Vec::new();
        let mut labels = Vec::new();
        each(b, |n, v| {
            match (n, v) {
                (1, v) => push_ints(v, &mut locs)?,
                (2, v) => push_ints(v, &mut vals)?,
                (3, Value::Bytes(lb)) => {
                    let (mut k, mut st, mut num, mut nu) = (0, 0, 0, 0);
                    each(lb, |n, v| {
                        match n {
                            1 => k = int(v),
                            2 => st = int(v),
                            3 => num = int(v),
                            4 => nu = int(v),
                            _ => {}
                        }
                        Ok(())
                    })?;
                    labels.push(Label {
                        key: s(k)?,
                        str: s(st)?,
                        num: num as i64,
                        num_unit: s(nu)?,
                    });
                }
                _ => {}
            }
            Ok(())
        })?;
        if vals.len() != p.sample_types.len() {
            return Err(bad("a sample's value count differs from the sample types"));
        }
        p.samples.push(Sample {
            location_ids: locs,
            values: vals.into_iter().map(|v| v as i64).collect(),
            labels,
        });
    }
    for b in raw_locations {
        let mut loc = Location::default();
        each(b, |n, v| {
            match (n, v) {
                (1, v) => loc.id = int(v),
                (4, Value::Bytes(lb)) => {
                    let mut line = Line::default();
                    each(lb, |n, v| {
                        match n {
                            1 => line.function_id = int(v),
                            2 => line.line = int(v) as i64,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    loc.lines.push(line);
                }
                _ => {}
            }
            Ok(())
        })?;
        p.locations.push(loc);
    }
    for b in raw_functions {
        let (mut id, mut name, mut file) = (0, 0, 0);
        each(b, |n, v| {
            match n {
                1 => id = int(v),
                2 => name = int(v),
                4 => file = int(v),
                _ => {}
            }
            Ok(())
        })?;
        p.functions.push(Function {
            id,
            name: s(name)?,
            filename: s(file)?,
        });
    }
    if default_type != 0 {
        p.default_sample_type = Some(s(default_type)?);
    }
    for c in comments {
        p.comments.push(s(c)?);
    }
    Ok(p)
}
