//! Where finished profiles go: what an exporter is ([`Exporter`], [`ExporterFactory`]), the
//! profile it is handed ([`EncodedProfile`]), the one exporter the engine carries itself
//! (files, [`ExporterConfig::File`]), and what every exporter shares with the engine: how it
//! learns of a stop and pauses between attempts ([`stop_deadline`], [`pause`],
//! [`WaitingOnPeer`]), and where it notes the descriptors a forked child must close ([`fds`]).
//!
//! An [`Exporter`] runs on the uploader thread only, never under a profiler lock, so a slow or
//! hung destination delays nothing but its own queue. The network exporters (the Datadog agent
//! or intake, Pyroscope) live in the `forkprof-export` crate, a layer above this one: a host
//! that writes files compiles no HTTP.

pub mod fds;
pub mod file;

pub use file::Retention;

// Called by a forked child before it starts its own uploader (see `fds.rs`).
pub(crate) use fds::close_inherited_fds;

/// [`close_inherited_fds`] for the fork tests, which call it where a child's restart does.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub fn close_inherited_fds_for_tests() -> usize {
    close_inherited_fds()
}

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::Result;
use crate::trace::TraceLabelStyle;

/// How an exporter on the uploader thread learns that its profiler is stopping, and pauses
/// between attempts so that the stop wakes it. The session implements it; the uploader
/// installs it for the thread's life with [`PauseScope`].
pub(crate) trait UploadPause {
    /// `Some(deadline)` once the profiler is stopping.
    fn stop_deadline(&self) -> Option<Instant>;
    /// Sleeps up to `d`, or until the profiler starts stopping.
    fn pause(&self, d: Duration);
    /// The exporter starts (`true`) or stops waiting on its endpoint: for the answer to a sent
    /// request, or between attempts.
    fn waiting_on_peer(&self, _waiting: bool) {}
}

thread_local! {
    // A raw pointer in a Cell: no destructor to register, which on a forkprof thread in a
    // forked child could meet the loader's lock (`__cxa_thread_atexit_impl`).
    static PAUSE: Cell<Option<*const dyn UploadPause>> = const { Cell::new(None) };
}

/// Installs `pause` for exporters on this thread until dropped.
pub(crate) struct PauseScope<'a>(std::marker::PhantomData<&'a dyn UploadPause>);

impl<'a> PauseScope<'a> {
    pub fn new(pause: &'a (dyn UploadPause + 'a)) -> PauseScope<'a> {
        let ptr: *const (dyn UploadPause + 'a) = pause;
        // SAFETY: only the lifetime is erased; the pointer is cleared by `drop`, before `'a`
        // ends, and read only on this thread in between.
        let ptr: *const dyn UploadPause = unsafe { std::mem::transmute(ptr) };
        let _ = PAUSE.try_with(|c| c.set(Some(ptr)));
        PauseScope(std::marker::PhantomData)
    }
}

impl Drop for PauseScope<'_> {
    fn drop(&mut self) {
        let _ = PAUSE.try_with(|c| c.set(None));
    }
}

fn with_pause<R>(f: impl FnOnce(Option<&dyn UploadPause>) -> R) -> R {
    let p = PAUSE.try_with(Cell::get).ok().flatten();
    // SAFETY: set by a live `PauseScope` on this thread, which outlives this call.
    f(p.map(|p| unsafe { &*p }))
}

/// The stop deadline, if the profiler whose uploader runs on this thread is stopping.
pub fn stop_deadline() -> Option<Instant> {
    with_pause(|p| p.and_then(|p| p.stop_deadline()))
}

/// Sleeps up to `d` between attempts; a stop of the profiler ends the sleep early.
pub fn pause(d: Duration) {
    let _waiting = WaitingOnPeer::new();
    with_pause(|p| match p {
        Some(p) => p.pause(d),
        None => std::thread::sleep(d),
    })
}

/// While alive, the exporter on this thread waits on its endpoint (see
/// [`UploadPause::waiting_on_peer`]).
pub struct WaitingOnPeer(());

impl Default for WaitingOnPeer {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitingOnPeer {
    pub fn new() -> WaitingOnPeer {
        with_pause(|p| {
            if let Some(p) = p {
                p.waiting_on_peer(true);
            }
        });
        WaitingOnPeer(())
    }
}

impl Drop for WaitingOnPeer {
    fn drop(&mut self) {
        with_pause(|p| {
            if let Some(p) = p {
                p.waiting_on_peer(false);
            }
        });
    }
}

/// How a profile is compressed before export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Raw pprof protobuf.
    None,
    /// What `go tool pprof` and Pyroscope read.
    #[default]
    Gzip,
    /// zstd level 1: what the Datadog intake prefers.
    Zstd,
}

impl Compression {
    /// The file-name suffix after `.pprof`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

/// The machine's name, from the kernel (no DNS): the `host` of a profile. Called on the
/// thread that builds an exporter or starts a collector, never in a fork or signal path.
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which we pass; gethostname writes at
    // most that many bytes and we stop at the first NUL (or the end) below.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// The encoding of the profiles an exporter is handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProfileFormat {
    /// pprof (`profile.proto`).
    #[default]
    Pprof,
    /// An OTLP `ExportProfilesServiceRequest` (see [`crate::otlp`]), resource included.
    Otlp,
}

