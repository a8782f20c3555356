//! Trace context on samples: the label names every layer agrees on.
//!
//! A host that traces attaches its active span to a sample as plain numeric labels, so the
//! record path stays what it is (no allocation, async-signal-safe) and a sample without a span
//! costs nothing more. The names are the ones Datadog's profile views read; the trace id, which
//! Datadog does not need, travels as two 64-bit halves so OTLP can build a `Link` from it.
//! Exporters translate: Datadog keeps the span labels, Pyroscope writes `span_id` in hex, OTLP
//! turns the four into one `Link` and drops them from the sample's attributes.
//!
//! Attaching a span costs nothing in `record` itself: [`TracedLabels`] puts the host's labels
//! and the span's four side by side in an array on the host's stack, and `record` copies them
//! like any other labels. A sample without a span goes through exactly the code it always did.
//!
//! The endpoint of a request is often known only when its root span ends, after its samples
//! were recorded: `Profiler::set_endpoint` registers it by local root span id, and the
//! collector adds the [`TRACE_ENDPOINT`] label when it writes the profile (`endpoints.rs`).

use std::fmt;

use crate::sample::Label;

/// Numeric label: the span active when the sample was taken.
pub const SPAN_ID: &str = "span id";
/// Numeric label: the local root span (the request) the span belongs to; endpoints are
/// registered against it.
pub const LOCAL_ROOT_SPAN_ID: &str = "local root span id";
/// Numeric labels: the 128-bit trace id, high and low halves, each as the bits of a `u64`.
pub const TRACE_ID_HIGH: &str = "trace id high";
pub const TRACE_ID_LOW: &str = "trace id low";
/// String label: the endpoint (route, script) of the request the sample belongs to.
pub const TRACE_ENDPOINT: &str = "trace endpoint";

/// String label Grafana's traces-to-profiles reads: the span id as 16 lowercase hex digits.
pub const PYROSCOPE_SPAN_ID: &str = "span_id";
/// String label Grafana shows beside `span_id`: forkprof writes the request's endpoint there.
pub const PYROSCOPE_SPAN_NAME: &str = "span_name";

/// How an exporter wants the trace labels written into the profiles it is handed (see
/// `ExporterFactory::trace_labels`). Applied once per profile when it is serialized, on the
/// collector thread, never on the record path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TraceLabelStyle {
    /// The labels as recorded, plus [`TRACE_ENDPOINT`] for late-bound endpoints: files, OTLP
    /// (which needs the whole trace id for its links), a host's own exporter.
    #[default]
    AsRecorded,
    /// What Datadog reads: [`SPAN_ID`], [`LOCAL_ROOT_SPAN_ID`] and [`TRACE_ENDPOINT`]; the
    /// trace id halves, which Datadog does not use, are left out.
    Datadog,
    /// What Grafana's traces-to-profiles reads: [`PYROSCOPE_SPAN_ID`] (hex) and
    /// [`PYROSCOPE_SPAN_NAME`] (the endpoint). The numeric trace labels are left out: each
    /// distinct value would be a series of its own.
    Pyroscope,
}

/// The span a sample belongs to. Zero means "none" for each field, as in W3C trace context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub local_root_span_id: u64,
}

impl TraceContext {
    pub fn is_empty(&self) -> bool {
        self.span_id == 0
    }

    /// The labels that carry this context, written into `out` (no allocation); returns how
    /// many were written: 0 when there is no span, else 4.
    pub fn write_labels<'a>(&self, out: &mut [Label<'a>; 4]) -> usize {
        if self.is_empty() {
            return 0;
        }
        // The casts keep the bits: ids are unsigned, pprof numeric labels are i64.
        *out = [
            Label::num(SPAN_ID, self.span_id as i64),
            Label::num(LOCAL_ROOT_SPAN_ID, self.local_root_span_id as i64),
            Label::num(TRACE_ID_HIGH, (self.trace_id >> 64) as u64 as i64),
            Label::num(TRACE_ID_LOW, self.trace_id as u64 as i64),
        ];
        4
    }

    /// This context's labels alone (none without a span), for a host with no labels of its
    /// own: `Sample::labels(ctx.labels().as_slice())`.
    #[inline]
    pub fn labels(&self) -> TracedLabels<'static, 4> {
        let mut labels = [Label::num("", 0); 4];
        let len = self.write_labels(&mut labels);
        TracedLabels { labels, len }
    }

    /// Rebuilds a context from numeric labels `(key, value)`; fields whose label is missing
    /// stay zero.
    pub fn from_num_labels<'k>(labels: impl IntoIterator<Item = (&'k str, i64)>) -> Self {
        let mut ctx = TraceContext::default();
        for (key, value) in labels {
            let bits = value as u64;
            match key {
                SPAN_ID => ctx.span_id = bits,
                LOCAL_ROOT_SPAN_ID => ctx.local_root_span_id = bits,
                TRACE_ID_HIGH => ctx.trace_id |= (bits as u128) << 64,
                TRACE_ID_LOW => ctx.trace_id |= bits as u128,
                _ => {}
            }
        }
        ctx
    }
}

