//! forkprof: a fork-safe profiler core for language runtimes and native servers.
//!
//! The host hands it stack samples; forkprof aggregates them into pprof profiles on a
//! background thread and exports them from another, and stays correct across `fork()`.
//! This crate is the facade: it re-exports the API of `forkprof-core` and holds the one place
//! that picks the platform backend.
//!
//! ```no_run
//! use std::time::Duration;
//! use forkprof::{Config, Compression, Frame, Label, Profiler, Sample};
//!
//! let config = Config::builder("my-service")
//!     .sample_type("wall-time", "nanoseconds")
//!     .tag("env:dev")
//!     .output_dir("profiles", Compression::Gzip)
//!     .build()?;
//! let profiler = Profiler::start(config)?;
//!
//! let frames = [Frame::new("handle_request", "server.rb", 42), Frame::new("main", "server.rb", 1)];
//! let labels = [Label::str("thread name", "worker-1")];
//! profiler.record(&Sample::new(&frames, &[10_000_000]).labels(&labels))?;
//!
//! profiler.stop(Duration::from_secs(2))?;
//! # Ok::<(), forkprof::Error>(())
//! ```

use cfg_if::cfg_if;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Where finished profiles go: the engine's exporter interface and file exporter
/// (`forkprof-core`), and with the `http` feature (on by default) the network exporters of
/// `forkprof-export`: [`export::Datadog`], [`export::Pyroscope`], [`export::Otlp`], and the
/// [`export::ExporterConfigExt`] constructors (`ExporterConfig::datadog_agent`, `from_url`,
/// `from_env`, ...).
pub mod export {
    pub use forkprof_core::export::*;
    #[cfg(feature = "http")]
    pub use forkprof_export::{
        datadog, datadog_settings, env, http, otlp, otlp_settings, pyroscope, pyroscope_settings,
        Datadog, ExporterConfigExt, HttpOptions, Otlp, Pyroscope,
    };
}

pub use forkprof_core::{
    compress, config, exit, messages, otlp, pprof, Activity, ChildPolicy, Compression, Config,
    ConfigBuilder, Disabled, EncodedProfile, Error, Exporter, ExporterConfig, ExporterFactory,
    ForkStrategy, Frame, FrameIds, Label, LabelValue, Platform, ProfileFormat, Result, Retention,
    Sample, SampleType, Stack, Stats, StrId,
};

/// Trace context on samples: [`TraceContext`], [`TracedLabels`] (the host's labels and a
/// span's, on the stack), the label names, and late-bound endpoints (`Profiler::set_endpoint`,
/// `Profiler::count_endpoint`; README, "Trace context").
pub mod trace {
    pub use forkprof_core::endpoints::{MAX_ENDPOINTS, MAX_ENDPOINT_LEN};
    pub use forkprof_core::trace::*;
}
pub use forkprof_core::{TraceContext, TracedLabels};

cfg_if! {
    if #[cfg(all(target_os = "linux", target_env = "gnu"))] {
        use forkprof_backend_linux_glibc as backend;
    } else if #[cfg(all(target_os = "linux", target_env = "musl"))] {
        use forkprof_backend_linux_musl as backend;
    } else if #[cfg(target_os = "macos")] {
        use forkprof_backend_macos as backend;
    } else {
        compile_error!("forkprof supports Linux (glibc, musl) and macOS");
    }
}

/// The backend chosen for this target.
pub fn platform() -> &'static dyn Platform {
    &backend::PLATFORM
}

/// A running profiler; see [`forkprof_core::Profiler`] for every method (`record`, `flush`,
/// `stop`, `stats`). Cheap to clone.
#[derive(Clone)]
pub struct Profiler(forkprof_core::Profiler);

impl Profiler {
    /// Starts profiling with `config` on this platform's backend.
    pub fn start(config: Config) -> Result<Profiler> {
        forkprof_core::Profiler::start_on(config, platform()).map(Profiler)
    }
}

impl std::ops::Deref for Profiler {
    type Target = forkprof_core::Profiler;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Interns a function or file name once for the fast path ([`FrameIds`]). Ids are valid for
/// the life of the process, in every profiler and in forked children.
pub fn intern(name: &str) -> Result<StrId> {
    forkprof_core::intern_on(name.as_bytes(), platform())
}

/// CPU time used so far by the calling thread, in nanoseconds, so cpu-time samples are filled
/// the same way on every platform.
pub fn thread_cpu_time_ns() -> Option<u64> {
    platform().thread_cpu_time_ns()
}

/// A monotonic clock in nanoseconds.
pub fn monotonic_ns() -> u64 {
    platform().monotonic_ns()
}

/// Threads that are safe to start in a forked child: `pthread_create` on a stack forkprof maps,
/// none of std's thread start-up locks (which a child can inherit held when another parent
/// thread was starting or exiting a thread at the fork). For a host's own sampling timer, or a
/// thread that forks again, in a process that may itself be a forked child.
pub mod thread {
    pub use forkprof_core::thread::{RawThread, DEFAULT_STACK};

    /// Starts `body` on a new thread named `name` with a [`DEFAULT_STACK`] stack.
    pub fn spawn(
        name: &'static std::ffi::CStr,
        body: impl FnOnce() + Send + 'static,
    ) -> crate::Result<RawThread> {
        RawThread::spawn(name, DEFAULT_STACK, crate::platform(), Box::new(body))
    }
}

/// Hands forkprof's pending messages to the host's logger on the calling thread; see
/// [`messages`] for when they are otherwise delivered and why never from a forkprof thread.
pub fn drain_messages() -> usize {
    messages::drain()
}

/// Fork interception, for hosts that own their fork entry points (PHP's `pcntl_fork`, Ruby's
/// `Process._fork`, Python's `os.register_at_fork`). Required on macOS; harmless elsewhere.
pub mod fork {
    pub use forkprof_core::fork::{
        after_fork_child, after_fork_parent, before_fork, fork, is_unobserved_child,
        on_child_restart, state, ForkState,
    };
}
