//! The OpenTelemetry (OTLP) profiles exporter: OTLP/HTTP with protobuf, `POST
//! {endpoint}/v1development/profiles`, the body an `ExportProfilesServiceRequest` of
//! opentelemetry-proto 1.10.0 (see `forkprof_core::otlp`), gzip-compressed and sent with
//! `Content-Encoding: gzip`. The engine encodes the request, resource included: this module
//! only tells it to ([`ProfileFormat::Otlp`]) and delivers it, with the retries, `Retry-After`
//! and stop deadline every HTTP exporter here has.
//!
//! Headers (a collector's or a vendor's key, `Authorization`) are secrets: `Debug` shows
//! their names only, and their values are scrubbed from every failure reason.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::http::{self, HeaderValue, Headers, HttpClient, HttpOptions, Request, Secret};
use crate::resolve::Endpoint;
use crate::{
    Compression, Delivered, EncodedProfile, ExportContext, ExportFailure, Exporter, ExporterConfig,
    ExporterFactory,
};
use forkprof_core::error::{Error, Result};
use forkprof_core::export::ProfileFormat;

/// The profiles signal's path under an OTLP/HTTP base URL.
pub const PROFILES_PATH: &str = "/v1development/profiles";
/// Where a collector's OTLP/HTTP receiver listens by default.
pub const DEFAULT_OTLP_URL: &str = "http://localhost:4318";
/// Largest request sent; an OpenTelemetry Collector's HTTP receiver takes requests far larger,
/// this only keeps a runaway profile from being retried at length.
pub const OTLP_MAX_REQUEST_BYTES: usize = 32 << 20;
const USER_AGENT: &str = concat!("forkprof/", env!("CARGO_PKG_VERSION"));

/// Where OTLP profiles go. Build with [`Otlp::new`], turn into an [`ExporterConfig`] with
/// `.into()`.
#[derive(Clone, PartialEq, Eq)]
pub struct Otlp {
    endpoint: std::result::Result<Endpoint, Error>,
    /// The request path, base path included.
    path: String,
    http: HttpOptions,
    headers: Vec<(String, Secret)>,
}

impl fmt::Debug for Otlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Otlp")
            .field("endpoint", &self.endpoint)
            .field("path", &self.path)
            .field("http", &self.http)
            .field("headers (values redacted)", &header_names)
            .finish()
    }
}

impl Otlp {
    /// To the OTLP/HTTP receiver whose base URL is `url` (`http://collector:4318`, or
    /// `https://…` with the `tls` feature): profiles go to `{url}/v1development/profiles`, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is read.
    pub fn new(url: &str) -> Otlp {
        Otlp::at(url, PROFILES_PATH)
    }

    /// To exactly `url`, path included, as `OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT` is read.
    pub fn profiles_url(url: &str) -> Otlp {
        Otlp::at(url, "")
    }

    fn at(url: &str, path: &str) -> Otlp {
        let endpoint = Endpoint::parse(url, "endpoint");
        let path = match &endpoint {
            Ok(e) if e.base_path.is_empty() && path.is_empty() => "/".to_string(),
            Ok(e) => e.path(path),
            Err(_) => String::new(),
        };
        Otlp {
            endpoint: endpoint.map(|e| Endpoint {
                base_path: String::new(),
                ..e
            }),
            path,
            http: HttpOptions::default(),
            headers: Vec::new(),
        }
    }

    /// An extra request header (`Authorization`, a vendor's key). Its value is a secret.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), Secret(value.into())));
        self
    }

    pub fn http_options(mut self, http: HttpOptions) -> Self {
        self.http = http;
        self
    }

    pub fn http(&self) -> HttpOptions {
        self.http
    }

    /// The URL requests go to.
    pub fn url(&self) -> Option<String> {
        self.endpoint
            .as_ref()
            .ok()
            .map(|e| format!("{e}{}", self.path))
    }

    /// The names of the extra headers (values are not readable back).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|(k, _)| k.as_str())
    }

    fn request_headers(&self) -> Result<(Headers, Vec<String>)> {
        let mut headers = vec![("Content-Encoding".to_string(), HeaderValue::fixed("gzip"))];
        let mut secrets = Vec::new();
        http::add_extra_headers(&self.headers, &mut headers, &mut secrets)?;
        Ok((headers, secrets))
    }
}

impl From<Otlp> for ExporterConfig {
    fn from(o: Otlp) -> ExporterConfig {
        ExporterConfig::Custom(Arc::new(OtlpFactory::with_lookup(
            o,
            |s| &s.endpoint,
            crate::resolve::system_lookup,
        )))
    }
}

/// Builds Otlp exporters.
pub type OtlpFactory = http::HttpFactory<Otlp>;

impl ExporterFactory for OtlpFactory {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn compression(&self) -> Compression {
        Compression::Gzip
    }

    fn format(&self) -> ProfileFormat {
        ProfileFormat::Otlp
    }

