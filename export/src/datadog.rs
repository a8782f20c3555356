//! The Datadog exporter: a profile and its `event.json` as `multipart/form-data`, to the
//! local agent (`POST {agent}/profiling/v1/input`, over TCP or the agent's Unix socket) or
//! straight to the intake (`POST https://intake.profile.{site}/api/v2/profile` with
//! `DD-API-KEY`, which needs the `tls` feature).

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::http::{self, HttpClient, HttpOptions, Request, Secret};
use crate::multipart::Multipart;
use crate::resolve::Endpoint;
use crate::{
    Compression, Delivered, EncodedProfile, ExportContext, ExportFailure, Exporter, ExporterConfig,
    ExporterFactory,
};
use forkprof_core::error::{Error, Result};
use forkprof_core::TraceLabelStyle;

/// Largest request forkprof sends to Datadog. The profiling intake answers 413 above 10 MiB
/// per request (the agent forwards the body as is), so a larger profile is refused before
/// sending (`ExportFailure::too_large`, counted in `Stats::profiles_too_large`) rather than
/// uploaded for nothing.
pub const DATADOG_MAX_REQUEST_BYTES: usize = 10 << 20;

/// The agent's default TCP address.
pub const DEFAULT_AGENT_URL: &str = "http://localhost:8126";
/// The agent's default Unix socket, used when it exists and nothing else is configured.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/datadog/apm.socket";
pub const DEFAULT_SITE: &str = "datadoghq.com";

const AGENT_PATH: &str = "/profiling/v1/input";
const INTAKE_PATH: &str = "/api/v2/profile";
const ORIGIN: &str = "forkprof";
const USER_AGENT: &str = concat!("forkprof/", env!("CARGO_PKG_VERSION"));

/// Where Datadog profiles go, and what they are tagged with. Build one with
/// [`Datadog::agent`] or [`Datadog::agentless`], adjust it, and turn it into an
/// [`ExporterConfig`] with `.into()`.
#[derive(Clone, PartialEq, Eq)]
pub struct Datadog {
    endpoint: std::result::Result<Endpoint, Error>,
    api_key: Option<Secret>,
    service: Option<String>,
    env: Option<String>,
    version: Option<String>,
    tags: Vec<(String, String)>,
    family: String,
    /// The host's runtime id and the pid of the process that set it (see [`Datadog::runtime_id`]).
    runtime_id: Option<(String, u32)>,
    /// The profiling library's name and version, sent as `DD-EVP-ORIGIN` and
    /// `DD-EVP-ORIGIN-VERSION` (forkprof's own by default).
    library: Option<(String, String)>,
    http: HttpOptions,
    max_request_bytes: usize,
    lookup: crate::resolve::LookupFn,
}

impl fmt::Debug for Datadog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datadog")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("service", &self.service)
            .field("env", &self.env)
            .field("version", &self.version)
            .field("tags", &self.tags)
            .field("family", &self.family)
            .field("runtime_id", &self.runtime_id)
            .field("library", &self.library)
            .field("http", &self.http)
            .finish()
    }
}

impl Datadog {
    /// Through the agent at `url`: `http://host:8126` or `unix:///var/run/datadog/apm.socket`.
    pub fn agent(url: &str) -> Datadog {
        Datadog::new(Endpoint::parse(url, "endpoint"), None)
    }

    /// What the environment says (see [`crate::env`] for the variables and precedence);
    /// builder calls made after this one override it. Reads the environment now, on this
    /// thread, and never again.
    pub fn from_env() -> Result<Datadog> {
        crate::env::datadog_from_process_env()
    }

    /// Straight to the intake of `site` (e.g. `datadoghq.eu`), authenticated by `api_key`.
    pub fn agentless(site: &str, api_key: &str) -> Datadog {
        let url = format!("https://intake.profile.{site}");
        let endpoint = if site.is_empty() || site.contains(['/', ':', '@']) {
            Err(Error::config(
                "site",
                format!("`{site}` is not a Datadog site such as datadoghq.com"),
            ))
        } else {
            Endpoint::parse(&url, "site")
        };
        Datadog::new(endpoint, Some(Secret(api_key.to_string())))
    }

