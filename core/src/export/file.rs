//! The embedded default exporter: `<dir>/<service>-<pid>-<stamp>-<seq>.pprof[.gz|.zst]`,
//! written to a hidden temporary file in the same directory and then given its name, so a
//! crash never leaves a half-written file under the final name.
//!
//! `<stamp>` is when the exporter was created, UTC to the microsecond
//! (`20261206T192439123456`): a later process that gets the same pid (pids are reused) starts
//! its exporter later, so its names differ. And no file is ever replaced: the final name is
//! made with `link(2)`, which fails if the name exists, and then the stamp moves on by a
//! microsecond and the profile takes the next free name (a clock stepped back could otherwise
//! repeat a name).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::fds::TrackedFd;
use super::{Delivered, EncodedProfile, ExportContext, ExportFailure, Exporter};
use crate::error::{Error, Result};

pub(crate) fn validate(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Err(Error::config("output_dir", "must not be empty"));
    }
    Ok(())
}

pub struct FileExporter {
    dir: PathBuf,
    service: String,
    /// Microseconds since the Unix epoch: the exporter's creation, plus one per name that
    /// was found taken.
    stamp: u64,
}

/// Keeps file names portable whatever the service is called.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `20261206T192439123456` for `micros` since the Unix epoch.
fn stamp_text(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::calendar::civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        micros % 1_000_000
    )
}

/// Creates `path`, failing if it exists; the file is recorded for forked children (see
/// `fds.rs`) until closed.
fn create_new(path: &Path) -> io::Result<TrackedFd<fs::File>> {
    // std opens with O_CLOEXEC.
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    Ok(TrackedFd::new(file))
}

/// Gives the finished `tmp` the name `path` unless that name exists (`AlreadyExists`).
fn place(tmp: &Path, path: &Path) -> io::Result<()> {
    match fs::hard_link(tmp, path) {
        Ok(()) => {
            let _ = fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if no_hard_links(&e) => {
            // A file system without hard links: reserve the name (exclusively), then put the
            // profile in its place; rename replaces only that empty reservation.
            drop(create_new(path)?);
            fs::rename(tmp, path).inspect_err(|_| {
                let _ = fs::remove_file(path);
            })
        }
        Err(e) => Err(e),
    }
}

/// `link(2)`'s answers on a file system that has no hard links.
fn no_hard_links(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EMLINK)
    )
}

/// Names tried for one profile before giving up.
const NAME_TRIES: u32 = 64;

impl FileExporter {
    /// Creates the directory if missing and proves it writable, on the calling thread, so a
    /// bad directory is an error from `start()` rather than a stream of failed exports.
    pub fn open(dir: &Path, ctx: &ExportContext<'_>) -> Result<Self> {
        let fail = |what: &str, e: std::io::Error| {
            Error::config(
                "output_dir",
                format!("{}: cannot {what}: {e}", dir.display()),
            )
        };
        fs::create_dir_all(dir).map_err(|e| fail("create the directory", e))?;
        let probe = dir.join(format!(".forkprof-probe-{}", ctx.pid));
        fs::write(&probe, b"").map_err(|e| fail("write into the directory", e))?;
        let _ = fs::remove_file(&probe);
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        Ok(FileExporter {
            dir: dir.to_path_buf(),
            service: file_safe(ctx.service),
            stamp,
        })
    }

    /// The name the next export of `profile` tries first.
    pub fn path_for(&self, profile: &EncodedProfile) -> PathBuf {
        self.dir.join(format!(
            "{}-{}-{}-{}.pprof{}",
            self.service,
            profile.pid,
            stamp_text(self.stamp),
            profile.seq,
            profile.compression.extension()
        ))
    }

