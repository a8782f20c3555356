//! forkprof-core: the platform-agnostic engine of forkprof.
//!
//! Samples come in through [`Profiler::record`], are copied into a bounded buffer, aggregated
//! on a collector thread into pprof profiles and exported from an uploader thread. The fork
//! protocol lives in [`fork`]; what differs per platform is behind [`Platform`], implemented by
//! the backend crates. Hosts use the `forkprof` facade crate, which picks the backend.

pub mod calendar;
pub mod compress;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod exit;
pub mod export;
pub mod fork;
pub mod intern;
pub mod messages;
pub mod otlp;
pub mod pause_points;
pub mod platform;
pub mod pprof;
pub mod profile;
pub mod sample;
pub mod stats;
pub mod sync;
pub mod thread;
pub mod trace;

mod buffer;
mod collector;
mod hash;
mod hash_index;
#[cfg(test)]
mod profile_reference;
mod profiler;
mod region;
mod region_vec;
mod sample_cache;
pub mod serialize;
mod session;
mod signals;
mod stack_arena;
mod strings;
mod uploader;
mod wire;
mod workers;

pub use config::{ChildPolicy, Config, ConfigBuilder, SampleType};
pub use error::{Error, Result};
pub use export::{
    Compression, EncodedProfile, Exporter, ExporterConfig, ExporterFactory, ProfileFormat,
    Retention,
};
pub use platform::{ForkStrategy, Platform};
pub use profiler::{intern_on, Profiler};
pub use region_vec::Memory;
pub use sample::{Frame, FrameIds, Label, LabelValue, Sample, Stack, StrId};
pub use session::Activity;
pub use stats::{Disabled, Stats};
pub use trace::{TraceContext, TraceLabelStyle, TracedLabels};
