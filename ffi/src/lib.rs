//! forkprof C ABI.