    fn validate(&self) -> Result<()> {
        let endpoint = self.endpoint()?;
        if matches!(endpoint.address, crate::resolve::Address::Unix(_)) {
            return Err(Error::config(
                "endpoint",
                "OTLP/HTTP needs http:// or https://, not a Unix socket",
            ));
        }
        http::check_tls(endpoint)?;
        self.settings.http.validate()?;
        self.settings.request_headers()?;
        Ok(())
    }

    fn create(&self, ctx: &ExportContext<'_>) -> Result<Box<dyn Exporter>> {
        self.validate()?;
        let endpoint = self.endpoint()?;
        let addrs = self.book.addresses(endpoint, ctx.pid)?;
        let s = &self.settings;
        let (headers, secrets) = s.request_headers()?;
        Ok(Box::new(OtlpExporter {
            client: HttpClient::new(
                endpoint,
                addrs,
                s.http,
                &self.setup,
                USER_AGENT,
                http::seed(ctx.pid),
            )
            .with_secrets(secrets),
            path: s.path.clone(),
            headers,
        }))
    }
}

struct OtlpExporter {
    client: HttpClient,
    path: String,
    headers: Headers,
}

impl Exporter for OtlpExporter {
    fn export(
        &mut self,
        profile: &EncodedProfile,
        deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        let refuse = |reason: String, too_large| {
            Err(ExportFailure {
                reason,
                retries: 0,
                too_large,
            })
        };
        if profile.format != ProfileFormat::Otlp || profile.compression != Compression::Gzip {
            return refuse(
                format!(
                    "profile encoded as {:?} with {:?}; the OTLP exporter sends gzip OTLP only",
                    profile.format, profile.compression
                ),
                false,
            );
        }
        if profile.bytes.len() > OTLP_MAX_REQUEST_BYTES {
            return refuse(
                format!(
                    "profile of {} bytes exceeds the OTLP limit of {OTLP_MAX_REQUEST_BYTES} bytes; not sent",
                    profile.bytes.len()
                ),
                true,
            );
        }
        self.client.send(
            &Request {
                path: self.path.clone(),
                content_type: "application/x-protobuf".into(),
                headers: self.headers.clone(),
                body: &profile.bytes,
            },
            deadline,
        )
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `name=value` pairs separated by commas, values
/// percent-decoded (the W3C baggage form the OpenTelemetry SDKs read).
pub(crate) fn parse_headers(var: &'static str, list: &str) -> Result<Vec<(String, String)>> {
    list.split(',')
        .filter(|h| !h.trim().is_empty())
        .map(|h| {
            let bad = |why: &str| Error::config(var, format!("an entry {why}"));
            let (k, v) = h
                .split_once('=')
                .ok_or_else(|| bad("is not of the form name=value"))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(bad("has no name"));
            }
            // The value may be a secret: never echoed in the error.
            let v = crate::resolve::percent_decode(v)
                .ok_or_else(|| bad(&format!("`{k}` has a bad percent-encoding")))?;
            Ok((k.to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_otel_endpoint_rules() {
        assert_eq!(
            Otlp::new("http://c:4318").url().unwrap(),
            "http://c:4318/v1development/profiles"
        );
        assert_eq!(
            Otlp::new("http://c:4318/otlp/").url().unwrap(),
            "http://c:4318/otlp/v1development/profiles"
        );
        assert_eq!(
            Otlp::profiles_url("http://c:4318/custom/profiles")
                .url()
                .unwrap(),
            "http://c:4318/custom/profiles"
        );
        assert_eq!(
            Otlp::profiles_url("http://c:4318").url().unwrap(),
            "http://c:4318/"
        );
        assert!(Otlp::new("nonsense").url().is_none());
    }

    #[test]
    fn headers_are_secrets_and_checked() {
        let o = Otlp::new("http://c:4318").header("Authorization", "Bearer s3cret");
        let (h, secrets) = o.request_headers().unwrap();
        assert_eq!(h[0].0, "Content-Encoding");
        assert_eq!(h[1].0, "Authorization");
        assert!(h[1].1.is_sensitive());
        assert_eq!(secrets, ["Bearer s3cret"]);
        assert!(!format!("{o:?}").contains("s3cret"), "{o:?}");
        let dup = Otlp::new("http://c:4318").header("content-encoding", "br");
        assert!(dup.request_headers().is_err());
    }

    #[test]
    fn header_lists_parse_as_the_sdks_do() {
        let h = parse_headers("V", "api-key=abc%3D1, x-tenant = t1 ,").unwrap();
        assert_eq!(
            h,
            [
                ("api-key".to_string(), "abc=1".to_string()),
                ("x-tenant".to_string(), "t1".to_string())
            ]
        );
        let err = parse_headers("V", "novalue-s3cret")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("name=value") && !err.contains("s3cret"),
            "{err}"
        );
        let err = parse_headers("V", "k=%zz").unwrap_err().to_string();
        assert!(err.contains("`k`"), "{err}");
    }
}
