//! The Pyroscope exporter, on the legacy ingest API that every Pyroscope (and Grafana Pyroscope)
//! server still accepts: `POST {server}/ingest?name=app{tags}&from=…&until=…&format=pprof`
//! with the gzip pprof as the body.
//!
//! Multi-tenant and hosted servers (Grafana Cloud, a Pyroscope behind a gateway): basic auth
//! (from the URL's `user:password@` or [`Pyroscope::basic_auth`]), a bearer token
//! ([`Pyroscope::bearer_token`]), the tenant header `X-Scope-OrgID` ([`Pyroscope::tenant_id`])
//! and any extra header ([`Pyroscope::header`]). Passwords, tokens and extra header values are
//! secrets: `Debug` shows `<redacted>`, and they are scrubbed from every failure reason and
//! message (a server echoing the request back in its error body included).

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use crate::http::{self, HeaderValue, Headers, HttpClient, HttpOptions, Request, Secret};
use crate::resolve::Endpoint;
use crate::{
    Compression, Delivered, EncodedProfile, ExportContext, ExportFailure, Exporter, ExporterConfig,
    ExporterFactory,
};
use forkprof_core::error::{Error, Result};
use forkprof_core::TraceLabelStyle;

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
    basic_auth: Option<(String, Secret)>,
    bearer_token: Option<Secret>,
    tenant_id: Option<String>,
    headers: Vec<(String, Secret)>,
}

impl fmt::Debug for Pyroscope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Pyroscope")
            .field("endpoint", &self.endpoint)
            .field("app_name", &self.app_name)
            .field("tags", &self.tags)
            .field("http", &self.http)
            .field(
                "basic_auth",
                &self
                    .basic_auth
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tenant_id", &self.tenant_id)
            .field("headers (values redacted)", &header_names)
            .finish()
    }
}

impl Pyroscope {
    /// To the server at `url` (e.g. `http://pyroscope:4040`), as application `app_name`
    /// (empty: the profiler's `Config::service`).
    /// `user:password@` in the URL is taken as basic auth (percent-decoded), and never shown.
    pub fn new(url: &str, app_name: &str) -> Pyroscope {
        let (endpoint, basic_auth) = match Endpoint::parse_with_credentials(url, "endpoint") {
            Ok((e, c)) => (Ok(e), c.map(|c| (c.user, Secret(c.password)))),
            Err(e) => (Err(e), None),
        };
        Pyroscope {
            endpoint,
            app_name: app_name.to_string(),
            tags: Vec::new(),
            http: HttpOptions::default(),
            basic_auth,
            bearer_token: None,
            tenant_id: None,
            headers: Vec::new(),
        }
    }
    /// HTTP basic auth (Grafana Cloud: the stack's user id and an access token); replaces
    /// credentials given in the URL.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some((user.into(), Secret(password.into())));
        self
    }
    /// `Authorization: Bearer <token>`; cannot be combined with basic auth.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(Secret(token.into()));
        self
    }
    /// The tenant of a multi-tenant server, sent as `X-Scope-OrgID`.
    pub fn tenant_id(mut self, tenant: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant.into());
        self
    }
    /// An extra request header (a gateway's own key, say). Its value is treated as a secret.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), Secret(value.into())));
        self
    }
    pub fn app_name(&self) -> &str {
        &self.app_name
    }
    pub fn http(&self) -> HttpOptions {
        self.http
    }
    /// The user of the basic auth, if any (the password is not readable back).
    pub fn basic_auth_user(&self) -> Option<&str> {
        self.basic_auth.as_ref().map(|(u, _)| u.as_str())
    }
    pub fn tenant(&self) -> Option<&str> {
        self.tenant_id.as_deref()
    }

    /// The headers every request carries (auth, tenant, extra), checked, and the secrets to
    /// scrub from reasons.
    fn request_headers(&self) -> Result<(Headers, Vec<String>)> {
        let mut headers = Vec::new();
        let mut secrets = Vec::new();
        if self.basic_auth.is_some() && self.bearer_token.is_some() {
            return Err(Error::config(
                "auth",
                "set either basic auth or a bearer token, not both",
            ));
        }
        if let Some((user, password)) = &self.basic_auth {
            if user.contains(':') {
                return Err(Error::config("basic_auth", "the user must not contain `:`"));
            }
            let encoded = http::base64(format!("{user}:{}", password.0).as_bytes());
            let value = format!("Basic {encoded}");
            headers.push((
                "Authorization".to_string(),
                http::secret_header_for("basic_auth", &value)?,
            ));
            secrets.extend([password.0.clone(), encoded, value]);
        }
        if let Some(token) = &self.bearer_token {
            if token.0.trim().is_empty() {
                return Err(Error::config("bearer_token", "is empty"));
            }
            let value = format!("Bearer {}", token.0);
            headers.push((
                "Authorization".to_string(),
                http::secret_header_for("bearer_token", &value)?,
            ));
            secrets.extend([token.0.clone(), value]);
        }
        if let Some(t) = &self.tenant_id {
            let value = HeaderValue::new(t).ok_or_else(|| {
                Error::config(
                    "tenant_id",
                    "contains characters not allowed in an HTTP header",
                )
            })?;
            if t.trim().is_empty() {
                return Err(Error::config("tenant_id", "is empty"));
            }
            headers.push(("X-Scope-OrgID".to_string(), value));
        }
        http::add_extra_headers(&self.headers, &mut headers, &mut secrets)?;
        Ok((headers, secrets))
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
        ExporterConfig::Custom(Arc::new(PyroscopeFactory::with_lookup(
            p,
            |s| &s.endpoint,
            crate::resolve::system_lookup,
        )))
    }
}

