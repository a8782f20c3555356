//! The macOS fork strategy: interception, plus a child-only handler for unintercepted forks.
//! Portable: it compiles on Linux under the `portable-strategy` feature for the tests that run
//! it under macOS atfork semantics.

use std::sync::atomic::AtomicU64;

use forkprof_backend_posix::{atfork, clock};
use forkprof_core::{ForkStrategy, Platform, Result};

pub struct Macos;

pub static PLATFORM: Macos = Macos;

impl Platform for Macos {
    fn name(&self) -> &'static str {
        "macos"
    }
    fn fork_strategy(&self) -> ForkStrategy {
        ForkStrategy::Interception
    }
    fn install_fork_hooks(&self) -> Result<()> {
        atfork::register_once(atfork::Handlers::ChildOnly)
    }
    fn fork_sentinel(&self) -> Option<&'static AtomicU64> {
        None
    }
    fn thread_cpu_time_ns(&self) -> Option<u64> {
        clock::thread_cpu_time_ns()
    }
    fn monotonic_ns(&self) -> u64 {
        clock::monotonic_ns()
    }
}
