//! forkprof on glibc: prepare / parent / child handlers registered with `pthread_atfork`.
//!
//! glibc ≥ 2.36 drops its atfork lock around each prepare handler, so several threads' prepare
//! handlers can run at once; core's protocol counts them. glibc 2.28–2.33 holds that lock from
//! the first prepare handler to the last parent/child one, which is safe for forkprof because
//! its prepare never waits for a thread. `fork()` that fails still runs the parent handlers.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use forkprof_backend_posix::LinuxAtfork;

/// The platform the facade hands to core.
pub static PLATFORM: LinuxAtfork = LinuxAtfork::new("linux-glibc");
