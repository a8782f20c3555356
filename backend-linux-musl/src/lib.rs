//! forkprof on musl: prepare / parent / child handlers registered with `pthread_atfork`.
//!
//! What musl does around `fork()` (one atfork lock held from the first prepare to the last
//! child handler, which `pthread_atfork` takes too) and why forkprof's handlers are safe there:
//! `docs/fork-protocol.md`, "Per platform". The handlers are the POSIX ones shared with glibc
//! (`forkprof-backend-posix`).
#![cfg(all(target_os = "linux", target_env = "musl"))]

use forkprof_backend_posix::LinuxAtfork;

/// The platform the facade hands to core.
pub static PLATFORM: LinuxAtfork = LinuxAtfork::new("linux-musl");
