//! Forks while the uploader is stuck on the network: blocked in `send` (a loopback server
//! that accepts and never reads, and a body larger than every socket buffer) and blocked in
//! `connect` (a listener whose backlog is full, so its SYNs go unanswered). The uploader holds
//! no lock while exporting, so the forks must complete at their usual speed; the latencies are
//! printed, not asserted (speed targets live in the benchmarks and `forkprof torture`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkprof::export::{Delivered, ExportContext, ExportFailure};
use forkprof::{
    ChildPolicy, Compression, Config, EncodedProfile, Exporter, ExporterConfig, ExporterFactory,
    Frame, Profiler, Sample,
};
use support::*;

const IDLE: u8 = 0;
const CONNECTING: u8 = 1;
const SENDING: u8 = 2;
const RECEIVING: u8 = 3;
const FAILED: u8 = 4;

/// Where the parent's exporter is, for the test to watch.
#[derive(Debug, Default)]
struct Progress {
    phase: AtomicU8,
    body_sent: AtomicU64,
}

#[derive(Debug)]
struct BlockingFactory {
    addr: SocketAddr,
    body_len: usize,
    progress: Arc<Progress>,
    parent_pid: u32,
}

impl ExporterFactory for BlockingFactory {
    fn compression(&self) -> Compression {
        Compression::Gzip
    }
    fn create(&self, ctx: &ExportContext<'_>) -> forkprof::Result<Box<dyn Exporter>> {
        if ctx.pid != self.parent_pid {
            // A forked child's exporter: delivers at once, so the child's own profile is
            // visible in its stats without a server.
            return Ok(Box::new(Accepting));
        }
        Ok(Box::new(BlockingExporter {
            addr: self.addr,
            body_len: self.body_len,
            progress: self.progress.clone(),
        }))
    }
}

struct Accepting;
impl Exporter for Accepting {
    fn export(
        &mut self,
        p: &EncodedProfile,
        _deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        Ok(Delivered {
            bytes: p.bytes.len() as u64,
            retries: 0,
        })
    }
}

/// A minimal HTTP/1.1 POST whose body is the profile padded to `body_len`.
struct BlockingExporter {
    addr: SocketAddr,
    body_len: usize,
    progress: Arc<Progress>,
}

impl Exporter for BlockingExporter {
    fn export(
        &mut self,
        p: &EncodedProfile,
        _deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        let fail = |what: &str, e: std::io::Error| {
            self.progress.phase.store(FAILED, Ordering::Release);
            ExportFailure {
                reason: format!("{what}: {e}"),
                ..ExportFailure::default()
            }
        };
        self.progress.phase.store(CONNECTING, Ordering::Release);
        let mut s = TcpStream::connect(self.addr).map_err(|e| fail("connect", e))?;
        self.progress.phase.store(SENDING, Ordering::Release);
        let len = self.body_len.max(p.bytes.len());
        let head = format!(
            "POST /profiling/v1/input HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n",
            self.addr
        );
        s.write_all(head.as_bytes()).map_err(|e| fail("send", e))?;
        s.write_all(&p.bytes).map_err(|e| fail("send", e))?;
        let pad = vec![0u8; 64 << 10];
        let mut left = len - p.bytes.len();
        while left > 0 {
            let n = left.min(pad.len());
            s.write_all(&pad[..n]).map_err(|e| fail("send", e))?;
            left -= n;
            self.progress
                .body_sent
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        self.progress.phase.store(RECEIVING, Ordering::Release);
        let mut reply = [0u8; 256];
        let n = s.read(&mut reply).map_err(|e| fail("receive", e))?;
        self.progress.phase.store(IDLE, Ordering::Release);
        if reply[..n].starts_with(b"HTTP/1.1 2") {
            Ok(Delivered {
                bytes: len as u64,
                retries: 0,
            })
        } else {
            Err(fail("status", std::io::Error::other("not 2xx")))
        }
    }
}

fn start(addr: SocketAddr, body_len: usize, progress: &Arc<Progress>) -> Profiler {
    let factory = BlockingFactory {
        addr,
        body_len,
        progress: progress.clone(),
        parent_pid: std::process::id(),
    };
    let cfg = Config::builder("blocked")
        .sample_type("samples", "count")
        .child_policy(ChildPolicy::Restart)
        .exporter(ExporterConfig::Custom(Arc::new(factory)))
        .build()
        .unwrap();
    Profiler::start(cfg).unwrap()
}

/// Forks `n` times while the uploader sits in `phase`; every child profiles itself and exits
/// 0. Returns the sorted fork latencies.
fn fork_while(p: &Profiler, progress: &Progress, phase: u8, n: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let pid = fork_and_run(|| {
            let f = [Frame::new("child_work", "c.rs", 1)];
            for _ in 0..3 {
                p.record(&Sample::new(&f, &[1])).unwrap();
            }
            match p.stop(Duration::from_secs(10)) {
                Ok(s) if s.samples_recorded == 3 && s.profiles_written == 1 => 0,
                _ => 110,
            }
        });
        lat.push(t0.elapsed());
        expect_exit_0(pid, "child forked during a blocked upload");
        assert_eq!(
            progress.phase.load(Ordering::Acquire),
            phase,
            "the upload left its blocked state during the forks"
        );
    }
    lat.sort();
    lat
}

