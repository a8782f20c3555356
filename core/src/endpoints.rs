//! Late-bound endpoints: the request endpoint a host learns when a root span ends, after the
//! samples of that request were recorded. The host registers it by local root span id
//! (`Profiler::set_endpoint`) and counts requests per endpoint (`Profiler::count_endpoint`);
//! the collector applies the table when it writes a profile, so the record path never sees it.
//!
//! The table belongs to a session, so a forked child starts with an empty one of its own and
//! never takes a lock its parent's threads could hold. Its lock is taken by the host's calls and
//! once per profile by the collector, never by `record`. Memory is bounded: at most
//! [`MAX_ENDPOINTS`] root spans and as many distinct endpoints per profile period, names cut at
//! [`MAX_ENDPOINT_LEN`] bytes; what does not fit is counted (`Stats::endpoints_dropped`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::profile::{ProfLabel, ProfileBuilder, StrIdx};
use crate::trace::{self, TraceLabelStyle};

/// Root spans registered, and distinct endpoints counted, per profile period.
pub const MAX_ENDPOINTS: usize = 8192;
/// Longest endpoint name kept, in bytes (cut at a character boundary).
pub const MAX_ENDPOINT_LEN: usize = 512;

#[derive(Default)]
struct Table {
    /// Local root span id → endpoint, registered since the last profile was written.
    spans: HashMap<u64, Arc<str>>,
    /// Endpoint → requests counted since the last profile that was written.
    counts: HashMap<Arc<str>, u64>,
    /// Each endpoint name once, shared by the entries above: many requests, few routes.
    names: HashSet<Arc<str>>,
}

#[derive(Default)]
pub(crate) struct Endpoints {
    table: Mutex<Table>,
    dropped: AtomicU64,
}

/// What one profile gets from the table: the registrations of its period (and the one
/// before, for samples drained after their root span's period ended) and the counts.
pub(crate) struct Period {
    pub spans: HashMap<u64, Arc<str>>,
    pub counts: Vec<(String, u64)>,
}

fn clip(endpoint: &str) -> &str {
    if endpoint.len() <= MAX_ENDPOINT_LEN {
        return endpoint;
    }
    let mut end = MAX_ENDPOINT_LEN;
    while !endpoint.is_char_boundary(end) {
        end -= 1;
    }
    &endpoint[..end]
}

impl Endpoints {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A holder that panicked left a consistent map (inserts are all-or-nothing).
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The table's one copy of `endpoint` (at most one per span and per counted endpoint,
    /// both bounded).
    fn interned(t: &mut Table, endpoint: &str) -> Arc<str> {
        if let Some(name) = t.names.get(endpoint) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(endpoint);
        t.names.insert(name.clone());
        name
    }

