//! What forkprof tells the host: export failures, dropped profiles, children that do not
//! profile. Messages are queued without a lock by whichever thread notices (usually the
//! uploader) and handed to the host **on a host thread**: on its next `record`, `flush` or
//! `stop`, or when it calls [`drain`] (`Profiler::drain_messages`, `forkprof_drain_log`).
//!
//! # Why not deliver from the uploader thread
//! A host logger nearly always takes a lock of its own (stderr's, a file's, a runtime's). If a
//! forkprof thread were inside the host's logger when another thread forks, the child would
//! inherit that lock held by a thread it does not have, and the child's own logging would hang
//! for ever. forkprof threads therefore only write into a fixed array of slots with atomic
//! compare-and-swap ([`post`]); they never call the host. The host's logger runs only on the
//! host's own threads, inside a forkprof call the host made, where a fork landing on another
//! thread is the same case as the host logging from that thread itself.
//!
//! Rules the delivery keeps:
//! - never from an atfork handler, never inside a forked child's restart, and never while
//!   forkprof holds a lock a `record` needs: delivery holds no lock at all, only a pid-tagged
//!   "someone of this process is delivering" word, so a fork landing mid-delivery leaves the
//!   child free to deliver its own messages;
//! - each message belongs to the process that posted it: a child never delivers what its
//!   parent queued (the parent does), and slots a vanished parent thread was writing are
//!   reclaimed by the child;
//! - `record` never delivers: it may run in a signal handler, where the host's logger (its
//!   locks, its allocations) must not run. Delivery happens on `flush`, `flush_sync`, `stop`,
//!   on `stats` unless the host chose [`Delivery::DrainOnly`] (a host that wants its logger
//!   called only from its own loop, as PHP can at request end), and on [`drain`];
//! - a callback that calls back into forkprof (`record`, `drain`) does not recurse: the
//!   nested call delivers nothing.
//!
//! # Rate limit
//! At most one message per [`Kind`] per [`set_rate_limit`] interval (60 s by default), so a
//! dead agent cannot flood the host's log; the next message of that kind says how many were
//! suppressed. A full queue drops the newest message and the next delivered one says so.
//!
//! # Where messages go
//! Rust hosts: the `log` crate facade, target `forkprof` (no logger configured: silent, and
//! nothing is even queued). C hosts: the callback set with [`set_sink`]
//! (`forkprof_set_log_callback`). Secrets (API keys, passwords, tokens) are never in a
//! message: exporters scrub them from every reason they give.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

/// How serious a message is. Numbered like the `log` crate's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    fn from_u8(v: u8) -> Level {
        match v {
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            _ => Level::Debug,
        }
    }

    fn to_log(self) -> log::Level {
        match self {
            Level::Error => log::Level::Error,
            Level::Warn => log::Level::Warn,
            Level::Info => log::Level::Info,
            Level::Debug => log::Level::Debug,
        }
    }
}

/// What a message is about; each kind is rate-limited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// An upload attempt failed and will be retried: debug level, info when the server asked
    /// for the wait (429 or 503 with `Retry-After`).
    ExportRetry = 0,
    /// The exporter gave up on a profile: endpoint, status, the server's answer, attempts.
    ExportFailed = 1,
    /// A profile was dropped before export: the export queue was full.
    ProfileDropped = 2,
    /// A profile was refused before sending: larger than the destination accepts.
    ProfileTooLarge = 3,
    /// A forked child does not profile (its policy, or a fork nobody observed).
    ChildDisabled = 4,
    /// A forked child could not start its own profiler threads.
    RestartFailed = 5,
}

const KINDS: usize = 6;

impl Kind {
    /// A short stable name, first in every message.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ExportRetry => "export retry",
            Kind::ExportFailed => "export failed",
            Kind::ProfileDropped => "profile dropped",
            Kind::ProfileTooLarge => "profile too large",
            Kind::ChildDisabled => "child profiling disabled",
            Kind::RestartFailed => "restart failed",
        }
    }
    fn from_u8(v: u8) -> Kind {
        match v {
            0 => Kind::ExportRetry,
            1 => Kind::ExportFailed,
            2 => Kind::ProfileDropped,
            3 => Kind::ProfileTooLarge,
            4 => Kind::ChildDisabled,
            _ => Kind::RestartFailed,
        }
    }
}

