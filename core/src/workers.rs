//! The one place that starts a session and its two threads: in `Profiler::start`, and again in
//! a forked child when the profiler restarts there.
//!
//! Everything here runs on the host's thread and, in a child, inside forkprof's atfork child
//! handler (or `after_fork_child`) before the child has a running profiler, so each step says
//! which lock inherited from the parent it could meet:
//! - the sample buffer and the thread stacks: `mmap`, `madvise`, `mprotect` (no lock);
//! - the exporter (`ExporterFactory::create`, told it runs in a forked child): the file exporter
//!   only checks its directory is still one (one `stat`; the parent created and probed it); the
//!   HTTP exporters build their client from a setup made when the exporter was configured (the
//!   TLS configuration; reading the environment is never done here), open no connection until
//!   an upload, and use addresses looked up by the process that started the profiler (a child
//!   never calls the resolver; `export/src/resolve.rs`), through forkprof's own address-book
//!   lock, tried a bounded number of times;
//! - the session: allocations (glibc and musl reset malloc's locks in the child of fork;
//!   jemalloc handles fork with its own handlers) and two pipes (`pipe`, `fcntl`: no lock);
//! - the threads: `pthread_create` (`thread.rs`: libc's thread-list locks, reset in the child),
//!   never `std::thread`, whose start-up lock a child can inherit held.
//!
//! The threads' own first steps in a child: `check_in` (forkprof's own latch, new in this
//! session) and a first sleep. The collector's zstd context and profile tables (allocations)
//! come at its first turn, so a child that exits at once never builds them. Clocks are vDSO
//! calls (no lock); the threads never print, read the environment, resolve, or use
//! `std::thread::current`.

use std::sync::Arc;

use crate::buffer::SampleBuffer;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::session::Session;
use crate::thread::{RawThread, DEFAULT_STACK};

/// Builds the buffer and the exporter on the calling thread (so directory checks and address
/// look-ups happen here, never on a profiler thread) and starts the collector and the uploader.
pub(crate) fn start(
    config: Arc<Config>,
    platform: &'static dyn Platform,
    generation: u64,
    pid: u32,
    forks_seen_at_once: bool,
    in_forked_child: bool,
) -> Result<Arc<Session>> {
    let buffer = SampleBuffer::new(config.buffer_capacity, platform, forks_seen_at_once)
        .ok_or_else(|| {
            Error::config(
                "buffer_capacity",
                format!(
                    "cannot allocate {} bytes for the sample buffer",
                    2 * config.buffer_capacity
                ),
            )
        })?;
    let exporter = config.exporter.create(&crate::export::ExportContext {
        in_forked_child,
        ..config.export_context(pid)
    })?;
    let session = Arc::new(Session::new(config, buffer, generation, pid)?);
    let collector = {
        let s = session.clone();
        RawThread::spawn_never_forking(
            c"forkprof-collect",
            DEFAULT_STACK,
            platform,
            Box::new(move || crate::collector::run(s)),
        )?
    };
    let uploader = {
        let s = session.clone();
        RawThread::spawn_never_forking(
            c"forkprof-upload",
            DEFAULT_STACK,
            platform,
            Box::new(move || crate::uploader::run(s, exporter)),
        )
    };
    match uploader {
        Ok(uploader) => {
            session.adopt_threads(vec![collector, uploader]);
            Ok(session)
        }
        Err(e) => {
            // The collector writes its last (empty) profile into a queue nobody reads and
            // exits; it is left to do so alone.
            session.request_stop();
            drop(collector);
            Err(e)
        }
    }
}
