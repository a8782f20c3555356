//! forkprof on musl: prepare / parent / child handlers registered with `pthread_atfork`.
//!
//! musl takes one non-recursive atfork lock before the first prepare handler and releases it
//! after the last parent/child handler, and `pthread_atfork` takes the same lock: so forkprof
//! registers its handlers on the thread that starts the first profiler, never from a handler
//! or a profiler thread, and its prepare never waits for a thread. musl's resolver can block
//! 5–60 s per lookup; forkprof resolves endpoints on the starting thread only (core, `export`).
//! The handlers themselves are the POSIX ones shared with glibc (`forkprof-backend-posix`).
#![cfg(all(target_os = "linux", target_env = "musl"))]

use forkprof_backend_posix::LinuxAtfork;

/// The platform the facade hands to core.
pub static PLATFORM: LinuxAtfork = LinuxAtfork::new("linux-musl");
