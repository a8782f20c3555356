//! The exporters' file descriptors across uploads and forks, counted from `/proc/self/fd`:
//! no connection outlives its upload (no pool), every socket is close-on-exec, and a forked
//! child can close the socket its parent's uploader had open at the fork (the parent's
//! uploader thread does not exist in the child, so nothing else ever would).

#![cfg(target_os = "linux")]

mod export_support;
mod support;

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use export_support::*;
use forkprof::export::{Datadog, HttpOptions};
use forkprof::{ChildPolicy, Config, Profiler};
use support::*;

/// The descriptors open in this process (but the one listing them).
fn open_fds() -> Vec<RawFd> {
    let mut v: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let listing = target.starts_with("/proc") && target.ends_with("fd");
            (!listing).then_some(())?;
            e.file_name().to_str()?.parse().ok()
        })
        .collect();
    v.sort();
    v
}

/// The peer of socket `fd`, if it is a connected IPv4 socket.
fn peer(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: sockaddr_in is plain old data.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a correctly sized out-parameter; a non-socket fd only makes the call fail.
    let rc = unsafe { libc::getpeername(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len) };
    if rc != 0 || sa.sin_family != libc::AF_INET as libc::sa_family_t {
        return None;
    }
    Some(SocketAddr::from((
        sa.sin_addr.s_addr.to_ne_bytes(),
        u16::from_be(sa.sin_port),
    )))
}

/// This process's sockets connected to `server` (the client side of its connections).
fn sockets_to(server: SocketAddr) -> Vec<RawFd> {
    open_fds()
        .into_iter()
        .filter(|&fd| peer(fd) == Some(server))
        .collect()
}

fn addr_of(server: &TestServer) -> SocketAddr {
    server.url().trim_start_matches("http://").parse().unwrap()
}

fn start(url: &str, http: HttpOptions) -> Profiler {
    let cfg = Config::builder("fds")
        .sample_type("samples", "count")
        .child_policy(ChildPolicy::Restart)
        .exporter(Datadog::agent(url).http_options(http).into())
        .build()
        .unwrap();
    Profiler::start(cfg).unwrap()
}

#[test]
fn no_connection_outlives_its_upload() {
    let _w = Watchdog::new("connections per upload", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Status(200));
    let addr = addr_of(&server);
    let p = start(&server.url(), fast_http(1));
    for i in 0..5 {
        record(&p, "uploaded", 2);
        p.flush_sync(Duration::from_secs(10)).unwrap();
        assert_eq!(
            sockets_to(addr),
            Vec::<RawFd>::new(),
            "a socket to the agent is still open after upload {i}"
        );
    }
    let stats = p.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(sockets_to(addr), Vec::<RawFd>::new());
    assert!(stats.profiles_written >= 5, "{stats:?}");
    assert_eq!(server.requests().len() as u64, stats.profiles_written);
    // One connection per upload: none was kept for the next.
    assert_eq!(server.connections(), server.requests().len());
}

#[test]
fn a_child_closes_the_socket_its_parents_upload_had_open() {
    let _w = Watchdog::new("inherited upload socket", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Hang);
    let addr = addr_of(&server);
    let p = start(
        &server.url(),
        HttpOptions {
            request_timeout: Duration::from_secs(30),
            max_retries: 0,
            ..fast_http(0)
        },
    );
    record(&p, "hung_upload", 2);
    p.flush().unwrap();
    // The request has arrived: the uploader now waits for the answer on its socket.
    assert!(
        eventually(Duration::from_secs(10), || server.attempts() == 1),
        "the upload never reached the server"
    );
    let uploading = sockets_to(addr);
    assert_eq!(
        uploading.len(),
        1,
        "the parent's upload socket: {uploading:?}"
    );
    // SAFETY: fcntl on a descriptor of this process.
    let flags = unsafe { libc::fcntl(uploading[0], libc::F_GETFD) };
    assert!(
        flags & libc::FD_CLOEXEC != 0,
        "the upload socket is not close-on-exec"
    );

    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(fork_and_run(|| {
            let before = open_fds();
            let inherited = sockets_to(addr);
            // 1: the parent's socket (or 0 if the fork handling already closed it).
            if inherited.len() > 1 {
                return 2;
            }
            forkprof::export::close_inherited_fds_for_tests();
            if !sockets_to(addr).is_empty() {
                return 3;
            }
            // Nothing else was closed: only the parent's upload socket is gone.
            let after = open_fds();
            let expected: Vec<RawFd> = before
                .into_iter()
                .filter(|fd| !inherited.contains(fd))
                .collect();
            if after != expected {
                return 4;
            }
            0
        }));
    }
    for c in children {
        expect_exit_0(
            c,
            "child closing its parent's upload socket (2: several inherited, 3: still open, 4: closed others)",
        );
    }
    // The parent's own upload is untouched by its children.
    assert_eq!(sockets_to(addr), uploading);
    let _ = p.stop(Duration::from_millis(200));
    drop(server);
}
