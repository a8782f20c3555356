//! The HTTP upload shared by the Datadog and Pyroscope exporters: a fresh connection per
//! upload, closed when it ends (no pool: uploads come once a minute, and a pooled socket
//! would be inherited, idle and never closed, by every forked child), addresses from the
//! `AddressBook` (in `resolve.rs`) instead of DNS, timeouts on every step, and retries with
//! exponential backoff and jitter inside a time budget and the stop deadline.
//!
//! The client is forkprof's own (`conn.rs`, `http1.rs`, `tls.rs`): no proxy (a proxy host
//! would need a DNS lookup on the uploader thread), no redirects (to hosts nobody resolved),
//! and no logging: nothing it does calls the host's `log` logger, whose lock a fork could
//! find held by the uploader thread (forkprof's own messages reach the host through
//! `core/src/messages.rs`, on the host's threads). Every reason this client gives is scrubbed of the
//! exporter's secrets (see `HttpClient::with_secrets`).
//!
//! Retries: connection errors, timeouts, 408, 429 and 5xx; never other 4xx. A 429 or 503 with
//! `Retry-After` (seconds or an HTTP date, `retry_after.rs`) pauses at least that long, within
//! the retry budget and the stop deadline; when it does not fit, the profile is given up with
//! that reason and the next profile waits until the time the server gave.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::{Conn, Sock};
use crate::http1;
pub(crate) use crate::http1::HeaderValue;
use crate::resolve::{Address, Endpoint};
use crate::{Delivered, ExportFailure};
use forkprof_core::error::{Error, Result};

/// Upload timeouts and retry policy. The defaults suit a local agent and a profile a minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    /// Limit for establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Limit for one attempt, from connect to the last byte of the response.
    pub request_timeout: Duration,
    /// Attempts after the first one, on connection errors, timeouts, 5xx and 429.
    pub max_retries: u32,
    /// Limit for all attempts and pauses of one profile: a dead endpoint holds the export
    /// queue at most this long per profile (the queue drops the oldest beyond its bound).
    pub retry_budget: Duration,
    /// First pause between attempts; doubled each retry, up to `max_backoff`, with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_RETRIES: u32 = 3;
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(30);

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_budget: DEFAULT_RETRY_BUDGET,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
        }
    }
}

impl HttpOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::config(
                "http timeouts",
                "connect and request timeouts must be greater than zero",
            ));
        }
        if self.retry_budget.is_zero() {
            return Err(Error::config(
                "retry_budget",
                "must be greater than zero (it bounds every attempt of one profile)",
            ));
        }
        if self.initial_backoff > self.max_backoff {
            return Err(Error::config(
                "initial_backoff",
                "must not exceed max_backoff",
            ));
        }
        Ok(())
    }
}

/// Response bytes read at most (status pages, error JSON): whatever the endpoint sends, the
/// exporter's memory stays bounded.
pub const MAX_RESPONSE_BODY: u64 = 64 << 10;
/// Response headers accepted at most.
const MAX_RESPONSE_HEADERS: usize = 16 << 10;

/// One request to send: everything except the endpoint.
pub(crate) struct Request<'a> {
    /// Path and query, starting with `/`.
    pub path: String,
    pub content_type: String,
    pub headers: Vec<(String, HeaderValue)>,
    pub body: &'a [u8],
}

/// Where an HTTP exporter's settings keep their parsed endpoint (or why it could not be
/// parsed, reported by `validate`).
pub(crate) type EndpointOf<S> = fn(&S) -> &std::result::Result<Endpoint, Error>;

/// Builds one kind of HTTP exporter (`S`: its settings); holds what every process's exporter
/// shares: the settings, the endpoint's addresses, the client setup.
pub struct HttpFactory<S> {
    pub(crate) settings: S,
    endpoint_of: EndpointOf<S>,
    pub(crate) book: crate::resolve::AddressBook,
    pub(crate) setup: ClientSetup,
}

impl<S: fmt::Debug> fmt::Debug for HttpFactory<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.fmt(f)
    }
}

impl<S> HttpFactory<S> {
    /// A factory whose host names are looked up with `lookup` (when a profiler starts).
    pub(crate) fn with_lookup(
        settings: S,
        endpoint_of: EndpointOf<S>,
        lookup: crate::resolve::Lookup,
    ) -> Self {
        HttpFactory {
            book: crate::resolve::AddressBook::new(lookup),
            setup: ClientSetup::new(endpoint_of(&settings).as_ref().ok()),
            endpoint_of,
            settings,
        }
    }

