//! The background threads of a chaos run: each keeps taking one of the locks libc or std hold
//! for a moment, so that forks land while they are held.

use std::cell::RefCell;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use forkprof::{Frame, Profiler, Sample};

/// Which disturbances run (all by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disturbances {
    /// (a) start and join std threads.
    pub thread_churn: bool,
    /// (b) `eprintln!`.
    pub stderr: bool,
    /// (c) read and set environment variables.
    pub env: bool,
    /// (d) resolve `localhost` through `getaddrinfo`.
    pub resolve: bool,
    /// (e) allocate and free.
    pub alloc: bool,
    /// (f) threads that exit running TLS destructors.
    pub tls_exit: bool,
    /// Host threads recording samples into the parent's profiler.
    pub recorders: usize,
}

impl Disturbances {
    pub fn all() -> Disturbances {
        Disturbances {
            thread_churn: true,
            stderr: true,
            env: true,
            resolve: true,
            alloc: true,
            tls_exit: true,
            recorders: 1,
        }
    }
}

/// How many operations each disturbance did: a run whose disturbers did nothing proves
/// nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct DisturberCounts {
    pub threads_joined: u64,
    pub stderr_lines: u64,
    pub env_ops: u64,
    pub lookups: u64,
    pub allocations: u64,
    pub tls_exits: u64,
    pub samples_recorded: u64,
}

pub(crate) struct Running {
    threads: Vec<(usize, JoinHandle<u64>)>,
}

const THREADS_JOINED: usize = 0;
const STDERR: usize = 1;
const ENV: usize = 2;
const LOOKUPS: usize = 3;
const ALLOCATIONS: usize = 4;
const TLS_EXITS: usize = 5;
const SAMPLES: usize = 6;

struct OnExit(Vec<u8>);

impl Drop for OnExit {
    fn drop(&mut self) {
        // Something for the destructor to do: the allocator and a TLS read.
        let v = std::hint::black_box(std::mem::take(&mut self.0));
        drop(v);
    }
}

thread_local! {
    static WITH_DTOR: RefCell<OnExit> = const { RefCell::new(OnExit(Vec::new())) };
}

fn spawn_loop(
    which: usize,
    stop: &Arc<AtomicBool>,
    mut step: impl FnMut(u64) + Send + 'static,
) -> (usize, JoinHandle<u64>) {
    let stop = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            step(n);
            n += 1;
        }
        n
    });
    (which, handle)
}

pub(crate) fn start(d: Disturbances, p: Option<&Profiler>, stop: &Arc<AtomicBool>) -> Running {
    let mut threads = Vec::new();
    if d.thread_churn {
        threads.push(spawn_loop(THREADS_JOINED, stop, |_| {
            let _ = std::thread::spawn(|| std::hint::black_box(1)).join();
        }));
    }
    if d.tls_exit {
        threads.push(spawn_loop(TLS_EXITS, stop, |n| {
            let _ = std::thread::spawn(move || {
                WITH_DTOR.with(|w| w.borrow_mut().0 = vec![n as u8; 64]);
            })
            .join();
        }));
    }
    if d.stderr {
        threads.push(spawn_loop(STDERR, stop, |n| {
            eprintln!("fork chaos: stderr writer line {n}");
        }));
    }
    if d.env {
        threads.push(spawn_loop(ENV, stop, |n| {
            // The same two names again and again: glibc then replaces the value in place and
            // never reallocates `environ` under a concurrent `getenv`. Eight values, not a new
            // one per call: glibc keeps every "NAME=value" string it ever set (so that a
            // pointer `getenv` returned stays valid), and a million distinct values grew the
            // parent by 1.6 GB in a 40,000-fork soak, slowing every fork after it.
            std::env::set_var("FORKPROF_CHAOS_A", (n % 8).to_string());
            let _ = std::hint::black_box(std::env::var("FORKPROF_CHAOS_B"));
            std::env::set_var("FORKPROF_CHAOS_B", "x");
        }));
    }
    if d.resolve {
        threads.push(spawn_loop(LOOKUPS, stop, |_| {
            let _ = std::hint::black_box(("localhost", 80).to_socket_addrs().map(|a| a.count()));
        }));
    }
    if d.alloc {
        threads.push(spawn_loop(ALLOCATIONS, stop, |n| {
            let sizes = [16usize, 256, 4096, 65536, 1 << 20];
            let v: Vec<Vec<u8>> = sizes.iter().map(|&s| vec![n as u8; s >> (n % 3)]).collect();
            std::hint::black_box(v);
        }));
    }
    for p in std::iter::repeat_n(p, d.recorders).flatten() {
        let p = p.clone();
        threads.push(spawn_loop(SAMPLES, stop, move |n| {
            let name = if n % 2 == 0 { "serve" } else { "render" };
            let frames = [
                Frame::new(name, "host.rs", 1),
                Frame::new("main", "host.rs", 2),
            ];
            let _ = p.record(&Sample::new(&frames, &[1]));
            if n % 64 == 0 {
                std::thread::yield_now();
            }
        }));
    }
    Running { threads }
}

pub(crate) fn join(r: Running) -> DisturberCounts {
    let mut c = DisturberCounts::default();
    for (which, h) in r.threads {
        let n = h.join().unwrap_or(0);
        match which {
            THREADS_JOINED => c.threads_joined += n,
            STDERR => c.stderr_lines += n,
            ENV => c.env_ops += n,
            LOOKUPS => c.lookups += n,
            ALLOCATIONS => c.allocations += n,
            TLS_EXITS => c.tls_exits += n,
            _ => c.samples_recorded += n,
        }
    }
    c
}
