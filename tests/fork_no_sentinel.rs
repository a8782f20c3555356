//! Platforms without a wipe-on-fork sentinel (macOS, Linux before 4.14), forced on Linux: a
//! child that no fork handler saw (a raw `clone`) notices it only at its next pid check, up to
//! 63 records later. Those records must land in memory the child has: the sample buffer stays
//! inherited there (were it excluded from children, the first record would fault).
#![cfg(target_os = "linux")] // raw clone

mod support;

use std::time::Duration;

use forkprof::{ChildPolicy, Frame, Profiler, Sample};
use support::*;

#[test]
fn an_unobserved_child_records_into_memory_it_has_until_it_notices() {
    let _w = Watchdog::new("no-sentinel unobserved child", Duration::from_secs(60));
    // Before any profiler starts in this process (each test file is its own process).
    forkprof_core::fork::simulate_no_sentinel();
    let dir = TempDir::new("nosentinel");
    let p = Profiler::start(file_config("nosentinel", dir.path(), ChildPolicy::Restart)).unwrap();
    let f = [Frame::new("parent_work", "nosentinel.rs", 1)];
    for _ in 0..1000 {
        p.record(&Sample::new(&f, &[1])).unwrap();
    }
    let pid = raw_clone();
    assert!(pid >= 0, "clone: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let f = [Frame::new("child_work", "nosentinel.rs", 2)];
        let mut code = 0;
        for _ in 0..200 {
            if p.record(&Sample::new(&f, &[1])).is_err() {
                code = 10;
            }
        }
        if code == 0 && !forkprof::fork::is_unobserved_child() {
            code = 11;
        }
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    assert_eq!(
        wait_exit(pid, Duration::from_secs(30), "unobserved child"),
        Exit::Code(0),
        "the unobserved child failed (a SIGSEGV means it wrote into a buffer it does not have)"
    );
    let s = p.stop(Duration::from_secs(10)).unwrap();
    // The child's records went to its own copy: the parent's profiles hold only its own.
    let profiles = read_profiles(dir.path());
    assert_eq!(
        total_value(&profiles_of(&profiles, "nosentinel", std::process::id())),
        s.samples_recorded as i64
    );
    assert_eq!(s.samples_recorded, 1000);
}
