//! `fork()` that fails. glibc runs the parent handlers then too; forkprof's parent half must
//! release what prepare took, or the next record/flush/stop/fork hangs.
//!
//! The failure is made real, not simulated: a seccomp filter on one thread only (seccomp is
//! per thread without TSYNC) makes that thread's `clone`/`clone3` for a new process return
//! EAGAIN, while every other thread (the profiler's, the test's) is untouched, so "a later
//! fork works" can be checked in the same process.
#![cfg(target_os = "linux")] // seccomp is Linux-only

mod support;

use std::time::Duration;

use forkprof::{ChildPolicy, Compression, Config, Frame, Profiler, Sample};
use support::*;

const SERVICE: &str = "forkfail";

/// Installs, on the calling thread only, a filter failing process-creating clones (and the
/// plain `fork` syscall) with EAGAIN.
fn block_forks_on_this_thread() {
    use support::bpf::*;
    // seccomp_data: nr at 0, arch at 4, args[0] (low half on little endian) at 16.
    // musl forks with the plain `fork` syscall where the architecture has one; glibc uses
    // `clone` without CLONE_THREAD.
    #[cfg(target_arch = "x86_64")]
    const PLAIN_FORK: u32 = libc::SYS_fork as u32;
    #[cfg(not(target_arch = "x86_64"))]
    const PLAIN_FORK: u32 = libc::SYS_clone3 as u32;
    let prog = [
        ins(LD_W_ABS, 0, 0, 4),
        ins(JEQ_K, 0, 7, AUDIT_ARCH),
        ins(LD_W_ABS, 0, 0, 0),
        ins(JEQ_K, 4, 0, PLAIN_FORK),
        ins(JEQ_K, 3, 0, libc::SYS_clone3 as u32),
        ins(JEQ_K, 0, 3, libc::SYS_clone as u32),
        ins(LD_W_ABS, 0, 0, 16),
        ins(JSET_K, 1, 0, libc::CLONE_THREAD as u32),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EAGAIN as u32),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    seccomp_on_this_thread(&prog);
}

#[test]
fn failed_fork_runs_the_parent_half_and_leaves_everything_usable() {
    let _serial = serial();
    let _w = Watchdog::new("failed fork", Duration::from_secs(60));
    let dir = TempDir::new("forkfail");
    let p = Profiler::start(file_config(SERVICE, dir.path(), ChildPolicy::Restart)).unwrap();
    let f = [Frame::new("parent_work", "p.rs", 1)];
    let mut recorded = 0;
    for _ in 0..100 {
        p.record(&Sample::new(&f, &[1])).unwrap();
        recorded += 1;
    }
    let seen_before = forkprof::fork::state().forks_seen;

    let p2 = p.clone();
    let (raw_errno, wrapper) = std::thread::spawn(move || {
        block_forks_on_this_thread();
        // SAFETY: fork with nothing to run in a child: it is expected to fail.
        let pid = unsafe { libc::fork() };
        let errno = std::io::Error::last_os_error().raw_os_error();
        if pid == 0 {
            // SAFETY: the filter did not apply; leave at once and let the parent notice.
            unsafe { libc::_exit(99) };
        }
        assert_eq!(pid, -1, "the filter should have made fork fail");
        // The parent half ran: nothing in flight, both locks free, records still land.
        assert_eq!(forkprof::fork::state().in_flight, 0);
        assert_eq!(forkprof_core::fork::locks_held(), (false, false));
        p2.record(&Sample::new(&[Frame::new("parent_work", "p.rs", 1)], &[1]))
            .unwrap();
        // The explicit wrapper reports the failure and leaves the thread's hooks balanced.
        let wrapper = forkprof::fork::fork();
        let balanced =
            forkprof::fork::before_fork().is_ok() && forkprof::fork::after_fork_parent().is_ok();
        (errno, (wrapper, balanced))
    })
    .join()
    .unwrap();
    recorded += 1;
    assert_eq!(raw_errno, Some(libc::EAGAIN));
    match wrapper.0 {
        Err(forkprof::Error::Os {
            call: "fork",
            errno,
        }) => assert_eq!(errno, libc::EAGAIN),
        other => panic!("fork wrapper on a blocked thread returned {other:?}"),
    }
    assert!(wrapper.1, "hooks unbalanced after a failed fork() wrapper");
    let st = forkprof::fork::state();
    assert_eq!(st.in_flight, 0);
    assert_eq!(
        st.forks_seen,
        seen_before + 2,
        "both failed forks reached the parent handler"
    );

    // Everything still works: flush, a second profiler's start/stop (CONTROL), interning (the
    // string table), and a real fork from another thread.
    p.flush_sync(Duration::from_secs(10)).unwrap();
    let other_dir = TempDir::new("forkfail-other");
    let other = Profiler::start(
        Config::builder("other")
            .sample_type("samples", "count")
            .output_dir(other_dir.path(), Compression::Gzip)
            .build()
            .unwrap(),
    )
    .unwrap();
    other.stop(Duration::from_secs(10)).unwrap();
    forkprof::intern("after_failed_fork").unwrap();
    let pid = fork_and_run(|| {
        p.record(&Sample::new(&[Frame::new("child_work", "c.rs", 1)], &[1]))
            .unwrap();
        match p.stop(Duration::from_secs(10)) {
            Ok(s) if s.samples_recorded == 1 => 0,
            _ => 50,
        }
    });
    expect_exit_0(pid, "fork after a failed fork");
    for _ in 0..100 {
        p.record(&Sample::new(&f, &[1])).unwrap();
        recorded += 1;
    }
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(stats.samples_recorded, recorded);
    let profiles = read_profiles(dir.path());
    assert_eq!(
        total_value(&profiles_of(&profiles, SERVICE, std::process::id())),
        recorded as i64
    );
    assert_eq!(total_value(&profiles_of(&profiles, SERVICE, pid as u32)), 1);
}
