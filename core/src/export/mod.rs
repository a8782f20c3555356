//! Where finished profiles go. An [`Exporter`] runs on the uploader thread only, never under a
//! profiler lock, so a slow or hung destination delays nothing but its own queue.
//!
//! Built in: files ([`ExporterConfig::File`]), the Datadog agent or intake ([`Datadog`]) and
//! Pyroscope ([`Pyroscope`]), the last two over HTTP with timeouts, bounded retries and
//! addresses resolved when the profiler starts, never on a profiler thread.
//!
//! ```no_run
//! use forkprof_core::export::{Datadog, ExporterConfig, HttpOptions};
//! use forkprof_core::Config;
//! use std::time::Duration;
//!
//! // The environment first (DD_*, FORKPROF_*), then explicit settings, which win.
//! let exporter: ExporterConfig = Datadog::from_env()?
//!     .env("prod")
//!     .family("ruby")
//!     .http_options(HttpOptions { request_timeout: Duration::from_secs(5), ..Default::default() })
//!     .into();
//! let config = Config::builder("checkout")
//!     .sample_type("wall-time", "nanoseconds")
//!     .exporter(exporter)
//!     .build()?;
//! // Or: ExporterConfig::datadog_agent("unix:///var/run/datadog/apm.socket"),
//! //     ExporterConfig::pyroscope("http://pyroscope:4040", "checkout"),
//! //     ExporterConfig::from_env()?.
//! # Ok::<(), forkprof_core::Error>(())
//! ```

mod conn;
pub mod datadog;
pub mod env;
mod fds;
pub mod file;
pub mod http;
mod http1;
mod multipart;
pub mod pyroscope;
mod resolve;
mod retry_after;
#[cfg(feature = "tls")]
mod tls;

// Called by a forked child before it starts its own uploader (see `fds.rs`).
#[cfg_attr(not(feature = "test-hooks"), allow(unused_imports))]
pub(crate) use fds::close_inherited_fds;

/// [`close_inherited_fds`] for the fork tests, which call it where a child's restart does.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub fn close_inherited_fds_for_tests() -> usize {
    close_inherited_fds()
}

pub use datadog::Datadog;
pub use http::HttpOptions;
pub use pyroscope::Pyroscope;

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::error::Result;

/// How an exporter on the uploader thread learns that its profiler is stopping, and pauses
/// between attempts so that the stop wakes it. The session implements it; the uploader
/// installs it for the thread's life with [`PauseScope`].
pub(crate) trait UploadPause {
    /// `Some(deadline)` once the profiler is stopping.
    fn stop_deadline(&self) -> Option<Instant>;
    /// Sleeps up to `d`, or until the profiler starts stopping.
    fn pause(&self, d: Duration);
    /// The exporter starts (`true`) or stops waiting on its endpoint: for the answer to a sent
    /// request, or between attempts.
    fn waiting_on_peer(&self, _waiting: bool) {}
}

thread_local! {
    // A raw pointer in a Cell: no destructor to register, which on a forkprof thread in a
    // forked child could meet the loader's lock (`__cxa_thread_atexit_impl`).
    static PAUSE: Cell<Option<*const dyn UploadPause>> = const { Cell::new(None) };
}

/// Installs `pause` for exporters on this thread until dropped.
pub(crate) struct PauseScope<'a>(std::marker::PhantomData<&'a dyn UploadPause>);

impl<'a> PauseScope<'a> {
    pub fn new(pause: &'a (dyn UploadPause + 'a)) -> PauseScope<'a> {
        let ptr: *const (dyn UploadPause + 'a) = pause;
        // SAFETY: only the lifetime is erased; the pointer is cleared by `drop`, before `'a`
        // ends, and read only on this thread in between.
        let ptr: *const dyn UploadPause = unsafe { std::mem::transmute(ptr) };
        let _ = PAUSE.try_with(|c| c.set(Some(ptr)));
        PauseScope(std::marker::PhantomData)
    }
}

