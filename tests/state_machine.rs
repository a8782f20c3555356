//! A reference model of the profiler, and the real one driven through the same operations
//! (proptest-state-machine): start with a random configuration, record from this thread and
//! others, flush, stop, start again, change the child policy, switch the endpoint up / down /
//! hung, and fork for real (the child checks its own profiles and reports through a pipe).
//!
//! What the model predicts, per process:
//! - every sample recorded while running is in exactly one exported profile; which way it
//!   went (delivered, or handed to an endpoint that failed or hung) is decided by the endpoint
//!   mode while it was recorded, because every mode change first waits until the exporter has
//!   handled everything recorded before it (leaving `Hung` goes through `Down`, so a hung
//!   export and everything queued behind it count as failed);
//! - a forked child exports only samples it recorded after the fork, under its own pid;
//! - `flush_sync` and `stop` succeed, time out (hung endpoint with something to send) or
//!   report "not running", and never block past their deadline;
//! - counters match: samples recorded / ignored, profiles written / failed, none dropped.
//!
//! Drops (the buffer full) are legitimate and cannot be predicted: the test attributes each
//! one to its sample from the counters it moved, and such samples must then be nowhere.
//!
//! Cases: 64 by default (each up to 19 operations; about 10 s on 2 cores). `PROPTEST_CASES`
//! raises it for soak runs:
//! `PROPTEST_CASES=2000 cargo test --test state_machine profiler_matches_model -- --nocapture`
//! (prints what the run covered). A failure shrinks to a short operation list, printed as the
//! transitions' `Debug`, and its seed is saved in `proptest-regressions/state_machine.txt`,
//! replayed first by every later run.

#[path = "state_machine/endpoint.rs"]
mod endpoint;
#[path = "state_machine/regressions.rs"]
mod regressions;
#[path = "state_machine/samples.rs"]
mod samples;
mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use forkprof::{ChildPolicy, Compression, Config, Error, ExporterConfig, Profiler, Stats};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, FileFailurePersistence};
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

use endpoint::{Endpoint, Mode, Outcome};
use samples::{Drops, Totals};
use support::{TempDir, Watchdog};

const SERVICE: &str = "sm";
/// How long `flush_sync` / `stop` may take when the model says they must succeed.
const GENEROUS: Duration = Duration::from_secs(10);
/// The deadline given to calls the model says must time out (hung endpoint).
const SHORT: Duration = Duration::from_millis(100);
/// No operation may take longer than this (a hang detector, not a speed target).
const OP_BOUND: Duration = Duration::from_secs(30);
/// Deep enough that no legitimate run of a case fills the export queue.
const MAX_PENDING: usize = 64;

// ---------------------------------------------------------------- the operations

#[derive(Clone, Debug)]
pub struct StartCfg {
    types: usize,
    /// `None`: the default minute (profiles close only on flush and stop).
    period_ms: Option<u64>,
    max_depth: usize,
    buffer_kib: usize,
    policy: ChildPolicy,
    compression: Compression,
}

impl StartCfg {
    fn default_for_child() -> StartCfg {
        StartCfg {
            types: 2,
            period_ms: None,
            max_depth: 8,
            buffer_kib: 256,
            policy: ChildPolicy::Restart,
            compression: Compression::Gzip,
        }
    }

    fn build(&self, ep: &Arc<Endpoint>) -> Config {
        let names = [
            ("samples", "count"),
            ("wall-time", "nanoseconds"),
            ("alloc-space", "bytes"),
        ];
        let mut b = Config::builder(SERVICE)
            .tag("env:state-machine")
            .max_stack_depth(self.max_depth)
            .buffer_capacity(self.buffer_kib << 10)
            .max_pending_profiles(MAX_PENDING)
            .child_policy(self.policy)
            .exporter(ExporterConfig::Custom(ep.factory(self.compression)));
        for (n, u) in &names[..self.types] {
            b = b.sample_type(*n, *u);
        }
        if let Some(ms) = self.period_ms {
            b = b.period(Duration::from_millis(ms));
        }
        b.build().expect("the test's configurations are valid")
    }
}

#[derive(Clone, Debug)]
pub enum Recorder {
    /// The test thread.
    Caller,
    /// One spawned thread, joined.
    Spawned,
    /// Several threads at once.
    Concurrent(usize),
}

#[derive(Clone, Debug)]
pub enum Op {
    Start(StartCfg),
    Record {
        n: usize,
        seed: u32,
        on: Recorder,
    },
    /// `flush_sync`.
    FlushSync,
    /// `flush`, not waiting.
    Flush,
    /// A real fork; the child records `n` samples and checks its own output. `wrapper`:
    /// through `forkprof::fork::fork` (eager restart) rather than `libc::fork` (lazy).
    Fork {
        n: usize,
        seed: u32,
        wrapper: bool,
        /// Two other threads keep recording while the fork happens.
        busy: bool,
        /// The child forks a grandchild halfway through, which checks itself the same way.
        nested: bool,
        /// Two threads fork at the same moment (concurrent prepare handlers); each child
        /// checks itself.
        twins: bool,
    },
    /// A fork no handler sees (a raw `clone` system call, like `_Fork`): the child must find
    /// profiling off and record nothing; the parent carries on untouched.
    UnobservedFork {
        n: usize,
    },
    /// Stop while two other threads keep recording (some samples land before the last
    /// drain, the rest are ignored; none may be counted and lost).
    StopWhileRecording,
    /// Wait, without flushing, until period rotation has exported everything recorded.
    AwaitRotation,
    /// Stop, then start again with the same configuration but this child policy.
    ChangePolicy(ChildPolicy),
    Stop,
    Endpoint(Mode),
}

// ---------------------------------------------------------------- the reference model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Ok,
    NotRunning,
    Timeout,
    /// Nothing to call: no profiler was ever started.
    NoHandle,
}

#[derive(Clone, Debug)]
pub struct SessionModel {
    cfg: StartCfg,
    /// Samples recorded since the last profile was closed.
    pending: bool,
    /// Samples recorded since the endpoint went hung: an export is (or will be) stuck.
    hung_pending: bool,
    /// Profile counts are predictable (no period rotation, no unawaited flush).
    exact: bool,
    written: u64,
    failed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    /// The parent's profiler restarts in the child (policy `Restart`).
    Inherited,
    /// The child's calls are counted no-ops (policy `Disable`).
    Disabled,
    /// The parent's profiler is stopped (or never started): the child starts its own.
    Fresh { stopped_handle: bool },
}

#[derive(Clone, Debug)]
pub struct ChildPlan {
    kind: ChildKind,
    mode: Mode,
    cfg: StartCfg,
    ignored_before: u64,
}