/// A host's labels followed by a span's, in an array of `N` on the caller's stack: how a
/// sample gets its trace context without an allocation (async-signal-safe, like `record`).
///
/// ```
/// use forkprof_core::{Frame, Label, Sample, TraceContext};
/// use forkprof_core::trace::TracedLabels;
///
/// let ctx = TraceContext { trace_id: 0xabc, span_id: 7, local_root_span_id: 5 };
/// let host = [Label::str("thread name", "worker-1")];
/// let labels = TracedLabels::<8>::new(&host, &ctx).expect("1 + 4 labels fit in 8");
/// let frames = [Frame::new("handle", "", 3)];
/// let sample = Sample::new(&frames, &[1]).labels(labels.as_slice());
/// assert_eq!(sample.labels.len(), 5);
/// ```
#[derive(Clone, Copy)]
pub struct TracedLabels<'a, const N: usize> {
    labels: [Label<'a>; N],
    len: usize,
}

/// The host's labels and the span's do not fit in a [`TracedLabels`] of this capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyLabels {
    pub needed: usize,
    pub capacity: usize,
}

impl fmt::Display for TooManyLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} labels do not fit in TracedLabels<{}>: use a larger capacity",
            self.needed, self.capacity
        )
    }
}

impl std::error::Error for TooManyLabels {}

impl<'a, const N: usize> TracedLabels<'a, N> {
    /// `host`'s labels, then `ctx`'s four (none when `ctx` has no span). Nothing is written
    /// when they do not fit.
    #[inline]
    pub fn new(host: &[Label<'a>], ctx: &TraceContext) -> Result<Self, TooManyLabels> {
        let mut trace = [Label::num("", 0); 4];
        let n_trace = ctx.write_labels(&mut trace);
        let needed = host.len() + n_trace;
        if needed > N {
            return Err(TooManyLabels {
                needed,
                capacity: N,
            });
        }
        let mut labels = [Label::num("", 0); N];
        labels[..host.len()].copy_from_slice(host);
        labels[host.len()..needed].copy_from_slice(&trace[..n_trace]);
        Ok(TracedLabels {
            labels,
            len: needed,
        })
    }

    /// The labels to hand to `Sample::labels`.
    #[inline]
    pub fn as_slice(&self) -> &[Label<'a>] {
        &self.labels[..self.len]
    }
}

/// `span_id` as Grafana reads it: 16 lowercase hex digits, into a stack buffer.
pub(crate) fn hex16(id: u64, out: &mut [u8; 16]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[(id >> (60 - 4 * i) & 0xf) as usize];
    }
    // Every byte is an ASCII digit or letter.
    std::str::from_utf8(out).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::LabelValue;

    #[test]
    fn traced_labels_put_the_host_labels_first_and_the_span_after() {
        let ctx = TraceContext {
            trace_id: 1 << 64 | 2,
            span_id: 3,
            local_root_span_id: 4,
        };
        let host = [Label::str("thread name", "w"), Label::num("thread id", 9)];
        let l = TracedLabels::<6>::new(&host, &ctx).unwrap();
        let keys: Vec<&str> = l.as_slice().iter().map(|l| l.key).collect();
        assert_eq!(
            keys,
            [
                "thread name",
                "thread id",
                SPAN_ID,
                LOCAL_ROOT_SPAN_ID,
                TRACE_ID_HIGH,
                TRACE_ID_LOW
            ]
        );
        assert_eq!(l.as_slice()[4].value, LabelValue::Num(1));
        assert_eq!(l.as_slice()[5].value, LabelValue::Num(2));
        // No span: the host's labels alone, and they fit where the span's would not.
        let none = TracedLabels::<2>::new(&host, &TraceContext::default()).unwrap();
        assert_eq!(none.as_slice(), &host);
        assert_eq!(
            TracedLabels::<5>::new(&host, &ctx).err(),
            Some(TooManyLabels {
                needed: 6,
                capacity: 5
            })
        );
    }

    #[test]
    fn span_ids_in_hex_are_16_lowercase_digits() {
        let mut b = [0; 16];
        assert_eq!(hex16(0x00ab_cdef_0123_4567, &mut b), "00abcdef01234567");
        assert_eq!(hex16(u64::MAX, &mut b), "ffffffffffffffff");
        assert_eq!(hex16(0, &mut b), "0000000000000000");
    }

    #[test]
    fn labels_round_trip_every_bit() {
        let ctx = TraceContext {
            trace_id: 0xfedc_ba98_7654_3210_8000_0000_0000_0001,
            span_id: u64::MAX,
            local_root_span_id: 1 << 63,
        };
        let mut out = [Label::num("", 0); 4];
        assert_eq!(ctx.write_labels(&mut out), 4);
        let back = TraceContext::from_num_labels(out.iter().map(|l| match l.value {
            LabelValue::Num(v) => (l.key, v),
            other => panic!("not numeric: {other:?}"),
        }));
        assert_eq!(back, ctx);
    }

    #[test]
    fn no_span_writes_no_label() {
        let mut out = [Label::num("", 0); 4];
        assert_eq!(TraceContext::default().write_labels(&mut out), 0);
    }
}
