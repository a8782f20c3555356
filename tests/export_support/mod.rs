//! Loopback servers for the exporter tests: a small HTTP/1.1 server on TCP or a Unix socket
//! that records every request and answers as the test says (status, hang, reset, slow read),
//! a multipart parser, and the Datadog test agent as a subprocess.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use forkprof::export::HttpOptions;
use forkprof::{Frame, Profiler, Sample};

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request's head arrived.
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn query(&self, key: &str) -> Option<String> {
        let q = self.target.split_once('?')?.1;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| percent_decode(v))
        })
    }
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// What the server does with request number `n` (from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// The status with one extra header line (`Retry-After: 3`), body `status N`.
    StatusWith(u16, String),
    /// The status, with every request header echoed back in the body (a server or proxy
    /// that repeats the request in its error page: secrets must still not leak).
    Echo(u16),
    /// Reads the request, never answers (until the server is dropped).
    Hang,
    /// Reads the headers and part of the body, then resets the connection.
    ResetMidBody,
    /// Reads one byte a second, never answers.
    SlowRead,
}

type Policy = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// Connections accepted.
    connections: AtomicUsize,
    stop: Mutex<bool>,
    stopped: Condvar,
    policy: Policy,
    count: AtomicUsize,
}

impl Shared {
    fn stopping(&self) -> bool {
        *self.stop.lock().unwrap()
    }
    /// Waits until the server is dropped (for hanging replies).
    fn wait_stop(&self, limit: Duration) {
        let g = self.stop.lock().unwrap();
        let _ = self.stopped.wait_timeout_while(g, limit, |s| !*s).unwrap();
    }
}

