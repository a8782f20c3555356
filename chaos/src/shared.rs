//! What the chaos driver shares with its children, and how it waits for them.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// One u64 per fork in memory shared with the children (`MAP_SHARED`): each child writes its
/// first-record latency into its own slot with a plain store, no lock and no pipe.
#[derive(Clone)]
pub struct SharedSlots(Arc<Mapping>);

struct Mapping {
    ptr: *mut u64,
    len: usize,
}

// SAFETY: the slots are written with atomic-free plain stores by different processes, each to
// its own slot, and read by the parent only after the child that wrote it was reaped.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl SharedSlots {
    pub fn new(len: usize) -> SharedSlots {
        let bytes = len.max(1) * 8;
        // SAFETY: a new shared anonymous mapping; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap of the chaos slots failed");
        SharedSlots(Arc::new(Mapping {
            ptr: p.cast(),
            len: len.max(1),
        }))
    }

    pub fn set(&self, i: usize, v: u64) {
        if i < self.0.len {
            // SAFETY: within the mapping; each slot is written by one child only.
            unsafe { self.0.ptr.add(i).write_volatile(v.max(1)) };
        }
    }

    /// The non-empty slots.
    pub fn collect(&self) -> Vec<u64> {
        (0..self.0.len)
            // SAFETY: within the mapping; every writer has been reaped.
            .map(|i| unsafe { self.0.ptr.add(i).read_volatile() })
            .filter(|&v| v != 0)
            .collect()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 8) };
    }
}

/// Waits for `pid` at most `limit`; its wait status, or `None` if it is still running.
/// Only `waitpid` and `nanosleep`: usable in a forked child.
pub(crate) fn wait_child(pid: i32, limit: Duration) -> Option<i32> {
    let end = Instant::now() + limit;
    let mut pause = Duration::from_micros(20);
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if r < 0 {
            return Some(-1);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

pub(crate) fn kill_and_reap(pid: i32) {
    // SAFETY: our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

/// `gdb`'s view of every thread of `pid`, or why there is none.
pub(crate) fn backtrace(pid: i32) -> String {
    match std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => format!("(no backtrace: cannot run gdb: {e})"),
    }
}

/// fd 2 points at /dev/null until dropped (the stderr writer would flood the terminal or the
/// test harness); the std stderr lock it takes is the point, not where the bytes go.
pub(crate) struct StderrSilenced {
    saved: i32,
}

impl StderrSilenced {
    pub fn new() -> StderrSilenced {
        // SAFETY: plain descriptor calls on fd 2 and a descriptor we open.
        unsafe {
            let saved = libc::dup(2);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            if null >= 0 {
                libc::dup2(null, 2);
                libc::close(null);
            }
            StderrSilenced { saved }
        }
    }
}

impl Drop for StderrSilenced {
    fn drop(&mut self) {
        if self.saved >= 0 {
            // SAFETY: restoring the descriptor saved in `new`.
            unsafe {
                libc::dup2(self.saved, 2);
                libc::close(self.saved);
            }
        }
    }
}
