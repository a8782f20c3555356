//! Deterministic interleavings: a profiler thread is held inside each of its critical sections
//! (core's `test-hooks` pause points) while the test forks.
//!
//! Prepare takes only CONTROL and the string table. So with the collector or uploader held on
//! a buffer shard, the export queue or inside the exporter, the fork must complete without the
//! release; with the collector held on the string table, prepare waits for exactly that brief
//! lock and completes once it is released. In every case the child profiles itself and the
//! parent's totals are exact.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkprof::{ChildPolicy, Frame, FrameIds, Profiler, Sample};
use forkprof_core::pause_points::{self, Point};
use support::*;

const SERVICE: &str = "interleave";
const CHILD_SAMPLES: i64 = 40;

/// Releases the pause point whatever happens, so a failing assertion cannot leave a profiler
/// thread parked for the rest of the process.
struct ReleaseOnDrop;
impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        pause_points::release();
    }
}

fn start(dir: &std::path::Path) -> Profiler {
    Profiler::start(file_config(SERVICE, dir, ChildPolicy::Restart)).unwrap()
}

fn ids(function: &str, file: &str) -> [FrameIds; 1] {
    [FrameIds {
        function: forkprof::intern(function).unwrap(),
        file: forkprof::intern(file).unwrap(),
        line: 7,
    }]
}

/// The child's whole life: record through text and interned frames (so its collector needs
/// the string table the parent's collector may have held), flush, stop, check its counters.
fn child_body(p: &Profiler) -> i32 {
    let text = [Frame::new("child_work", "c.rs", 1)];
    let id_frames = ids("child_ids_work", "c.rs");
    for i in 0..CHILD_SAMPLES {
        let r = if i % 2 == 0 {
            p.record(&Sample::new(&text, &[1]))
        } else {
            p.record(&Sample::with_ids(&id_frames, &[1]))
        };
        if r.is_err() {
            return 10;
        }
    }
    if p.flush_sync(Duration::from_secs(10)).is_err() {
        return 11;
    }
    match p.stop(Duration::from_secs(10)) {
        Ok(s) if s.samples_recorded == CHILD_SAMPLES as u64 && s.pid == std::process::id() => 0,
        Ok(_) => 12,
        Err(_) => 13,
    }
}

fn scenario(point: Point) {
    let _serial = serial();
    let _w = Watchdog::new("fork interleaving scenario", Duration::from_secs(60));
    let dir = TempDir::new("interleave");
    let p = start(dir.path());
    let text = [Frame::new("parent_work", "p.rs", 1)];
    let id_frames = ids("parent_ids_work", "p.rs");
    let mut recorded = 0i64;
    let mut record = |n: i64| {
        for _ in 0..n {
            p.record(&Sample::new(&text, &[1])).unwrap();
            p.record(&Sample::with_ids(&id_frames, &[1])).unwrap();
            recorded += 2;
        }
    };
    record(100);

    let _release = ReleaseOnDrop;
    pause_points::arm(point);
    // Give the armed thread a reason to come by: samples to drain (BufferSwap), ids to resolve
    // (InternResolve), a profile to queue and export (QueuePush, QueuePop, Export).
    record(10);
    // A name this profile has never seen, so the collector must resolve it (the ids above may
    // already sit in its per-profile cache if it drained them before the point was armed).
    p.record(&Sample::with_ids(
        &ids("parent_fresh_after_arm", "fresh.rs"),
        &[1],
    ))
    .unwrap();
    let fresh = 1i64;
    p.flush().unwrap();
    assert!(
        pause_points::wait_arrived(Duration::from_secs(10)),
        "no profiler thread reached {point:?}"
    );

    // With the string table held, prepare must wait for it: a helper releases the point once
    // this thread's prepare is in flight, and the fork may only return after that.
    let prepare_waits = point == Point::HoldingStringTableToResolve;
    let forked = Arc::new(AtomicBool::new(false));
    let helper = prepare_waits.then(|| {
        let forked = forked.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(10);
            while forkprof::fork::state().in_flight == 0 {
                assert!(Instant::now() < end, "the fork's prepare never started");
                std::thread::yield_now();
            }
            assert!(
                !forked.load(Ordering::Acquire),
                "fork returned while the string table was held"
            );
            let released = Instant::now();
            pause_points::release();
            released
        })
    });

    let t0 = Instant::now();
    let pid = fork_and_run(|| child_body(&p));
    let returned = Instant::now();
    forked.store(true, Ordering::Release);
    let latency = returned - t0;
    match helper {
        Some(h) => {
            let released = h.join().expect("helper thread");
            assert!(
                returned >= released,
                "the fork returned before the string table was released"
            );
            eprintln!(
                "{point:?}: prepare waited for the string table; fork returned {:?} after the release ({latency:?} in all)",
                returned - released
            );
        }
        None => {
            // Still held: the fork completed while the profiler thread sat in its critical
            // section (a prepare that waited for it would have hung the watchdog instead).
            eprintln!("{point:?}: fork completed in {latency:?} with the thread still held");
            pause_points::release();
        }
    }
    expect_exit_0(pid, "child forked mid critical section");
    assert_eq!(forkprof::fork::state().in_flight, 0);

    record(100);
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    let recorded = recorded + fresh;
    assert_eq!(stats.samples_recorded as i64, recorded);
    assert_eq!(stats.samples_dropped, 0);
    assert_eq!(stats.profiles_dropped, 0);

    let profiles = read_profiles(dir.path());
    let parent = profiles_of(&profiles, SERVICE, std::process::id());
    assert_eq!(
        total_value(&parent),
        recorded,
        "parent lost or gained samples"
    );
    let child = profiles_of(&profiles, SERVICE, pid as u32);
    assert!(!child.is_empty(), "the child wrote no profile of its own");
    let child_totals = totals_by_stack(child.iter(), 0);
    assert_eq!(child_totals.get("child_work"), Some(&(CHILD_SAMPLES / 2)));
    assert_eq!(
        child_totals.get("child_ids_work"),
        Some(&(CHILD_SAMPLES / 2))
    );
    assert_eq!(
        total_value(&child),
        CHILD_SAMPLES,
        "the child exported parent samples"
    );
}

#[test]
fn fork_while_collector_holds_a_buffer_shard() {
    scenario(Point::HoldingShardToSwap);
}

#[test]
fn fork_while_collector_holds_the_string_table() {
    scenario(Point::HoldingStringTableToResolve);
}

#[test]
fn fork_while_collector_holds_the_export_queue() {
    scenario(Point::HoldingQueueToPush);
}

#[test]
fn fork_while_uploader_holds_the_export_queue() {
    scenario(Point::HoldingQueueToPop);
}

#[test]
fn fork_while_uploader_is_inside_the_exporter() {
    scenario(Point::InsideExport);
}
