//! A test endpoint behind `ExporterConfig::Custom`, switched up / down / hung by an atomic.
//!
//! Up writes `<service>-<pid>-<seq>.pprof[.gz|.zst]` into the case's directory (like the file
//! exporter); down fails at once; hung blocks until the mode changes or, for an export made
//! while stopping, until a grace period after the stop deadline (so a hung export outlives
//! `stop`'s deadline and `stop` must time out). Every profile the exporter is handed is
//! decoded and logged in a process-local store, delivered or not, so the test can account for
//! every sample. The store and the live-exporter count are tagged with the pid that owns them:
//! a forked child sees a foreign tag and starts afresh (never touching the parent's store,
//! whose lock a vanished thread may hold), so the child's store starts empty.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forkprof::export::{Delivered, ExportContext, ExportFailure};
use forkprof::{pprof, Compression, EncodedProfile, Exporter, ExporterFactory};

use super::samples::{profile_totals, Totals};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Up = 0,
    Down = 1,
    Hung = 2,
}

/// How long a hung export keeps hanging past the stop deadline it was given.
pub const HUNG_GRACE: Duration = Duration::from_millis(300);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered(PathBuf),
    Failed,
    /// Hung, then released (the mode changed or the grace after the deadline ran out).
    HungThenFailed,
}

#[derive(Clone, Debug)]
pub struct Entry {
    /// The process the exporter ran in.
    pub process: u32,
    /// What the profile says about itself.
    pub pid: u32,
    pub seq: u64,
    pub outcome: Outcome,
    pub totals: Totals,
    pub timeline: u64,
    /// Problems found with this profile: undecodable, wrong pid, file name already taken.
    pub errors: Vec<String>,
}

pub struct Store {
    owner: u32,
    pub entries: Mutex<Vec<Entry>>,
}

impl Store {
    fn new_raw() -> *mut Store {
        Box::into_raw(Box::new(Store {
            owner: std::process::id(),
            entries: Mutex::new(Vec::new()),
        }))
    }
}

/// A count that belongs to one process: the pid in the high half, the count in the low half.
/// Read or bumped from another process (a forked child), it starts again from zero there.
struct ProcessCount(AtomicU64);

impl ProcessCount {
    fn new() -> Self {
        ProcessCount(AtomicU64::new(u64::from(std::process::id()) << 32))
    }
    fn get(&self) -> usize {
        let v = self.0.load(Ordering::Acquire);
        if (v >> 32) as u32 == std::process::id() {
            (v & 0xffff_ffff) as usize
        } else {
            0
        }
    }
    fn add(&self, delta: i64) {
        let me = u64::from(std::process::id()) << 32;
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let count = if v & !0xffff_ffff == me {
                    (v & 0xffff_ffff) as i64
                } else {
                    0
                };
                Some(me | (count + delta).max(0) as u64)
            });
    }
}

pub struct Endpoint {
    mode: AtomicU8,
    store: AtomicPtr<Store>,
    /// Exporters alive in this process: one per session whose uploader has not exited.
    live: ProcessCount,
    /// Exports of this process blocked right now.
    hung: ProcessCount,
    pub dir: PathBuf,
    pub service: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({:?}, {})", self.mode(), self.dir.display())
    }
}