    fn write(&mut self, profile: &EncodedProfile, tmp: &Path) -> io::Result<PathBuf> {
        let mut f = match create_new(tmp) {
            // Only this exporter makes this name: a leftover of its own failed export.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(tmp)?;
                create_new(tmp)?
            }
            r => r?,
        };
        // No fsync: the link or rename is what keeps a crashed process from leaving a partial
        // file under the final name; surviving power loss is not worth a disk flush per
        // profile (it made short-lived forked workers' `stop()` 10–30 ms slower).
        f.inner.write_all(&profile.bytes)?;
        drop(f);
        for _ in 0..NAME_TRIES {
            let path = self.path_for(profile);
            match place(tmp, &path) {
                Ok(()) => return Ok(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.stamp += 1,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{NAME_TRIES} names in a row already exist"),
        ))
    }
}

impl Exporter for FileExporter {
    fn export(
        &mut self,
        profile: &EncodedProfile,
        _deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        let first = self.path_for(profile);
        let name = first
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.dir.join(format!(".{name}.tmp"));
        match self.write(profile, &tmp) {
            Ok(_) => Ok(Delivered {
                bytes: profile.bytes.len() as u64,
                retries: 0,
            }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(ExportFailure {
                    reason: format!("{}: {e}", first.display()),
                    ..Default::default()
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Compression;
    use crate::Config;

    fn profile(pid: u32, seq: u64, bytes: &[u8]) -> EncodedProfile {
        EncodedProfile {
            bytes: bytes.to_vec(),
            compression: Compression::Gzip,
            format: Default::default(),
            start: SystemTime::now(),
            end: SystemTime::now(),
            seq,
            pid,
            samples: 1,
            flush_ticket: 0,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("forkprof-file-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_existing_file_is_never_replaced() {
        let dir = temp_dir("exists");
        let config = Config::builder("svc")
            .sample_type("s", "count")
            .output_dir(&dir, Compression::Gzip)
            .build()
            .unwrap();
        let ctx = config.export_context(4242);
        let mut e = FileExporter::open(&dir, &ctx).unwrap();
        let p = profile(4242, 0, b"new");
        // The exact name the export would use, taken by someone else.
        let taken = e.path_for(&p);
        fs::write(&taken, b"earlier").unwrap();
        e.export(&p, None).unwrap();
        assert_eq!(fs::read(&taken).unwrap(), b"earlier");
        let all = names(&dir);
        assert_eq!(all.len(), 2, "{all:?}");
        let other = dir.join(
            all.iter()
                .find(|n| **n != taken.file_name().unwrap().to_str().unwrap())
                .unwrap(),
        );
        assert_eq!(fs::read(&other).unwrap(), b"new");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A process that reuses an earlier one's pid, in the worst case: its exporter was
    /// created in the same microsecond (a clock stepped back). Each keeps its own file.
    #[test]
    fn a_reused_pid_with_the_same_stamp_does_not_overwrite() {
        let dir = temp_dir("reuse");
        let config = Config::builder("svc")
            .sample_type("s", "count")
            .output_dir(&dir, Compression::Gzip)
            .build()
            .unwrap();
        let ctx = config.export_context(77);
        let mut earlier = FileExporter::open(&dir, &ctx).unwrap();
        let mut later = FileExporter::open(&dir, &ctx).unwrap();
        later.stamp = earlier.stamp;
        for seq in 0..3 {
            earlier.export(&profile(77, seq, b"earlier"), None).unwrap();
        }
        for seq in 0..3 {
            later.export(&profile(77, seq, b"later"), None).unwrap();
        }
        let all = names(&dir);
        assert_eq!(all.len(), 6, "{all:?}");
        let contents: Vec<Vec<u8>> = all.iter().map(|n| fs::read(dir.join(n)).unwrap()).collect();
        assert_eq!(
            contents
                .iter()
                .filter(|c| c.as_slice() == b"earlier")
                .count(),
            3
        );
        assert_eq!(
            contents.iter().filter(|c| c.as_slice() == b"later").count(),
            3
        );
        assert!(
            all.iter()
                .all(|n| n.starts_with("svc-77-") && n.ends_with(".pprof.gz")),
            "{all:?}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn stamps_are_utc_to_the_microsecond() {
        // 2026-12-06 19:24:39.000042 UTC
        assert_eq!(stamp_text(1_796_585_079_000_042), "20261206T192439000042");
        assert_eq!(stamp_text(0), "19700101T000000000000");
    }
}
