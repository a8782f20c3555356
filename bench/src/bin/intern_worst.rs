//! The longest wait a fork's prepare handler can meet at the process-wide string table.
//!
//! The prepare handler takes the table's lock, so a fork waits for whatever insert holds it.
//! Two designs, same names, same run:
//! - `before`: the table as it was (a `HashMap` and a `Vec` under the lock, the new name
//!   copied under it): an insert that grows the map rehashes every entry, and one that grows
//!   the `Vec` copies it, while the lock is held;
//! - `forkprof`: `forkprof::intern` now (fixed-capacity regions, linear hashing, the copy made
//!   before the lock).
//!
//! Part 1 times every insert of 1,000,000 new names (for `before`, the critical section
//! itself; for `forkprof`, the whole call, an upper bound on its critical sections). Part 2
//! forks in a loop while another thread interns new names, with each design's lock taken by a
//! real `pthread_atfork` prepare handler, and reports the fork latencies.
//!
//! `cargo run -p forkprof-bench --release --bin intern_worst -- [--names N]`

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use forkprof_bench::quantile;
use forkprof_core::sync::BriefLock;

struct Before {
    by_name: HashMap<&'static str, u32>,
    by_id: Vec<&'static str>,
}

static BEFORE: BriefLock<Option<Before>> = BriefLock::new(None);

fn cpu_ns() -> u64 {
    forkprof::thread_cpu_time_ns().unwrap_or(0)
}

/// `intern` as it was: lookup, copy, push and insert, all under the lock. Returns the time the
/// lock was held, in ns: (wall, this thread's CPU).
fn before_intern(name: &[u8]) -> (u64, u64) {
    let text = String::from_utf8_lossy(name);
    let mut t = BEFORE.lock();
    let (start, cpu) = (Instant::now(), cpu_ns());
    let t = t.get_or_insert_with(|| Before {
        by_name: HashMap::new(),
        by_id: Vec::new(),
    });
    if !t.by_name.contains_key(&*text) {
        let leaked: &'static str = Box::leak(text.into_owned().into_boxed_str());
        let id = t.by_id.len() as u32;
        t.by_id.push(leaked);
        t.by_name.insert(leaked, id);
    }
    (start.elapsed().as_nanos() as u64, cpu_ns() - cpu)
}

extern "C" fn before_prepare() {
    BEFORE.lock_raw();
}
extern "C" fn before_release() {
    // SAFETY: the prepare handler of this fork took the lock on this thread (or, in the
    // child, on the thread that is now the only one).
    unsafe { BEFORE.unlock_raw() };
}

fn names(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}\\Module{}\\Service{}::handle_{i}", i % 50, i % 300).into_bytes())
        .collect()
}

fn summary(label: &str, v: &mut [u64]) {
    v.sort_unstable();
    println!(
        "{label:<40} median {:>7.2} us  p99.9 {:>8.2} us  p99.99 {:>8.2} us  max {:>9.2} us",
        quantile(v, 0.5) as f64 / 1e3,
        quantile(v, 0.999) as f64 / 1e3,
        quantile(v, 0.9999) as f64 / 1e3,
        *v.last().unwrap_or(&0) as f64 / 1e3
    );
}

/// Forks (child `_exit`s at once) until `intern_all` has interned every name on another
/// thread; returns the fork latencies in ns.
fn forks_while_interning(names: Vec<Vec<u8>>, intern_one: fn(&[u8])) -> Vec<u64> {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let t = std::thread::spawn(move || {
        for n in &names {
            intern_one(n);
        }
        d.store(true, Ordering::Release);
    });
    let mut lat = Vec::new();
    while !done.load(Ordering::Acquire) {
        let t0 = Instant::now();
        // SAFETY: the child only calls `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(0) };
        }
        assert!(pid > 0, "fork failed");
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        lat.push(t0.elapsed().as_nanos() as u64);
    }
    t.join().expect("interning thread");
    lat
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--names")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    println!(
        "{n} new names interned per design and part; fork prepare handlers take each design's lock"
    );

    // Part 1: every insert timed, in wall time (what a fork waits, preemption included on a
    // loaded machine) and in the inserting thread's CPU time (the work itself, faults
    // included).
    let (mut wall, mut cpu): (Vec<u64>, Vec<u64>) =
        names("Before", n).iter().map(|s| before_intern(s)).unzip();
    summary("before: lock held per insert, wall", &mut wall);
    summary("before: lock held per insert, CPU", &mut cpu);
    let fp_names = names("Forkprof", n);
    let (mut wall, mut cpu): (Vec<u64>, Vec<u64>) = fp_names
        .iter()
        .map(|s| {
            let (t, c) = (Instant::now(), cpu_ns());
            forkprof::intern(std::str::from_utf8(s).unwrap_or("")).expect("intern");
            (t.elapsed().as_nanos() as u64, cpu_ns() - c)
        })
        .unzip();
    summary("forkprof: whole intern() call, wall", &mut wall);
    summary("forkprof: whole intern() call, CPU", &mut cpu);

    // Part 2: forks meeting inserts. The `before` lock gets its own prepare handler; forkprof's
    // is the real one (registered by the first intern above).
    // SAFETY: plain function pointers with no preconditions, registered once.
    unsafe {
        libc::pthread_atfork(
            Some(before_prepare),
            Some(before_release),
            Some(before_release),
        )
    };
    let mut v = forks_while_interning(names("BeforeFork", n), |s| {
        before_intern(s);
    });
    summary(
        &format!("before: fork during inserts ({} forks)", v.len()),
        &mut v,
    );
    let mut v = forks_while_interning(names("ForkprofFork", n), |s| {
        let _ = forkprof::intern(std::str::from_utf8(s).unwrap_or(""));
    });
    summary(
        &format!("forkprof: fork during inserts ({} forks)", v.len()),
        &mut v,
    );
    let mut bare = Vec::new();
    for _ in 0..2000 {
        let t0 = Instant::now();
        // SAFETY: the child only calls `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        bare.push(t0.elapsed().as_nanos() as u64);
    }
    summary("fork with no insert running (same process)", &mut bare);
    println!(
        "strings in forkprof's table: {}",
        forkprof_core::intern::len()
    );
}