/// A finished, compressed profile waiting for its exporter.
#[derive(Debug, Clone)]
pub struct EncodedProfile {
    pub bytes: Vec<u8>,
    pub compression: Compression,
    pub format: ProfileFormat,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Per-process sequence number, from 0.
    pub seq: u64,
    /// The process that recorded the samples.
    pub pid: u32,
    pub samples: usize,
    /// Requests per endpoint in this profile's period (`Profiler::count_endpoint`), sorted by
    /// endpoint.
    pub endpoint_counts: Vec<(String, u64)>,
    pub(crate) flush_ticket: u64,
}

impl EncodedProfile {
    /// A profile made outside the engine: an exporter's own tests, a host replaying files.
    pub fn new(
        bytes: Vec<u8>,
        compression: Compression,
        start: SystemTime,
        end: SystemTime,
    ) -> Self {
        EncodedProfile {
            bytes,
            compression,
            format: ProfileFormat::Pprof,
            start,
            end,
            seq: 0,
            pid: std::process::id(),
            samples: 0,
            endpoint_counts: Vec::new(),
            flush_ticket: 0,
        }
    }
}

/// What an exporter is built from: the starting process's view of the configuration
/// ([`crate::Config::export_context`] makes one).
pub struct ExportContext<'a> {
    /// The profiler's service name.
    pub service: &'a str,
    /// The profiler's tags, `key:value` pairs in the order given.
    pub tags: &'a [(String, String)],
    /// The process the exporter will run in.
    pub pid: u32,
    /// True when a forked child rebuilds the exporter its parent created from the same
    /// configuration, inside `fork()`: checks the parent already made (a directory exists and
    /// is writable) are skipped, and a problem shows at the first export instead. A child that
    /// exits at once then pays for none of them.
    pub in_forked_child: bool,
}

/// A delivered profile.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivered {
    pub bytes: u64,
    pub retries: u32,
}

/// A profile the exporter gave up on.
#[derive(Debug, Clone, Default)]
pub struct ExportFailure {
    pub reason: String,
    pub retries: u32,
    /// Refused before sending: larger than the destination accepts.
    pub too_large: bool,
}

pub trait Exporter: Send {
    /// Delivers one profile. `deadline`, when set, is a hard limit (the profiler is stopping).
    fn export(
        &mut self,
        profile: &EncodedProfile,
        deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure>;
}

/// Builds an exporter; called on the thread that starts the profiler and, after a fork, in
/// the child (so the child never shares the parent's connections).
pub trait ExporterFactory: Send + Sync + fmt::Debug {
    fn compression(&self) -> Compression;
    /// The encoding the collector writes for this exporter; pprof unless it says otherwise.
    fn format(&self) -> ProfileFormat {
        ProfileFormat::Pprof
    }
    /// Static checks run by `ConfigBuilder::build`.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    fn create(&self, ctx: &ExportContext<'_>) -> Result<Box<dyn Exporter>>;
    /// The factory as `Any`, for a layer above that wants its own factory type back out of an
    /// [`ExporterConfig::Custom`] (the HTTP exporters' timeouts, say). `None` by default.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
    /// How trace context labels should be written into this exporter's profiles (the
    /// names its backend reads); as recorded by default.
    fn trace_labels(&self) -> TraceLabelStyle {
        TraceLabelStyle::AsRecorded
    }
}

/// Which exporter a profiler uses. The network exporters of `forkprof-export` are
/// [`ExporterConfig::Custom`] factories, made by that crate's builders (`Datadog`, `Pyroscope`)
/// and its `ExporterConfigExt` constructors.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ExporterConfig {
    /// The embedded default: files in a local directory, of which it keeps the newest
    /// `retention` (see [`file::Retention`]).
    File {
        dir: std::path::PathBuf,
        compression: Compression,
        retention: file::Retention,
    },
    /// Anything else: the network exporters, or the host's own.
    Custom(Arc<dyn ExporterFactory>),
}

impl ExporterConfig {
    /// Files in `dir`, keeping the default [`file::Retention`].
    pub fn file(dir: impl Into<std::path::PathBuf>, compression: Compression) -> ExporterConfig {
        ExporterConfig::File {
            dir: dir.into(),
            compression,
            retention: file::Retention::DEFAULT,
        }
    }

    pub fn compression(&self) -> Compression {
        match self {
            ExporterConfig::File { compression, .. } => *compression,
            ExporterConfig::Custom(f) => f.compression(),
        }
    }

    /// How trace labels are written for this exporter (see [`ExporterFactory::trace_labels`]).
    pub fn trace_labels(&self) -> TraceLabelStyle {
        match self {
            ExporterConfig::File { .. } => TraceLabelStyle::AsRecorded,
            ExporterConfig::Custom(f) => f.trace_labels(),
        }
    }

    /// The format this exporter's profiles are encoded in (see [`ExporterFactory::format`]).
    pub fn format(&self) -> ProfileFormat {
        match self {
            ExporterConfig::File { .. } => ProfileFormat::Pprof,
            ExporterConfig::Custom(f) => f.format(),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            ExporterConfig::File { dir, .. } => file::validate(dir),
            ExporterConfig::Custom(f) => f.validate(),
        }
    }

    pub(crate) fn create(&self, ctx: &ExportContext<'_>) -> Result<Box<dyn Exporter>> {
        match self {
            ExporterConfig::File { dir, retention, .. } => Ok(Box::new(
                file::FileExporter::open_with(dir, *retention, ctx)?,
            )),
            ExporterConfig::Custom(f) => f.create(ctx),
        }
    }
}
