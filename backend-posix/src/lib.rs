//! Pieces the glibc, musl and macOS backends share, written once: registering forkprof's
//! atfork handlers (once per process), the POSIX clocks, and on Linux the wipe-on-fork page
//! that exposes unobserved forks.
#![cfg(unix)]

pub mod atfork;
pub mod clock;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub mod sentinel;
#[cfg(target_os = "linux")]
pub mod thread_name;
#[cfg(target_os = "linux")]
pub use linux::LinuxAtfork;
