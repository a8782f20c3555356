//! forkprof's network exporters: the Datadog agent or intake ([`Datadog`]), Pyroscope
//! ([`Pyroscope`]) and OpenTelemetry profiles over OTLP/HTTP ([`Otlp`]), over forkprof's own small HTTP/1.1 client with timeouts, bounded retries,
//! `Retry-After`, and addresses resolved when the profiler starts (never on a profiler thread,
//! never in a forked child). A layer above the engine (`forkprof-core`): it implements the
//! engine's [`ExporterFactory`](forkprof_core::export::ExporterFactory), and the engine knows
//! nothing of it, so a host that writes files compiles no HTTP.
//!
//! ```no_run
//! use forkprof_core::export::ExporterConfig;
//! use forkprof_core::Config;
//! use forkprof_export::{Datadog, ExporterConfigExt, HttpOptions};
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
//! //     ExporterConfig::otlp("http://collector:4318"),
//! //     ExporterConfig::from_env()?.
//! # Ok::<(), forkprof_core::Error>(())
//! ```

mod conn;
pub mod datadog;
pub mod env;
pub mod http;
mod http1;
mod multipart;
pub mod otlp;
pub mod pyroscope;
mod resolve;
mod retry_after;
#[cfg(feature = "tls")]
mod tls;

pub use datadog::Datadog;
pub use http::HttpOptions;
pub use otlp::Otlp;
pub use pyroscope::Pyroscope;

// What every exporter shares with the engine, under the names the modules here use.
pub(crate) use forkprof_core::export::{
    pause, stop_deadline, Compression, Delivered, EncodedProfile, ExportContext, ExportFailure,
    Exporter, ExporterConfig, ExporterFactory, WaitingOnPeer,
};

use forkprof_core::error::{Error, Result};

/// The Datadog settings inside `config`, if it is a Datadog exporter made here.
pub fn datadog_settings(config: &ExporterConfig) -> Option<&Datadog> {
    factory::<datadog::DatadogFactory>(config).map(|f| f.settings())
}

/// The Pyroscope settings inside `config`, if it is a Pyroscope exporter made here.
pub fn pyroscope_settings(config: &ExporterConfig) -> Option<&Pyroscope> {
    factory::<pyroscope::PyroscopeFactory>(config).map(|f| f.settings())
}

/// The OTLP settings inside `config`, if it is an OTLP exporter made here.
pub fn otlp_settings(config: &ExporterConfig) -> Option<&Otlp> {
    factory::<otlp::OtlpFactory>(config).map(|f| f.settings())
}

fn factory<T: 'static>(config: &ExporterConfig) -> Option<&T> {
    match config {
        ExporterConfig::Custom(f) => f.as_any()?.downcast_ref::<T>(),
        _ => None,
    }
}

/// The network exporters' constructors on the engine's [`ExporterConfig`]: bring the trait
/// into scope (`use forkprof::export::ExporterConfigExt;`) and write
/// `ExporterConfig::datadog_agent(url)` as before the layers were split.
pub trait ExporterConfigExt: Sized {
    /// The Datadog agent at `url`: `http://host:8126` or `unix:///var/run/datadog/apm.socket`.
    /// For tags, env, version and timeouts use [`Datadog::agent`] and `.into()`.
    fn datadog_agent(url: &str) -> Self;
    /// The Datadog intake of `site` (e.g. `datadoghq.com`), without an agent; needs the
    /// `tls` feature. The key is never logged nor shown by `Debug` or in error messages.
    fn datadog_agentless(site: &str, api_key: &str) -> Self;
    /// A Pyroscope server (e.g. `http://pyroscope:4040`), series `app_name` (empty: the
    /// profiler's service name).
    fn pyroscope(url: &str, app_name: &str) -> Self;
    /// An OpenTelemetry collector's OTLP/HTTP receiver at base URL `url` (e.g.
    /// `http://collector:4318`); profiles are posted to `{url}/v1development/profiles`.
    fn otlp(url: &str) -> Self;
    /// An exporter named by a URL: `http://…`, `https://…` or `unix:///…` is a Datadog agent;
    /// `pyroscope+http://…` (or `+https`) a Pyroscope server; `otlp+http://…` (or `+https`)
    /// an OTLP/HTTP receiver's base URL. An invalid URL is reported by
    /// `ConfigBuilder::build`, naming the `endpoint` field.
    fn from_url(url: &str) -> Self;
    /// The exporter the environment describes; see the precedence rules in
    /// [`env`](mod@env) (explicit builder > `FORKPROF_*` > `DD_*` / `PYROSCOPE_*` >
    /// defaults). Reads the environment now, on this thread, and never again.
    fn from_env() -> Result<Self>;
    /// The upload timeouts and retry policy of an HTTP exporter (`None` for files and other
    /// exporters).
    fn http_options(&self) -> Option<HttpOptions>;
    /// The same exporter with other upload timeouts and retry policy; an error for exporters
    /// that do not upload (files, custom).
    fn with_http_options(self, http: HttpOptions) -> Result<Self>;
}

impl ExporterConfigExt for ExporterConfig {
    fn datadog_agent(url: &str) -> Self {
        Datadog::agent(url).into()
    }

    fn datadog_agentless(site: &str, api_key: &str) -> Self {
        Datadog::agentless(site, api_key).into()
    }

    fn pyroscope(url: &str, app_name: &str) -> Self {
        Pyroscope::new(url, app_name).into()
    }

    fn otlp(url: &str) -> Self {
        Otlp::new(url).into()
    }

    fn from_url(url: &str) -> Self {
        let url = url.trim();
        if let Some(server) = url.strip_prefix("pyroscope+") {
            return Pyroscope::new(server, "").into();
        }
        if let Some(base) = url.strip_prefix("otlp+") {
            return Otlp::new(base).into();
        }
        Datadog::agent(url).into()
    }

    fn from_env() -> Result<Self> {
        env::from_process_env()
    }

    fn http_options(&self) -> Option<HttpOptions> {
        datadog_settings(self)
            .map(|d| d.http())
            .or_else(|| pyroscope_settings(self).map(|p| p.http()))
            .or_else(|| otlp_settings(self).map(|o| o.http()))
    }

    fn with_http_options(self, http: HttpOptions) -> Result<Self> {
        if let Some(d) = datadog_settings(&self) {
            return Ok(d.clone().http_options(http).into());
        }
        if let Some(p) = pyroscope_settings(&self) {
            return Ok(p.clone().http_options(http).into());
        }
        if let Some(o) = otlp_settings(&self) {
            return Ok(o.clone().http_options(http).into());
        }
        Err(Error::config(
            "http_options",
            "apply to the HTTP exporters (Datadog, Pyroscope, OTLP): set an endpoint first",
        ))
    }
}
