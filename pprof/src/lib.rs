//! Reading pprof back (`profile.proto`): a decoder for any pprof file and the per-function
//! totals the CLI's `top` and the tests print. The bottom layer of forkprof's crates: it
//! depends on none of them, so a tool that only reads profiles compiles nothing else. The
//! encoder lives with the engine (`forkprof-core`), which writes straight from its own tables.

pub mod decode;
pub mod top;

pub use decode::{decode, Profile, StackIndex};

/// A profile that cannot be read: the message says where it stopped making sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
