//! The pprof format (`profile.proto`): a hand-written encoder for the profiles forkprof
//! builds, and a decoder for reading any pprof file back (the CLI's `top`, the tests).
//!
//! Hand-written rather than generated: the encoder writes straight from the builder's tables
//! with no intermediate message structs, which is what keeps serialization under the
//! per-sample budget (see `core/benches`).

pub mod decode;
pub(crate) mod encode;
pub mod top;

pub use decode::{decode, Profile};
pub(crate) use encode::{encode, encode_spilling};
