//! The collector thread: drains the sample buffer, aggregates into the current profile, and
//! every period (or on flush / stop) encodes, compresses and queues it for the uploader.
//!
//! Locks it takes, each for a few microseconds: one buffer shard at a time (to swap it out),
//! the string table (only to resolve an interned id it has not seen this profile), the export
//! queue (to push). Encoding and compression run with no lock held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use std::collections::HashMap;

use crate::config::Config;
use crate::endpoints::{finish_trace_labels, Period};
use crate::export::{EncodedProfile, ProfileFormat};
use crate::intern;
use crate::profile::{ProfFrame, ProfLabel, ProfileBuilder, StrIdx};
use crate::region_vec::{Memory, RegionVec};
use crate::sample::{LabelValue, StrId};
use crate::serialize::Serializer;
use crate::session::{Activity, Session};
use crate::trace::TraceLabelStyle;
use crate::wire::{self, RecordFrame};

/// The next profile's sequence number. Per process, not per session: exporters name profiles
/// after it (`<service>-<pid>-<stamp>-<seq>`), so a profiler stopped and started again in the
/// same process must not number from 0 again. A forked
/// child starts again from 0 (reset by the fork child handler: it has its own pid).
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

/// Called from the fork child handler: a plain atomic store.
pub(crate) fn reset_sequence_in_child() {
    NEXT_SEQ.store(0, Ordering::Relaxed);
}

/// Maps process-wide string ids to this profile's string indexes; rebuilt every profile.
/// In fork-local memory, like the profile it indexes.
struct IdCache {
    slots: RegionVec<StrIdx>,
}

const UNSEEN: StrIdx = StrIdx::MAX;

impl IdCache {
    fn get(&mut self, id: StrId, b: &mut ProfileBuilder) -> StrIdx {
        let i = id.as_u32() as usize;
        if let Some(&v) = self.slots.get(i) {
            if v != UNSEEN {
                return v;
            }
        }
        let name = intern::resolve(id);
        let idx = match name {
            Some(s) => b.intern(s),
            None => b.intern(&format!("[unknown string id {i}]")),
        };
        // Not cached if the cache cannot grow: the id is resolved again next time.
        if i < (1 << 24)
            && (self.slots.len() > i
                || self
                    .slots
                    .extend_with(i + 1 - self.slots.len(), UNSEEN)
                    .is_ok())
        {
            self.slots[i] = idx;
        }
        idx
    }
}

/// Reused between samples so ingesting allocates nothing in steady state.
struct Scratch {
    frames: RegionVec<ProfFrame>,
    labels: RegionVec<ProfLabel>,
    values: RegionVec<i64>,
}

impl Scratch {
    fn new(mem: Memory) -> Self {
        Scratch {
            frames: RegionVec::new(mem),
            labels: RegionVec::new(mem),
            values: RegionVec::new(mem),
        }
    }
}

fn ingest(bytes: &[u8], b: &mut ProfileBuilder, ids: &mut IdCache, sc: &mut Scratch) {
    for rec in wire::records(bytes) {
        // A sample this profile has seen before costs one hash of its bytes and one probe.
        let key = rec.key();
        if b.add_if_seen(&key, rec.values(), rec.timestamp_ns) {
            continue;
        }
        sc.frames.clear();
        sc.labels.clear();
        sc.values.clear();
        // A scratch push that cannot get memory marks the sample, which `add` then drops.
        let mut lost = false;
        for v in rec.values() {
            lost |= sc.values.push(v).is_err();
        }
        for f in rec.frames() {
            let pf = match f {
                RecordFrame::Text(f) => ProfFrame {
                    function: b.intern_bytes(f.function),
                    file: b.intern_bytes(f.file),
                    line: f.line,
                },
                RecordFrame::Ids(f) => ProfFrame {
                    function: ids.get(f.function, b),
                    file: ids.get(f.file, b),
                    line: f.line,
                },
            };
            lost |= sc.frames.push(pf).is_err();
        }
        if rec.omitted > 0 {
            let name = b.intern(&format!("[{} frames omitted]", rec.omitted));
            lost |= sc
                .frames
                .push(ProfFrame {
                    function: name,
                    file: 0,
                    line: 0,
                })
                .is_err();
        }
        for l in rec.labels() {
            let key = b.intern(l.key);
            let label = match l.value {
                LabelValue::Str(s) => ProfLabel {
                    key,
                    str: b.intern_bytes(s),
                    num: 0,
                    num_unit: 0,
                },
                LabelValue::Num(n) => ProfLabel {
                    key,
                    str: 0,
                    num: n,
                    num_unit: 0,
                },
                LabelValue::NumUnit(n, u) => ProfLabel {
                    key,
                    str: 0,
                    num: n,
                    num_unit: b.intern(u),
                },
            };
            lost |= sc.labels.push(label).is_err();
        }
        if lost {
            b.mark_failed();
        }
        b.add_remembering(
            &key,
            sc.frames.iter().copied(),
            &sc.values,
            &sc.labels,
            rec.timestamp_ns,
        );
    }
}