impl Drop for PauseScope<'_> {
    fn drop(&mut self) {
        let _ = PAUSE.try_with(|c| c.set(None));
    }
}

fn with_pause<R>(f: impl FnOnce(Option<&dyn UploadPause>) -> R) -> R {
    let p = PAUSE.try_with(Cell::get).ok().flatten();
    // SAFETY: set by a live `PauseScope` on this thread, which outlives this call.
    f(p.map(|p| unsafe { &*p }))
}

/// The stop deadline, if the profiler whose uploader runs on this thread is stopping.
pub(crate) fn stop_deadline() -> Option<Instant> {
    with_pause(|p| p.and_then(|p| p.stop_deadline()))
}

/// Sleeps up to `d` between attempts; a stop of the profiler ends the sleep early.
pub(crate) fn pause(d: Duration) {
    let _waiting = WaitingOnPeer::new();
    with_pause(|p| match p {
        Some(p) => p.pause(d),
        None => std::thread::sleep(d),
    })
}

/// While alive, the exporter on this thread waits on its endpoint (see
/// [`UploadPause::waiting_on_peer`]).
pub(crate) struct WaitingOnPeer(());

impl WaitingOnPeer {
    pub fn new() -> WaitingOnPeer {
        with_pause(|p| {
            if let Some(p) = p {
                p.waiting_on_peer(true);
            }
        });
        WaitingOnPeer(())
    }
}

impl Drop for WaitingOnPeer {
    fn drop(&mut self) {
        with_pause(|p| {
            if let Some(p) = p {
                p.waiting_on_peer(false);
            }
        });
    }
}

/// How a profile is compressed before export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Raw pprof protobuf.
    None,
    /// What `go tool pprof` and Pyroscope read.
    #[default]
    Gzip,
    /// zstd level 1: what the Datadog intake prefers.
    Zstd,
}

impl Compression {
    /// The file-name suffix after `.pprof`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

/// A finished, compressed profile waiting for its exporter.
#[derive(Debug, Clone)]
pub struct EncodedProfile {
    pub bytes: Vec<u8>,
    pub compression: Compression,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Per-process sequence number, from 0.
    pub seq: u64,
    /// The process that recorded the samples.
    pub pid: u32,
    pub samples: usize,
    pub(crate) flush_ticket: u64,
}

/// What an exporter is built from: the starting process's view of the configuration.
pub struct ExportContext<'a> {
    pub config: &'a Config,
    pub pid: u32,
}

/// A delivered profile.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivered {
    pub bytes: u64,
    pub retries: u32,
}

/// A profile the exporter gave up on.
#[derive(Debug, Clone, Default)]
pub struct ExportFailure {
    pub reason: String,
    pub retries: u32,
    /// Refused before sending: larger than the destination accepts.
    pub too_large: bool,
}

pub trait Exporter: Send {
    /// Delivers one profile. `deadline`, when set, is a hard limit (the profiler is stopping).
    fn export(
        &mut self,
        profile: &EncodedProfile,
        deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure>;
}

/// Builds an exporter; called on the thread that starts the profiler and, after a fork, in
/// the child (so the child never shares the parent's connections).
pub trait ExporterFactory: Send + Sync + fmt::Debug {
    fn compression(&self) -> Compression;
    /// Static checks run by `ConfigBuilder::build`.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    fn create(&self, ctx: &ExportContext<'_>) -> Result<Box<dyn Exporter>>;
}

/// Which exporter a profiler uses.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ExporterConfig {
    /// The embedded default: files in a local directory.
    File {
        dir: std::path::PathBuf,
        compression: Compression,
    },
    /// The Datadog agent (TCP or Unix socket) or intake; see [`Datadog`].
    Datadog(Arc<datadog::DatadogFactory>),
    /// A Pyroscope server's ingest API; see [`Pyroscope`].
    Pyroscope(Arc<pyroscope::PyroscopeFactory>),
    /// Anything else the host provides.
    Custom(Arc<dyn ExporterFactory>),
}

