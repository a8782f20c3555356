//! The loopback endpoint the torture run uploads to: it accepts connections and, while
//! stalled, never reads or answers them. Its receive buffer is small, so an upload larger
//! than a few kilobytes blocks mid-body in the uploader's `send`, and stays there for as long
//! as the run wants. Once told to answer, it reads each request and replies 200.
//!
//! It lives in the parent process; forked children inherit its descriptors but not its
//! thread. Connections whose peer went away (a child that `_exit`ed mid-upload) are closed
//! while stalled, so thousands of children do not pile up descriptors.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
pub struct ServerCounters {
    pub accepted: AtomicU64,
    /// Requests whose body had not fully arrived when the endpoint started answering: the
    /// uploader was stalled mid-body.
    pub held_mid_body: AtomicU64,
    pub answered: AtomicU64,
    pub peers_gone: AtomicU64,
}

pub struct StalledServer {
    pub addr: SocketAddr,
    answering: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    pub counters: Arc<ServerCounters>,
    thread: Option<JoinHandle<()>>,
}

impl StalledServer {
    pub fn start() -> std::io::Result<StalledServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        // Accepted connections inherit the listener's buffer size: a few KiB, so a request
        // body does not fit in flight and the sender blocks mid-body.
        let small: libc::c_int = 4096;
        // SAFETY: setsockopt on a valid socket with a c_int option value and its size.
        unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let answering = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(ServerCounters::default());
        let thread = {
            let (answering, stop, counters) = (answering.clone(), stop.clone(), counters.clone());
            std::thread::Builder::new()
                .name("torture-endpoint".into())
                .spawn(move || serve(listener, &answering, &stop, &counters))?
        };
        Ok(StalledServer {
            addr,
            answering,
            stop,
            counters,
            thread: Some(thread),
        })
    }

    /// From now on every request, held or new, is read and answered.
    pub fn answer(&self) {
        self.answering.store(true, Ordering::Release);
    }
}

impl Drop for StalledServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// "The peer shut its side": Linux says so with POLLRDHUP; elsewhere only a full hang-up
/// shows, so there a child's abandoned connection is closed a little later or not at all.
#[cfg(any(target_os = "linux", target_os = "android"))]
const PEER_GONE: libc::c_short = libc::POLLRDHUP;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const PEER_GONE: libc::c_short = libc::POLLHUP;

fn serve(listener: TcpListener, answering: &AtomicBool, stop: &AtomicBool, c: &ServerCounters) {
    let mut held: Vec<TcpStream> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for s in &held {
            // Not POLLIN: that would report the unread request at once.
            fds.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events: PEER_GONE,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if n > 0 {
            let gone = PEER_GONE | libc::POLLHUP | libc::POLLERR;
            let mut i = 0;
            held.retain(|_| {
                i += 1;
                let keep = fds[i].revents & gone == 0;
                if !keep {
                    c.peers_gone.fetch_add(1, Ordering::Relaxed);
                }
                keep
            });
        }
        while let Ok((s, _)) = listener.accept() {
            c.accepted.fetch_add(1, Ordering::Relaxed);
            held.push(s);
        }
        if answering.load(Ordering::Acquire) {
            for s in held.drain(..) {
                if body_incomplete(&s) {
                    c.held_mid_body.fetch_add(1, Ordering::Relaxed);
                }
                if answer_one(s).is_ok() {
                    c.answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// True when what has arrived of the request (peeked, not consumed) is less than its headers
/// plus `Content-Length`: the sender is blocked mid-body.
fn body_incomplete(s: &TcpStream) -> bool {
    let mut buf = vec![0u8; 1 << 20];
    let n = match s.peek(&mut buf) {
        Ok(n) => n,
        Err(_) => return false,
    };
    let buf = &buf[..n];
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return n > 0; // not even the headers are in
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    n - (end + 4) < len
}

/// Reads one request (headers, then `Content-Length` bytes of body) and answers 200.
fn answer_one(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16384];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - header_end;
    while have < len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
    }
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}