    pub fn settings(&self) -> &S {
        &self.settings
    }

    pub(crate) fn endpoint(&self) -> Result<&Endpoint> {
        (self.endpoint_of)(&self.settings)
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Request headers by name.
pub(crate) type Headers = Vec<(String, HeaderValue)>;

/// Appends the user's extra headers to `headers`, each value a secret (also pushed to
/// `secrets`, to be scrubbed from reasons); refuses invalid names, names given twice and the
/// headers forkprof sets itself.
pub(crate) fn add_extra_headers(
    extra: &[(String, Secret)],
    headers: &mut Headers,
    secrets: &mut Vec<String>,
) -> Result<()> {
    for (name, value) in extra {
        if !crate::http1::valid_header_name(name) {
            return Err(Error::config(
                "headers",
                format!("`{name}` is not a valid HTTP header name"),
            ));
        }
        if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
            || ["content-type", "content-length", "content-encoding", "host"]
                .contains(&name.to_ascii_lowercase().as_str())
        {
            return Err(Error::config(
                "headers",
                format!("`{name}` is set by forkprof (or twice): remove the extra header"),
            ));
        }
        headers.push((name.clone(), secret_header_for("headers", &value.0)?));
        secrets.push(value.0.clone());
    }
    Ok(())
}

/// A header value that must never be shown: marked sensitive, so `Debug` hides it.
pub(crate) fn secret_header(value: &str) -> Result<HeaderValue> {
    secret_header_for("api_key", value)
}

/// [`secret_header`] for the setting `field`; the error never shows the value.
pub(crate) fn secret_header_for(field: &'static str, value: &str) -> Result<HeaderValue> {
    HeaderValue::new(value)
        .map(HeaderValue::sensitive)
        .ok_or_else(|| Error::config(field, "contains characters not allowed in an HTTP header"))
}

/// Standard base64 with padding (RFC 4648), for basic auth.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An API key: shown as `<redacted>` by `Debug`, never put in a message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What every client of one exporter configuration shares: built with the configuration, on
/// the host thread that makes it, so that creating a client (also in a forked child's
/// restart) builds nothing but the client itself.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientSetup {
    /// https: the TLS client configuration, or why there is none.
    #[cfg(feature = "tls")]
    tls: Option<std::result::Result<crate::tls::Tls, String>>,
}

impl ClientSetup {
    pub fn new(endpoint: Option<&Endpoint>) -> ClientSetup {
        #[cfg(feature = "tls")]
        {
            ClientSetup {
                tls: endpoint
                    .filter(|e| e.needs_tls())
                    .map(|_| crate::tls::Tls::new()),
            }
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = endpoint;
            ClientSetup {}
        }
    }
}

/// Sends requests to one endpoint; owned by one exporter on the uploader thread.
pub(crate) struct HttpClient {
    endpoint: Endpoint,
    addrs: Arc<Vec<SocketAddr>>,
    /// `Host:` of every request.
    host: String,
    user_agent: &'static str,
    #[cfg(feature = "tls")]
    tls: Option<std::result::Result<crate::tls::Tls, String>>,
    opts: HttpOptions,
    rng: u64,
    /// Texts that must never appear in a reason or a message (keys, passwords, tokens and
    /// the header values built from them), longest first.
    secrets: Vec<String>,
    /// A `Retry-After` the last profile could not wait out: no request before this.
    not_before: Option<Instant>,
}

enum Attempt {
    Done(u64),
    /// Worth another try; `after` is the server's `Retry-After`, if it gave one.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    Fatal {
        reason: String,
        too_large: bool,
    },
}

/// `250 ms`, `1.5 s`, `120 s`: for messages.
pub(crate) struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms < 1000 {
            write!(f, "{ms} ms")
        } else if ms < 10_000 {
            write!(f, "{}.{} s", ms / 1000, ms % 1000 / 100)
        } else {
            write!(f, "{} s", ms / 1000)
        }
    }
}

/// `1 attempt`, `3 attempts`.
struct Attempts(u32);

impl fmt::Display for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => f.write_str("1 attempt"),
            n => write!(f, "{n} attempts"),
        }
    }
}

/// Pauses until `until` (between attempts: the uploader thread holds no lock), or returns
/// the stop deadline as soon as the profiler is stopping and `until` falls after it (the
/// uploader thread is woken for a stop, so that is noticed at once).
fn pause_until(until: Instant) -> Result<(), Instant> {
    loop {
        if let Some(d) = crate::stop_deadline() {
            if until > d {
                return Err(d);
            }
        }
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        crate::pause(until - now);
    }
}

