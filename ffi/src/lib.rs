//! forkprof's C ABI: the `forkprof` cdylib and staticlib, described by the generated header
//! `ffi/include/forkprof.h` (cbindgen, from these sources).
//!
//! The API mirrors the Rust one: a config builder handle, `forkprof_start`, `forkprof_record`
//! (frames as pointer + length strings, or interned ids), `forkprof_flush`, `forkprof_stop`,
//! the fork interception hooks, the thread CPU clock, forkprof's messages
//! (`forkprof_set_log_callback`, `forkprof_drain_log`) and the exit flush
//! (`forkprof_stop_at_exit`).
//!
//! Rules every entry point keeps:
//! - it returns a [`forkprof_status`] (or a documented sentinel) and, on failure, leaves a
//!   message for `forkprof_last_error()` on the calling thread;
//! - no panic crosses the ABI: each body runs under `catch_unwind`;
//! - null pointers and impossible lengths are errors, never dereferenced;
//! - enums coming *in* from C are plain integers checked against constants, because a Rust
//!   enum holding an unknown discriminant is undefined behaviour.
//!
//! And the compatibility rules (ffi/README.md): every struct that crosses the ABI starts with
//! a caller-set `size` and is read and written through `sized.rs` only, never past that size;
//! handles are opaque to C (their Rust layout stays out of the ABI); the ABI's version is in
//! `version.rs`, and its major is the soname's.
#![deny(unsafe_op_in_unsafe_fn)]
// The exported names are C names, so the header and the Rust source read the same.
#![allow(non_camel_case_types)]

mod args;
mod config;
mod datadog;
mod fork;
mod log;
mod profiler;
mod sized;
mod status;
mod trace;
mod version;

pub use config::*;
pub use datadog::*;
pub use fork::*;
pub use log::*;
pub use profiler::*;
pub use status::*;
pub use trace::*;
pub use version::*;

#[cfg(test)]
#[path = "../tests/abi.rs"]
mod abi_tests;
#[cfg(test)]
#[path = "../../tests/export_support/mod.rs"]
mod export_support;
#[cfg(test)]
#[path = "../../tests/support/mod.rs"]
mod support;