/// Builds Pyroscope exporters.
pub type PyroscopeFactory = http::HttpFactory<Pyroscope>;

impl ExporterFactory for PyroscopeFactory {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn compression(&self) -> Compression {
        Compression::Gzip
    }

    fn trace_labels(&self) -> TraceLabelStyle {
        TraceLabelStyle::Pyroscope
    }

    fn validate(&self) -> Result<()> {
        http::check_tls(self.endpoint()?)?;
        self.settings.http.validate()?;
        self.settings.request_headers()?;
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
            ctx.service
        } else {
            &s.app_name
        };
        // Pyroscope series names: app{k=v,k=v}; keys and values must avoid the delimiters.
        // A tag without a value (`DD_TAGS=foo`) has no label form there: it is left out.
        let clean = |v: &str| v.replace(['{', '}', ',', '='], "_");
        let labels: Vec<String> = ctx
            .tags
            .iter()
            .chain(&s.tags)
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| format!("{}={}", clean(k), clean(v)))
            .collect();
        let name = format!("{}{{{}}}", clean(app), labels.join(","));
        let (headers, secrets) = s.request_headers()?;
        Ok(Box::new(PyroscopeExporter {
            client: HttpClient::new(
                endpoint,
                addrs,
                s.http,
                &self.setup,
                USER_AGENT,
                http::seed(ctx.pid),
            )
            .with_secrets(secrets),
            name: percent_encode(&name),
            headers,
        }))
    }
}

struct PyroscopeExporter {
    client: HttpClient,
    /// The series name, already percent-encoded.
    name: String,
    headers: Headers,
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
                    "/ingest?name={}&from={from}&until={until}&format=pprof&spyName=forkprof",
                    self.name
                ),
                content_type: "application/octet-stream".into(),
                headers: self.headers.clone(),
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
    fn auth_headers_and_their_checks() {
        let p = Pyroscope::new("http://12345:s3cret@py:4040", "app").tenant_id("team-a");
        assert_eq!(p.basic_auth_user(), Some("12345"));
        let (h, secrets) = p.request_headers().unwrap();
        assert_eq!(h[0].0, "Authorization");
        // base64("12345:s3cret")
        assert_eq!(h[0].1.as_str(), "Basic MTIzNDU6czNjcmV0");
        assert!(h[0].1.is_sensitive());
        assert_eq!(
            h[1],
            (
                "X-Scope-OrgID".to_string(),
                HeaderValue::new("team-a").unwrap()
            )
        );
        assert!(secrets.contains(&"s3cret".to_string()));
        assert!(!format!("{p:?}").contains("s3cret"), "{p:?}");
        let both = Pyroscope::new("http://py:4040", "")
            .basic_auth("u", "p")
            .bearer_token("t");
        assert!(both
            .request_headers()
            .unwrap_err()
            .to_string()
            .contains("not both"));
        let dup = Pyroscope::new("http://py:4040", "")
            .bearer_token("t")
            .header("authorization", "x");
        assert!(dup
            .request_headers()
            .unwrap_err()
            .to_string()
            .contains("`authorization`"));
        let bad = Pyroscope::new("http://py:4040", "").header("bad name", "x");
        assert!(bad
            .request_headers()
            .unwrap_err()
            .to_string()
            .contains("bad name"));
        let bad = Pyroscope::new("http://py:4040", "").header("X-Key", "line\nbreak-s3cret");
        let err = bad.request_headers().unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn names_are_encoded() {
        assert_eq!(
            percent_encode("app{env=prod,x=a b}"),
            "app%7Benv%3Dprod%2Cx%3Da%20b%7D"
        );
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
