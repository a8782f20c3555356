//! Several threads forking at once. On glibc ≥ 2.36 their prepare handlers run concurrently;
//! forkprof counts them (`fork::state().in_flight`) and each fork releases exactly what its
//! own prepare took. To make the overlap observable rather than lucky, the collector is held
//! on the string table, so the first prepare waits there and the others queue behind it.

mod support;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use forkprof::{ChildPolicy, Frame, FrameIds, Profiler, Sample};
use forkprof_core::pause_points::{self, Point};
use support::*;

const SERVICE: &str = "concurrent";
const FORKERS: usize = 4;

struct ReleaseOnDrop;
impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        pause_points::release();
    }
}

#[test]
fn four_prepares_in_flight_at_once_and_nothing_is_lost() {
    let _serial = serial();
    let _w = Watchdog::new("four concurrent prepares", Duration::from_secs(60));
    let dir = TempDir::new("concurrent");
    let p = Profiler::start(file_config(SERVICE, dir.path(), ChildPolicy::Restart)).unwrap();
    let id_frames = [FrameIds {
        function: forkprof::intern("parent_ids_work").unwrap(),
        file: forkprof::intern("p.rs").unwrap(),
        line: 1,
    }];

    // A host thread records throughout; it counts what it handed over.
    let stop_host = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let host = {
        let p = p.clone();
        spawn_recorder(move |s| p.record(s).unwrap(), &stop_host)
    };

    let _release = ReleaseOnDrop;
    pause_points::arm(Point::HoldingStringTableToResolve);
    p.record(&Sample::with_ids(&id_frames, &[1])).unwrap();
    p.flush().unwrap();
    assert!(pause_points::wait_arrived(Duration::from_secs(10)));

    let go = Arc::new(Barrier::new(FORKERS + 1));
    let forkers: Vec<_> = (0..FORKERS)
        .map(|i| {
            let (p, go) = (p.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                let t0 = Instant::now();
                let pid = fork_and_run(|| {
                    let f = [Frame::new("child_work", "c.rs", 1)];
                    for _ in 0..=i {
                        p.record(&Sample::new(&f, &[1])).unwrap();
                    }
                    match p.stop(Duration::from_secs(10)) {
                        Ok(s) if s.samples_recorded == i as u64 + 1 => 0,
                        _ => 40,
                    }
                });
                (pid, t0.elapsed())
            })
        })
        .collect();
    go.wait();
    // Every forker is now in (or about to enter) its prepare handler. glibc >= 2.36 lets all
    // of them in at once; musl and older glibc hold their atfork lock across the prepare
    // handlers, so there one is in flight and the others wait in libc.
    let concurrent_libc = glibc_version().is_some_and(|v| v >= (2, 36));
    let expect = if concurrent_libc { FORKERS } else { 1 };
    let mut max_in_flight = 0;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        max_in_flight = max_in_flight.max(forkprof::fork::state().in_flight);
        if max_in_flight as usize >= expect {
            break;
        }
        std::thread::yield_now();
    }
    pause_points::release();
    for f in forkers {
        let (pid, latency) = f.join().unwrap();
        eprintln!("fork {pid}: {latency:?} (includes the wait for the held string table)");
        expect_exit_0(pid, "child of a concurrent fork");
    }
    eprintln!(
        "max prepares in flight at once: {max_in_flight} (glibc {:?})",
        glibc_version()
    );
    if concurrent_libc {
        assert_eq!(
            max_in_flight as usize, FORKERS,
            "glibc >= 2.36 runs prepare handlers concurrently"
        );
    } else {
        assert!(max_in_flight >= 1, "no prepare handler ran");
    }
    let st = forkprof::fork::state();
    assert_eq!(st.in_flight, 0, "every prepare met its parent handler");
    assert_eq!(forkprof_core::fork::locks_held(), (false, false));

    stop_host.store(true, std::sync::atomic::Ordering::Release);
    let host_n = host.join().unwrap() as i64;
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    // Overload may drop samples (counted, never blocking); none may vanish.
    assert_eq!(
        stats.samples_recorded + stats.samples_dropped,
        host_n as u64 + 1
    );
    let profiles = read_profiles(dir.path());
    let parent = profiles_of(&profiles, SERVICE, std::process::id());
    assert_eq!(total_value(&parent), stats.samples_recorded as i64);
}
