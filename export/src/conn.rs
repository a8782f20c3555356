//! One upload's connection: a socket forkprof makes itself (TCP to an address resolved ahead
//! of time, or a Unix socket), TLS on top when the endpoint is https, every read and write
//! bounded by the attempt's deadline, and closed when the upload ends: no pool, so no
//! connection outlives its upload or is inherited idle by a forked child.
//!
//! Made by hand rather than with std's `TcpStream::connect_timeout` so that the descriptor is
//! close-on-exec from its creation and recorded for forked children (`core/src/export/fds.rs`) before the
//! connect, which can take up to the connect timeout. Writes use `send(MSG_NOSIGNAL)` (or
//! `SO_NOSIGPIPE` on macOS): a peer that went away must give an error, never a `SIGPIPE` in a
//! host that has not ignored it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use forkprof_core::export::fds::TrackedFd;

/// A connected socket whose reads and writes end by a deadline.
#[derive(Debug)]
pub(crate) struct Sock {
    fd: TrackedFd,
    deadline: Instant,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// `detail`, when not empty, says why in a few words.
fn timed_out(detail: &str) -> io::Error {
    if detail.is_empty() {
        io::Error::new(io::ErrorKind::TimedOut, "timed out")
    } else {
        io::Error::new(io::ErrorKind::TimedOut, format!("timed out ({detail})"))
    }
}

/// A new close-on-exec stream socket of `family`, recorded for forked children.
fn socket(family: libc::c_int) -> io::Result<TrackedFd> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just created and own; it is closed on every path.
    let owned = TrackedFd::new(unsafe { OwnedFd::from_raw_fd(fd) });
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        // No SOCK_CLOEXEC here: set it at once (a program exec'd by another thread in
        // between would inherit the socket; nothing closes that window on these systems).
        // SAFETY: fcntl on a valid fd with integer arguments.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and a correctly sized int option.
        if unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(owned)
}

fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a valid fd with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `fd` is ready for `events` or `deadline` passes.
fn wait(fd: RawFd, events: libc::c_short, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(""));
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc > 0 {
            return Ok(());
        }
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Sets the socket's `option` (SO_RCVTIMEO or SO_SNDTIMEO) to the time left before
/// `deadline`, or fails if none is left.
fn arm(fd: RawFd, option: libc::c_int, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out(""));
    }
    // A zero timeval means "no timeout": never pass one.
    let left = left.max(Duration::from_micros(1));
    let tv = libc::timeval {
        tv_sec: left.as_secs().min(i32::MAX as u64) as _,
        tv_usec: left.subsec_micros() as _,
    };
    // SAFETY: `tv` is a valid timeval and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connects a socket of `family` to `addr` (`len` bytes) by `deadline`.
///
/// TCP: a non-blocking connect and `poll`. A Unix socket's connect completes at once unless
/// the listener's backlog is full (a stuck agent); then a non-blocking connect fails at once
/// with `EAGAIN`, where waiting a little may see the agent catch up. The kernel bounds a
/// blocking AF_UNIX connect by the socket's send timeout, so that is used instead.
fn connect_raw(
    family: libc::c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    deadline: Instant,
) -> io::Result<TrackedFd> {
    let fd = socket(family)?;
    let raw = fd.as_raw_fd();
    let unix = family == libc::AF_UNIX;
    if unix {
        arm(raw, libc::SO_SNDTIMEO, deadline)?;
    } else {
        set_nonblocking(raw, true)?;
    }
    // SAFETY: `addr` points to an initialised socket address of `len` bytes (the callers'
    // contract).
    let rc = unsafe { libc::connect(raw, addr, len) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS) if unix => {
                return Err(timed_out("the listener's backlog is full"))
            }
            Some(libc::EINPROGRESS) | Some(libc::EINTR) if !unix => {}
            _ => return Err(e),
        }
        wait(raw, libc::POLLOUT, deadline)?;
        let mut err: libc::c_int = 0;
        let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket and a correctly sized int out-parameter.
        if unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut l,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
    }
    if !unix {
        set_nonblocking(raw, false)?;
    }
    Ok(fd)
}

