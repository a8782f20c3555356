//! forkprof on macOS: no prepare handler (Libsystem holds its atfork and dyld locks around
//! prepare handlers). Hosts call `before_fork` / `after_fork_parent` / `after_fork_child` from
//! their own fork entry points; a child-only atfork handler flags forks nobody intercepted.
#![cfg(any(target_os = "macos", feature = "portable-strategy"))]

mod strategy;

pub use strategy::{Macos, PLATFORM};