/// One delivered message.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub level: Level,
    pub kind: Kind,
    /// `forkprof: <kind>: <details>`, at most [`MAX_MESSAGE_BYTES`] bytes of UTF-8.
    pub text: &'a str,
}

/// Longest message text; longer ones are cut (at a character boundary) and end with `…`.
pub const MAX_MESSAGE_BYTES: usize = 480;
/// Messages waiting for the host at most; beyond this the newest is dropped and counted.
pub const QUEUE_SLOTS: usize = 32;
/// Default interval of the per-kind rate limit.
pub const DEFAULT_RATE_LIMIT: Duration = Duration::from_secs(60);

/// When pending messages are handed to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Delivery {
    /// On the host's next `flush`, `flush_sync`, `stop` or `stats` (and on [`drain`]). Never
    /// on `record`, which stays async-signal-safe.
    OnCalls = 0,
    /// Only when the host calls [`drain`] (and on `flush`, `flush_sync`, `stop`): `stats`
    /// does not call the host's logger either.
    DrainOnly = 1,
}

// ---- the slots ----

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const READY: u64 = 2;
const READING: u64 = 3;

/// `(pid << 8) | state`: who owns a slot is part of the same word as its state, so a child
/// can tell a slot a vanished parent thread was writing from one its own threads are writing.
fn word(pid: u32, state: u64) -> u64 {
    (u64::from(pid) << 8) | state
}
fn state_of(w: u64) -> u64 {
    w & 0xff
}
fn pid_of(w: u64) -> u32 {
    (w >> 8) as u32
}

struct Slot {
    word: AtomicU64,
    seq: AtomicU64,
    level: AtomicU8,
    kind: AtomicU8,
    len: AtomicU32,
    text: std::cell::UnsafeCell<[u8; MAX_MESSAGE_BYTES]>,
}

// SAFETY: `text` is written only by the thread that moved `word` to WRITING and read only by
// the thread that moved it from READY to READING; the Release/Acquire on `word` orders both.
unsafe impl Sync for Slot {}

impl Slot {
    const fn new() -> Slot {
        Slot {
            word: AtomicU64::new(EMPTY),
            seq: AtomicU64::new(0),
            level: AtomicU8::new(0),
            kind: AtomicU8::new(0),
            len: AtomicU32::new(0),
            text: std::cell::UnsafeCell::new([0; MAX_MESSAGE_BYTES]),
        }
    }
}

static SLOTS: [Slot; QUEUE_SLOTS] = [const { Slot::new() }; QUEUE_SLOTS];
/// Order of posting, so delivery keeps it.
static SEQ: AtomicU64 = AtomicU64::new(1);
/// Set after a slot becomes READY; cleared by the deliverer before it scans. The only thing
/// `record` reads.
static PENDING: AtomicU8 = AtomicU8::new(0);
/// Messages lost to a full queue since the last delivered one, and the pid they belong to.
static OVERFLOW: AtomicU64 = AtomicU64::new(0);
/// The pid of the process one of whose threads is delivering, 0 when none.
static DELIVERING: AtomicU32 = AtomicU32::new(0);
static DELIVERY: AtomicU8 = AtomicU8::new(Delivery::OnCalls as u8);
/// Set by the exit flush: nothing is delivered any more in this process.
static MUTED: AtomicU8 = AtomicU8::new(0);

// ---- rate limit ----

static RATE_LIMIT_NS: AtomicU64 = AtomicU64::new(DEFAULT_RATE_LIMIT.as_nanos() as u64);
/// Per kind: the monotonic time before which another message of that kind is suppressed.
static NEXT_ALLOWED: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];
static SUPPRESSED: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];
/// The process the rate-limit state describes: a child starts with a clean slate.
static LIMIT_PID: AtomicU32 = AtomicU32::new(0);

// ---- where messages go ----