impl HttpClient {
    /// A client connecting to `addrs` only (or the endpoint's Unix socket), with no
    /// connection of its own yet. `secrets` are scrubbed from every reason the client gives.
    pub fn new(
        endpoint: &Endpoint,
        addrs: Arc<Vec<SocketAddr>>,
        opts: HttpOptions,
        setup: &ClientSetup,
        user_agent: &'static str,
        seed: u64,
    ) -> HttpClient {
        #[cfg(feature = "tls")]
        let tls = setup.tls.clone();
        #[cfg(not(feature = "tls"))]
        let _ = setup;
        HttpClient {
            endpoint: endpoint.clone(),
            addrs,
            host: endpoint.host_header(),
            user_agent,
            #[cfg(feature = "tls")]
            tls,
            opts,
            rng: seed | 1,
            secrets: Vec::new(),
            not_before: None,
        }
    }

    /// Texts to scrub from reasons and messages (empty ones are ignored).
    pub fn with_secrets(mut self, secrets: impl IntoIterator<Item = String>) -> HttpClient {
        self.secrets
            .extend(secrets.into_iter().filter(|s| !s.is_empty()));
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self
    }

    fn scrub(&self, mut text: String) -> String {
        for s in &self.secrets {
            if text.contains(s.as_str()) {
                text = text.replace(s.as_str(), "<redacted>");
            }
        }
        text
    }

    fn fail(&self, reason: String, retries: u32, too_large: bool) -> ExportFailure {
        ExportFailure {
            reason: self.scrub(reason),
            retries,
            too_large,
        }
    }

    /// Sends `req`, retrying retryable failures while the budget and `deadline` allow. Never
    /// starts an attempt or a pause that would end after `deadline`. A `Retry-After` on 429
    /// or 503 sets the pause (at least the usual backoff); one that does not fit the budget
    /// or the deadline ends the profile's attempts, and holds off the next profile's until
    /// the time the server gave.
    pub fn send(
        &mut self,
        req: &Request<'_>,
        deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        let start = Instant::now();
        let budget_end = start + self.opts.retry_budget;
        let end = deadline.map_or(budget_end, |d| d.min(budget_end));
        let limit = if deadline.is_some_and(|d| d < budget_end) {
            "the stop deadline"
        } else {
            "the retry budget"
        };
        let target = self.show(&req.path);
        if let Some(not_before) = self.not_before {
            if not_before > start {
                if not_before >= end {
                    return Err(self.fail(
                        format!(
                            "POST {target}: not sent: the server asked (Retry-After) to wait {} more, beyond {limit}",
                            Dur(not_before - start)
                        ),
                        0,
                        false,
                    ));
                }
                if pause_until(not_before).is_err() {
                    return Err(self.fail(
                        format!(
                            "POST {target}: not sent: the profiler is stopping and the server asked (Retry-After) to wait past the stop deadline"
                        ),
                        0,
                        false,
                    ));
                }
            }
            self.not_before = None;
        }
        let attempts = self.opts.max_retries.saturating_add(1);
        let mut retries = 0u32;
        loop {
            let now = Instant::now();
            if now >= end {
                return Err(self.fail(
                    format!("POST {target}: no time left before {limit}"),
                    retries,
                    false,
                ));
            }
            let timeout = self.opts.request_timeout.min(end - now);
            let n = retries + 1;
            let (why, asked) = match self.attempt(req, timeout) {
                Attempt::Done(bytes) => return Ok(Delivered { bytes, retries }),
                Attempt::Fatal { reason, too_large } => {
                    return Err(self.fail(
                        format!("POST {target}: {reason} (attempt {n}; not retryable)"),
                        retries,
                        too_large,
                    ))
                }
                Attempt::Retry { why, after } => (why, after),
            };
            let backoff = self.backoff(retries);
            let pause = asked.map_or(backoff, |a| a.max(backoff));
            let now = Instant::now();
            if let Some(a) = asked {
                // Whatever happens to this profile, the next one waits as asked too.
                self.not_before = Some(now + a);
            }
            if retries >= self.opts.max_retries {
                return Err(self.fail(
                    format!("POST {target}: {why} (gave up after {})", Attempts(n)),
                    retries,
                    false,
                ));
            }
            if now + pause >= end {
                let left = Dur(end.saturating_duration_since(now));
                let reason = match asked {
                    Some(a) => format!(
                        "POST {target}: {why}; the server asked to retry after {}, beyond {limit} ({left} left), so no upload before then ({})",
                        Dur(a),
                        Attempts(n)
                    ),
                    None => format!(
                        "POST {target}: {why} (gave up after {}: the next pause would pass {limit})",
                        Attempts(n)
                    ),
                };
                return Err(self.fail(reason, retries, false));
            }
            // A retry the server asked for (429/503 with Retry-After) is the server throttling
            // this host: worth telling at info. Other retries are routine, at debug.
            let level = if asked.is_some() {
                forkprof_core::messages::Level::Info
            } else {
                forkprof_core::messages::Level::Debug
            };
            if forkprof_core::messages::wants(level) {
                let text = self.scrub(format!(
                    "POST {target}: {why} (attempt {n} of {attempts}); retrying in {}{}",
                    Dur(pause),
                    if asked.is_some() {
                        " as the server asked (Retry-After)"
                    } else {
                        ""
                    }
                ));
                forkprof_core::messages::post(
                    forkprof_core::messages::Kind::ExportRetry,
                    level,
                    format_args!("{text}"),
                );
            }
            if pause_until(now + pause).is_err() {
                return Err(self.fail(
                    format!(
                        "POST {target}: {why}; the profiler is stopping and the next attempt (in {}) would start after the stop deadline ({})",
                        Dur(pause),
                        Attempts(n)
                    ),
                    retries,
                    false,
                ));
            }
            retries += 1;
        }
    }