    /// To an intake, or a proxy in front of one, at `url` (`https://…`, or `http://…` for a
    /// local proxy), authenticated by `api_key`, with the intake's path `/api/v2/profile`.
    pub fn intake(url: &str, api_key: &str) -> Datadog {
        Datadog::new(
            Endpoint::parse(url, "endpoint"),
            Some(Secret(api_key.to_string())),
        )
    }

    fn new(endpoint: Result<Endpoint>, api_key: Option<Secret>) -> Datadog {
        Datadog {
            endpoint,
            api_key,
            service: None,
            env: None,
            version: None,
            tags: Vec::new(),
            family: "native".into(),
            runtime_id: None,
            library: None,
            http: HttpOptions::default(),
            max_request_bytes: DATADOG_MAX_REQUEST_BYTES,
            lookup: crate::resolve::LookupFn(crate::resolve::system_lookup),
        }
    }

    /// The `service` tag; defaults to the profiler's `Config::service`.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }
    pub fn env(mut self, env: impl Into<String>) -> Self {
        self.env = Some(env.into());
        self
    }
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }
    /// Adds a tag to every profile (after the profiler's own `Config` tags).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }
    /// The profiler family shown by Datadog: the language of the profiled code (`php`,
    /// `ruby`, `python`, `native`, the default). A runtime uploading through forkprof sets its
    /// own, or Datadog labels its profiles `native`.
    pub fn family(mut self, family: impl Into<String>) -> Self {
        self.family = family.into();
        self
    }
    /// The `runtime-id` tag: the host's tracer's runtime id (a UUID), so Datadog links the
    /// profiles to that runtime's traces. It applies to the process that calls this: a
    /// forked child is another runtime (its tracer makes a new id), and gets a random id of
    /// its own, as every process does when none is set.
    pub fn runtime_id(mut self, id: impl Into<String>) -> Self {
        self.runtime_id = Some((id.into(), std::process::id()));
        self
    }
    /// The profiling library's name and version, as the host's own profiler would send
    /// them (`DD-EVP-ORIGIN` and `DD-EVP-ORIGIN-VERSION`; default `forkprof` and its
    /// version). forkprof's own version stays in the `profiler_version` tag.
    pub fn library(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.library = Some((name.into(), version.into()));
        self
    }
    pub fn http_options(mut self, http: HttpOptions) -> Self {
        self.http = http;
        self
    }
    pub fn http(&self) -> HttpOptions {
        self.http
    }
    /// Replaces the host-name lookup `start()` performs (tests inject a slow or failing one
    /// to show that forks never wait for it). It still runs only on the starting thread.
    #[doc(hidden)]
    pub fn lookup_with(
        mut self,
        lookup: fn(&str, u16) -> std::io::Result<Vec<std::net::SocketAddr>>,
    ) -> Self {
        self.lookup = crate::resolve::LookupFn(lookup);
        self
    }
    /// Lowers the size limit (for tests and for proxies with a smaller one).
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes.min(DATADOG_MAX_REQUEST_BYTES);
        self
    }
}

impl From<Datadog> for ExporterConfig {
    fn from(d: Datadog) -> ExporterConfig {
        ExporterConfig::Custom(Arc::new(DatadogFactory::new(d)))
    }
}

/// Builds Datadog exporters.
pub type DatadogFactory = http::HttpFactory<Datadog>;

impl DatadogFactory {
    fn new(settings: Datadog) -> DatadogFactory {
        let lookup = settings.lookup.0;
        DatadogFactory::with_lookup(settings, |d| &d.endpoint, lookup)
    }
}

impl ExporterFactory for DatadogFactory {
    fn compression(&self) -> Compression {
        Compression::Zstd
    }