type SinkFn = dyn Fn(&Message<'_>) + Send + Sync;
struct SinkBox {
    f: Box<SinkFn>,
    max_level: Level,
}
/// Null: the `log` facade. Otherwise a leaked `SinkBox` (replaced ones are leaked too, since
/// another thread may be inside them).
static SINK: AtomicPtr<SinkBox> = AtomicPtr::new(std::ptr::null_mut());

/// Counters of the message machinery itself (process-wide).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageStats {
    /// Messages handed to the host.
    pub delivered: u64,
    /// Messages not queued because their kind was rate-limited.
    pub suppressed: u64,
    /// Messages lost because the queue was full.
    pub overflowed: u64,
}

static DELIVERED_TOTAL: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED_TOTAL: AtomicU64 = AtomicU64::new(0);
static OVERFLOW_TOTAL: AtomicU64 = AtomicU64::new(0);

pub fn stats() -> MessageStats {
    MessageStats {
        delivered: DELIVERED_TOTAL.load(Ordering::Relaxed),
        suppressed: SUPPRESSED_TOTAL.load(Ordering::Relaxed),
        overflowed: OVERFLOW_TOTAL.load(Ordering::Relaxed),
    }
}

fn getpid() -> u32 {
    std::process::id()
}

/// A monotonic clock without std's `Instant` set-up: `clock_gettime` takes no lock.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Sends messages to `sink` instead of the `log` facade, for those at `max_level` or more
/// serious. `None` goes back to the `log` facade. Called rarely (at set-up): the previous sink
/// is leaked, not freed, because another thread may be delivering to it.
pub fn set_sink(sink: Option<(Box<SinkFn>, Level)>) {
    let new = match sink {
        Some((f, max_level)) => Box::into_raw(Box::new(SinkBox { f, max_level })),
        None => std::ptr::null_mut(),
    };
    SINK.store(new, Ordering::Release);
}

/// Interval of the per-kind rate limit; zero turns it off.
pub fn set_rate_limit(interval: Duration) {
    RATE_LIMIT_NS.store(
        interval.as_nanos().min(u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
    for n in &NEXT_ALLOWED {
        n.store(0, Ordering::Relaxed);
    }
}

pub fn set_delivery(d: Delivery) {
    DELIVERY.store(d as u8, Ordering::Relaxed);
}

/// Whether a message of `level` would go anywhere: the sink's level, or the `log` facade's
/// global maximum (an atomic load: no host code runs).
pub fn wants(level: Level) -> bool {
    let sink = SINK.load(Ordering::Acquire);
    if sink.is_null() {
        level.to_log() <= log::max_level()
    } else {
        // SAFETY: sinks are leaked, never freed: the pointer stays valid.
        level <= unsafe { &*sink }.max_level
    }
}

/// Writes into a fixed buffer, cutting at a character boundary.
struct Cut<'a> {
    buf: &'a mut [u8; MAX_MESSAGE_BYTES],
    len: usize,
    cut: bool,
}

impl fmt::Write for Cut<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        // Keep 3 bytes for the ellipsis.
        let room = MAX_MESSAGE_BYTES - 3 - self.len;
        if s.len() <= room {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.buf[self.len..self.len + end].copy_from_slice(&s.as_bytes()[..end]);
        self.len += end;
        let dots = "…".as_bytes();
        self.buf[self.len..self.len + dots.len()].copy_from_slice(dots);
        self.len += dots.len();
        self.cut = true;
        Ok(())
    }
}