#[derive(Clone, Debug)]
pub struct Model {
    mode: Mode,
    handle: bool,
    running: bool,
    session: Option<SessionModel>,
    /// Samples the current handle ignored (recorded while stopped).
    ignored: u64,
    delivered: Totals,
    failed: Totals,
    timeline_delivered: u64,
    timeline_failed: u64,
    /// A stop timed out: that session's threads are still finishing on their own.
    abandoned: bool,
    /// Everything recorded so far has been handed to the exporter.
    settled: bool,
    /// The outcome the last operation must have.
    expect: Expect,
    child: Option<ChildPlan>,
}

impl Model {
    fn close_profile(&mut self) {
        let mode = self.mode;
        if let Some(s) = self.session.as_mut().filter(|s| s.pending) {
            s.pending = false;
            if mode == Mode::Up {
                s.written += 1;
            } else {
                s.failed += 1;
            }
        }
    }

    fn stop(&mut self) {
        self.expect = if !self.handle {
            Expect::NoHandle
        } else if !self.running {
            Expect::NotRunning
        } else if self.mode == Mode::Hung && self.session.as_ref().is_some_and(|s| s.hung_pending) {
            self.abandoned = true;
            Expect::Timeout
        } else {
            Expect::Ok
        };
        if self.running {
            self.close_profile();
        }
        self.running = false;
    }

    fn start(&mut self, cfg: StartCfg) {
        self.handle = true;
        self.running = true;
        self.ignored = 0;
        self.session = Some(SessionModel {
            exact: cfg.period_ms.is_none(),
            cfg,
            pending: false,
            hung_pending: false,
            written: 0,
            failed: 0,
        });
    }
}

pub struct Reference;

fn start_cfg() -> impl Strategy<Value = StartCfg> {
    (
        1..=3usize,
        prop_oneof![2 => Just(None), 1 => (5..40u64).prop_map(Some)],
        2..=8usize,
        prop::sample::select(vec![64usize, 256, 8192]),
        prop_oneof![3 => Just(ChildPolicy::Restart), 1 => Just(ChildPolicy::Disable)],
        prop_oneof![
            3 => Just(Compression::Gzip),
            1 => Just(Compression::Zstd),
            1 => Just(Compression::None)
        ],
    )
        .prop_map(
            |(types, period_ms, max_depth, buffer_kib, policy, compression)| StartCfg {
                types,
                period_ms,
                max_depth,
                buffer_kib,
                policy,
                compression,
            },
        )
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![3 => Just(Mode::Up), 2 => Just(Mode::Down), 2 => Just(Mode::Hung)]
}

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model {
            mode: Mode::Up,
            handle: false,
            running: false,
            session: None,
            ignored: 0,
            delivered: Totals::new(),
            failed: Totals::new(),
            timeline_delivered: 0,
            timeline_failed: 0,
            abandoned: false,
            settled: true,
            expect: Expect::Ok,
            child: None,
        })
        .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        let record = (
            // Now and then a burst big enough to overflow a small buffer (drops are counted).
            prop_oneof![12 => 1..=40usize, 1 => 200..=2000usize],
            any::<u32>(),
            prop_oneof![
                3 => Just(Recorder::Caller),
                1 => Just(Recorder::Spawned),
                1 => (2..=3usize).prop_map(Recorder::Concurrent)
            ],
        )
            .prop_map(|(n, seed, on)| Op::Record { n, seed, on });
        let fork = (
            1..=30usize,
            any::<u32>(),
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.3),
        )
            .prop_map(|(n, seed, wrapper, busy, nested, twins)| Op::Fork {
                n,
                seed,
                wrapper,
                busy,
                nested,
                twins,
            });
        let policy = prop_oneof![Just(ChildPolicy::Restart), Just(ChildPolicy::Disable)];
        let rotating = state.running
            && state.mode != Mode::Hung
            && state
                .session
                .as_ref()
                .is_some_and(|x| x.cfg.period_ms.is_some());
        if rotating {
            prop_oneof![
                8 => record,
                2 => Just(Op::AwaitRotation),
                2 => Just(Op::FlushSync),
                1 => Just(Op::Flush),
                2 => fork,
                1 => (1..=20usize).prop_map(|n| Op::UnobservedFork { n }),
                1 => policy.prop_map(Op::ChangePolicy),
                2 => Just(Op::Stop),
                1 => Just(Op::StopWhileRecording),
                3 => mode().prop_map(Op::Endpoint),
            ]
            .boxed()
        } else if state.running {
            prop_oneof![
                8 => record,
                2 => Just(Op::FlushSync),
                1 => Just(Op::Flush),
                2 => fork,
                1 => (1..=20usize).prop_map(|n| Op::UnobservedFork { n }),
                1 => policy.prop_map(Op::ChangePolicy),
                2 => Just(Op::Stop),
                1 => Just(Op::StopWhileRecording),
                3 => mode().prop_map(Op::Endpoint),
            ]
            .boxed()
        } else {
            prop_oneof![
                6 => start_cfg().prop_map(Op::Start),
                1 => record,
                1 => Just(Op::FlushSync),
                1 => fork,
                1 => (1..=20usize).prop_map(|n| Op::UnobservedFork { n }),
                1 => Just(Op::Stop),
                1 => mode().prop_map(Op::Endpoint),
            ]
            .boxed()
        }
    }

    fn preconditions(state: &Model, op: &Op) -> bool {
        match op {
            Op::Start(_) => !state.running,
            Op::ChangePolicy(_) => state.running,
            Op::StopWhileRecording => state.running && state.mode != Mode::Hung,
            Op::AwaitRotation => {
                state.running
                    && state.mode != Mode::Hung
                    && state
                        .session
                        .as_ref()
                        .is_some_and(|x| x.cfg.period_ms.is_some())
            }
            _ => true,
        }
    }

    fn apply(mut s: Model, op: &Op) -> Model {
        s.expect = Expect::Ok;
        s.child = None;
        match op {
            Op::Start(cfg) => {
                s.start(cfg.clone());
                s.settled = false;
            }
            Op::Record { n, seed, .. } => {
                if s.running {
                    let sess = s.session.as_mut().expect("running has a session");
                    let (types, depth) = (sess.cfg.types, sess.cfg.max_depth);
                    sess.pending = true;
                    if s.mode == Mode::Hung {
                        sess.hung_pending = true;
                    }
                    let (totals, timeline) = if s.mode == Mode::Up {
                        (&mut s.delivered, &mut s.timeline_delivered)
                    } else {
                        (&mut s.failed, &mut s.timeline_failed)
                    };
                    for spec in samples::specs(*seed, *n) {
                        samples::add(
                            totals,
                            samples::key(&spec, types, depth),
                            &spec.values[..types],
                        );
                        *timeline += spec.timestamp_ns.is_some() as u64;
                    }
                    s.settled = false;
                } else if s.handle {
                    s.ignored += *n as u64;
                } else {
                    s.expect = Expect::NoHandle;
                }
            }
            Op::FlushSync => {
                if !s.running {
                    s.expect = if s.handle {
                        Expect::NotRunning
                    } else {
                        Expect::NoHandle
                    };
                } else if s.mode == Mode::Hung && s.session.as_ref().is_some_and(|x| x.hung_pending)
                {
                    s.expect = Expect::Timeout;
                    s.close_profile();
                } else {
                    s.close_profile();
                    s.settled = s.mode != Mode::Hung;
                }
            }
            Op::Flush => {
                if !s.running {
                    s.expect = if s.handle {
                        Expect::NotRunning
                    } else {
                        Expect::NoHandle
                    };
                } else if let Some(sess) = s.session.as_mut() {
                    sess.exact = false;
                }
            }
            Op::Fork { busy, .. } => {
                if *busy && s.running {
                    // The busy threads' samples are the parent's (counted by the test).
                    let hung = s.mode == Mode::Hung;
                    if let Some(sess) = s.session.as_mut() {
                        sess.pending = true;
                        sess.hung_pending |= hung;
                    }
                    s.settled = false;
                }
                let kind = match (&s.session, s.running) {
                    (Some(sess), true) if sess.cfg.policy == ChildPolicy::Restart => {
                        ChildKind::Inherited
                    }
                    (Some(_), true) => ChildKind::Disabled,
                    _ => ChildKind::Fresh {
                        stopped_handle: s.handle,
                    },
                };
                let cfg = match (&s.session, kind) {
                    (Some(sess), _) => sess.cfg.clone(),
                    (None, _) => StartCfg::default_for_child(),
                };
                s.child = Some(ChildPlan {
                    kind,
                    mode: s.mode,
                    cfg,
                    ignored_before: s.ignored,
                });
            }
            Op::AwaitRotation => {
                s.close_profile();
                s.settled = true;
            }
            Op::ChangePolicy(policy) => {
                s.stop();
                let stop_expect = s.expect;
                let mut cfg = s.session.as_ref().expect("running").cfg.clone();
                cfg.policy = *policy;
                s.start(cfg);
                s.expect = stop_expect;
                s.settled = false;
            }
            Op::UnobservedFork { .. } => {}
            Op::StopWhileRecording => {
                if let Some(sess) = s.session.as_mut() {
                    sess.pending = true;
                }
                s.stop();
                s.settled = s.expect == Expect::Ok;
            }
            Op::Stop => {
                s.stop();
                s.settled = s.expect == Expect::Ok && s.mode != Mode::Hung;
            }
            Op::Endpoint(m) => {
                // Everything recorded so far is exported under the old mode first (a hung
                // endpoint is released as down), then the new mode applies.
                if s.running {
                    s.close_profile();
                    if let Some(sess) = s.session.as_mut() {
                        sess.hung_pending = false;
                    }
                }
                s.abandoned = false;
                s.mode = *m;
                s.settled = true;
            }
        }
        s
    }
}