    fn show(&self, path: &str) -> String {
        format!("{}{}", self.endpoint, path.split('?').next().unwrap_or(""))
    }

    /// Opens a connection by `deadline` (and within the connect timeout).
    fn connect(&self, deadline: Instant) -> std::io::Result<Conn> {
        let connect_by = (Instant::now() + self.opts.connect_timeout).min(deadline);
        let mut sock = match &self.endpoint.address {
            Address::Unix(path) => Sock::unix(path, connect_by)?,
            Address::Tcp { .. } => Sock::tcp(&self.addrs, connect_by)?,
        };
        sock.set_deadline(deadline);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let tls = tls.as_ref().map_err(|e| std::io::Error::other(e.clone()))?;
            let Address::Tcp { host, .. } = &self.endpoint.address else {
                return Ok(Conn::Plain(sock));
            };
            return tls.wrap(host, sock);
        }
        Ok(Conn::Plain(sock))
    }

    /// One try: connect, send, read the answer, close.
    fn attempt(&self, req: &Request<'_>, timeout: Duration) -> Attempt {
        let deadline = Instant::now() + timeout;
        let retry = |what: &str, e: std::io::Error| Attempt::Retry {
            why: format!("{what}: {e}"),
            after: None,
        };
        let mut conn = match self.connect(deadline) {
            Ok(c) => c,
            Err(e) => return retry("connecting", e),
        };
        let head = http1::request_head(
            &self.endpoint.path(&req.path),
            &self.host,
            self.user_agent,
            &req.content_type,
            req.body.len(),
            &req.headers,
        );
        let sent = http1::write_request(&mut conn, &head, req.body);
        // Every wait for input here is a wait for the answer to a request already written
        // (forkprof sends no `Expect: 100-continue` and uses no proxy): the session may end
        // the wait early when the host is exiting.
        let answer = {
            let _waiting = crate::WaitingOnPeer::new();
            http1::read_response(&mut conn, MAX_RESPONSE_HEADERS, MAX_RESPONSE_BODY as usize)
        };
        drop(conn);
        match (sent, answer) {
            // An endpoint may answer (413) before it has read the whole body, then close.
            (_, Ok(resp)) => {
                let retry_after = resp
                    .retry_after
                    .as_deref()
                    .and_then(|v| crate::retry_after::parse(v, std::time::SystemTime::now()));
                classify(resp.status, &resp.body, req.body.len() as u64, retry_after)
            }
            (Err(e), Err(_)) => retry("sending the request", e),
            (Ok(()), Err(e)) => retry("reading the response", e),
        }
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so retries from many
    /// processes restarted together spread out.
    fn backoff(&mut self, retry: u32) -> Duration {
        let base = self
            .opts
            .initial_backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(self.opts.max_backoff);
        // xorshift64: no dependency, no syscall; the seed differs per process.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = base / 2;
        let nanos = half.as_nanos() as u64;
        half + Duration::from_nanos(if nanos == 0 {
            0
        } else {
            self.rng % (nanos + 1)
        })
    }
}