/// Checks the rate limit of `kind`: `Some(suppressed since the last one)` when a message may
/// go out now.
fn admit(kind: Kind, me: u32) -> Option<u64> {
    if LIMIT_PID.load(Ordering::Relaxed) != me {
        let prev = LIMIT_PID.swap(me, Ordering::AcqRel);
        if prev != me {
            // A new process (a forked child): the parent's limits and counts are not ours.
            for k in 0..KINDS {
                NEXT_ALLOWED[k].store(0, Ordering::Relaxed);
                SUPPRESSED[k].store(0, Ordering::Relaxed);
            }
            OVERFLOW.store(0, Ordering::Relaxed);
        }
    }
    let k = kind as usize;
    let interval = RATE_LIMIT_NS.load(Ordering::Relaxed);
    if interval == 0 {
        return Some(SUPPRESSED[k].swap(0, Ordering::Relaxed));
    }
    let now = now_ns();
    let next = NEXT_ALLOWED[k].load(Ordering::Relaxed);
    if now < next
        || NEXT_ALLOWED[k]
            .compare_exchange(
                next,
                now.saturating_add(interval),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
    {
        SUPPRESSED[k].fetch_add(1, Ordering::Relaxed);
        SUPPRESSED_TOTAL.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    Some(SUPPRESSED[k].swap(0, Ordering::Relaxed))
}

/// Queues a message for the host. Lock-free and allocation-free (the text is formatted
/// straight into a slot), so it may be called from any forkprof thread, and from a host thread
/// in a child that was forked without anyone's fork hooks. Never calls host code.
pub fn post(kind: Kind, level: Level, args: fmt::Arguments<'_>) {
    if !wants(level) {
        return;
    }
    let me = getpid();
    let Some(suppressed) = admit(kind, me) else {
        return;
    };
    let start = SEQ.load(Ordering::Relaxed) as usize;
    for i in 0..QUEUE_SLOTS {
        let slot = &SLOTS[(start + i) % QUEUE_SLOTS];
        let w = slot.word.load(Ordering::Relaxed);
        if state_of(w) != EMPTY
            || slot
                .word
                .compare_exchange(w, word(me, WRITING), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        // SAFETY: this thread moved the slot to WRITING; nobody else touches `text` until it
        // is READY.
        let buf = unsafe { &mut *slot.text.get() };
        let mut out = Cut {
            buf,
            len: 0,
            cut: false,
        };
        let _ = write!(out, "forkprof: {}: ", kind.name());
        let _ = out.write_fmt(args);
        if suppressed > 0 {
            let _ = write!(
                out,
                " ({suppressed} more like this suppressed since the last one)"
            );
        }
        let lost = OVERFLOW.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = write!(out, " ({lost} messages lost: the message queue was full)");
        }
        slot.len.store(out.len as u32, Ordering::Relaxed);
        slot.level.store(level as u8, Ordering::Relaxed);
        slot.kind.store(kind as u8, Ordering::Relaxed);
        slot.seq
            .store(SEQ.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        slot.word.store(word(me, READY), Ordering::Release);
        PENDING.store(1, Ordering::Release);
        return;
    }
    OVERFLOW.fetch_add(1, Ordering::Relaxed);
    OVERFLOW_TOTAL.fetch_add(1, Ordering::Relaxed);
}

// ---- the messages forkprof posts, one function each so call sites stay one line ----

/// The uploader gave up on `p` (or refused it as too large).
pub(crate) fn export_failed(p: &crate::export::EncodedProfile, f: &crate::export::ExportFailure) {
    if f.too_large {
        post(
            Kind::ProfileTooLarge,
            Level::Warn,
            format_args!("{}; profile {} of pid {} dropped", f.reason, p.seq, p.pid),
        );
    } else {
        post(
            Kind::ExportFailed,
            Level::Warn,
            format_args!(
                "{}; profile {} of pid {} ({} sample{}) dropped",
                f.reason,
                p.seq,
                p.pid,
                p.samples,
                if p.samples == 1 { "" } else { "s" }
            ),
        );
    }
}

/// The export queue was full and its oldest profile went.
pub(crate) fn profile_dropped(queue: usize) {
    post(
        Kind::ProfileDropped,
        Level::Warn,
        format_args!(
            "the export queue was full ({queue} profiles waiting: the exporter is slower than the profiles come); the oldest was dropped"
        ),
    );
}

/// A forked child that will not profile, and why.
pub(crate) fn child_disabled(why: &str) {
    post(
        Kind::ChildDisabled,
        Level::Info,
        format_args!("pid {}: {why}", getpid()),
    );
}

/// A forked child whose profiler could not start.
pub(crate) fn restart_failed(e: &crate::error::Error) {
    post(
        Kind::RestartFailed,
        Level::Error,
        format_args!(
            "pid {}: the forked child's profiler could not start, profiling is off in it: {e}",
            getpid()
        ),
    );
}

/// The hook on `stats`. One relaxed load when nothing is pending.
#[inline]
pub(crate) fn deliver_on_stats() {
    if PENDING.load(Ordering::Relaxed) != 0 {
        deliver_on_stats_slow();
    }
}

#[cold]
fn deliver_on_stats_slow() {
    if DELIVERY.load(Ordering::Relaxed) == Delivery::OnCalls as u8 {
        drain();
    }
}

/// The hook on `flush`, `flush_sync` and `stop`.
#[inline]
pub(crate) fn deliver_on_call() {
    if PENDING.load(Ordering::Relaxed) != 0 {
        drain();
    }
}

/// Stops every delivery (the exit flush: the host's logger may be gone).
pub(crate) fn mute() {
    MUTED.store(1, Ordering::Release);
}

/// Hands every pending message of this process to the host's logger (or sink), oldest first,
/// on the calling thread; returns how many. Returns 0 at once when another thread of this
/// process is delivering, and when called from inside the host's own logger.
pub fn drain() -> usize {
    if MUTED.load(Ordering::Acquire) != 0 {
        return 0;
    }
    let me = getpid();
    // Only one deliverer per process; a word left by a vanished parent thread (a fork that
    // landed mid-delivery) names another pid and is taken over.
    loop {
        let owner = DELIVERING.load(Ordering::Acquire);
        if owner == me {
            return 0;
        }
        if DELIVERING
            .compare_exchange(owner, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            break;
        }
    }
    // Released however this ends (a host logger that panics included).
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            DELIVERING.store(0, Ordering::Release);
        }
    }
    let _release = Release;
    let mut delivered = 0;
    loop {
        PENDING.store(0, Ordering::Release);
        let mut any = false;
        while let Some(n) = take_oldest(me) {
            any = true;
            deliver(&n);
            delivered += 1;
        }
        if !any && PENDING.load(Ordering::Acquire) == 0 {
            break;
        }
    }
    DELIVERED_TOTAL.fetch_add(delivered as u64, Ordering::Relaxed);
    delivered
}

impl crate::Profiler {
    /// Hands the pending messages of this process to the host's logger on the calling thread;
    /// see [`drain`] (messages are process-wide, not per profiler).
    pub fn drain_messages(&self) -> usize {
        drain()
    }
}

/// A message copied out of its slot (the slot is free again before host code runs).
struct Taken {
    level: Level,
    kind: Kind,
    len: usize,
    text: [u8; MAX_MESSAGE_BYTES],
}

/// Frees the parent's slots (READY: the parent delivers them; WRITING/READING: a vanished
/// thread's) and takes this process's oldest READY one.
fn take_oldest(me: u32) -> Option<Taken> {
    let mut best: Option<(usize, u64, u64)> = None;
    for (i, slot) in SLOTS.iter().enumerate() {
        let w = slot.word.load(Ordering::Acquire);
        if state_of(w) == EMPTY {
            continue;
        }
        if pid_of(w) != me {
            let _ =
                slot.word
                    .compare_exchange(w, word(me, EMPTY), Ordering::AcqRel, Ordering::Relaxed);
            continue;
        }
        if state_of(w) == READY {
            let seq = slot.seq.load(Ordering::Relaxed);
            if best.is_none_or(|(_, s, _)| seq < s) {
                best = Some((i, seq, w));
            }
        }
    }
    let (i, _, w) = best?;
    let slot = &SLOTS[i];
    if slot
        .word
        .compare_exchange(w, word(me, READING), Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return None;
    }
    let len = (slot.len.load(Ordering::Relaxed) as usize).min(MAX_MESSAGE_BYTES);
    let mut text = [0u8; MAX_MESSAGE_BYTES];
    // SAFETY: this thread moved the slot from READY to READING; the writer is done with it.
    text[..len].copy_from_slice(unsafe { &(&*slot.text.get())[..len] });
    let taken = Taken {
        level: Level::from_u8(slot.level.load(Ordering::Relaxed)),
        kind: Kind::from_u8(slot.kind.load(Ordering::Relaxed)),
        len,
        text,
    };
    slot.word.store(word(me, EMPTY), Ordering::Release);
    Some(taken)
}

fn deliver(t: &Taken) {
    // The writer only ever cut at character boundaries.
    let text = std::str::from_utf8(&t.text[..t.len]).unwrap_or("forkprof: (unreadable message)");
    let msg = Message {
        level: t.level,
        kind: t.kind,
        text,
    };
    let sink = SINK.load(Ordering::Acquire);
    // A host logger that panics must not turn `record` into a call that panics: the panic
    // stops here (its payload is leaked: dropping it runs host code again).
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if sink.is_null() {
            log::log!(target: "forkprof", msg.level.to_log(), "{}", msg.text);
        } else {
            // SAFETY: sinks are leaked, never freed: the pointer stays valid.
            let sink = unsafe { &*sink };
            if msg.level <= sink.max_level {
                (sink.f)(&msg);
            }
        }
    }));
    if let Err(payload) = outcome {
        std::mem::forget(payload);
    }
}