fn new_builder(cfg: &Config, pid: u32, mem: Memory, start: SystemTime) -> ProfileBuilder {
    let mut b = ProfileBuilder::new_in(&cfg.sample_types, cfg.sampling.as_ref(), start, mem);
    b.set_default_sample_type(cfg.default_sample_type);
    add_comments(&mut b, cfg, pid);
    b
}

/// Empties the builder for the next profile; its tables keep their (faulted-in) memory.
fn reset_builder(b: &mut ProfileBuilder, cfg: &Config, pid: u32) {
    b.reset(SystemTime::now());
    add_comments(b, cfg, pid);
}

fn add_comments(b: &mut ProfileBuilder, cfg: &Config, pid: u32) {
    b.add_comment(&format!("service:{}", cfg.service));
    b.add_comment(&format!("pid:{pid}"));
    for (k, v) in &cfg.tags {
        b.add_comment(&format!("{k}:{v}"));
    }
}

pub(crate) fn run(s: Arc<Session>) {
    crate::pause_points::pause_point(crate::pause_points::Point::WorkerBeforeItsLoop);
    s.check_in();
    let cfg = s.config().clone();
    let compression = cfg.exporter.compression();
    let (first_start, mut period_start) = (SystemTime::now(), Instant::now());
    // Nothing is built before there is work (the first drain, a wake, a stop): a forked child
    // that exits at once then ends a thread that only slept, and its parent's fork + wait is
    // not charged for profile tables nobody fills.
    s.set_collector_activity(Activity::Idle);
    s.collector_sleep(cfg.drain_interval.min(cfg.period));
    let format = cfg.exporter.format();
    // Asked once per collector: a forked child's collector asks again, on its own thread.
    let host = match format {
        ProfileFormat::Otlp => crate::export::host_name(),
        ProfileFormat::Pprof => None,
    };
    let resource = crate::otlp::Resource {
        service: &cfg.service,
        pid: s.pid(),
        host: host.as_deref(),
        tags: &cfg.tags,
    };
    // Everything the profile being built is made of lives in fork-local memory (see
    // region_vec.rs): children neither copy it nor make the collector fault it back.
    let mem = Memory::fork_local(s.buffer().platform());
    let mut serializer = Serializer::new_in(mem);
    let mut builder = new_builder(&cfg, s.pid(), mem, first_start);
    let mut ids = IdCache {
        slots: RegionVec::new(mem),
    };
    let mut scratch = Scratch::new(mem);
    let mut flush_seen = 0;
    let trace_style = cfg.exporter.trace_labels();
    // Endpoints registered in the period before the one being written: a request's last
    // samples may be drained after its root span ended in the previous period.
    let mut earlier_endpoints = HashMap::new();
    loop {
        s.begin_collector_turn();
        let stopping = s.is_stopping();
        if stopping {
            // This is the last drain: records that come after it must not be counted stored.
            s.buffer().close();
        }
        let flush = s.flush_requested();
        s.set_collector_activity(Activity::Draining);
        s.buffer()
            .drain(|bytes| ingest(bytes, &mut builder, &mut ids, &mut scratch));
        s.counters()
            .samples_dropped_no_memory
            .fetch_add(builder.take_dropped(), Ordering::Relaxed);
        let due = period_start.elapsed() >= cfg.period;
        if due || flush != flush_seen || stopping {
            // Encoded in place, then reset (below): one builder whose memory is reused.
            let finished = &builder;
            period_start = Instant::now();
            ids.slots.clear();
            let new_flush = flush != flush_seen;
            flush_seen = flush;
            let profile = if finished.is_empty() {
                // Nothing to write; still tell flush waiters, in queue order. Only for a flush
                // requested since the last profile: a placeholder on every empty rotation
                // would, behind a slow exporter, push real profiles out of the bounded queue.
                new_flush.then(|| EncodedProfile {
                    bytes: Vec::new(),
                    compression,
                    format,
                    start: finished.start,
                    end: SystemTime::now(),
                    seq: u64::MAX,
                    pid: s.pid(),
                    samples: 0,
                    endpoint_counts: Vec::new(),
                    flush_ticket: flush,
                })
            } else {
                s.set_collector_activity(Activity::Encoding);
                // Counts wait for a profile that is sent: an empty period keeps them.
                let Period { spans, counts } = s.endpoints().take();
                if trace_style != TraceLabelStyle::AsRecorded
                    || !spans.is_empty()
                    || !earlier_endpoints.is_empty()
                {
                    let endpoint_of = |id: u64| {
                        spans
                            .get(&id)
                            .or_else(|| earlier_endpoints.get(&id))
                            .cloned()
                    };
                    finish_trace_labels(&mut builder, trace_style, &endpoint_of);
                }
                earlier_endpoints = spans;
                let finished = &builder;
                let end = SystemTime::now();
                let mut bytes = Vec::new();
                // Encoded and compressed in 64 KiB steps: the uncompressed pprof never exists
                // whole, so the peak is the tables plus the compressed bytes.
                let compressed = serializer.encode_as(
                    format,
                    finished,
                    end,
                    Some(&resource),
                    compression,
                    &mut bytes,
                );
                let (start, samples) = (finished.start, finished.sample_count());
                match compressed {
                    Ok(()) => Some(EncodedProfile {
                        bytes,
                        compression,
                        format,
                        start,
                        end,
                        seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
                        pid: s.pid(),
                        samples,
                        endpoint_counts: counts,
                        flush_ticket: flush,
                    }),
                    Err(_) => {
                        s.counters().encode_failures.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            };
            reset_builder(&mut builder, &cfg, s.pid());
            if let Some(p) = profile {
                s.set_collector_activity(Activity::Enqueueing);
                s.push_profile(p);
            }
        }
        if stopping {
            break;
        }
        s.set_collector_activity(Activity::Idle);
        let until_rotation = cfg.period.saturating_sub(period_start.elapsed());
        s.collector_sleep(cfg.drain_interval.min(until_rotation));
    }
    s.set_collector_activity(Activity::Finished);
    s.collector_finished();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::{t0, types};
    use crate::sample::{Frame, FrameIds, Label, Sample};
    use proptest::prelude::*;
    use std::time::Duration;

    /// One generated sample, drawn from small pools so that stacks, labels and whole samples
    /// repeat (what the cache is for) while some stay unique.
    #[derive(Debug, Clone)]
    struct Gen {
        ids: bool,
        frames: Vec<(u8, u8, u8)>,
        values: Vec<i64>,
        labels: Vec<(u8, u8, i64)>,
        ts: Option<i64>,
    }

    fn gen_sample() -> impl Strategy<Value = Gen> {
        let frames = proptest::collection::vec((0u8..12, 0u8..3, 0u8..3), 0..10);
        (
            any::<bool>(),
            prop_oneof![
                // Few distinct stacks, seen again and again.
                (0usize..6).prop_map(|s| (0..s + 2)
                    .map(|d| ((s * 3 + d) as u8 % 12, (d % 3) as u8, 1))
                    .collect()),
                frames,
            ],
            proptest::collection::vec(-5i64..5, 0..4),
            proptest::collection::vec((0u8..3, 0u8..4, -2i64..2), 0..3),
            proptest::option::of(0i64..1000),
        )
            .prop_map(|(ids, frames, values, labels, ts)| Gen {
                ids,
                frames,
                values,
                labels,
                ts,
            })
    }

    const FUNCTIONS: [&str; 12] = [
        "main",
        "run",
        "serve",
        "handle",
        "parse",
        "render",
        "query",
        "fetch",
        "encode",
        "log",
        "{closure}",
        "App\\Kernel::boot",
    ];
    const FILES: [&str; 3] = ["index.php", "src/App.php", ""];
    const LABEL_KEYS: [&str; 3] = ["thread id", "span id", "thread name"];
    const LABEL_STRS: [&str; 4] = ["worker-0", "worker-1", "", "main"];

    /// The wire records a profiler with `max_depth` would have buffered for `samples`.
    fn records(samples: &[Gen], max_depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for g in samples {
            let text: Vec<Frame<'_>> = g
                .frames
                .iter()
                .map(|&(f, file, line)| {
                    Frame::new(FUNCTIONS[f as usize], FILES[file as usize], line as u32)
                })
                .collect();
            let ids: Vec<FrameIds> = g
                .frames
                .iter()
                .map(|&(f, file, line)| FrameIds {
                    function: intern::intern(FUNCTIONS[f as usize].as_bytes()).unwrap(),
                    file: intern::intern(FILES[file as usize].as_bytes()).unwrap(),
                    line: line as u32,
                })
                .collect();
            let labels: Vec<Label<'_>> = g
                .labels
                .iter()
                .map(|&(k, s, n)| match (k, n) {
                    (2, _) => Label::str(LABEL_KEYS[2], LABEL_STRS[s as usize]),
                    (_, 0) => Label::num_unit(LABEL_KEYS[k as usize], s as i64, "bytes"),
                    _ => Label::num(LABEL_KEYS[k as usize], n * s as i64),
                })
                .collect();
            let sample = if g.ids {
                Sample::with_ids(&ids, &g.values)
            } else {
                Sample::new(&text, &g.values)
            };
            let mut sample = sample.labels(&labels);
            if let Some(ts) = g.ts {
                sample = sample.timestamp_ns(ts);
            }
            out.extend(wire::encode_to_vec(&sample, max_depth));
        }
        out
    }

    /// Ingests `batches` (one drained buffer each) into `b` and returns its pprof.
    fn ingested(b: &mut ProfileBuilder, batches: &[Vec<u8>]) -> Vec<u8> {
        let mem = Memory::inherited();
        let mut ids = IdCache {
            slots: RegionVec::new(mem),
        };
        let mut sc = Scratch::new(mem);
        for bytes in batches {
            ingest(bytes, b, &mut ids, &mut sc);
        }
        assert_eq!(b.take_dropped(), 0);
        let mut out = Vec::new();
        b.encode(t0() + Duration::from_secs(60), &mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// The repeated-sample cache changes nothing in the output: the same pprof, byte for
        /// byte, as resolving every sample in full, for text and interned frames, label sets,
        /// truncated stacks and timestamps, across drains and a profile rotation.
        #[test]
        fn the_repeated_sample_cache_gives_the_same_profile_as_full_resolution(
            first in proptest::collection::vec(gen_sample(), 0..80),
            second in proptest::collection::vec(gen_sample(), 0..80),
            max_depth in 2usize..8,
            split in 0usize..80,
        ) {
            let batches = |s: &[Gen]| -> Vec<Vec<u8>> {
                let at = split.min(s.len());
                vec![records(&s[..at], max_depth), records(&s[at..], max_depth)]
            };
            let mut cached = ProfileBuilder::new(&types(), None, t0());
            let mut full = ProfileBuilder::new(&types(), None, t0()).without_sample_cache();
            prop_assert_eq!(ingested(&mut cached, &batches(&first)), ingested(&mut full, &batches(&first)));
            cached.reset(t0());
            full.reset(t0());
            prop_assert_eq!(ingested(&mut cached, &batches(&second)), ingested(&mut full, &batches(&second)));
        }
    }

    #[test]
    fn a_sample_seen_twice_is_found_by_its_bytes_and_a_unique_one_is_not_kept() {
        let stack = |i: u8| Gen {
            ids: false,
            frames: vec![(i % 12, 0, i), (1, 1, 1)],
            values: vec![1, 10],
            labels: vec![(2, 0, 0)],
            ts: None,
        };
        let mut b = ProfileBuilder::new(&types(), None, t0());
        let repeated = records(&[stack(0)], 64);
        let rec = wire::records(&repeated).next().unwrap();
        let _ = ingested(&mut b, std::slice::from_ref(&repeated));
        assert!(
            !b.add_if_seen(&rec.key(), rec.values(), None),
            "first sight is not remembered"
        );
        let _ = ingested(&mut b, std::slice::from_ref(&repeated));
        assert!(
            b.add_if_seen(&rec.key(), rec.values(), None),
            "second sight is"
        );
        assert_eq!(b.samples_remembered(), 1);
        let unique: Vec<Gen> = (1..200).map(stack).collect();
        let _ = ingested(&mut b, &[records(&unique, 64)]);
        let p = crate::pprof::decode(&{
            let mut out = Vec::new();
            b.encode(t0(), &mut out);
            out
        })
        .unwrap();
        assert_eq!(p.samples.len(), 200);
        let total: i64 = p.samples.iter().map(|s| s.values[0]).sum();
        assert_eq!(total, 3 + 199);
        assert_eq!(
            b.samples_remembered(),
            1,
            "a stack seen once is not remembered"
        );
    }
}
