//! forkprof on glibc: prepare / parent / child handlers registered with `pthread_atfork`.
//!
//! What glibc does around `fork()` (concurrent prepare handlers from 2.36, one lock held across
//! them before) and why forkprof's handlers are safe there: `docs/fork-protocol.md`, "Per
//! platform". The handlers are the POSIX ones shared with musl (`forkprof-backend-posix`).
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use forkprof_backend_posix::LinuxAtfork;

/// The platform the facade hands to core.
pub static PLATFORM: LinuxAtfork = LinuxAtfork::new("linux-glibc");
