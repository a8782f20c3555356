//! HTTP over a Unix domain socket (the Datadog agent's `/var/run/datadog/apm.socket`): a ureq
//! connector and transport, so the request never needs a host name or DNS.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, ShutdownHandle, Transport,
};
use ureq::{Error, Timeout};

/// Connects every request of its agent to one socket path, whatever the URI's host says.
#[derive(Debug)]
pub(crate) struct UnixConnector {
    pub path: PathBuf,
}

impl<In: Transport> Connector<In> for UnixConnector {
    type Out = UnixTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        debug_assert!(chained.is_none(), "UnixConnector is the first connector");
        let limit = socket_timeout(details.timeout)?;
        let stream = connect(&self.path, limit).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                Error::Timeout(details.timeout.reason)
            }
            _ => Error::Io(io::Error::new(
                e.kind(),
                format!("{}: {e}", self.path.display()),
            )),
        })?;
        let config = details.config;
        let transport = UnixTransport {
            stream: Arc::new(SocketHandle(stream)),
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
            read_timeout: None,
            write_timeout: None,
        };
        (details.register_shutdown)(Arc::downgrade(&transport.stream) as Weak<dyn ShutdownHandle>)?;
        Ok(Some(transport))
    }
}

/// Connects to `path` within `limit`. A connect to a local socket completes at once unless the
/// listener's backlog is full (a stuck agent); then it blocks, and std's `UnixStream::connect`
/// offers no timeout. The kernel bounds a blocking AF_UNIX connect by the socket's send
/// timeout, so the socket is made by hand to set that timeout before connecting.
fn connect(path: &Path, limit: Option<Duration>) -> io::Result<UnixStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "Unix socket path too long or contains NUL",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len =
        (std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1) as libc::socklen_t;

    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just created and own; OwnedFd closes it on every path.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // Not inherited by programs the host execs (a forked child keeps it, leaked, unused).
    // SAFETY: fcntl on a valid fd with integer arguments.
    if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(limit) = limit {
        let tv = libc::timeval {
            tv_sec: limit.as_secs().min(i32::MAX as u64) as _,
            tv_usec: limit.subsec_micros() as _,
        };
        // SAFETY: `tv` is a valid timeval and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: `addr` is an initialised sockaddr_un and `len` covers the family and the path
    // with its NUL, within the struct.
    let rc = unsafe { libc::connect(raw, (&addr as *const libc::sockaddr_un).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let stream = UnixStream::from(fd);
    // The transport sets its own write timeouts per call; clear the connect one.
    stream.set_write_timeout(None)?;
    Ok(stream)
}

#[derive(Debug)]
pub(crate) struct SocketHandle(UnixStream);

impl ShutdownHandle for SocketHandle {
    fn shutdown(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

#[derive(Debug)]
pub(crate) struct UnixTransport {
    stream: Arc<SocketHandle>,
    buffers: LazyBuffers,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

/// The socket timeout for what is left of ureq's budget; an expired budget is a timeout error
/// before any I/O.
fn socket_timeout(t: NextTimeout) -> Result<Option<Duration>, Error> {
    if t.after.is_zero() {
        return Err(Error::Timeout(t.reason));
    }
    Ok(t.not_zero().map(|d| *d))
}

fn map_io(e: io::Error, reason: Timeout) -> Error {
    match e.kind() {
        // SO_RCVTIMEO / SO_SNDTIMEO expiring shows up as EAGAIN.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout(reason),
        _ => Error::Io(e),
    }
}

impl Transport for UnixTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let timeout = timeout.for_write();
        let t = socket_timeout(timeout)?;
        if t != self.write_timeout {
            self.stream.0.set_write_timeout(t)?;
            self.write_timeout = t;
        }
        let output = &self.buffers.output()[..amount];
        (&self.stream.0)
            .write_all(output)
            .map_err(|e| map_io(e, timeout.reason))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        let timeout = timeout.for_read();
        let t = socket_timeout(timeout)?;
        if t != self.read_timeout {
            self.stream.0.set_read_timeout(t)?;
            self.read_timeout = t;
        }
        let input = self.buffers.input_append_buf();
        let n = loop {
            match (&self.stream.0).read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r.map_err(|e| map_io(e, timeout.reason))?,
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        // A pooled connection is reusable only if the peer has sent nothing (no EOF, no
        // stray bytes): peek without blocking.
        let s = &self.stream.0;
        if s.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let open = matches!((&*s).read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        open && s.set_nonblocking(false).is_ok()
    }
}
