//! The fork-chaos suite in a host whose global allocator is jemalloc, which handles fork with
//! its own atfork handlers rather than glibc malloc's internal reset (see `chaos_suite/mod.rs`).
//! Built on Linux (glibc and musl), where CI builds jemalloc.
#![cfg(target_os = "linux")]

mod chaos_suite;
mod support;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[test]
fn chaos_under_jemalloc_every_child_restarts_records_and_stops() {
    chaos_suite::run_suite("chaos-jemalloc");
}
