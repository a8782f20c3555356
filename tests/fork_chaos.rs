//! The fork-chaos suite with the system allocator (see `chaos_suite/mod.rs`).

mod chaos_suite;
mod support;

#[test]
fn chaos_every_child_restarts_records_and_stops() {
    chaos_suite::run_suite("chaos");
}
