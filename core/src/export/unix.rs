//! HTTP over a Unix domain socket (the Datadog agent's `/var/run/datadog/apm.socket`): a ureq
//! connector and transport, so the request never needs a host name or DNS.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
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
        // A connect to a local socket completes or fails at once unless the listener's backlog
        // is full; the request's overall timeout still bounds everything after it.
        let stream = UnixStream::connect(&self.path).map_err(|e| {
            Error::Io(io::Error::new(
                e.kind(),
                format!("{}: {e}", self.path.display()),
            ))
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