impl Endpoint {
    pub fn new(dir: &Path, service: &str) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            mode: AtomicU8::new(Mode::Up as u8),
            store: AtomicPtr::new(Store::new_raw()),
            live: ProcessCount::new(),
            hung: ProcessCount::new(),
            dir: dir.to_path_buf(),
            service: service.to_string(),
        })
    }

    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Up,
            1 => Mode::Down,
            _ => Mode::Hung,
        }
    }

    pub fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::Release);
    }

    /// This process's store (a fresh one on first use in a forked child).
    pub fn store(&self) -> &Store {
        let me = std::process::id();
        let mut cur = self.store.load(Ordering::Acquire);
        // SAFETY: `store` always holds a pointer from `Box::into_raw` that is never freed
        // (replaced ones are leaked), so it is valid for as long as `self`.
        if unsafe { (*cur).owner } != me {
            let fresh = Store::new_raw();
            match self
                .store
                .compare_exchange(cur, fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => cur = fresh,
                Err(other) => {
                    // SAFETY: `fresh` was never shared; another thread of this child won.
                    drop(unsafe { Box::from_raw(fresh) });
                    cur = other;
                }
            }
        }
        // SAFETY: as above.
        unsafe { &*cur }
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.store()
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Exporters alive in this process (the parent's do not count in a child: their threads
    /// do not exist there).
    pub fn live(&self) -> usize {
        self.live.get()
    }

    pub fn hung(&self) -> usize {
        self.hung.get()
    }

    pub fn factory(self: &Arc<Self>, compression: Compression) -> Arc<dyn ExporterFactory> {
        Arc::new(Factory {
            endpoint: self.clone(),
            compression,
        })
    }
}

#[derive(Debug)]
struct Factory {
    endpoint: Arc<Endpoint>,
    compression: Compression,
}

impl ExporterFactory for Factory {
    fn compression(&self) -> Compression {
        self.compression
    }

    fn create(&self, ctx: &ExportContext<'_>) -> forkprof::Result<Box<dyn Exporter>> {
        self.endpoint.live.add(1);
        Ok(Box::new(TestExporter {
            endpoint: self.endpoint.clone(),
            pid: ctx.pid,
        }))
    }
}

struct TestExporter {
    endpoint: Arc<Endpoint>,
    /// The pid the exporter was created for.
    pid: u32,
}

impl Drop for TestExporter {
    fn drop(&mut self) {
        self.endpoint.live.add(-1);
    }
}

impl TestExporter {
    fn log(&self, p: &EncodedProfile, outcome: Outcome, mut errors: Vec<String>) {
        let process = std::process::id();
        if p.pid != process || self.pid != process {
            errors.push(format!(
                "profile pid {} / exporter pid {} exported from process {process}",
                p.pid, self.pid
            ));
        }
        let (totals, timeline) = match forkprof::compress::decompress_any(&p.bytes, 1 << 30)
            .map(|raw| pprof::decode(&raw))
        {
            Ok(Ok(prof)) => {
                if prof.samples.len() != p.samples {
                    errors.push(format!(
                        "EncodedProfile says {} samples, the pprof holds {}",
                        p.samples,
                        prof.samples.len()
                    ));
                }
                if !prof.comments.contains(&format!("pid:{}", p.pid)) {
                    errors.push(format!("no pid:{} comment in {:?}", p.pid, prof.comments));
                }
                profile_totals(&prof)
            }
            Ok(Err(e)) => {
                errors.push(format!("pprof::decode: {e}"));
                Default::default()
            }
            Err(e) => {
                errors.push(format!("decompress: {e}"));
                Default::default()
            }
        };
        let entry = Entry {
            process,
            pid: p.pid,
            seq: p.seq,
            outcome,
            totals,
            timeline,
            errors,
        };
        self.endpoint
            .store()
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    fn write_file(&self, p: &EncodedProfile) -> Result<PathBuf, String> {
        let ep = &self.endpoint;
        let name = format!(
            "{}-{}-{}.pprof{}",
            ep.service,
            p.pid,
            p.seq,
            p.compression.extension()
        );
        let path = ep.dir.join(&name);
        if path.exists() {
            return Err(format!(
                "{name} already exists: sequence numbers must not repeat within a process"
            ));
        }
        let tmp = ep.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, &p.bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}

impl Exporter for TestExporter {
    fn export(
        &mut self,
        profile: &EncodedProfile,
        deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        let fail = |reason: &str| ExportFailure {
            reason: reason.into(),
            ..Default::default()
        };
        match self.endpoint.mode() {
            Mode::Up => match self.write_file(profile) {
                Ok(path) => {
                    self.log(profile, Outcome::Delivered(path), Vec::new());
                    Ok(Delivered {
                        bytes: profile.bytes.len() as u64,
                        retries: 0,
                    })
                }
                Err(e) => {
                    self.log(profile, Outcome::Failed, vec![e.clone()]);
                    Err(fail(&e))
                }
            },
            Mode::Down => {
                self.log(profile, Outcome::Failed, Vec::new());
                Err(fail("endpoint down"))
            }
            Mode::Hung => {
                let ep = &self.endpoint;
                ep.hung.add(1);
                while ep.mode() == Mode::Hung
                    && deadline.is_none_or(|d| Instant::now() < d + HUNG_GRACE)
                {
                    // A stalled connection: poll the switch rather than hold any lock.
                    std::thread::sleep(Duration::from_millis(2));
                }
                ep.hung.add(-1);
                self.log(profile, Outcome::HungThenFailed, Vec::new());
                Err(fail("endpoint hung"))
            }
        }
    }
}
