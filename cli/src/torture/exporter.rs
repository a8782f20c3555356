//! The torture run's uploader: a minimal HTTP/1.1 POST of the profile over a plain
//! `TcpStream`, waiting for a response with no timeout of its own (only the stop deadline),
//! so against the stalled endpoint one upload stays in flight for the whole fork phase.
//!
//! It stands in for the real HTTP exporter: the run only needs `ExporterConfig::Custom`, so
//! swapping this factory for that exporter (behind `--endpoint`) changes nothing else.
//! Delivered profiles are decoded and their sample values summed, which is how the run
//! checks that the parent lost no sample.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use forkprof::export::{Delivered, ExportContext, ExportFailure};
use forkprof::{Compression, EncodedProfile, Exporter, ExporterFactory};

/// What the parent's uploads did (children count into their own copy, never read).
#[derive(Debug, Default)]
pub struct Tally {
    /// An upload is between connect and its response right now.
    pub in_flight: AtomicBool,
    pub started: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    /// Sum of value 0 (one per recorded sample) over every delivered profile.
    pub delivered_samples: AtomicU64,
    pub undecodable: AtomicU64,
}

#[derive(Debug)]
pub struct StalledHttpFactory {
    pub addr: SocketAddr,
    pub tally: Arc<Tally>,
}

impl ExporterFactory for StalledHttpFactory {
    fn compression(&self) -> Compression {
        Compression::Gzip
    }
    fn create(&self, ctx: &ExportContext<'_>) -> forkprof::Result<Box<dyn Exporter>> {
        Ok(Box::new(HttpPost {
            addr: self.addr,
            tally: self.tally.clone(),
            pid: ctx.pid,
        }))
    }
}

struct HttpPost {
    addr: SocketAddr,
    tally: Arc<Tally>,
    pid: u32,
}

impl HttpPost {
    fn post(&self, p: &EncodedProfile, deadline: Option<Instant>) -> std::io::Result<bool> {
        let mut s = match deadline {
            Some(d) => TcpStream::connect_timeout(&self.addr, remaining(d)?)?,
            None => TcpStream::connect(self.addr)?,
        };
        let head = format!(
            "POST /profiling/v1/input HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Encoding: gzip\r\nX-Forkprof-Pid: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            self.pid,
            p.bytes.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(&p.bytes)?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 512];
        while !reply.windows(2).any(|w| w == b"\r\n") {
            if let Some(d) = deadline {
                s.set_read_timeout(Some(remaining(d)?))?;
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
        }
        Ok(reply.starts_with(b"HTTP/1.1 2") || reply.starts_with(b"HTTP/1.0 2"))
    }
}

fn remaining(deadline: Instant) -> std::io::Result<std::time::Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(std::io::ErrorKind::TimedOut.into())
    } else {
        Ok(left)
    }
}

/// Sum of value 0 over the profile's samples: the number of samples it holds, since the
/// torture run records every sample with value 1.
fn count_samples(p: &EncodedProfile) -> Option<u64> {
    let raw = forkprof::compress::decompress_any(&p.bytes, 1 << 30).ok()?;
    let prof = forkprof::pprof::decode(&raw).ok()?;
    Some(prof.samples.iter().map(|s| s.values[0].max(0) as u64).sum())
}

impl Exporter for HttpPost {
    fn export(
        &mut self,
        p: &EncodedProfile,
        deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        let t = &self.tally;
        t.started.fetch_add(1, Ordering::Relaxed);
        t.in_flight.store(true, Ordering::Release);
        let r = self.post(p, deadline);
        t.in_flight.store(false, Ordering::Release);
        match r {
            Ok(true) => {
                t.delivered.fetch_add(1, Ordering::Relaxed);
                match count_samples(p) {
                    Some(n) => {
                        t.delivered_samples.fetch_add(n, Ordering::Relaxed);
                    }
                    None => {
                        t.undecodable.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Delivered {
                    bytes: p.bytes.len() as u64,
                    retries: 0,
                })
            }
            Ok(false) => {
                t.failed.fetch_add(1, Ordering::Relaxed);
                Err(ExportFailure {
                    reason: "the endpoint answered with a non-2xx status".into(),
                    ..ExportFailure::default()
                })
            }
            Err(e) => {
                t.failed.fetch_add(1, Ordering::Relaxed);
                Err(ExportFailure {
                    reason: format!("upload to {}: {e}", self.addr),
                    ..ExportFailure::default()
                })
            }
        }
    }
}
