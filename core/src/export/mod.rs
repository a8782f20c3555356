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

pub mod datadog;
pub mod env;
pub mod file;
pub mod http;
mod multipart;
pub mod pyroscope;
mod resolve;
mod retry_after;
mod unix;

pub use datadog::Datadog;
pub use http::HttpOptions;
pub use pyroscope::Pyroscope;

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::config::Config;
use crate::error::Result;

/// How the uploader thread tells its exporter that the profiler is stopping: `Some(deadline)`
/// from then on. A pause between attempts (a backoff, a server's `Retry-After`) that would end
/// after that deadline is cut short when the uploader is woken for the stop.
pub(crate) type StopWatch = Box<dyn Fn() -> Option<Instant>>;

thread_local! {
    static STOP_WATCH: std::cell::RefCell<Option<StopWatch>> = const { std::cell::RefCell::new(None) };
}

/// Called once by the uploader thread before it exports anything.
pub(crate) fn watch_stop(watch: StopWatch) {
    let _ = STOP_WATCH.try_with(|w| *w.borrow_mut() = Some(watch));
}

/// The stop deadline, if the profiler whose uploader runs on this thread is stopping.
pub(crate) fn stop_deadline() -> Option<Instant> {
    STOP_WATCH
        .try_with(|w| {
            w.try_borrow()
                .ok()
                .and_then(|w| w.as_ref().and_then(|f| f()))
        })
        .ok()
        .flatten()
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