/// What a response means. 408, 429 and 5xx are retried (429 and 503 as `Retry-After` asks);
/// every other 4xx is final: sending the same request again cannot fix it.
fn classify(code: u16, body: &[u8], sent: u64, retry_after: Option<Duration>) -> Attempt {
    if (200..300).contains(&code) {
        return Attempt::Done(sent);
    }
    let snippet: String = String::from_utf8_lossy(&body[..body.len().min(200)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let reason = format!("HTTP {code}: {}", snippet.trim());
    match code {
        429 | 503 => Attempt::Retry {
            why: reason,
            after: retry_after,
        },
        408 | 500..=599 => Attempt::Retry {
            why: reason,
            after: None,
        },
        413 => Attempt::Fatal {
            reason,
            too_large: true,
        },
        _ => Attempt::Fatal {
            reason,
            too_large: false,
        },
    }
}

/// Refuses https when the `tls` feature is off, at configuration time.
pub(crate) fn check_tls(endpoint: &Endpoint) -> Result<()> {
    if endpoint.needs_tls() && !cfg!(feature = "tls") {
        return Err(Error::config(
            "endpoint",
            format!("{endpoint} needs https: build forkprof with the `tls` feature"),
        ));
    }
    Ok(())
}

/// A seed that differs per process and per exporter, for jitter and runtime ids. Uses std's
/// randomly keyed hasher (keys from the OS once per thread) mixed with the pid and the clock.
pub(crate) fn seed(pid: u32) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(pid);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_usize(&h as *const _ as usize);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let opts = HttpOptions::default();
        let e = Endpoint::parse("http://127.0.0.1:9", "e").unwrap();
        let mut c = HttpClient::new(
            &e,
            Arc::new(vec![]),
            opts,
            &ClientSetup::new(Some(&e)),
            "t",
            42,
        );
        for retry in 0..10 {
            let base = opts
                .initial_backoff
                .saturating_mul(1 << retry)
                .min(opts.max_backoff);
            let d = c.backoff(retry);
            assert!(
                d >= base / 2 && d <= base,
                "retry {retry}: {d:?} vs {base:?}"
            );
        }
    }

    #[test]
    fn statuses_are_classified() {
        let wait = Some(Duration::from_secs(7));
        assert!(matches!(classify(200, b"", 5, None), Attempt::Done(5)));
        assert!(matches!(classify(202, b"", 5, None), Attempt::Done(5)));
        for (s, after) in [
            (429, wait),
            (503, wait),
            (500, None),
            (502, None),
            (408, None),
        ] {
            match classify(s, b"x", 1, wait) {
                Attempt::Retry { after: a, .. } => assert_eq!(a, after, "{s}"),
                _ => panic!("{s} is retried"),
            }
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(
                matches!(classify(s, b"x", 1, wait), Attempt::Fatal { .. }),
                "{s} is not retried"
            );
        }
        assert!(matches!(
            classify(413, b"", 1, None),
            Attempt::Fatal {
                too_large: true,
                ..
            }
        ));
        match classify(403, b"bad\nkey", 1, None) {
            Attempt::Fatal { reason, too_large } => {
                assert!(!too_large);
                assert_eq!(reason, "HTTP 403: bad key");
            }
            _ => panic!("403 is fatal"),
        }
    }

    /// With `tls`, https really is TLS: a plain-text server fails the handshake. Without it,
    /// https is refused at configuration time.
    #[test]
    fn https_goes_through_tls_or_is_refused() {
        use std::io::Write;
        let e = Endpoint::parse("https://127.0.0.1:1", "endpoint").unwrap();
        if !cfg!(feature = "tls") {
            let err = check_tls(&e).unwrap_err();
            assert!(err.to_string().contains("`tls` feature"), "{err}");
            return;
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        });
        let e = Endpoint::parse(&format!("https://127.0.0.1:{port}"), "endpoint").unwrap();
        let opts = HttpOptions {
            max_retries: 0,
            ..HttpOptions::default()
        };
        let addrs = Arc::new(vec![SocketAddr::from(([127, 0, 0, 1], port))]);
        let mut c = HttpClient::new(&e, addrs, opts, &ClientSetup::new(Some(&e)), "t", 1);
        let req = Request {
            path: "/x".into(),
            content_type: "text/plain".into(),
            headers: vec![],
            body: b"hi",
        };
        let failure = c.send(&req, None).unwrap_err();
        assert!(!failure.too_large);
        t.join().unwrap();
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn secrets_do_not_show() {
        let s = Secret("abc123".into());
        assert_eq!(format!("{s:?}"), "<redacted>");
        let h = secret_header("abc123").unwrap();
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("abc123"));
    }
}
