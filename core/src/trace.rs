//! Trace context on samples: the label names every layer agrees on.
//!
//! A host that traces attaches its active span to a sample as plain numeric labels, so the
//! record path stays what it is (no allocation, async-signal-safe) and a sample without a span
//! costs nothing more. The names are the ones Datadog's profile views read; the trace id, which
//! Datadog does not need, travels as two 64-bit halves so OTLP can build a `Link` from it.
//! Exporters translate: Datadog keeps the span labels, Pyroscope writes `span_id` in hex, OTLP
//! turns the four into one `Link` and drops them from the sample's attributes.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::LabelValue;

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
