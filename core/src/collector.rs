//! The collector thread: drains the sample buffer, aggregates into the current profile, and
//! every period (or on flush / stop) encodes, compresses and queues it for the uploader.
//!
//! Locks it takes, each for a few microseconds: one buffer shard at a time (to swap it out),
//! the string table (only to resolve an interned id it has not seen this profile), the export
//! queue (to push). Encoding and compression run with no lock held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::compress::Compressor;
use crate::config::Config;
use crate::export::EncodedProfile;
use crate::intern;
use crate::profile::{ProfFrame, ProfLabel, ProfileBuilder, StrIdx};
use crate::region_vec::{Memory, RegionVec};
use crate::sample::{LabelValue, StrId};
use crate::session::{Activity, Session};
use crate::wire::{self, RecordFrame};

/// The next profile's sequence number. Per process, not per session: exporters name profiles
/// `<service>-<pid>-<seq>`, so a profiler stopped and started again in the same process must
/// not number from 0 again (the file exporter would overwrite the earlier profiles). A forked
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
        b.add(
            sc.frames.iter().copied(),
            &sc.values,
            &sc.labels,
            rec.timestamp_ns,
        );
    }
}

fn new_builder(cfg: &Config, pid: u32, mem: Memory) -> ProfileBuilder {
    let mut b = ProfileBuilder::new_in(
        &cfg.sample_types,
        cfg.sampling.as_ref(),
        SystemTime::now(),
        mem,
    );
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
    // Everything the profile being built is made of lives in fork-local memory (see
    // region_vec.rs): children neither copy it nor make the collector fault it back.
    let mem = Memory::fork_local(s.buffer().platform());
    let mut compressor = Compressor::new_in(mem);
    let mut builder = new_builder(&cfg, s.pid(), mem);
    let mut period_start = Instant::now();
    let mut ids = IdCache {
        slots: RegionVec::new(mem),
    };
    let mut scratch = Scratch::new(mem);
    let mut flush_seen = 0;
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
                    start: finished.start,
                    end: SystemTime::now(),
                    seq: u64::MAX,
                    pid: s.pid(),
                    samples: 0,
                    flush_ticket: flush,
                })
            } else {
                s.set_collector_activity(Activity::Encoding);
                let end = SystemTime::now();
                let mut bytes = Vec::new();
                // Encoded and compressed in 64 KiB steps: the uncompressed pprof never exists
                // whole, so the peak is the tables plus the compressed bytes.
                let compressed =
                    compressor.encode_compressed(finished, end, compression, &mut bytes);
                let (start, samples) = (finished.start, finished.sample_count());
                match compressed {
                    Ok(()) => Some(EncodedProfile {
                        bytes,
                        compression,
                        start,
                        end,
                        seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
                        pid: s.pid(),
                        samples,
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