/// Serialises the unit tests that use the process-wide queue.
#[cfg(test)]
pub(crate) fn test_lock() -> std::sync::MutexGuard<'static, ()> {
    static L: std::sync::Mutex<()> = std::sync::Mutex::new(());
    L.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn capture(level: Level) -> Arc<Mutex<Vec<(Level, Kind, String)>>> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        set_sink(Some((
            Box::new(move |m: &Message<'_>| {
                g.lock()
                    .unwrap()
                    .push((m.level, m.kind, m.text.to_string()))
            }),
            level,
        )));
        drain(); // whatever an earlier test left
        got.lock().unwrap().clear();
        got
    }

    #[test]
    fn messages_arrive_in_order_with_their_kind_and_prefix() {
        let _l = test_lock();
        set_rate_limit(Duration::ZERO);
        let got = capture(Level::Debug);
        post(Kind::ExportFailed, Level::Warn, format_args!("one {}", 1));
        post(Kind::ProfileDropped, Level::Warn, format_args!("two"));
        post(Kind::ExportRetry, Level::Debug, format_args!("three"));
        assert_eq!(drain(), 3);
        let got = got.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (
                    Level::Warn,
                    Kind::ExportFailed,
                    "forkprof: export failed: one 1".into()
                ),
                (
                    Level::Warn,
                    Kind::ProfileDropped,
                    "forkprof: profile dropped: two".into()
                ),
                (
                    Level::Debug,
                    Kind::ExportRetry,
                    "forkprof: export retry: three".into()
                ),
            ]
        );
        assert_eq!(drain(), 0);
        set_rate_limit(DEFAULT_RATE_LIMIT);
    }

    #[test]
    fn levels_below_the_sinks_are_not_queued() {
        let _l = test_lock();
        set_rate_limit(Duration::ZERO);
        let got = capture(Level::Warn);
        post(Kind::ExportRetry, Level::Debug, format_args!("noise"));
        post(Kind::RestartFailed, Level::Error, format_args!("bad"));
        assert_eq!(drain(), 1);
        assert_eq!(got.lock().unwrap()[0].1, Kind::RestartFailed);
        set_rate_limit(DEFAULT_RATE_LIMIT);
    }

    #[test]
    fn one_message_per_kind_per_interval_then_a_suppressed_count() {
        let _l = test_lock();
        let got = capture(Level::Debug);
        set_rate_limit(Duration::from_millis(200));
        for i in 0..5 {
            post(Kind::ExportFailed, Level::Warn, format_args!("n{i}"));
        }
        post(
            Kind::ProfileDropped,
            Level::Warn,
            format_args!("other kind"),
        );
        assert_eq!(drain(), 2, "{:?}", got.lock().unwrap());
        // Wait out the interval on the same clock the limiter reads.
        let until = now_ns() + 250_000_000;
        while now_ns() < until {
            std::thread::yield_now();
        }
        post(Kind::ExportFailed, Level::Warn, format_args!("n5"));
        assert_eq!(drain(), 1);
        let got = got.lock().unwrap().clone();
        assert_eq!(got[0].2, "forkprof: export failed: n0");
        assert_eq!(got[1].1, Kind::ProfileDropped);
        assert_eq!(
            got[2].2,
            "forkprof: export failed: n5 (4 more like this suppressed since the last one)"
        );
        set_rate_limit(DEFAULT_RATE_LIMIT);
    }

    #[test]
    fn a_full_queue_drops_the_newest_and_says_so() {
        let _l = test_lock();
        set_rate_limit(Duration::ZERO);
        let got = capture(Level::Debug);
        let before = stats().overflowed;
        for i in 0..QUEUE_SLOTS + 3 {
            post(Kind::ExportRetry, Level::Debug, format_args!("m{i}"));
        }
        assert_eq!(stats().overflowed - before, 3);
        assert_eq!(drain(), QUEUE_SLOTS);
        post(Kind::ExportFailed, Level::Warn, format_args!("after"));
        assert_eq!(drain(), 1);
        let got = got.lock().unwrap().clone();
        assert_eq!(got[0].2, "forkprof: export retry: m0");
        assert_eq!(
            got.last().unwrap().2,
            "forkprof: export failed: after (3 messages lost: the message queue was full)"
        );
        set_rate_limit(DEFAULT_RATE_LIMIT);
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let _l = test_lock();
        set_rate_limit(Duration::ZERO);
        let got = capture(Level::Debug);
        let long = "é".repeat(400);
        post(Kind::ExportFailed, Level::Warn, format_args!("{long}"));
        assert_eq!(drain(), 1);
        let text = got.lock().unwrap()[0].2.clone();
        assert!(text.len() <= MAX_MESSAGE_BYTES, "{}", text.len());
        assert!(text.ends_with('…'), "{text}");
        set_rate_limit(DEFAULT_RATE_LIMIT);
    }

    #[test]
    fn a_sink_calling_drain_does_not_recurse() {
        let _l = test_lock();
        set_rate_limit(Duration::ZERO);
        let nested = Arc::new(Mutex::new(Vec::new()));
        let n = nested.clone();
        set_sink(Some((
            Box::new(move |_m: &Message<'_>| n.lock().unwrap().push(drain())),
            Level::Debug,
        )));
        drain();
        nested.lock().unwrap().clear();
        post(Kind::ExportFailed, Level::Warn, format_args!("a"));
        post(Kind::ExportFailed, Level::Warn, format_args!("b"));
        assert_eq!(drain(), 2);
        assert_eq!(*nested.lock().unwrap(), vec![0, 0]);
        set_rate_limit(DEFAULT_RATE_LIMIT);
    }

    #[test]
    fn a_sink_that_panics_does_not_stop_delivery() {
        let _l = test_lock();
        set_rate_limit(Duration::ZERO);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        set_sink(Some((
            Box::new(move |m: &Message<'_>| {
                s.lock().unwrap().push(m.text.to_string());
                assert!(!m.text.ends_with("boom"), "the host's logger panics");
            }),
            Level::Debug,
        )));
        drain();
        seen.lock().unwrap().clear();
        post(Kind::ExportFailed, Level::Warn, format_args!("boom"));
        post(Kind::ExportFailed, Level::Warn, format_args!("after"));
        assert_eq!(drain(), 2);
        post(Kind::ExportFailed, Level::Warn, format_args!("again"));
        assert_eq!(drain(), 1, "the deliverer's mark was released");
        assert_eq!(seen.lock().unwrap().len(), 3);
        set_rate_limit(DEFAULT_RATE_LIMIT);
    }

    /// Slots another process left (a parent's pending message, a slot a vanished parent
    /// thread was writing) are freed, never delivered.
    #[test]
    fn slots_of_another_pid_are_reclaimed_not_delivered() {
        let _l = test_lock();
        set_rate_limit(Duration::ZERO);
        let got = capture(Level::Debug);
        let other = getpid().wrapping_add(1);
        SLOTS[0].word.store(word(other, READY), Ordering::Release);
        SLOTS[1].word.store(word(other, WRITING), Ordering::Release);
        PENDING.store(1, Ordering::Release);
        DELIVERING.store(other, Ordering::Release); // a parent thread mid-delivery
        assert_eq!(drain(), 0);
        assert!(got.lock().unwrap().is_empty());
        assert_eq!(state_of(SLOTS[0].word.load(Ordering::Acquire)), EMPTY);
        assert_eq!(state_of(SLOTS[1].word.load(Ordering::Acquire)), EMPTY);
        post(Kind::ExportFailed, Level::Warn, format_args!("mine"));
        assert_eq!(drain(), 1);
        set_rate_limit(DEFAULT_RATE_LIMIT);
    }
}