    /// Registers `endpoint` for `local_root_span_id`; false (counted) when the period's table
    /// is full.
    pub fn set(&self, local_root_span_id: u64, endpoint: &str) -> bool {
        let endpoint = clip(endpoint);
        let mut t = self.table();
        if t.spans.len() >= MAX_ENDPOINTS && !t.spans.contains_key(&local_root_span_id) {
            drop(t);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let name = Self::interned(&mut t, endpoint);
        t.spans.insert(local_root_span_id, name);
        true
    }

    /// Adds `hits` requests to `endpoint`'s count; false (counted) when the period already
    /// counts [`MAX_ENDPOINTS`] other endpoints.
    pub fn count(&self, endpoint: &str, hits: u64) -> bool {
        let endpoint = clip(endpoint);
        let mut t = self.table();
        if let Some(n) = t.counts.get_mut(endpoint) {
            *n = n.saturating_add(hits);
            return true;
        }
        if t.counts.len() >= MAX_ENDPOINTS {
            drop(t);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let name = Self::interned(&mut t, endpoint);
        t.counts.insert(name, hits);
        true
    }

    /// Takes what was registered and counted since the last call, leaving the table empty.
    pub fn take(&self) -> Period {
        let (spans, counts) = {
            let mut t = self.table();
            t.names.clear();
            (std::mem::take(&mut t.spans), std::mem::take(&mut t.counts))
        };
        let mut counts: Vec<(String, u64)> = counts
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        counts.sort();
        Period { spans, counts }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The interned keys of the trace labels in one profile (`None`: no sample has that label).
struct Keys {
    span: Option<StrIdx>,
    root: Option<StrIdx>,
    high: Option<StrIdx>,
    low: Option<StrIdx>,
    endpoint: Option<StrIdx>,
    span_name: Option<StrIdx>,
}

impl Keys {
    fn is_trace(&self, k: StrIdx) -> bool {
        [self.span, self.root, self.high, self.low, self.endpoint].contains(&Some(k))
    }
}

/// Rewrites the trace labels of `b` for an exporter that wants `style`, and adds the
/// endpoint label to every label set whose local root span has one in `endpoint_of` (and none
/// recorded). Runs on the collector just before `b` is encoded; `b` is reset after (see
/// [`ProfileBuilder::replace_labelset`]). A label set whose new labels cannot get memory keeps
/// the ones it had.
pub(crate) fn finish_trace_labels(
    b: &mut ProfileBuilder,
    style: TraceLabelStyle,
    endpoint_of: &dyn Fn(u64) -> Option<Arc<str>>,
) {
    let mut keys = Keys {
        span: b.lookup_string(trace::SPAN_ID),
        root: b.lookup_string(trace::LOCAL_ROOT_SPAN_ID),
        high: b.lookup_string(trace::TRACE_ID_HIGH),
        low: b.lookup_string(trace::TRACE_ID_LOW),
        endpoint: b.lookup_string(trace::TRACE_ENDPOINT),
        span_name: None,
    };
    if [keys.span, keys.root, keys.high, keys.low, keys.endpoint]
        .iter()
        .all(Option::is_none)
    {
        return; // no sample carries a span: nothing to do, and nothing interned
    }
    let mut labels: Vec<ProfLabel> = Vec::new();
    let mut out: Vec<ProfLabel> = Vec::new();
    for id in 0..b.labelset_count() as u32 {
        labels.clear();
        labels.extend_from_slice(b.labelset(id));
        if !labels.iter().any(|l| keys.is_trace(l.key)) {
            continue;
        }
        if let Ok(Some(new)) = rewrite(b, &mut keys, style, endpoint_of, &labels, &mut out) {
            let _ = b.replace_labelset(id, new);
        }
    }
}

/// The new labels of one label set, or `None` when it stays as it is.
fn rewrite<'o>(
    b: &mut ProfileBuilder,
    keys: &mut Keys,
    style: TraceLabelStyle,
    endpoint_of: &dyn Fn(u64) -> Option<Arc<str>>,
    labels: &[ProfLabel],
    out: &'o mut Vec<ProfLabel>,
) -> Result<Option<&'o [ProfLabel]>, crate::region_vec::OutOfMemory> {
    out.clear();
    let mut changed = false;
    let str_label = |key, str| ProfLabel {
        key,
        str,
        num: 0,
        num_unit: 0,
    };
    // An endpoint registered for the sample's root span wins over one recorded with the
    // sample: the host registers it once the request's route is known (a framework's route
    // rather than the script that serves every route).
    let root = labels
        .iter()
        .find(|l| Some(l.key) == keys.root)
        .map_or(0, |l| l.num as u64);
    let late = if root != 0 { endpoint_of(root) } else { None };
    for l in labels {
        let k = Some(l.key);
        if k == keys.endpoint && late.is_some() {
            changed = true;
            continue;
        }
        match style {
            TraceLabelStyle::AsRecorded => out.push(*l),
            TraceLabelStyle::Datadog => {
                if k == keys.high || k == keys.low {
                    changed = true;
                } else {
                    out.push(*l);
                }
            }
            TraceLabelStyle::Pyroscope => {
                changed |= keys.is_trace(l.key);
                if k == keys.span {
                    let mut hex = [0; 16];
                    let key = b.try_intern(trace::PYROSCOPE_SPAN_ID)?;
                    let value = b.try_intern(trace::hex16(l.num as u64, &mut hex))?;
                    out.push(str_label(key, value));
                } else if k == keys.endpoint {
                    out.push(str_label(span_name_key(b, keys)?, l.str));
                } else if !keys.is_trace(l.key) {
                    out.push(*l);
                }
            }
        }
    }
    if let Some(endpoint) = late {
        let key = match style {
            TraceLabelStyle::Pyroscope => span_name_key(b, keys)?,
            _ => b.try_intern(trace::TRACE_ENDPOINT)?,
        };
        let value = b.try_intern(&endpoint)?;
        out.push(str_label(key, value));
        changed = true;
    }
    Ok(changed.then_some(&out[..]))
}

fn span_name_key(
    b: &mut ProfileBuilder,
    keys: &mut Keys,
) -> Result<StrIdx, crate::region_vec::OutOfMemory> {
    if let Some(k) = keys.span_name {
        return Ok(k);
    }
    let k = b.try_intern(trace::PYROSCOPE_SPAN_NAME)?;
    keys.span_name = Some(k);
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::{t0, types};
    use crate::profile::ProfFrame;
    use std::collections::BTreeMap;

    /// A profile with three label sets: a traced one (root span 5), a traced one whose root
    /// span has no endpoint (6), and one without a span; the first also in the timeline.
    fn traced_profile() -> ProfileBuilder {
        let mut b = ProfileBuilder::new(&types(), None, t0());
        let f = ProfFrame {
            function: b.intern("handle"),
            file: b.intern("app.rs"),
            line: 1,
        };
        let num = |b: &mut ProfileBuilder, k: &str, v: u64| ProfLabel {
            key: b.intern(k),
            str: 0,
            num: v as i64,
            num_unit: 0,
        };
        let thread = ProfLabel {
            key: b.intern("thread name"),
            str: b.intern("w1"),
            num: 0,
            num_unit: 0,
        };
        let traced = |b: &mut ProfileBuilder, span: u64, root: u64| {
            vec![
                thread,
                num(b, trace::SPAN_ID, span),
                num(b, trace::LOCAL_ROOT_SPAN_ID, root),
                num(b, trace::TRACE_ID_HIGH, 0xaaaa),
                num(b, trace::TRACE_ID_LOW, 0xbbbb),
            ]
        };
        let a = traced(&mut b, 0xfeed_0000_0000_0001, 5);
        let c = traced(&mut b, 2, 6);
        b.add([f], &[10, 1], &a, None);
        b.add([f], &[20, 1], &a, Some(1_700_000_000_000_000_000));
        b.add([f], &[30, 1], &c, None);
        b.add([f], &[40, 1], &[thread], None);
        b
    }

    /// Each sample's labels as `key → value` (numbers as text), keyed by its wall-time value.
    fn labels_by_value(b: &ProfileBuilder) -> BTreeMap<i64, BTreeMap<String, String>> {
        let mut out = Vec::new();
        b.encode(t0(), &mut out);
        let p = crate::pprof::decode(&out).unwrap();
        p.samples
            .iter()
            .map(|s| {
                let labels = s
                    .labels
                    .iter()
                    .filter(|l| l.key != crate::profile::TIMESTAMP_LABEL)
                    .map(|l| {
                        let v = if l.str.is_empty() {
                            l.num.to_string()
                        } else {
                            l.str.clone()
                        };
                        (l.key.clone(), v)
                    })
                    .collect();
                (s.values[0], labels)
            })
            .collect()
    }

    fn endpoints(id: u64) -> Option<Arc<str>> {
        (id == 5).then(|| Arc::from("GET /users"))
    }

    fn keys(m: &BTreeMap<String, String>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    #[test]
    fn as_recorded_keeps_every_label_and_adds_the_late_endpoint() {
        let mut b = traced_profile();
        finish_trace_labels(&mut b, TraceLabelStyle::AsRecorded, &endpoints);
        let s = labels_by_value(&b);
        for v in [10, 20] {
            assert_eq!(s[&v][trace::TRACE_ENDPOINT], "GET /users");
            assert_eq!(s[&v][trace::TRACE_ID_HIGH], 0xaaaa.to_string());
            assert_eq!(
                s[&v][trace::SPAN_ID],
                (0xfeed_0000_0000_0001u64 as i64).to_string()
            );
        }
        assert!(
            !s[&30].contains_key(trace::TRACE_ENDPOINT),
            "root 6 has none"
        );
        assert_eq!(s[&30].len(), 5);
        assert_eq!(keys(&s[&40]), ["thread name"]);
    }

    #[test]
    fn a_late_endpoint_replaces_the_one_recorded_with_the_sample() {
        let mut b = ProfileBuilder::new(&types(), None, t0());
        let f = ProfFrame {
            function: b.intern("handle"),
            file: b.intern("index.php"),
            line: 1,
        };
        let label = |b: &mut ProfileBuilder, k: &str, v: &str, n: u64| ProfLabel {
            key: b.intern(k),
            str: if v.is_empty() { 0 } else { b.intern(v) },
            num: n as i64,
            num_unit: 0,
        };
        // A request served by the front script whose route the host names once it is known (root
        // 5), and one whose root span has no registered endpoint (root 6).
        let routed = [
            label(&mut b, trace::LOCAL_ROOT_SPAN_ID, "", 5),
            label(&mut b, trace::TRACE_ENDPOINT, "/index.php", 0),
        ];
        let unrouted = [
            label(&mut b, trace::LOCAL_ROOT_SPAN_ID, "", 6),
            label(&mut b, trace::TRACE_ENDPOINT, "/index.php", 0),
        ];
        b.add([f], &[10, 1], &routed, None);
        b.add([f], &[30, 1], &unrouted, None);
        finish_trace_labels(&mut b, TraceLabelStyle::AsRecorded, &endpoints);
        let s = labels_by_value(&b);
        assert_eq!(s[&10][trace::TRACE_ENDPOINT], "GET /users");
        assert_eq!(
            s[&10].len(),
            2,
            "the recorded endpoint is replaced, not doubled"
        );
        assert_eq!(s[&30][trace::TRACE_ENDPOINT], "/index.php");
    }

    #[test]
    fn datadog_drops_the_trace_id_halves() {
        let mut b = traced_profile();
        finish_trace_labels(&mut b, TraceLabelStyle::Datadog, &endpoints);
        let s = labels_by_value(&b);
        assert_eq!(
            keys(&s[&10]),
            [
                trace::LOCAL_ROOT_SPAN_ID,
                trace::SPAN_ID,
                "thread name",
                trace::TRACE_ENDPOINT
            ]
        );
        assert_eq!(s[&20], s[&10]);
        assert_eq!(
            keys(&s[&30]),
            [trace::LOCAL_ROOT_SPAN_ID, trace::SPAN_ID, "thread name"]
        );
        assert_eq!(keys(&s[&40]), ["thread name"]);
    }

    #[test]
    fn pyroscope_gets_span_id_in_hex_and_the_endpoint_as_span_name() {
        let mut b = traced_profile();
        finish_trace_labels(&mut b, TraceLabelStyle::Pyroscope, &endpoints);
        let s = labels_by_value(&b);
        assert_eq!(
            keys(&s[&10]),
            ["span_id", "span_name", "thread name"],
            "{s:?}"
        );
        assert_eq!(s[&10]["span_id"], "feed000000000001");
        assert_eq!(s[&10]["span_name"], "GET /users");
        assert_eq!(keys(&s[&30]), ["span_id", "thread name"]);
        assert_eq!(s[&30]["span_id"], "0000000000000002");
        assert_eq!(keys(&s[&40]), ["thread name"]);
    }

    #[test]
    fn a_profile_without_spans_is_left_alone_and_gains_no_string() {
        let mut b = ProfileBuilder::new(&types(), None, t0());
        let f = ProfFrame {
            function: b.intern("main"),
            file: 0,
            line: 0,
        };
        let l = ProfLabel {
            key: b.intern("thread id"),
            str: 0,
            num: 1,
            num_unit: 0,
        };
        b.add([f], &[1, 1], &[l], None);
        let mut before = Vec::new();
        b.encode(t0(), &mut before);
        finish_trace_labels(&mut b, TraceLabelStyle::Pyroscope, &|_| {
            Some(Arc::from("x"))
        });
        let mut after = Vec::new();
        b.encode(t0(), &mut after);
        assert_eq!(before, after);
    }

    #[test]
    fn the_table_is_bounded_counted_and_emptied_per_period() {
        let t = Endpoints::default();
        for i in 0..MAX_ENDPOINTS as u64 {
            assert!(t.set(i + 1, "GET /a"));
        }
        assert!(!t.set(u64::MAX, "GET /b"), "full");
        assert!(t.set(1, "GET /c"), "an id already held is replaced");
        assert_eq!(t.dropped(), 1);
        assert!(t.count("GET /a", 2));
        assert!(t.count("GET /a", 3));
        assert!(t.count(&"é".repeat(MAX_ENDPOINT_LEN), 1));
        let p = t.take();
        assert_eq!(p.spans.len(), MAX_ENDPOINTS);
        assert_eq!(&*p.spans[&1], "GET /c");
        assert!(
            Arc::ptr_eq(&p.spans[&2], &p.spans[&3]),
            "one copy of a name for many requests"
        );
        assert_eq!(p.counts[0], ("GET /a".to_string(), 5));
        assert_eq!(
            p.counts[1].0.len(),
            MAX_ENDPOINT_LEN,
            "cut at a char boundary"
        );
        let p = t.take();
        assert!(p.spans.is_empty() && p.counts.is_empty());
        for i in 0..MAX_ENDPOINTS {
            assert!(t.count(&format!("e{i}"), 1));
        }
        assert!(!t.count("one more", 1));
        assert!(t.count("e0", 1), "an endpoint already counted still counts");
        assert_eq!(t.dropped(), 2);
    }
}