// ---------------------------------------------------------------- the system under test

pub struct Sut {
    dir: TempDir,
    ep: Arc<Endpoint>,
    profiler: Option<Profiler>,
    /// Samples the current session accepted (what `samples_recorded` must say).
    accepted: u64,
    /// Dropped samples, by the way they would have gone.
    dropped_delivered: Drops,
    dropped_failed: Drops,
    /// Drops during concurrent recording, which cannot be attributed to a sample.
    unattributed: u64,
    /// Children forked, with the totals their delivered profiles must hold.
    children: Vec<(u32, Totals)>,
    /// Samples of the background recorders (an unpredictable number, counted from the
    /// counters), by the way they must go, and those ignored (after stop).
    extra_delivered: Totals,
    extra_failed: Totals,
    extra_ignored: u64,
}

impl Drop for Sut {
    fn drop(&mut self) {
        // A failed case must not leave hung threads polling behind it.
        self.ep.set_mode(Mode::Down);
        if let Some(p) = self.profiler.take() {
            let _ = p.stop(Duration::from_secs(1));
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let end = Instant::now() + limit;
    while !cond() {
        if Instant::now() > end {
            return Err(format!("{what}: not true within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// A call given `limit` returns about then at the latest (the slack only absorbs scheduling
/// on a loaded machine: this catches a call that ignores its deadline, it times nothing).
fn within_deadline(what: &str, started: Instant, limit: Duration) {
    let took = started.elapsed();
    assert!(
        took < limit + Duration::from_secs(5),
        "{what}({limit:?}) returned after {took:?}: it must not block past its deadline"
    );
}

fn kind_of(r: &Result<impl Sized, Error>) -> Expect {
    match r {
        Ok(_) => Expect::Ok,
        Err(Error::NotRunning { .. }) => Expect::NotRunning,
        Err(Error::Timeout { .. }) => Expect::Timeout,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn totals_of(entries: &[endpoint::Entry], delivered: bool, pid: u32) -> (Totals, u64) {
    let mut t = Totals::new();
    let mut timeline = 0;
    for e in entries.iter().filter(|e| e.pid == pid) {
        if matches!(e.outcome, Outcome::Delivered(_)) == delivered {
            samples::merge(&mut t, &e.totals);
            timeline += e.timeline;
        }
    }
    (t, timeline)
}

fn check_stats_counts(stats: &Stats, sess: &SessionModel) {
    assert_eq!(
        stats.profiles_dropped, 0,
        "no profile may be dropped: {stats:?}"
    );
    if sess.exact {
        assert_eq!(
            (stats.profiles_written, stats.profiles_failed),
            (sess.written, sess.failed),
            "profiles (written, failed) by the model's count: {stats:?}"
        );
    }
}

impl Sut {
    fn new() -> Sut {
        let dir = TempDir::new("state-machine");
        let ep = Endpoint::new(dir.path(), SERVICE);
        Sut {
            dir,
            ep,
            profiler: None,
            accepted: 0,
            dropped_delivered: Drops::default(),
            dropped_failed: Drops::default(),
            unattributed: 0,
            children: Vec::new(),
            extra_delivered: Totals::new(),
            extra_failed: Totals::new(),
            extra_ignored: 0,
        }
    }

    fn start(&mut self, cfg: &StartCfg) {
        let p = Profiler::start(cfg.build(&self.ep)).expect("start");
        self.profiler = Some(p);
        self.accepted = 0;
        self.extra_ignored = 0;
    }

    fn record(&mut self, model: &Model, n: usize, seed: u32, on: &Recorder) {
        let Some(p) = self.profiler.clone() else {
            return;
        };
        let specs = samples::specs(seed, n);
        let cfg = &model.session.as_ref().expect("a handle has a session").cfg;
        let (types, depth) = (cfg.types, cfg.max_depth);
        let before = p.stats();
        let drops = match on {
            Recorder::Caller => samples::record_all(&p, &specs, types, depth).unwrap(),
            Recorder::Spawned => std::thread::scope(|sc| {
                sc.spawn(|| samples::record_all(&p, &specs, types, depth))
                    .join()
                    .expect("recording thread")
            })
            .unwrap(),
            Recorder::Concurrent(k) => {
                std::thread::scope(|sc| {
                    let threads: Vec<_> = specs
                        .chunks(specs.len().div_ceil(*k))
                        .map(|chunk| {
                            let p = &p;
                            sc.spawn(move || samples::record_unchecked(p, chunk, types))
                        })
                        .collect();
                    for t in threads {
                        t.join().expect("recording thread").unwrap();
                    }
                });
                let after = p.stats();
                let stored = after.samples_recorded - before.samples_recorded;
                let lost = (after.samples_dropped - before.samples_dropped)
                    + (after.samples_too_large - before.samples_too_large);
                let ignored = after.samples_ignored - before.samples_ignored;
                assert_eq!(
                    stored + lost + ignored,
                    n as u64,
                    "every sample counted exactly once (recorded {stored}, dropped {lost}, ignored {ignored})"
                );
                self.unattributed += lost;
                Drops::default()
            }
        };
        if model.running {
            let after = p.stats();
            coverage::bump(2, after.samples_recorded - self.accepted);
            coverage::bump(3, drops.count);
            self.accepted = after.samples_recorded;
            let into = if model.mode == Mode::Up {
                &mut self.dropped_delivered
            } else {
                &mut self.dropped_failed
            };
            samples::merge(&mut into.totals, &drops.totals);
            into.timeline += drops.timeline;
            into.count += drops.count;
        }
    }

    fn flush_sync(&mut self, model: &Model) {
        let Some(p) = &self.profiler else {
            assert_eq!(model.expect, Expect::NoHandle);
            return;
        };
        let limit = if model.expect == Expect::Timeout {
            SHORT
        } else {
            GENEROUS
        };
        let t0 = Instant::now();
        let r = p.flush_sync(limit);
        within_deadline("flush_sync", t0, limit);
        assert_eq!(kind_of(&r), model.expect, "flush_sync: {r:?}");
        coverage::bump(
            4,
            r.is_err() as u64 * (model.expect == Expect::Timeout) as u64,
        );
    }

    fn stop(&mut self, model: &Model) {
        let Some(p) = &self.profiler else {
            assert_eq!(model.expect, Expect::NoHandle);
            return;
        };
        let limit = if model.expect == Expect::Timeout {
            SHORT
        } else {
            GENEROUS
        };
        let t0 = Instant::now();
        let r = p.stop(limit);
        within_deadline("stop", t0, limit);
        assert_eq!(kind_of(&r), model.expect, "stop: {r:?}");
        coverage::bump(5, (model.expect == Expect::Timeout) as u64);
        if let Ok(stats) = &r {
            assert_eq!(stats.pid, std::process::id());
            assert_eq!(
                stats.samples_recorded, self.accepted,
                "samples recorded by this session: {stats:?}"
            );
            assert_eq!(stats.samples_ignored, 0, "{stats:?}");
        }
    }

    fn endpoint(&mut self, model: &Model, to: Mode) {
        if self.ep.mode() == Mode::Hung {
            // Release hung exports as failures, and let what is queued behind them fail too.
            self.ep.set_mode(Mode::Down);
        }
        if let Some(p) = self.profiler.as_ref().filter(|_| model.running) {
            p.flush_sync(GENEROUS)
                .expect("before switching the endpoint, everything recorded is exported");
        }
        let running = model.running as usize;
        wait_until(
            "sessions whose stop timed out finish once the endpoint is released",
            GENEROUS,
            || self.ep.live() == running,
        )
        .unwrap();
        self.ep.set_mode(to);
        coverage::bump(6, 1);
    }

    fn check_exported(&self, model: &Model) {
        if let Err(e) = self.exported_matches(model) {
            panic!("{e}");
        }
    }

    /// The store of this process against the model: per key and value column, what was
    /// delivered and what the endpoint refused, plus the dropped samples, is what was recorded.
    fn exported_matches(&self, model: &Model) -> Result<(), String> {
        let me = std::process::id();
        let entries = self.ep.entries();
        let (mut delivered, mut tl_delivered) = totals_of(&entries, true, me);
        let (mut failed, mut tl_failed) = totals_of(&entries, false, me);
        samples::merge(&mut delivered, &self.dropped_delivered.totals);
        samples::merge(&mut failed, &self.dropped_failed.totals);
        tl_delivered += self.dropped_delivered.timeline;
        tl_failed += self.dropped_failed.timeline;
        let mut want_delivered = model.delivered.clone();
        let mut want_failed = model.failed.clone();
        samples::merge(&mut want_delivered, &self.extra_delivered);
        samples::merge(&mut want_failed, &self.extra_failed);
        let model = Model {
            delivered: want_delivered,
            failed: want_failed,
            ..model.clone()
        };
        if self.unattributed > 0 {
            // Concurrent drops: only "nothing exported that was not recorded" can be checked.
            for (got, want) in [(&delivered, &model.delivered), (&failed, &model.failed)] {
                for (k, v) in got {
                    let w = want.get(k).copied().unwrap_or([0; 3]);
                    if !v.iter().zip(w).all(|(a, b)| *a <= b) {
                        return Err(format!("{k}: exported {v:?} but only {w:?} recorded"));
                    }
                }
            }
            return Ok(());
        }
        let d = samples::diff(&model.delivered, &delivered);
        if !d.is_empty() {
            return Err(format!(
                "delivered profiles differ from the model:\n{}",
                d.join("\n")
            ));
        }
        let f = samples::diff(&model.failed, &failed);
        if !f.is_empty() {
            return Err(format!(
                "failed exports differ from the model:\n{}",
                f.join("\n")
            ));
        }
        if (tl_delivered, tl_failed) != (model.timeline_delivered, model.timeline_failed) {
            return Err(format!(
                "timestamped samples (delivered, failed): got {:?}, expected {:?}",
                (tl_delivered, tl_failed),
                (model.timeline_delivered, model.timeline_failed)
            ));
        }
        Ok(())
    }

    /// Runs `f` while two threads record the `race` stack in a loop; then books what they
    /// recorded (by the counters) as the model's mode says, and what was ignored.
    fn while_recording<T>(&mut self, model: &Model, f: impl FnOnce(&Sut) -> T) -> T {
        let Some(p) = self.profiler.clone() else {
            return f(self);
        };
        let types = model.session.as_ref().expect("a handle").cfg.types;
        let before = p.stats();
        let go = std::sync::atomic::AtomicBool::new(true);
        let frames = [
            forkprof::Frame::new("race", "race.rs", 1),
            forkprof::Frame::new("main", "race.rs", 2),
        ];
        let values = [1i64; 3];
        let out = std::thread::scope(|sc| {
            for _ in 0..2 {
                sc.spawn(|| {
                    while go.load(Ordering::Relaxed) {
                        p.record(&forkprof::Sample::new(&frames, &values[..types]))
                            .expect("record");
                    }
                });
            }
            // Let them get going: some samples in (or ignored, when stopped).
            wait_until("background recorders started", GENEROUS, || {
                let s = p.stats();
                s.samples_recorded + s.samples_ignored
                    >= before.samples_recorded + before.samples_ignored + 50
            })
            .unwrap();
            let out = f(self);
            go.store(false, Ordering::Relaxed);
            out
        });
        let after = p.stats();
        let recorded = after.samples_recorded - before.samples_recorded;
        let into = if model.mode == Mode::Up {
            &mut self.extra_delivered
        } else {
            &mut self.extra_failed
        };
        let mut v = [0i64; 3];
        v[..types].fill(recorded as i64);
        samples::add(into, format!("t{types}|race;main|"), &v);
        self.accepted += recorded;
        self.extra_ignored += after.samples_ignored - before.samples_ignored;
        out
    }

    fn unobserved_fork(&mut self, model: &Model, n: usize) {
        let p = self.profiler.clone();
        let types = model.session.as_ref().map_or(1, |x| x.cfg.types);
        let frames = [forkprof::Frame::new("unobserved", "u.rs", 1)];
        let values = [1i64; 3];
        // The child of a raw clone has no atfork handlers run: libc's own locks may be held
        // by threads that are gone, so it calls only allocation-free profiler entry points
        // and reports by exit code.
        let child = || -> i32 {
            let Some(p) = &p else {
                return 0;
            };
            if !forkprof::fork::is_unobserved_child() {
                return 3;
            }
            let before = p.stats().samples_ignored;
            for _ in 0..n {
                if p.record(&forkprof::Sample::new(&frames, &values[..types]))
                    .is_err()
                {
                    return 4;
                }
            }
            if p.is_running() {
                return 5;
            }
            let s = p.stats();
            if s.samples_ignored != before + n as u64 || s.samples_recorded != 0 {
                return 6;
            }
            0
        };
        let Some(pid) = fork_without_handlers() else {
            return; // no such fork on this platform: the operation is a no-op
        };
        assert!(pid >= 0, "clone failed");
        if pid == 0 {
            let code = child();
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(code) };
        }
        let status = child::wait(pid, OP_BOUND);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "unobserved child {pid}: status {status:#x} (3: not detected, 4: record failed, \
             5: still running, 6: counters)"
        );
        assert!(
            child::files_of(self.dir.path(), pid as u32).is_empty(),
            "an unobserved child wrote profiles"
        );
        coverage::bump(19, 1);
    }

    fn stop_while_recording(&mut self, model: &Model) {
        let stats = self.while_recording(model, |sut| {
            sut.profiler
                .as_ref()
                .expect("running")
                .stop(GENEROUS)
                .expect("stop while others record")
        });
        let after = self.profiler.as_ref().expect("handle").stats();
        assert_eq!(
            stats.samples_recorded, after.samples_recorded,
            "no sample may be counted recorded after stop returned: {stats:?} then {after:?}"
        );
        assert_eq!(stats.samples_recorded, self.accepted);
        coverage::bump(16, 1);
    }

    /// `flags`: busy (others record meanwhile), nested (grandchild), twins (two forks at once).
    fn fork(&mut self, model: &Model, n: usize, seed: u32, wrapper: bool, flags: [bool; 3]) {
        let [busy, nested, twins] = flags;
        let plan = model.child.clone().expect("the model plans the child");
        let env = child::Env {
            ep: self.ep.clone(),
            profiler: self.profiler.clone(),
            ignored_base: plan.ignored_before + self.extra_ignored,
            nested,
        };
        let seeds: Vec<u32> = if twins {
            vec![seed, seed.wrapping_add(1)]
        } else {
            vec![seed]
        };
        let pipes: Vec<[libc::c_int; 2]> = seeds.iter().map(|_| child::pipe()).collect();
        let launch = |_: &Sut| -> Vec<libc::pid_t> {
            if !twins {
                let body = || child::main(&env, &plan, n, seeds[0]);
                return vec![fork_and_run_child(body, pipes[0], wrapper)];
            }
            let barrier = std::sync::Barrier::new(seeds.len());
            std::thread::scope(|sc| {
                let forks: Vec<_> = seeds
                    .iter()
                    .zip(&pipes)
                    .map(|(&sd, &fds)| {
                        // Owned copies: in the child, glibc reuses the stacks of the threads
                        // that did not survive the fork (this test thread's among them) for
                        // the threads the child starts, so nothing there may be borrowed.
                        let (env, plan, barrier) = (env.clone(), plan.clone(), &barrier);
                        sc.spawn(move || {
                            barrier.wait();
                            fork_and_run_child(|| child::main(&env, &plan, n, sd), fds, wrapper)
                        })
                    })
                    .collect();
                forks
                    .into_iter()
                    .map(|h| h.join().expect("forking thread"))
                    .collect()
            })
        };
        let pids = if busy {
            self.while_recording(model, launch)
        } else {
            launch(self)
        };
        for fds in &pipes {
            // SAFETY: closing our copy of the write end, so EOF arrives when the child exits.
            unsafe { libc::close(fds[1]) };
        }
        for (&pid, fds) in pids.iter().zip(&pipes) {
            let report = child::read_report(fds[0], OP_BOUND);
            // SAFETY: our read end, done with.
            unsafe { libc::close(fds[0]) };
            let status = child::wait(pid, OP_BOUND);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child {pid} ({plan:?}) failed with status {status:#x}: {report}"
            );
            // The parent's own view of the child's output.
            let (expected, descendants) = child::parse_report(&report);
            let files = child::files_of(self.dir.path(), pid as u32);
            let mut got = Totals::new();
            for (_, prof) in &files {
                samples::merge(&mut got, &samples::profile_totals(prof).0);
            }
            let d = samples::diff(&expected, &got);
            assert!(
                d.is_empty(),
                "child {pid}'s files, read by the parent:\n{}",
                d.join("\n")
            );
            if let Some((path, _)) = files
                .iter()
                .find(|(p, _)| !p.to_string_lossy().ends_with(".zst"))
            {
                if go_checks_left(true) {
                    support::go_pprof_check(path, &[]);
                    coverage::bump(13, 1);
                }
            }
            self.children.push((pid as u32, expected));
            for d in descendants {
                self.children.push((d, Totals::new()));
                coverage::bump(17, 1);
            }
            coverage::bump(
                match plan.kind {
                    ChildKind::Inherited => 7,
                    ChildKind::Disabled => 8,
                    ChildKind::Fresh { .. } => 9,
                },
                1,
            );
        }
        coverage::bump(10, wrapper as u64);
        coverage::bump(15, busy as u64);
        coverage::bump(18, twins as u64);
    }
}

/// Forks; the child runs `body`, writes its report into the pipe and `_exit`s right
/// there (it never returns: the caller's stack may hold scoped threads that do not exist in
/// the child). Returns the child's pid in the parent.
fn fork_and_run_child(
    body: impl FnOnce() -> Result<String, String>,
    fds: [libc::c_int; 2],
    wrapper: bool,
) -> libc::pid_t {
    let pid = if wrapper {
        forkprof::fork::fork().expect("forkprof::fork::fork")
    } else {
        // SAFETY: the child only runs `child::main` and `_exit`s.
        unsafe { libc::fork() }
    };
    assert!(pid >= 0, "fork failed");
    if pid != 0 {
        return pid;
    }
    // SAFETY: closing our copy of the read end.
    unsafe { libc::close(fds[0]) };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    let (code, msg) = match result {
        Ok(Ok(report)) => (0, report),
        Ok(Err(e)) => (1, e),
        Err(_) => (2, "the child panicked".to_string()),
    };
    let bytes = msg.as_bytes();
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: writing from a live buffer to our pipe.
        let w = unsafe { libc::write(fds[1], bytes[off..].as_ptr().cast(), bytes.len() - off) };
        if w <= 0 {
            break;
        }
        off += w as usize;
    }
    // SAFETY: ends the child without running the parent's atexit handlers or destructors
    // (which belong to the parent).
    unsafe { libc::_exit(code) }
}

/// What a forked child does; it reports through a pipe and its exit status, never panics
/// across the fork boundary (errors are strings).
mod child {
    use super::*;
    use std::path::{Path, PathBuf};

    /// What a child inherits from the process that forked it, as the test sees it.
    #[derive(Clone)]
    pub struct Env {
        pub ep: Arc<Endpoint>,
        pub profiler: Option<Profiler>,
        /// The handle's ignored count at the fork.
        pub ignored_base: u64,
        /// Fork a grandchild halfway through.
        pub nested: bool,
    }

    pub fn pipe() -> [libc::c_int; 2] {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        fds
    }

    /// The child's side. Returns its report: the totals its delivered profiles hold, and the
    /// pids of the grandchildren it forked.
    pub fn main(sut: &Env, plan: &ChildPlan, n: usize, seed: u32) -> Result<String, String> {
        let me = std::process::id();
        let specs = samples::specs(seed ^ 0x5eed, n);
        let cfg = &plan.cfg;
        let err = |what: &str| format!("child {me} ({plan:?}): {what}");
        if !sut.ep.entries().is_empty() {
            return Err(err("the endpoint store must start empty in a child"));
        }
        // Some grandchildren are forked before this child touched the profiler at all (so
        // the inherited profiler has not restarted here yet), the others halfway through.
        let early = sut.nested && seed % 2 == 1 && plan.kind == ChildKind::Inherited;
        let mut descendants = Vec::new();
        let profiler = match plan.kind {
            ChildKind::Inherited => {
                let p = sut.profiler.clone().ok_or_else(|| err("no handle"))?;
                if early {
                    descendants.push(grandchild(sut, plan, &p, n, seed).map_err(|e| err(&e))?);
                }
                p
            }
            ChildKind::Disabled => {
                let p = sut.profiler.as_ref().ok_or_else(|| err("no handle"))?;
                let inherited = p.stats().samples_ignored;
                if inherited != sut.ignored_base {
                    return Err(err(&format!(
                        "the handle's ignored count carries over into the child: {inherited}"
                    )));
                }
                samples::record_all(p, &specs, cfg.types, cfg.max_depth)?;
                let s = p.stats();
                if p.is_running() || s.samples_ignored != inherited + n as u64 {
                    return Err(err(&format!("Disable: must ignore every sample: {s:?}")));
                }
                if s.samples_recorded != 0 || s.pid != me {
                    return Err(err(&format!("Disable: counters are the child's: {s:?}")));
                }
                if !matches!(p.stop(SHORT), Err(Error::NotRunning { .. })) {
                    return Err(err("Disable: stop must say not running"));
                }
                return finish(sut, &Totals::new(), me, &[]);
            }
            ChildKind::Fresh { stopped_handle } => {
                if stopped_handle {
                    let p = sut.profiler.as_ref().ok_or_else(|| err("no handle"))?;
                    // (Background recorders in the parent add an unknown number before.)
                    let inherited = p.stats().samples_ignored;
                    samples::record_all(p, &specs, cfg.types, cfg.max_depth)?;
                    let s = p.stats();
                    if p.is_running() || s.samples_ignored != inherited + n as u64 {
                        return Err(err(&format!("stopped handle must ignore: {s:?}")));
                    }
                }
                Profiler::start(cfg.build(&sut.ep)).map_err(|e| err(&format!("start: {e}")))?
            }
        };
        // Half from this thread, half from a thread the child spawns.
        let (a, b) = specs.split_at(n / 2);
        let mut drops = samples::record_all(&profiler, a, cfg.types, cfg.max_depth)?;
        if sut.nested && !early {
            descendants.push(grandchild(sut, plan, &profiler, n, seed).map_err(|e| err(&e))?);
        }
        // A raw thread, not std's: a std thread's start-up can wait for ever in a forked
        // child on a std lock that a parent thread held at the fork.
        let more = {
            let out = Arc::new(Mutex::new(None));
            let (p, b, types, depth, o) = (
                profiler.clone(),
                b.to_vec(),
                cfg.types,
                cfg.max_depth,
                out.clone(),
            );
            forkprof::thread::spawn(c"sm-recorder", move || {
                let r = samples::record_all(&p, &b, types, depth);
                *o.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            })
            .map_err(|e| err(&format!("recording thread: {e}")))?
            .join();
            let r = out.lock().unwrap_or_else(|e| e.into_inner()).take();
            r.ok_or_else(|| err("recording thread panicked"))?
        }?;
        samples::merge(&mut drops.totals, &more.totals);
        drops.count += more.count;
        let s = profiler.stats();
        if !profiler.is_running() || s.pid != me || s.samples_recorded + drops.count != n as u64 {
            return Err(err(&format!(
                "after recording {n} ({} dropped): {s:?}",
                drops.count
            )));
        }
        let mut expected = Totals::new();
        for spec in &specs {
            samples::add(
                &mut expected,
                samples::key(spec, cfg.types, cfg.max_depth),
                &spec.values[..cfg.types],
            );
        }
        for (k, v) in &drops.totals {
            let slot = expected.entry(k.clone()).or_insert([0; 3]);
            for (e, d) in slot.iter_mut().zip(v) {
                *e -= d;
            }
        }
        let stats = match plan.mode {
            Mode::Up | Mode::Down => profiler
                .stop(GENEROUS)
                .map_err(|e| err(&format!("stop: {e}")))?,
            Mode::Hung => {
                match profiler.stop(SHORT) {
                    Err(Error::Timeout { .. }) => {}
                    other => {
                        return Err(err(&format!(
                            "stop with a hung endpoint must time out: {other:?}"
                        )))
                    }
                }
                sut.ep.set_mode(Mode::Down);
                wait_until("the child's hung session finishes", GENEROUS, || {
                    sut.ep.live() == 0
                })
                .map_err(|e| err(&e))?;
                profiler.stats()
            }
        };
        let up = plan.mode == Mode::Up;
        if stats.profiles_dropped != 0
            || (up && (stats.profiles_written == 0 || stats.profiles_failed != 0))
            || (!up && (stats.profiles_written != 0 || stats.profiles_failed == 0))
        {
            return Err(err(&format!("export counters after stop: {stats:?}")));
        }
        let entries = sut.ep.entries();
        if let Some(e) = entries.iter().find(|e| !e.errors.is_empty() || e.pid != me) {
            return Err(err(&format!("bad export: {e:?}")));
        }
        if entries.iter().map(|e| e.seq).min() != Some(0) {
            return Err(err("a child's profiles are numbered from 0"));
        }
        let (got, _) = totals_of(&entries, up, me);
        let d = samples::diff(&expected, &got);
        if !d.is_empty() {
            return Err(err(&format!(
                "the child's exports hold other samples than its own:\n{}",
                d.join("\n")
            )));
        }
        let none = Totals::new();
        finish(sut, if up { &expected } else { &none }, me, &descendants)
    }

    /// Forks a grandchild from a child whose profiler runs: it inherits that profiler (or is
    /// disabled by its policy) and checks itself as its parent does.
    fn grandchild(
        env: &Env,
        plan: &ChildPlan,
        profiler: &Profiler,
        n: usize,
        seed: u32,
    ) -> Result<u32, String> {
        let gplan = ChildPlan {
            kind: if plan.cfg.policy == ChildPolicy::Restart {
                ChildKind::Inherited
            } else {
                ChildKind::Disabled
            },
            mode: plan.mode,
            cfg: plan.cfg.clone(),
            ignored_before: 0,
        };
        let genv = Env {
            ep: env.ep.clone(),
            profiler: Some(profiler.clone()),
            ignored_base: profiler.stats().samples_ignored,
            nested: false,
        };
        let fds = pipe();
        let pid = fork_and_run_child(|| main(&genv, &gplan, n, seed.rotate_left(7)), fds, false);
        // SAFETY: our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let report = read_report(fds[0], OP_BOUND);
        // SAFETY: our read end, done with.
        unsafe { libc::close(fds[0]) };
        let status = wait(pid, OP_BOUND);
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            return Err(format!(
                "grandchild {pid} ({gplan:?}) failed with status {status:#x}: {report}"
            ));
        }
        Ok(pid as u32)
    }

    /// Checks the child's files against `delivered` and renders the report.
    fn finish(
        sut: &Env,
        delivered: &Totals,
        me: u32,
        descendants: &[u32],
    ) -> Result<String, String> {
        let mut got = Totals::new();
        for (path, prof) in files_of(sut.ep.dir.as_path(), me) {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !name.starts_with(&format!("{SERVICE}-{me}-")) {
                return Err(format!("unexpected file {name}"));
            }
            samples::merge(&mut got, &samples::profile_totals(&prof).0);
        }
        let d = samples::diff(delivered, &got);
        if !d.is_empty() {
            return Err(format!("child {me}'s files:\n{}", d.join("\n")));
        }
        let mut report = String::new();
        for (k, v) in samples::normalized(delivered) {
            report.push_str(&format!("{k}\t{}\t{}\t{}\n", v[0], v[1], v[2]));
        }
        for d in descendants {
            report.push_str(&format!("#pid\t{d}\n"));
        }
        Ok(report)
    }

    pub fn parse_report(report: &str) -> (Totals, Vec<u32>) {
        let mut t = Totals::new();
        let mut pids = Vec::new();
        for line in report.lines() {
            if let Some(pid) = line.strip_prefix("#pid\t") {
                pids.push(pid.parse().expect("pid"));
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 4, "report line {line:?}");
            let v = [f[1], f[2], f[3]].map(|x| x.parse::<i64>().expect("number"));
            t.insert(f[0].to_string(), v);
        }
        (t, pids)
    }

    /// Profiles in `dir` written for process `pid`, decoded (the file name says the pid).
    pub fn files_of(dir: &Path, pid: u32) -> Vec<(PathBuf, forkprof::pprof::Profile)> {
        let prefix = format!("{SERVICE}-{pid}-");
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(dir) else {
            return out;
        };
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).unwrap_or_default();
            let prof = forkprof::compress::decompress_any(&bytes, 1 << 30)
                .ok()
                .and_then(|raw| forkprof::pprof::decode(&raw).ok());
            match prof {
                Some(prof) => out.push((p, prof)),
                None => out.push((p, forkprof::pprof::Profile::default())),
            }
        }
        out
    }

    /// Reads the child's report until EOF, failing past `limit`.
    pub fn read_report(fd: libc::c_int, limit: Duration) -> String {
        let end = Instant::now() + limit;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "DEADLOCK? the child did not report within {limit:?}"
            );
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as libc::c_int) };
            if r <= 0 {
                continue;
            }
            // SAFETY: reading into a live buffer.
            let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..got as usize]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Waits for the child; kills it and fails past `limit`.
    pub fn wait(pid: libc::pid_t, limit: Duration) -> libc::c_int {
        let end = Instant::now() + limit;
        loop {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                return status;
            }
            assert!(r == 0, "waitpid({pid}) failed");
            if Instant::now() > end {
                // SAFETY: our own child, stuck.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("DEADLOCK? child {pid} did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// What the run exercised, printed after the last case (so a report can quote it and a
/// change that silently stops covering something shows up).
mod coverage {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub const NAMES: [&str; 20] = [
        "cases",
        "ops",
        "samples recorded",
        "samples dropped",
        "flush_sync timed out (hung)",
        "stop timed out (hung)",
        "endpoint switches",
        "forks: child restarted parent's profiler",
        "forks: child disabled",
        "forks: child started its own",
        "forks through forkprof::fork::fork",
        "profiles delivered",
        "profiles failed / hung",
        "go tool pprof checks",
        "rotations awaited",
        "forks while other threads record",
        "stops while other threads record",
        "grandchildren",
        "twin forks (two threads at once)",
        "unobserved forks (raw clone)",
    ];
    static COUNTS: [AtomicU64; 20] = [const { AtomicU64::new(0) }; 20];

    pub fn bump(i: usize, by: u64) {
        COUNTS[i].fetch_add(by, Ordering::Relaxed);
    }

    pub fn summary() -> String {
        NAMES
            .iter()
            .zip(&COUNTS)
            .map(|(n, c)| format!("{n}: {}", c.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `go tool pprof` is slow to start: a few parent files and a few children's per run.
fn go_checks_left(child: bool) -> bool {
    static PARENT: AtomicU32 = AtomicU32::new(4);
    static CHILD: AtomicU32 = AtomicU32::new(2);
    let left = if child { &CHILD } else { &PARENT };
    left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

pub struct ProfilerTest;

impl StateMachineTest for ProfilerTest {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_: &Model) -> Sut {
        watchdog();
        Sut::new()
    }

    fn apply(mut sut: Sut, model: &Model, op: Op) -> Sut {
        let started = Instant::now();
        coverage::bump(1, 1);
        match &op {
            Op::Start(cfg) => sut.start(cfg),
            Op::Record { n, seed, on } => sut.record(model, *n, *seed, on),
            Op::FlushSync => sut.flush_sync(model),
            Op::Flush => {
                if let Some(p) = &sut.profiler {
                    assert_eq!(kind_of(&p.flush()), model.expect, "flush");
                }
            }
            Op::Fork {
                n,
                seed,
                wrapper,
                busy,
                nested,
                twins,
            } => sut.fork(model, *n, *seed, *wrapper, [*busy, *nested, *twins]),
            Op::StopWhileRecording => sut.stop_while_recording(model),
            Op::UnobservedFork { n } => sut.unobserved_fork(model, *n),
            Op::ChangePolicy(_) => {
                sut.stop(model);
                let cfg = model.session.as_ref().expect("restarted").cfg.clone();
                sut.start(&cfg);
            }
            Op::Stop => sut.stop(model),
            Op::Endpoint(m) => sut.endpoint(model, *m),
            Op::AwaitRotation => {
                let mut last = String::new();
                let r = wait_until("period rotation exports everything", GENEROUS, || match sut
                    .exported_matches(model)
                {
                    Ok(()) => true,
                    Err(e) => {
                        last = e;
                        false
                    }
                });
                if let Err(e) = r {
                    panic!("{e}: {last}");
                }
                coverage::bump(14, 1);
            }
        }
        let took = started.elapsed();
        assert!(took < OP_BOUND, "{op:?} took {took:?}: something blocked");
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        let me = std::process::id();
        if let Some(p) = &sut.profiler {
            let s = p.stats();
            assert_eq!(s.pid, me);
            assert_eq!(
                s.samples_ignored,
                model.ignored + sut.extra_ignored,
                "ignored samples: {s:?}"
            );
            if model.running {
                assert_eq!(s.samples_recorded, sut.accepted, "recorded samples: {s:?}");
            }
            assert_eq!(p.is_running(), model.running);
            if model.settled {
                if let Some(sess) = &model.session {
                    check_stats_counts(&s, sess);
                }
            }
        }
        if !model.abandoned {
            assert_eq!(
                sut.ep.live(),
                model.running as usize,
                "one live exporter per running session"
            );
        }
        for e in sut.ep.entries() {
            assert!(e.errors.is_empty(), "bad export: {e:?}");
            assert_eq!(e.process, me);
        }
        if model.settled {
            sut.check_exported(model);
        }
    }

    fn teardown(sut: Sut, model: Model) {
        if sut.ep.mode() == Mode::Hung {
            sut.ep.set_mode(Mode::Down);
        }
        let mut model = model;
        if model.running {
            let p = sut.profiler.as_ref().expect("running");
            let stats = p.stop(GENEROUS).expect("final stop");
            assert_eq!(stats.samples_recorded, sut.accepted);
            model.mode = if model.mode == Mode::Up {
                Mode::Up
            } else {
                Mode::Down
            };
            model.close_profile();
            if let Some(sess) = &model.session {
                check_stats_counts(&stats, sess);
            }
        }
        wait_until("every session of the case has finished", GENEROUS, || {
            sut.ep.live() == 0
        })
        .unwrap();
        sut.check_exported(&model);

        // The files: exactly the delivered profiles, each a valid pprof, named by pid and seq.
        let me = std::process::id();
        let entries = sut.ep.entries();
        let mut delivered_paths: Vec<_> = entries
            .iter()
            .filter_map(|e| match &e.outcome {
                Outcome::Delivered(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        delivered_paths.sort();
        let mine = child::files_of(sut.dir.path(), me);
        let file_paths: Vec<_> = mine.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            file_paths, delivered_paths,
            "files written = profiles delivered"
        );
        let mut seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        seqs.sort();
        seqs.dedup();
        assert_eq!(
            seqs.len(),
            entries.len(),
            "sequence numbers repeat within a process"
        );
        for (path, _) in support::read_profiles(sut.dir.path()) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let pid: u32 = name
                .split('-')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("file name {name}"));
            assert!(
                pid == me || sut.children.iter().any(|(c, _)| *c == pid),
                "{name}: written by a process the test did not fork"
            );
        }
        if let Some((path, _)) = mine
            .iter()
            .find(|(p, _)| !p.to_string_lossy().ends_with(".zst"))
        {
            if go_checks_left(false) {
                support::go_pprof_check(path, &[]);
                coverage::bump(13, 1);
            }
        }
        let delivered = entries
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Delivered(_)))
            .count() as u64;
        coverage::bump(11, delivered);
        coverage::bump(12, entries.len() as u64 - delivered);
        coverage::bump(0, 1);
        if coverage::summary().starts_with(&format!("cases: {},", cases())) {
            eprintln!("state machine coverage: {}", coverage::summary());
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// One watchdog over the whole run, sized by the case count.
fn watchdog() {
    static DOG: OnceLock<Watchdog> = OnceLock::new();
    DOG.get_or_init(|| {
        let limit = Duration::from_secs(120 + 10 * u64::from(cases()));
        Watchdog::new("state machine", limit)
    });
}

prop_state_machine! {
    #![proptest_config(PropConfig {
        cases: cases(),
        max_shrink_iters: 512,
        max_shrink_time: 120_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/state_machine.txt"
        ))),
        .. PropConfig::default()
    })]

    #[test]
    fn profiler_matches_model(sequential 1..20 => ProfilerTest);
}

/// `fork()` that runs no atfork handler: on Linux a raw `clone(SIGCHLD)` syscall. The child
/// must only run code that takes no lock and `_exit`. `None` where there is no such call.
#[cfg(target_os = "linux")]
fn fork_without_handlers() -> Option<libc::pid_t> {
    // SAFETY: `clone(SIGCHLD)` with no new stack is fork without the atfork handlers; the
    // caller's child runs lock-free code and `_exit`s.
    Some(
        unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) }
            as libc::pid_t,
    )
}

#[cfg(not(target_os = "linux"))]
fn fork_without_handlers() -> Option<libc::pid_t> {
    None
}