impl Sock {
    /// Connects to the first of `addrs` that answers, by `deadline`.
    pub fn tcp(addrs: &[SocketAddr], deadline: Instant) -> io::Result<Sock> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        for a in addrs {
            let r = match a {
                SocketAddr::V4(v4) => {
                    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
                    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                    sa.sin_family = libc::AF_INET as libc::sa_family_t;
                    sa.sin_port = v4.port().to_be();
                    sa.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                    connect_raw(
                        libc::AF_INET,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                        deadline,
                    )
                }
                SocketAddr::V6(v6) => {
                    // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
                    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                    sa.sin6_port = v6.port().to_be();
                    sa.sin6_addr.s6_addr = v6.ip().octets();
                    sa.sin6_flowinfo = v6.flowinfo();
                    sa.sin6_scope_id = v6.scope_id();
                    connect_raw(
                        libc::AF_INET6,
                        (&sa as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                        deadline,
                    )
                }
            };
            match r {
                Ok(fd) => return Ok(Sock { fd, deadline }),
                Err(e) => last = io::Error::new(e.kind(), format!("{a}: {e}")),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(last)
    }

    /// Connects to the Unix socket at `path` by `deadline`.
    pub fn unix(path: &Path, deadline: Instant) -> io::Result<Sock> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        // SAFETY: sockaddr_un is plain old data; all-zero is a valid (empty) value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: Unix socket path too long or contains NUL",
                    path.display()
                ),
            ));
        }
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        let len = (std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1)
            as libc::socklen_t;
        let fd = connect_raw(
            libc::AF_UNIX,
            (&addr as *const libc::sockaddr_un).cast(),
            len,
            deadline,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Sock { fd, deadline })
    }

    /// Every later read and write fails with `TimedOut` once `deadline` has passed.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    fn arm(&self, option: libc::c_int) -> io::Result<()> {
        arm(self.fd.as_raw_fd(), option, self.deadline)
    }

    #[cfg(test)]
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// EAGAIN from a socket with a receive or send timeout means the timeout expired.
fn io_result(rc: isize) -> io::Result<usize> {
    if rc >= 0 {
        return Ok(rc as usize);
    }
    let e = io::Error::last_os_error();
    Err(match e.kind() {
        io::ErrorKind::WouldBlock => timed_out(""),
        _ => e,
    })
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.arm(libc::SO_RCVTIMEO)?;
            // SAFETY: `buf` is valid for writes of its length.
            let rc =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            match io_result(rc) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            self.arm(libc::SO_SNDTIMEO)?;
            // SAFETY: `buf` is valid for reads of its length.
            let rc = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    SEND_FLAGS,
                )
            };
            match io_result(rc) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection: plain, or TLS over the socket.
pub(crate) enum Conn {
    Plain(Sock),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Sock>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Conn::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Conn::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Conn::Tls(t) => t.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: fcntl on a valid fd.
        unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    #[test]
    fn sockets_are_cloexec_tracked_and_closed_on_drop() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let s = Sock::tcp(&[l.local_addr().unwrap()], deadline).unwrap();
        let fd = s.raw_fd();
        assert!(cloexec(fd));
        assert!(forkprof_core::export::fds::recorded().contains(&fd));
        drop(s);
        assert!(!forkprof_core::export::fds::recorded().contains(&fd));

        let dir = std::env::temp_dir().join(format!("forkprof-conn-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let ul = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let s = Sock::unix(&dir, deadline).unwrap();
        assert!(cloexec(s.raw_fd()));
        drop((s, ul));
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn a_read_past_the_deadline_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = Sock::tcp(
            &[l.local_addr().unwrap()],
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
        let _peer = l.accept().unwrap();
        s.set_deadline(Instant::now() + Duration::from_millis(50));
        let mut b = [0u8; 1];
        let e = s.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    }

    #[test]
    fn a_refused_connection_names_the_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        let e = Sock::tcp(&[a], Instant::now() + Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains(&a.to_string()), "{e}");
    }
}