impl ExporterConfig {
    /// The Datadog agent at `url`: `http://host:8126` or `unix:///var/run/datadog/apm.socket`.
    /// For tags, env, version and timeouts use [`Datadog::agent`] and `.into()`.
    pub fn datadog_agent(url: &str) -> ExporterConfig {
        Datadog::agent(url).into()
    }

    /// The Datadog intake of `site` (e.g. `datadoghq.com`), without an agent; needs the
    /// `tls` feature. The key is never logged nor shown by `Debug` or in error messages.
    pub fn datadog_agentless(site: &str, api_key: &str) -> ExporterConfig {
        Datadog::agentless(site, api_key).into()
    }

    /// A Pyroscope server (e.g. `http://pyroscope:4040`), series `app_name` (empty: the
    /// profiler's service name).
    pub fn pyroscope(url: &str, app_name: &str) -> ExporterConfig {
        Pyroscope::new(url, app_name).into()
    }

    /// An exporter named by a URL: `http://…`, `https://…` or `unix:///…` is a Datadog agent;
    /// `pyroscope+http://…` (or `+https`) a Pyroscope server. An invalid URL is reported by
    /// `ConfigBuilder::build`, naming the `endpoint` field.
    pub fn from_url(url: &str) -> ExporterConfig {
        match url.trim().strip_prefix("pyroscope+") {
            Some(server) => Pyroscope::new(server, "").into(),
            None => Datadog::agent(url).into(),
        }
    }

    /// The exporter the environment describes; see the precedence rules in
    /// [`env`](mod@env) (explicit builder > `FORKPROF_*` > `DD_*` / `PYROSCOPE_*` >
    /// defaults). Reads the environment now, on this thread, and never again.
    pub fn from_env() -> Result<ExporterConfig> {
        env::from_process_env()
    }

    /// The upload timeouts and retry policy of an HTTP exporter (`None` for files and custom
    /// exporters).
    pub fn http_options(&self) -> Option<HttpOptions> {
        match self {
            ExporterConfig::Datadog(f) => Some(f.settings().http()),
            ExporterConfig::Pyroscope(f) => Some(f.settings().http()),
            _ => None,
        }
    }

    /// The same exporter with other upload timeouts and retry policy; an error for exporters
    /// that do not upload (files, custom).
    pub fn with_http_options(self, http: HttpOptions) -> Result<ExporterConfig> {
        match self {
            ExporterConfig::Datadog(f) => Ok(f.settings().clone().http_options(http).into()),
            ExporterConfig::Pyroscope(f) => Ok(f.settings().clone().http_options(http).into()),
            _ => Err(crate::error::Error::config(
                "http_options",
                "apply to the HTTP exporters (Datadog, Pyroscope): set an endpoint first",
            )),
        }
    }

    pub fn compression(&self) -> Compression {
        match self {
            ExporterConfig::File { compression, .. } => *compression,
            ExporterConfig::Datadog(f) => f.compression(),
            ExporterConfig::Pyroscope(f) => f.compression(),
            ExporterConfig::Custom(f) => f.compression(),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            ExporterConfig::File { dir, .. } => file::validate(dir),
            ExporterConfig::Datadog(f) => f.validate(),
            ExporterConfig::Pyroscope(f) => f.validate(),
            ExporterConfig::Custom(f) => f.validate(),
        }
    }

    pub(crate) fn create(&self, ctx: &ExportContext<'_>) -> Result<Box<dyn Exporter>> {
        match self {
            ExporterConfig::File { dir, .. } => Ok(Box::new(file::FileExporter::open(dir, ctx)?)),
            ExporterConfig::Datadog(f) => f.create(ctx),
            ExporterConfig::Pyroscope(f) => f.create(ctx),
            ExporterConfig::Custom(f) => f.create(ctx),
        }
    }
}
