//! The pprof format (`profile.proto`): a hand-written encoder for the profiles forkprof
//! builds. Reading pprof back (decode, `top`) is the `forkprof-pprof` crate, re-exported here
//! so `forkprof_core::pprof::decode` keeps working.
//!
//! Hand-written rather than generated: the encoder writes straight from the builder's tables
//! with no intermediate message structs, which is what keeps serialization under the
//! per-sample budget (see `core/benches`).

pub(crate) mod encode;

pub(crate) use encode::{encode, encode_spilling};
pub use forkprof_pprof::{decode, top, Profile, StackIndex};