    fn trace_labels(&self) -> TraceLabelStyle {
        TraceLabelStyle::Datadog
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn validate(&self) -> Result<()> {
        let e = self.endpoint()?;
        http::check_tls(e)?;
        self.settings.http.validate()?;
        if let Some(k) = &self.settings.api_key {
            if k.0.trim().is_empty() {
                return Err(Error::config(
                    "api_key",
                    "is empty: set DD_API_KEY for agentless uploads",
                ));
            }
            http::secret_header(&k.0)?;
        }
        let s = &self.settings;
        if s.family.trim().is_empty() {
            return Err(Error::config("family", "must not be empty"));
        }
        if s.family.contains(char::is_control) {
            return Err(Error::config(
                "family",
                format!("{:?} holds a control character", s.family),
            ));
        }
        if let Some((id, _)) = &s.runtime_id {
            if id.trim().is_empty() || id.contains(|c: char| c.is_control() || c == ',') {
                return Err(Error::config(
                    "runtime_id",
                    format!("{id:?} is empty or holds a comma or a control character: expected the tracer's runtime id, a UUID"),
                ));
            }
        }
        if let Some((name, version)) = &s.library {
            for (field, v) in [("library name", name), ("library version", version)] {
                if v.trim().is_empty() || http::HeaderValue::new(v).is_none() {
                    return Err(Error::config(
                        field,
                        format!("{v:?} is empty or holds a control character"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn create(&self, ctx: &ExportContext<'_>) -> Result<Box<dyn Exporter>> {
        self.validate()?;
        let endpoint = self.endpoint()?;
        let addrs = self.book.addresses(endpoint, ctx.pid)?;
        let seed = http::seed(ctx.pid);
        let s = &self.settings;
        let mut tags = TagList::default();
        tags.push("service", s.service.as_deref().unwrap_or(ctx.service));
        if let Some(env) = &s.env {
            tags.push("env", env);
        }
        if let Some(v) = &s.version {
            tags.push("version", v);
        }
        if let Some(h) = forkprof_core::export::host_name() {
            tags.push("host", &h);
        }
        let own_id = s.runtime_id.as_ref().filter(|(_, pid)| *pid == ctx.pid);
        match own_id {
            Some((id, _)) => tags.push("runtime-id", id),
            None => tags.push(
                "runtime-id",
                &runtime_id(seed, http::seed(ctx.pid ^ 0x5bd1_e995)),
            ),
        }
        tags.push("profiler_version", env!("CARGO_PKG_VERSION"));
        for (k, v) in ctx.tags.iter().chain(&s.tags) {
            tags.push(k, v);
        }
        let (origin, origin_version) = match &s.library {
            Some((name, version)) => (
                http::HeaderValue::new(name)
                    .ok_or_else(|| Error::config("library name", "holds a control character"))?,
                http::HeaderValue::new(version)
                    .ok_or_else(|| Error::config("library version", "holds a control character"))?,
            ),
            None => (
                http::HeaderValue::fixed(ORIGIN),
                http::HeaderValue::fixed(env!("CARGO_PKG_VERSION")),
            ),
        };
        let mut headers = vec![
            ("DD-EVP-ORIGIN".to_string(), origin),
            ("DD-EVP-ORIGIN-VERSION".to_string(), origin_version),
        ];
        if let Some(k) = &s.api_key {
            headers.push(("DD-API-KEY".to_string(), http::secret_header(&k.0)?));
        }
        Ok(Box::new(DatadogExporter {
            client: HttpClient::new(endpoint, addrs, s.http, &self.setup, USER_AGENT, seed)
                .with_secrets(s.api_key.iter().map(|k| k.0.clone())),
            path: if s.api_key.is_some() {
                INTAKE_PATH
            } else {
                AGENT_PATH
            },
            tags: tags.0,
            family: s.family.clone(),
            headers,
            max_request_bytes: s.max_request_bytes,
            seed,
            api_key: s.api_key.clone(),
        }))
    }
}

/// `key:value,key:value`, with the characters that would break the list replaced. A tag
/// with an empty value is its bare key, as Datadog writes such tags (`DD_TAGS=foo`).
#[derive(Default)]
struct TagList(String);

impl TagList {
    fn push(&mut self, key: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        let clean = |s: &str| s.trim().replace([',', '\n', '\r'], "_");
        self.0.push_str(&clean(key));
        let value = clean(value);
        if !value.is_empty() {
            self.0.push(':');
            self.0.push_str(&value);
        }
    }
}

struct DatadogExporter {
    client: HttpClient,
    path: &'static str,
    /// Every tag but the pid, which comes from each profile.
    tags: String,
    family: String,
    headers: Vec<(String, http::HeaderValue)>,
    max_request_bytes: usize,
    seed: u64,
    /// Kept only to scrub it from failure messages (a proxy could echo it in a body).
    api_key: Option<Secret>,
}

impl DatadogExporter {
    fn event(&self, p: &EncodedProfile) -> String {
        let mut tags = self.tags.clone();
        tags.push_str(&format!(",process_id:{}", p.pid));
        // Requests per endpoint in the profile's period (`Profiler::count_endpoint`): what
        // Datadog's endpoint views divide the profile by.
        let mut counts = String::new();
        if !p.endpoint_counts.is_empty() {
            counts.push_str(",\"endpoint_counts\":{");
            for (i, (endpoint, n)) in p.endpoint_counts.iter().enumerate() {
                if i > 0 {
                    counts.push(',');
                }
                counts.push_str(&format!("{}:{n}", json_string(endpoint)));
            }
            counts.push('}');
        }
        format!(
            "{{\"attachments\":[\"profile.pprof\"],\"tags_profiler\":{},\"start\":\"{}\",\"end\":\"{}\",\"family\":{}{counts},\"version\":\"4\"}}",
            json_string(&tags),
            rfc3339(p.start),
            rfc3339(p.end),
            json_string(&self.family),
        )
    }
}

impl Exporter for DatadogExporter {
    fn export(
        &mut self,
        profile: &EncodedProfile,
        deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        let too_large = |size: usize| ExportFailure {
            reason: format!(
                "profile of {size} bytes exceeds the Datadog limit of {} bytes; not sent",
                self.max_request_bytes
            ),
            retries: 0,
            too_large: true,
        };
        if profile.bytes.len() > self.max_request_bytes {
            return Err(too_large(profile.bytes.len()));
        }
        let event = self.event(profile);
        let mut seed = self.seed ^ profile.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut form = Multipart::new(seed, profile.bytes.len() + event.len());
        while form.collides(&profile.bytes) {
            seed = seed.wrapping_add(1);
            form = Multipart::new(seed, profile.bytes.len() + event.len());
        }
        form.part(
            "event",
            Some("event.json"),
            "application/json",
            event.as_bytes(),
        );
        form.part(
            "profile.pprof",
            Some("profile.pprof"),
            "application/octet-stream",
            &profile.bytes,
        );
        let (content_type, body) = form.finish();
        if body.len() > self.max_request_bytes {
            return Err(too_large(body.len()));
        }
        let sent = self.client.send(
            &Request {
                path: self.path.to_string(),
                content_type,
                headers: self.headers.clone(),
                body: &body,
            },
            deadline,
        );
        sent.map_err(|mut f| {
            if let Some(k) = &self.api_key {
                f.reason = f.reason.replace(&k.0, "<redacted>");
            }
            f
        })
    }
}

/// A random (version 4) UUID, one per process: Datadog groups a process's profiles by it.
fn runtime_id(a: u64, b: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// RFC 3339 in UTC with nanoseconds: `2026-11-27T10:57:14.123456789Z`. Times before the
/// epoch (a badly set clock) are written as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = forkprof_core::calendar::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_dates() {
        let at = |s: u64, n: u32| rfc3339(UNIX_EPOCH + Duration::new(s, n));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(
            at(951_868_799, 999_999_999),
            "2000-02-29T23:59:59.999999999Z"
        );
        assert_eq!(
            at(1_700_000_000, 123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000000Z");
        assert_eq!(at(1_735_689_599, 0), "2024-12-31T23:59:59.000000000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn json_and_tags_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        let mut t = TagList::default();
        t.push("service", "a,b");
        t.push("env", " prod ");
        t.push("foo", "");
        assert_eq!(t.0, "service:a_b,env:prod,foo");
    }

    #[test]
    fn runtime_id_is_a_v4_uuid() {
        let id = runtime_id(http::seed(1), http::seed(2));
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!("89ab".contains(&id[19..20]));
        assert_ne!(id, runtime_id(http::seed(1), http::seed(3)));
    }

    fn profile() -> EncodedProfile {
        let mut p = EncodedProfile::new(
            vec![1, 2, 3],
            Compression::Zstd,
            SystemTime::now(),
            SystemTime::now(),
        );
        p.pid = 1;
        p.samples = 1;
        p
    }

    /// A one-shot server answering `status` with the request's own API key in the body.
    fn echoing_server(status: u16) -> (u16, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the end of the multipart body.
            while !req.ends_with(b"--\r\n") {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&req).into_owned();
            let key = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("dd-api-key: ")
                        .or(l.strip_prefix("DD-API-KEY: "))
                })
                .unwrap_or("")
                .trim()
                .to_string();
            let body = format!("bad key {key}");
            let _ = write!(
                c,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            key
        });
        (port, t)
    }

    #[test]
    fn failure_messages_never_hold_the_api_key() {
        let key = "k3y-0f-the-test-5678";
        let config = forkprof_core::Config::builder("svc")
            .sample_type("s", "count")
            .build()
            .unwrap();
        let (port, server) = echoing_server(403);
        let f = DatadogFactory::new(Datadog::intake(&format!("http://127.0.0.1:{port}"), key));
        let mut e = f.create(&config.export_context(1)).unwrap();
        let failure = e.export(&profile(), None).unwrap_err();
        assert_eq!(server.join().unwrap(), key, "the key went in the header");
        assert!(failure.reason.contains("403"), "{}", failure.reason);
        assert!(failure.reason.contains("<redacted>"), "{}", failure.reason);
        assert!(!failure.reason.contains(key), "{}", failure.reason);
        assert!(!format!("{f:?}").contains(key));
    }

    /// The HTTP client connects to the addresses found at `create()`, never looking the name
    /// up itself: `agent.invalid` cannot resolve through DNS, and the upload still arrives.
    #[test]
    fn uploads_use_the_addresses_resolved_at_create_and_never_look_up() {
        use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
        static PORT: AtomicU16 = AtomicU16::new(0);
        static LOOKUPS: AtomicUsize = AtomicUsize::new(0);
        let (port, server) = echoing_server(200);
        PORT.store(port, Ordering::SeqCst);
        let config = forkprof_core::Config::builder("svc")
            .sample_type("s", "count")
            .build()
            .unwrap();
        let mut f = DatadogFactory::new(Datadog::agent(&format!("http://agent.invalid:{port}")));
        f.book = crate::resolve::AddressBook::new(|host, p| {
            LOOKUPS.fetch_add(1, Ordering::SeqCst);
            assert_eq!(host, "agent.invalid");
            Ok(vec![std::net::SocketAddr::from((
                [127, 0, 0, 1],
                PORT.load(Ordering::SeqCst).max(p),
            ))])
        });
        let mut e = f.create(&config.export_context(7)).unwrap();
        assert_eq!(
            LOOKUPS.load(Ordering::SeqCst),
            1,
            "looked up once, in create()"
        );
        let d = e.export(&profile(), None).unwrap();
        assert!(d.bytes > 0);
        server.join().unwrap();
        assert_eq!(
            LOOKUPS.load(Ordering::SeqCst),
            1,
            "no lookup while exporting"
        );
        // A child (another pid) builds its exporter without any lookup.
        let _child = f.create(&config.export_context(8)).unwrap();
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn debug_hides_the_api_key() {
        let d = Datadog::agentless("datadoghq.eu", "sekrit-key-123");
        assert!(!format!("{d:?}").contains("sekrit"));
        let cfg: ExporterConfig = d.into();
        assert!(!format!("{cfg:?}").contains("sekrit"));
        let bad = Datadog::agentless("evil.com/x", "k");
        assert!(bad.endpoint.is_err());
    }
}
