//! The torture run's uploader: forkprof's real Datadog exporter (HTTP, multipart, zstd),
//! pointed at the stalled loopback endpoint with a request timeout longer than the run, so one
//! upload stays stuck mid-body for the whole fork phase. A thin wrapper counts what it does:
//! delivered profiles are decoded and their sample values summed, which is how the run checks
//! that the parent lost no sample.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkprof::export::{Datadog, Delivered, ExportContext, ExportFailure, HttpOptions};
use forkprof::{Compression, EncodedProfile, Exporter, ExporterConfig, ExporterFactory};

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
    inner: Arc<dyn ExporterFactory>,
    pub tally: Arc<Tally>,
}

impl StalledHttpFactory {
    /// The Datadog agent exporter for `addr`, with no retries and a request timeout longer
    /// than any run: the upload waits for as long as the endpoint stalls.
    pub fn new(addr: SocketAddr, tally: Arc<Tally>) -> forkprof::Result<StalledHttpFactory> {
        let http = HttpOptions {
            request_timeout: Duration::from_secs(3600),
            retry_budget: Duration::from_secs(3600),
            max_retries: 0,
            ..HttpOptions::default()
        };
        match ExporterConfig::from(Datadog::agent(&format!("http://{addr}")).http_options(http)) {
            ExporterConfig::Custom(inner) => Ok(StalledHttpFactory { inner, tally }),
            _ => Err(forkprof::Error::Export {
                reason: "the Datadog exporter is not available in this build".into(),
            }),
        }
    }
}

impl ExporterFactory for StalledHttpFactory {
    fn compression(&self) -> Compression {
        self.inner.compression()
    }
    fn create(&self, ctx: &ExportContext<'_>) -> forkprof::Result<Box<dyn Exporter>> {
        Ok(Box::new(Tallying {
            inner: self.inner.create(ctx)?,
            tally: self.tally.clone(),
        }))
    }
}

struct Tallying {
    inner: Box<dyn Exporter>,
    tally: Arc<Tally>,
}

/// Sum of value 0 over the profile's samples: the number of samples it holds, since the
/// torture run records every sample with value 1.
fn count_samples(p: &EncodedProfile) -> Option<u64> {
    let raw = forkprof::compress::decompress_any(&p.bytes, 1 << 30).ok()?;
    let prof = forkprof::pprof::decode(&raw).ok()?;
    Some(prof.samples.iter().map(|s| s.values[0].max(0) as u64).sum())
}

impl Exporter for Tallying {
    fn export(
        &mut self,
        p: &EncodedProfile,
        deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        let t = &self.tally;
        t.started.fetch_add(1, Ordering::Relaxed);
        t.in_flight.store(true, Ordering::Release);
        let r = self.inner.export(p, deadline);
        t.in_flight.store(false, Ordering::Release);
        match &r {
            Ok(_) => {
                t.delivered.fetch_add(1, Ordering::Relaxed);
                match count_samples(p) {
                    Some(n) => {
                        t.delivered_samples.fetch_add(n, Ordering::Relaxed);
                    }
                    None => {
                        t.undecodable.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(_) => {
                t.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
}
