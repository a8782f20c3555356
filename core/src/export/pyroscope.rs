//! The Pyroscope exporter, on the legacy ingest API that every Pyroscope (and Grafana Pyroscope)
//! server still accepts: `POST {server}/ingest?name=app{tags}&from=…&until=…&format=pprof`
//! with the gzip pprof as the body.

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use super::http::{self, HttpClient, HttpOptions, Request};
use super::resolve::{AddressBook, Endpoint};
use super::{
    Compression, Delivered, EncodedProfile, ExportContext, ExportFailure, Exporter, ExporterConfig,
    ExporterFactory,
};
use crate::error::{Error, Result};

/// Largest body sent to Pyroscope; its server refuses larger ingest requests by default.
pub const PYROSCOPE_MAX_REQUEST_BYTES: usize = 10 << 20;
const USER_AGENT: &str = concat!("forkprof/", env!("CARGO_PKG_VERSION"));

/// Where Pyroscope profiles go. Build with [`Pyroscope::new`], turn into an
/// [`ExporterConfig`] with `.into()`.
#[derive(Clone, PartialEq, Eq)]
pub struct Pyroscope {
    endpoint: std::result::Result<Endpoint, Error>,
    app_name: String,
    tags: Vec<(String, String)>,
    http: HttpOptions,
}

impl fmt::Debug for Pyroscope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pyroscope")
            .field("endpoint", &self.endpoint)
            .field("app_name", &self.app_name)
            .field("tags", &self.tags)
            .field("http", &self.http)
            .finish()
    }
}

impl Pyroscope {
    /// To the server at `url` (e.g. `http://pyroscope:4040`), as application `app_name`
    /// (empty: the profiler's `Config::service`).
    pub fn new(url: &str, app_name: &str) -> Pyroscope {
        Pyroscope {
            endpoint: Endpoint::parse(url, "endpoint"),
            app_name: app_name.to_string(),
            tags: Vec::new(),
            http: HttpOptions::default(),
        }
    }
    /// Adds a label to the series (after the profiler's own `Config` tags).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }
    pub fn http_options(mut self, http: HttpOptions) -> Self {
        self.http = http;
        self
    }
}

impl From<Pyroscope> for ExporterConfig {
    fn from(p: Pyroscope) -> ExporterConfig {
        ExporterConfig::Pyroscope(Arc::new(PyroscopeFactory {
            ureq: http::ureq_config(&p.http, USER_AGENT),
            book: AddressBook::new(super::resolve::system_lookup),
            settings: p,
        }))
    }
}

pub struct PyroscopeFactory {
    settings: Pyroscope,
    ureq: ureq::config::Config,
    book: AddressBook,
}

impl fmt::Debug for PyroscopeFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.fmt(f)
    }
}

impl PyroscopeFactory {
    pub fn settings(&self) -> &Pyroscope {
        &self.settings
    }
    fn endpoint(&self) -> Result<&Endpoint> {
        self.settings.endpoint.as_ref().map_err(Clone::clone)
    }
}

impl ExporterFactory for PyroscopeFactory {
    fn compression(&self) -> Compression {
        Compression::Gzip
    }

    fn validate(&self) -> Result<()> {
        http::check_tls(self.endpoint()?)?;
        self.settings.http.validate()?;
        if self.settings.app_name.contains(['{', '}', ',', '=']) {
            return Err(Error::config(
                "app_name",
                "must not contain `{`, `}`, `,` or `=`",
            ));
        }
        Ok(())
    }

    fn create(&self, ctx: &ExportContext<'_>) -> Result<Box<dyn Exporter>> {
        self.validate()?;
        let endpoint = self.endpoint()?;
        let addrs = self.book.addresses(endpoint, ctx.pid)?;
        let s = &self.settings;
        let app = if s.app_name.is_empty() {
            ctx.config.service()
        } else {
            &s.app_name
        };
        // Pyroscope series names: app{k=v,k=v}; keys and values must avoid the delimiters.
        let clean = |v: &str| v.replace(['{', '}', ',', '='], "_");
        let labels: Vec<String> = ctx
            .config
            .tags()
            .iter()
            .chain(&s.tags)
            .map(|(k, v)| format!("{}={}", clean(k), clean(v)))
            .collect();
        let name = format!("{}{{{}}}", clean(app), labels.join(","));
        Ok(Box::new(PyroscopeExporter {
            client: HttpClient::new(endpoint, addrs, s.http, &self.ureq, http::seed(ctx.pid)),
            base_path: endpoint.base_path.clone(),
            name: percent_encode(&name),
        }))
    }
}

struct PyroscopeExporter {
    client: HttpClient,
    base_path: String,
    /// The series name, already percent-encoded.
    name: String,
}

impl Exporter for PyroscopeExporter {
    fn export(
        &mut self,
        profile: &EncodedProfile,
        deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        if profile.bytes.len() > PYROSCOPE_MAX_REQUEST_BYTES {
            return Err(ExportFailure {
                reason: format!(
                    "profile of {} bytes exceeds the Pyroscope limit of {PYROSCOPE_MAX_REQUEST_BYTES} bytes; not sent",
                    profile.bytes.len()
                ),
                retries: 0,
                too_large: true,
            });
        }
        let secs =
            |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let from = secs(profile.start);
        // Pyroscope wants until > from; a profile flushed within one second still is one.
        let until = secs(profile.end).max(from + 1);
        self.client.send(
            &Request {
                path: format!(
                    "{}/ingest?name={}&from={from}&until={until}&format=pprof&spyName=forkprof",
                    self.base_path, self.name
                ),
                content_type: "application/octet-stream".into(),
                headers: Vec::new(),
                body: &profile.bytes,
            },
            deadline,
        )
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded() {
        assert_eq!(
            percent_encode("app{env=prod,x=a b}"),
            "app%7Benv%3Dprod%2Cx%3Da%20b%7D"
        );
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
