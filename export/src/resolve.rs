//! Endpoints and their addresses, resolved ahead of time: no profiler thread calls the libc
//! resolver.
//!
//! An [`Endpoint`] is parsed once, when the exporter is configured. Its host name is looked up
//! by [`AddressBook::addresses`], which runs inside `ExporterFactory::create`: on the thread
//! that calls `start()`, or on the host thread that restarts profiling in a forked child. The
//! HTTP client never resolves anything: it connects to the stored addresses only.
//!
//! Re-resolution: the addresses are looked up again at each `start()` in the process that
//! looked them up first (a host thread, never a profiler thread), and never in a forked child,
//! which reuses its parent's (`getaddrinfo` in a child can hang on an inherited
//! resolver lock, or fault on macOS). A failed re-lookup keeps the previous addresses. During a
//! run the addresses are not refreshed: if the endpoint moves, uploads fail and are counted
//! (`profiles_failed`) until the host restarts the profiler. IP literals, `localhost` and Unix
//! sockets need no lookup at all.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use forkprof_core::error::{Error, Result};
use forkprof_core::sync::BriefLock;

/// Where an exporter connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// TCP: a host (name or IP literal) and a port.
    Tcp { host: String, port: u16, tls: bool },
    /// A Unix domain socket (`unix:///var/run/datadog/apm.socket`).
    Unix(PathBuf),
}

/// A parsed endpoint URL: `http://host:port[/base]`, `https://…` or `unix:///path`.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: Address,
    /// Path prefix without a trailing slash (empty for none).
    pub base_path: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            Address::Tcp { host, port, tls } => {
                let scheme = if *tls { "https" } else { "http" };
                if host.contains(':') {
                    write!(f, "{scheme}://[{host}]:{port}{}", self.base_path)
                } else {
                    write!(f, "{scheme}://{host}:{port}{}", self.base_path)
                }
            }
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// `url` with any `user:password@` removed, for error messages.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<credentials>@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Credentials given in a URL (`http://user:password@host`), percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct UrlCredentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UrlCredentials({}, <redacted>)", self.user)
    }
}

impl Endpoint {
    /// Parses `url`; `field` names the configuration field in errors. Credentials in the URL
    /// are refused (see [`Endpoint::parse_with_credentials`] for the exporters that take them).
    pub fn parse(url: &str, field: &'static str) -> Result<Endpoint> {
        match Endpoint::parse_with_credentials(url, field)? {
            (_, Some(_)) => Err(Error::config(
                field,
                format!(
                    "`{}`: credentials in the URL are not supported here",
                    without_userinfo(url.trim())
                ),
            )),
            (e, None) => Ok(e),
        }
    }

    /// Parses `url`, splitting off `user:password@` if present. Errors never show the
    /// credentials.
    pub(crate) fn parse_with_credentials(
        url: &str,
        field: &'static str,
    ) -> Result<(Endpoint, Option<UrlCredentials>)> {
        let url = url.trim();
        let bad = |why: &str| Error::config(field, format!("`{}`: {why}", without_userinfo(url)));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected http://host:port, https://host or unix:///path"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "unix" => {
                if !rest.starts_with('/') {
                    return Err(bad("a Unix socket path must be absolute (unix:///path)"));
                }
                Ok((
                    Endpoint {
                        address: Address::Unix(PathBuf::from(rest)),
                        base_path: String::new(),
                    },
                    None,
                ))
            }
            s @ ("http" | "https") => {
                let tls = s == "https";
                let (authority, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                let (credentials, authority) = match authority.rsplit_once('@') {
                    Some((userinfo, host)) => {
                        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                        let decode = |s: &str| {
                            percent_decode(s)
                                .ok_or_else(|| bad("bad percent-encoding in the credentials"))
                        };
                        (
                            Some(UrlCredentials {
                                user: decode(user)?,
                                password: decode(password)?,
                            }),
                            host,
                        )
                    }
                    None => (None, authority),
                };
                if path.contains(['?', '#']) {
                    return Err(bad("no query or fragment expected"));
                }
                let (host, port) =
                    split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
                let port = port.unwrap_or(if tls { 443 } else { 80 });
                if host.is_empty() {
                    return Err(bad("no host"));
                }
                Ok((
                    Endpoint {
                        address: Address::Tcp {
                            host: host.to_string(),
                            port,
                            tls,
                        },
                        base_path: path.trim_end_matches('/').to_string(),
                    },
                    credentials,
                ))
            }
            _ => Err(bad("unsupported scheme (http, https or unix)")),
        }
    }

    /// The `Host:` header of requests to this endpoint: `localhost` for a Unix socket (what
    /// the Datadog agent expects there), else the host, with the port unless it is the
    /// scheme's default.
    pub fn host_header(&self) -> String {
        match &self.address {
            Address::Unix(_) => "localhost".to_string(),
            Address::Tcp { host, port, tls } => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                if *port == if *tls { 443 } else { 80 } {
                    host
                } else {
                    format!("{host}:{port}")
                }
            }
        }
    }

    /// The request path for `path` (which starts with `/`): the endpoint's base path first.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    pub fn needs_tls(&self) -> bool {
        matches!(self.address, Address::Tcp { tls: true, .. })
    }
}