enum Bound {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A recording HTTP server; stops (and releases hung connections) when dropped.
pub struct TestServer {
    shared: Arc<Shared>,
    bound: Bound,
    acceptor: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn tcp(policy: impl Fn(usize) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = new_shared(policy);
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopping() {
                    break;
                }
                let Ok(conn) = conn else { continue };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                std::thread::spawn(move || serve(&s, conn, true));
            }
        });
        TestServer {
            shared,
            bound: Bound::Tcp(addr),
            acceptor: Some(acceptor),
        }
    }

    pub fn unix(
        path: &Path,
        policy: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        let listener = UnixListener::bind(path).unwrap();
        let shared = new_shared(policy);
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopping() {
                    break;
                }
                let Ok(conn) = conn else { continue };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                std::thread::spawn(move || serve(&s, conn, false));
            }
        });
        TestServer {
            shared,
            bound: Bound::Unix(path.to_path_buf()),
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT` or `unix:///path`.
    pub fn url(&self) -> String {
        match &self.bound {
            Bound::Tcp(a) => format!("http://{a}"),
            Bound::Unix(p) => format!("unix://{}", p.display()),
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests seen so far (recorded or not: hung and reset ones count too).
    pub fn attempts(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap() = true;
        self.shared.stopped.notify_all();
        // Wake the acceptor so it sees `stop`.
        match &self.bound {
            Bound::Tcp(a) => drop(TcpStream::connect(a)),
            Bound::Unix(p) => {
                drop(UnixStream::connect(p));
                let _ = std::fs::remove_file(p);
            }
        }
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn new_shared(policy: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Arc<Shared> {
    Arc::new(Shared {
        requests: Mutex::new(Vec::new()),
        connections: AtomicUsize::new(0),
        stop: Mutex::new(false),
        stopped: Condvar::new(),
        policy: Arc::new(policy),
        count: AtomicUsize::new(0),
    })
}

trait Conn: Read + Write {
    fn reset(self);
}
impl Conn for TcpStream {
    fn reset(self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket fd and a correctly sized `linger`; with a zero linger time
        // the close below sends RST instead of FIN.
        unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(self);
    }
}
impl Conn for UnixStream {
    fn reset(self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

/// Serves requests on one connection until the client closes it.
fn serve(s: &Shared, mut conn: impl Conn, _tcp: bool) {
    let mut buf = Vec::new();
    loop {
        // Read the head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 << 10 {
                return;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or("");
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        buf.drain(..head_end);
        let at = Instant::now();
        let n = s.count.fetch_add(1, Ordering::SeqCst);
        let reply = (s.policy)(n);
        match &reply {
            Reply::ResetMidBody => {
                // Read up to half the body, then reset.
                while buf.len() < len / 2 {
                    let mut chunk = [0u8; 1024];
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                conn.reset();
                return;
            }
            Reply::SlowRead => {
                let start = Instant::now();
                while !s.stopping() && start.elapsed() < Duration::from_secs(60) {
                    let mut one = [0u8; 1];
                    if matches!(conn.read(&mut one), Ok(0) | Err(_)) {
                        return;
                    }
                    s.wait_stop(Duration::from_secs(1));
                }
                return;
            }
            _ => {}
        }
        while buf.len() < len {
            let mut chunk = [0u8; 64 << 10];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        // Last first: the headers an exporter adds itself (auth, keys) come after the fixed ones,
        // and the error snippet forkprof keeps is short.
        let echoed: String = headers
            .iter()
            .rev()
            .map(|(k, v)| format!("{k}: {v}; "))
            .collect();
        s.requests.lock().unwrap().push(Recorded {
            method,
            target,
            headers,
            body,
            at,
        });
        let (code, extra, text) = match &reply {
            Reply::Status(code) => (*code, String::new(), format!("status {code}")),
            Reply::StatusWith(code, line) => {
                (*code, format!("{line}\r\n"), format!("status {code}"))
            }
            Reply::Echo(code) => (*code, String::new(), format!("you sent {echoed}")),
            _ => (0, String::new(), String::new()),
        };
        match reply {
            Reply::Status(_) | Reply::StatusWith(..) | Reply::Echo(_) => {
                let resp = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{extra}\r\n{text}",
                    text.len()
                );
                if conn.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
            Reply::Hang => {
                s.wait_stop(Duration::from_secs(120));
                return;
            }
            Reply::ResetMidBody | Reply::SlowRead => unreachable!(),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One part of a multipart/form-data body.
#[derive(Debug)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

/// Parses a multipart/form-data body; panics (failing the test) on anything malformed.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<Part> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap_or_else(|| panic!("no boundary in {content_type}"))
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    let start = find(rest, delim.as_bytes()).expect("first delimiter");
    rest = &rest[start + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            break; // closing delimiter
        }
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after delimiter");
        let head_end = find(rest, b"\r\n\r\n").expect("part headers end");
        let head = std::str::from_utf8(&rest[..head_end]).unwrap();
        let next =
            find(&rest[head_end + 4..], format!("\r\n{delim}").as_bytes()).expect("next delimiter");
        let data = rest[head_end + 4..head_end + 4 + next].to_vec();
        let mut p = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            data,
        };
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':').unwrap();
            if k.eq_ignore_ascii_case("content-disposition") {
                for attr in v.split(';').map(str::trim) {
                    if let Some(n) = attr.strip_prefix("name=") {
                        p.name = n.trim_matches('"').to_string();
                    }
                    if let Some(f) = attr.strip_prefix("filename=") {
                        p.filename = Some(f.trim_matches('"').to_string());
                    }
                }
            } else if k.eq_ignore_ascii_case("content-type") {
                p.content_type = Some(v.trim().to_string());
            }
        }
        parts.push(p);
        rest = &rest[head_end + 4 + next + 2 + delim.len()..];
    }
    parts
}

/// Short timeouts and pauses so fault tests finish in well under a second per attempt.
pub fn fast_http(max_retries: u32) -> HttpOptions {
    HttpOptions {
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(400),
        max_retries,
        retry_budget: Duration::from_secs(10),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
    }
}

/// Records `n` samples of the one-frame stack `function`.
pub fn record(p: &Profiler, function: &str, n: usize) {
    let frames = [
        Frame::new(function, "export_test.rs", 7),
        Frame::new("main", "main.rs", 1),
    ];
    for _ in 0..n {
        p.record(&Sample::new(&frames, &[1])).unwrap();
    }
}

/// A free loopback port (bound then released: good enough for a subprocess to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET on loopback; `None` if nothing listens yet.
pub fn http_get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    c.read_to_end(&mut out).ok()?;
    let head_end = find(&out, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&out[..head_end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = out[head_end..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(b, b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// The Datadog test agent (`ddapm-test-agent`), started on free ports and killed on drop.
pub struct TestAgent {
    child: Child,
    pub port: u16,
}

impl TestAgent {
    /// `None` when the agent is not installed, unless `FORKPROF_REQUIRE_TEST_AGENT=1`
    /// (set by CI), which makes a missing agent a failure.
    pub fn start() -> Option<TestAgent> {
        let required = std::env::var_os("FORKPROF_REQUIRE_TEST_AGENT").is_some_and(|v| v == "1");
        let port = free_port();
        let spawned = Command::new("ddapm-test-agent")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--otlp-http-port", &free_port().to_string()])
            .args(["--otlp-grpc-port", &free_port().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    !required,
                    "ddapm-test-agent is required (FORKPROF_REQUIRE_TEST_AGENT=1) but cannot run: {e}; ci/test-agent.sh installs it"
                );
                eprintln!("ddapm-test-agent not available ({e}): skipping");
                return None;
            }
        };
        let mut agent = TestAgent { child, port };
        // Ready when it answers; it takes about a second to start.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = http_get(port, "/test/session/requests") {
                return Some(agent);
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("ddapm-test-agent exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "ddapm-test-agent did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds or `limit` passes (for servers that see requests a little
/// after the client has its answer).
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}