fn report(what: &str, lat: &[Duration]) {
    eprintln!(
        "{what}: {} forks, latency p50 {:?} max {:?}",
        lat.len(),
        lat[lat.len() / 2],
        lat[lat.len() - 1]
    );
}

fn wait_for_phase(progress: &Progress, phase: u8) {
    let end = Instant::now() + Duration::from_secs(10);
    while progress.phase.load(Ordering::Acquire) != phase {
        assert!(
            Instant::now() < end,
            "the upload never reached phase {phase}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn forks_while_the_upload_is_blocked_in_send() {
    let _serial = serial();
    let _w = Watchdog::new("fork during blocked send", Duration::from_secs(60));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and holds the connection without ever reading it.
    let server = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    const BODY: usize = 64 << 20;
    let progress = Arc::new(Progress::default());
    let p = start(addr, BODY, &progress);
    let f = [Frame::new("parent_work", "p.rs", 1)];
    for _ in 0..100 {
        p.record(&Sample::new(&f, &[1])).unwrap();
    }
    p.flush().unwrap();
    wait_for_phase(&progress, SENDING);
    let held = server.join().unwrap().unwrap();
    let lat = fork_while(&p, &progress, SENDING, 50);
    let sent = progress.body_sent.load(Ordering::Relaxed);
    assert!(
        (sent as usize) < BODY,
        "the body went through ({sent} bytes): the send was never blocked"
    );
    report(
        &format!("blocked in send ({sent} of {BODY} body bytes sent)"),
        &lat,
    );
    // Unblock: the peer goes away, the send fails, the profile is counted as failed.
    drop(held);
    let s = p.stop(Duration::from_secs(20)).unwrap();
    assert_eq!(s.samples_recorded, 100);
    assert_eq!(s.profiles_failed, 1);
}

#[test]
fn forks_while_the_upload_is_blocked_in_connect() {
    let _serial = serial();
    let _w = Watchdog::new("fork during blocked connect", Duration::from_secs(60));
    // A listener with the smallest backlog, never accepting.
    // SAFETY: plain socket calls on a descriptor this test owns; results are checked.
    let (fd, addr) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len),
            0
        );
        assert_eq!(libc::listen(fd, 0), 0);
        let mut got = len;
        assert_eq!(
            libc::getsockname(fd, &mut sa as *mut _ as *mut libc::sockaddr, &mut got),
            0
        );
        let port = u16::from_be(sa.sin_port);
        (fd, SocketAddr::from(([127, 0, 0, 1], port)))
    };
    // Fill the accept queue until a connect no longer completes.
    let mut fillers = Vec::new();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the backlog never filled");
    }
    let progress = Arc::new(Progress::default());
    let p = start(addr, 0, &progress);
    let f = [Frame::new("parent_work", "p.rs", 1)];
    for _ in 0..100 {
        p.record(&Sample::new(&f, &[1])).unwrap();
    }
    p.flush().unwrap();
    wait_for_phase(&progress, CONNECTING);
    // A loopback connect that is not refused completes in microseconds; one still pending
    // after all the forks below was stuck in the SYN retries.
    let lat = fork_while(&p, &progress, CONNECTING, 50);
    report(
        &format!(
            "blocked in connect ({} connections fill the backlog)",
            fillers.len()
        ),
        &lat,
    );
    // Unblock: close the listener; the next SYN retry is refused.
    // SAFETY: closing the descriptor this test opened.
    unsafe { libc::close(fd) };
    let s = p.stop(Duration::from_secs(30)).unwrap();
    assert_eq!(s.samples_recorded, 100);
    assert_eq!(s.profiles_failed, 1);
}