/// `%XX` escapes to bytes; `None` for a malformed escape or a result that is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<Ipv6Addr>().ok()?;
        match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?.parse().ok()?))),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => Some((h, Some(p.parse().ok()?))),
            Some(_) => None, // a bare IPv6 literal must be bracketed
            None => Some((authority, None)),
        }
    }
}

/// How a host name becomes addresses: the system resolver in production, a stub in tests.
pub(crate) type Lookup = fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

/// A [`Lookup`] that settings can hold and compare.
#[derive(Clone, Copy)]
pub(crate) struct LookupFn(pub Lookup);

impl PartialEq for LookupFn {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::fn_addr_eq(self.0, other.0)
    }
}

impl Eq for LookupFn {}

pub(crate) fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// Addresses that need no lookup: IP literals and `localhost`.
fn literal_addresses(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Some(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    None
}

struct Looked {
    /// The process that did the lookup.
    pid: u32,
    addrs: Arc<Vec<SocketAddr>>,
}

/// The addresses of one endpoint, shared by every exporter its factory creates (in this
/// process and, through fork's copy of memory, in its children).
pub(crate) struct AddressBook {
    lookup: Lookup,
    looked: BriefLock<Option<Looked>>,
}

impl fmt::Debug for AddressBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AddressBook")
    }
}

impl AddressBook {
    pub fn new(lookup: Lookup) -> AddressBook {
        AddressBook {
            lookup,
            looked: BriefLock::new(None),
        }
    }

    /// The addresses for `endpoint`, for an exporter created in process `pid`. Looks the name
    /// up only in the process that owns the book (see the module doc); the lookup runs with no
    /// lock held and the lock is held only to copy an `Arc`.
    pub fn addresses(&self, endpoint: &Endpoint, pid: u32) -> Result<Arc<Vec<SocketAddr>>> {
        let (host, port) = match &endpoint.address {
            Address::Unix(_) => return Ok(Arc::new(Vec::new())),
            Address::Tcp { host, port, .. } => (host.as_str(), *port),
        };
        if let Some(addrs) = literal_addresses(host, port) {
            return Ok(Arc::new(addrs));
        }
        let previous = self.read()?;
        if let Some((owner, addrs)) = &previous {
            if *owner != pid {
                return Ok(addrs.clone()); // a forked child: never resolve here
            }
        }
        match (self.lookup)(host, port) {
            Ok(found) if !found.is_empty() => {
                let addrs = Arc::new(found);
                if let Some(mut g) = self.looked.try_lock() {
                    *g = Some(Looked {
                        pid,
                        addrs: addrs.clone(),
                    });
                }
                Ok(addrs)
            }
            result => match previous {
                Some((_, addrs)) => Ok(addrs), // keep the last good answer
                None => Err(Error::Export {
                    reason: format!(
                        "cannot resolve `{host}`: {}; check the endpoint's host name or use an IP address",
                        match result {
                            Err(e) => e.to_string(),
                            Ok(_) => "no addresses".into(),
                        }
                    ),
                }),
            },
        }
    }

