//! What a host hands to `record()`: a stack, one value per sample type, labels, a timestamp.
//!
//! Everything here borrows: recording copies the bytes into the profiler's buffer, so the host
//! keeps ownership and nothing is allocated per frame.

/// A string interned once in the process-wide table (see `Profiler::intern`). Ids stay valid
/// for the life of the process, across profiler restarts and in forked children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct StrId(pub(crate) u32);

impl StrId {
    pub fn as_u32(self) -> u32 {
        self.0
    }
    /// Rebuilds an id from [`StrId::as_u32`] (for FFI). An id that was never handed out is
    /// rendered as `[unknown string id N]` in profiles, never a panic.
    pub fn from_u32(id: u32) -> Self {
        StrId(id)
    }
}

/// One frame given as text. Names are bytes so a host can pass what its VM holds; invalid
/// UTF-8 is replaced (lossily) when the profile is built, never on the host thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub function: &'a [u8],
    pub file: &'a [u8],
    pub line: u32,
}

impl<'a> Frame<'a> {
    pub fn new(function: &'a str, file: &'a str, line: u32) -> Self {
        Frame {
            function: function.as_bytes(),
            file: file.as_bytes(),
            line,
        }
    }
    pub fn from_bytes(function: &'a [u8], file: &'a [u8], line: u32) -> Self {
        Frame {
            function,
            file,
            line,
        }
    }
}

/// One frame given as interned ids: the fastest way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct FrameIds {
    pub function: StrId,
    pub file: StrId,
    pub line: u32,
}

/// A stack, leaf first.
#[derive(Debug, Clone, Copy)]
pub enum Stack<'a> {
    Text(&'a [Frame<'a>]),
    Ids(&'a [FrameIds]),
}

impl Stack<'_> {
    pub fn len(&self) -> usize {
        match self {
            Stack::Text(f) => f.len(),
            Stack::Ids(f) => f.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A label value: a string, or a number with an optional unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelValue<'a> {
    Str(&'a [u8]),
    Num(i64),
    NumUnit(i64, &'a str),
}

/// A `key = value` label attached to a sample (thread id, thread name, span id, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label<'a> {
    pub key: &'a str,
    pub value: LabelValue<'a>,
}

impl<'a> Label<'a> {
    pub fn str(key: &'a str, value: &'a str) -> Self {
        Label {
            key,
            value: LabelValue::Str(value.as_bytes()),
        }
    }
    pub fn num(key: &'a str, value: i64) -> Self {
        Label {
            key,
            value: LabelValue::Num(value),
        }
    }
    pub fn num_unit(key: &'a str, value: i64, unit: &'a str) -> Self {
        Label {
            key,
            value: LabelValue::NumUnit(value, unit),
        }
    }
}

/// One observation. `values` has one entry per configured sample type, in order.
/// With `timestamp_ns` set (Unix epoch nanoseconds) the sample is kept individually for the
/// timeline; without it, samples with the same stack and labels are summed.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub stack: Stack<'a>,
    pub values: &'a [i64],
    pub labels: &'a [Label<'a>],
    pub timestamp_ns: Option<i64>,
}

impl<'a> Sample<'a> {
    pub fn new(frames: &'a [Frame<'a>], values: &'a [i64]) -> Self {
        Sample {
            stack: Stack::Text(frames),
            values,
            labels: &[],
            timestamp_ns: None,
        }
    }
    pub fn with_ids(frames: &'a [FrameIds], values: &'a [i64]) -> Self {
        Sample {
            stack: Stack::Ids(frames),
            values,
            labels: &[],
            timestamp_ns: None,
        }
    }
    pub fn labels(mut self, labels: &'a [Label<'a>]) -> Self {
        self.labels = labels;
        self
    }
    pub fn timestamp_ns(mut self, ts: i64) -> Self {
        self.timestamp_ns = Some(ts);
        self
    }
}