    /// The stored lookup. A lock still held after a few tries can only be a parent thread's,
    /// frozen by fork mid-store: give up rather than spin forever in a child.
    fn read(&self) -> Result<Option<(u32, Arc<Vec<SocketAddr>>)>> {
        for _ in 0..1000 {
            if let Some(g) = self.looked.try_lock() {
                return Ok(g.as_ref().map(|l| (l.pid, l.addrs.clone())));
            }
            std::thread::yield_now();
        }
        Err(Error::Export {
            reason: "the endpoint's address book was locked across fork; restart the profiler"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://10.0.0.7:8126/", "endpoint").unwrap();
        assert_eq!(e.to_string(), "http://10.0.0.7:8126");
        assert_eq!(e.host_header(), "10.0.0.7:8126");
        assert_eq!(e.path("/profiling/v1/input"), "/profiling/v1/input");
        let e = Endpoint::parse("https://intake.profile.datadoghq.eu", "endpoint").unwrap();
        assert!(e.needs_tls());
        assert_eq!(e.to_string(), "https://intake.profile.datadoghq.eu:443");
        assert_eq!(e.host_header(), "intake.profile.datadoghq.eu");
        let e = Endpoint::parse("http://[::1]:4040/base/", "endpoint").unwrap();
        assert_eq!(e.to_string(), "http://[::1]:4040/base");
        assert_eq!(e.host_header(), "[::1]:4040");
        assert_eq!(e.path("/ingest?x=1"), "/base/ingest?x=1");
        let e = Endpoint::parse("unix:///var/run/datadog/apm.socket", "endpoint").unwrap();
        assert_eq!(
            e.address,
            Address::Unix("/var/run/datadog/apm.socket".into())
        );
        assert_eq!(e.host_header(), "localhost");
        for bad in [
            "localhost:8126",
            "ftp://x",
            "http://:80",
            "http://h:99999",
            "http://::1:80",
            "unix://relative",
            "http://u:p@h",
            "http://h/p?q",
        ] {
            let err = Endpoint::parse(bad, "endpoint").unwrap_err();
            assert!(err.to_string().contains("`endpoint`"), "{bad}: {err}");
        }
    }

    #[test]
    fn credentials_are_split_off_and_never_shown() {
        let (e, c) =
            Endpoint::parse_with_credentials("https://123456:glc_s3cr%40t@host.example/base", "e")
                .unwrap();
        assert_eq!(e.to_string(), "https://host.example:443/base");
        let c = c.unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("123456", "glc_s3cr@t")
        );
        let (_, none) = Endpoint::parse_with_credentials("http://h:1", "e").unwrap();
        assert!(none.is_none());
        for bad in [
            "http://u:hunter2@h:99999",
            "ftp://u:hunter2@h",
            "http://u:hunter2%zz@h",
            "http://u:hunter2@h/p?q",
        ] {
            let err = Endpoint::parse_with_credentials(bad, "endpoint").unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{bad}: {err}");
            assert!(err.to_string().contains("<credentials>@"), "{bad}: {err}");
        }
        let err = Endpoint::parse("http://u:hunter2@h", "endpoint").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("not supported"), "{err}");
    }

    static CALLS: AtomicUsize = AtomicUsize::new(0);
    fn counting_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let n = CALLS.fetch_add(1, Ordering::SeqCst);
        if host == "down.example" {
            return Err(io::Error::other("no such host"));
        }
        Ok(vec![SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + n as u8)),
            port,
        )])
    }

    #[test]
    fn literals_need_no_lookup_and_children_reuse_the_parents_addresses() {
        let book = AddressBook::new(counting_lookup);
        let before = CALLS.load(Ordering::SeqCst);
        for url in [
            "http://127.0.0.1:1",
            "http://[::1]:2",
            "http://LOCALHOST:3",
            "unix:///s",
        ] {
            book.addresses(&Endpoint::parse(url, "e").unwrap(), 1)
                .unwrap();
        }
        let local = book
            .addresses(&Endpoint::parse("http://localhost:8126", "e").unwrap(), 1)
            .unwrap();
        assert_eq!(local.len(), 2);
        assert_eq!(
            CALLS.load(Ordering::SeqCst),
            before,
            "no lookup for literals"
        );

        let e = Endpoint::parse("http://agent.example:8126", "e").unwrap();
        let first = book.addresses(&e, 100).unwrap();
        assert_eq!(CALLS.load(Ordering::SeqCst), before + 1);
        // A forked child (another pid) reuses the parent's answer without looking up.
        let child = book.addresses(&e, 200).unwrap();
        assert_eq!(child, first);
        assert_eq!(CALLS.load(Ordering::SeqCst), before + 1);
        // The owning process re-resolves at its next start().
        let again = book.addresses(&e, 100).unwrap();
        assert_eq!(CALLS.load(Ordering::SeqCst), before + 2);
        assert_ne!(again, first);
        // The child now sees the refreshed answer too.
        assert_eq!(book.addresses(&e, 300).unwrap(), again);
    }

    #[test]
    fn a_failed_lookup_keeps_the_last_answer_or_names_the_host() {
        let book = AddressBook::new(counting_lookup);
        let e = Endpoint::parse("http://down.example:1", "e").unwrap();
        let err = book.addresses(&e, 1).unwrap_err();
        assert!(err.to_string().contains("down.example"), "{err}");
        let good =
            AddressBook::new(|_, p| Ok(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p)]));
        let e2 = Endpoint::parse("http://up.example:9", "e").unwrap();
        let a = good.addresses(&e2, 1).unwrap();
        // Same book, now failing: swap the lookup by building a book that fails after success.
        let flaky = AddressBook {
            lookup: |_, _| Err(io::Error::other("timeout")),
            looked: BriefLock::new(Some(Looked {
                pid: 1,
                addrs: a.clone(),
            })),
        };
        assert_eq!(flaky.addresses(&e2, 1).unwrap(), a);
    }
}
