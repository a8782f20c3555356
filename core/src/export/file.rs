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
//!
//! # Retention
//! A directory that profiles are written to for months fills its disk. After a profile is
//! written, the exporter deletes the oldest profile files of the directory (by modification
//! time) beyond its [`Retention`]: at most so many files, at most so many bytes. Only files
//! named as forkprof names them are counted and deleted (`<service>-<pid>-<stamp>-<seq>.pprof`,
//! `.pprof.gz`, `.pprof.zst`: any service, since processes of several services may share the
//! directory and the bound is the directory's); nothing else in the directory is touched, and
//! the newest profile always stays. This runs on the uploader thread, inside `export`: never
//! in `record`, never in a fork handler or a child's restart. A directory scan per profile
//! would cost a process writing a profile every few milliseconds more than its writes, so an
//! exporter scans at most once per [`PRUNE_INTERVAL`] (and at its first profile, which is
//! what a short-lived forked worker writes).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::fds::TrackedFd;
use super::{Delivered, EncodedProfile, ExportContext, ExportFailure, Exporter};
use crate::error::{Error, Result};

pub(crate) fn validate(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Err(Error::config("output_dir", "must not be empty"));
    }
    Ok(())
}

/// How much of its directory the file exporter keeps: the newest profile files up to
/// `max_files` files and `max_bytes` bytes, whichever is reached first (0: no bound of that
/// kind). See the module's documentation for which files count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Retention {
    pub max_files: u64,
    pub max_bytes: u64,
}

impl Retention {
    /// The default: 1,000 files and 256 MiB per directory. Local files are for reading recent
    /// profiles (a backend keeps history): 1,000 is 16 hours of one process exporting every
    /// minute, half an hour of 32 workers. A forgotten directory cannot fill a disk, and the
    /// scan that enforces the bound stays short where it is felt most, in a short-lived
    /// worker's stop: 7 ms for 1,000 files, where 10,000 took 70 ms on a busy two-core
    /// machine (list, `lstat` each, sort; best of 5).
    pub const DEFAULT: Retention = Retention {
        max_files: 1_000,
        max_bytes: 256 << 20,
    };
    /// Keep everything (what forkprof did before it had a retention bound).
    pub const UNBOUNDED: Retention = Retention {
        max_files: 0,
        max_bytes: 0,
    };
    /// At most `n` files (0: no bound), no bound on bytes.
    pub const fn files(n: u64) -> Retention {
        Retention {
            max_files: n,
            max_bytes: 0,
        }
    }
    /// At most `bytes` bytes (0: no bound), no bound on files.
    pub const fn bytes(bytes: u64) -> Retention {
        Retention {
            max_files: 0,
            max_bytes: bytes,
        }
    }
    fn is_bounded(&self) -> bool {
        self.max_files > 0 || self.max_bytes > 0
    }
}

impl Default for Retention {
    fn default() -> Retention {
        Retention::DEFAULT
    }
}

/// An exporter scans its directory for files beyond its retention at most this often.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// Whether `name` is one forkprof gives a profile: `<service>-<pid>-<stamp>-<seq>.pprof`
/// with `.gz` or `.zst` or nothing after it, `<service>` made of the characters
/// [`file_safe`] keeps, `<stamp>` as [`stamp_text`] writes it.
pub fn is_profile_name(name: &str) -> bool {
    stamp_and_seq(name).is_some()
}

/// A profile name's stamp and sequence number, which order the profiles one exporter wrote.
fn stamp_and_seq(name: &str) -> Option<(&str, u64)> {
    let stem = [".pprof.gz", ".pprof.zst", ".pprof"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mut parts = stem.rsplitn(4, '-');
    let (seq, stamp, pid, service) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let stamp_ok = stamp.len() == 21
        && stamp.as_bytes()[8] == b'T'
        && digits(&stamp[..8])
        && digits(&stamp[9..]);
    let service_ok = !service.is_empty()
        && !service.starts_with('.')
        && service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !(digits(seq) && stamp_ok && digits(pid) && service_ok) {
        return None;
    }
    Some((stamp, seq.parse().ok()?))
}

/// Deletes the oldest profile files of `dir` beyond `keep`, never `newest` (the profile just
/// written). Returns how many it deleted. Another process pruning the same directory at the
/// same time is harmless: a file already gone is skipped.
pub fn prune(dir: &Path, keep: Retention, newest: Option<&Path>) -> io::Result<usize> {
    if !keep.is_bounded() {
        return Ok(0);
    }
    let mut files: Vec<(SystemTime, String, u64)> = Vec::new();
    for name in list_names(dir)? {
        if stamp_and_seq(&name).is_none() {
            continue;
        }
        // Not followed: a link or a directory under a profile's name is not a profile.
        let Ok(meta) = fs::symlink_metadata(dir.join(&name)) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        files.push((modified, name, meta.len()));
    }
    // Newest first; among equal times (coarse file-system clocks), a later stamp, then a
    // later sequence number, is newer.
    files.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| stamp_and_seq(&b.1).cmp(&stamp_and_seq(&a.1)))
    });
    let newest = newest.and_then(|p| p.file_name()).and_then(|n| n.to_str());
    if let Some(n) = newest {
        if let Some(i) = files.iter().position(|f| f.1 == n) {
            let f = files.remove(i);
            files.insert(0, f);
        }
    }
    let (mut count, mut bytes, mut deleted) = (0u64, 0u64, 0usize);
    for (i, (_, name, len)) in files.iter().enumerate() {
        count += 1;
        bytes = bytes.saturating_add(*len);
        let over = (keep.max_files > 0 && count > keep.max_files)
            || (keep.max_bytes > 0 && bytes > keep.max_bytes);
        if i == 0 || !over {
            continue;
        }
        match fs::remove_file(dir.join(name)) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // What was deleted no longer counts against the bound.
        count -= 1;
        bytes = bytes.saturating_sub(*len);
    }
    Ok(deleted)
}

/// An open directory stream; closed on drop.
struct Dir(std::ptr::NonNull<libc::DIR>);

impl std::os::fd::AsRawFd for Dir {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        // SAFETY: `self.0` is an open directory stream until drop.
        unsafe { libc::dirfd(self.0.as_ptr()) }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `fdopendir` and is closed once, here.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}

/// The names in `dir` (UTF-8 ones only: forkprof's names are ASCII). Its descriptor is
/// recorded for forked children while open (see `fds.rs`), like every descriptor an exporter
/// holds, so a fork landing mid-scan does not leave the child with it for ever: std's
/// `read_dir` keeps its descriptor to itself.
fn list_names(dir: &Path) -> io::Result<Vec<String>> {
    use std::os::fd::IntoRawFd;
    let file = fs::File::open(dir)?; // O_CLOEXEC, as std always opens
    let fd = file.into_raw_fd();
    // SAFETY: `fd` is an open descriptor this function owns; on success the stream owns it.
    let stream = unsafe { libc::fdopendir(fd) };
    let Some(stream) = std::ptr::NonNull::new(stream) else {
        let e = io::Error::last_os_error();
        // SAFETY: `fdopendir` failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    };
    let dir = TrackedFd::new(Dir(stream));
    let mut names = Vec::new();
    loop {
        // SAFETY: the stream is open and used by this thread only.
        let entry = unsafe { libc::readdir(dir.inner.0.as_ptr()) };
        if entry.is_null() {
            break;
        }
        // SAFETY: `readdir` returned a valid entry, whose name is NUL-terminated and valid
        // until the next `readdir` on this stream; it is copied out before that.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        if let Ok(name) = name.to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

pub struct FileExporter {
    dir: PathBuf,
    service: String,
    /// Microseconds since the Unix epoch: the exporter's creation, plus one per name that
    /// was found taken.
    stamp: u64,
    retention: Retention,
    /// When this exporter last scanned its directory for files beyond its retention.
    last_prune: Option<Instant>,
    prune_interval: Duration,
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
    /// bad directory is an error from `start()` rather than a stream of failed exports. A
    /// forked child only checks that the directory is still one (its parent made the rest; see
    /// [`ExportContext::in_forked_child`]): a directory made read-only since shows as a failed
    /// export.
    pub fn open(dir: &Path, ctx: &ExportContext<'_>) -> Result<Self> {
        Self::open_with(dir, Retention::UNBOUNDED, ctx)
    }

    /// [`FileExporter::open`], keeping at most `retention` of the directory.
    pub fn open_with(dir: &Path, retention: Retention, ctx: &ExportContext<'_>) -> Result<Self> {
        let fail = |what: &str, e: std::io::Error| {
            Error::config(
                "output_dir",
                format!("{}: cannot {what}: {e}", dir.display()),
            )
        };
        if ctx.in_forked_child {
            // One stat, no file created: a directory replaced since the parent's check is
            // still a failed restart that says why.
            let meta = fs::metadata(dir).map_err(|e| fail("find the directory", e))?;
            if !meta.is_dir() {
                return Err(Error::config(
                    "output_dir",
                    format!("{}: is not a directory", dir.display()),
                ));
            }
        } else {
            fs::create_dir_all(dir).map_err(|e| fail("create the directory", e))?;
            let probe = dir.join(format!(".forkprof-probe-{}", ctx.pid));
            fs::write(&probe, b"").map_err(|e| fail("write into the directory", e))?;
            let _ = fs::remove_file(&probe);
        }
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        Ok(FileExporter {
            dir: dir.to_path_buf(),
            service: file_safe(ctx.service),
            stamp,
            retention,
            last_prune: None,
            prune_interval: PRUNE_INTERVAL,
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

impl FileExporter {
    /// Applies the retention after `written`, at most once per [`PRUNE_INTERVAL`]. The profile
    /// is written whatever happens here: a directory that cannot be listed or a file that
    /// cannot be deleted leaves more files than the bound, and is tried again next time.
    fn prune_after(&mut self, written: &Path) {
        if !self.retention.is_bounded()
            || self
                .last_prune
                .is_some_and(|t| t.elapsed() < self.prune_interval)
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        let _ = prune(&self.dir, self.retention, Some(written));
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
            Ok(path) => {
                self.prune_after(&path);
                Ok(Delivered {
                    bytes: profile.bytes.len() as u64,
                    retries: 0,
                })
            }
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
            endpoint_counts: Vec::new(),
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
    fn only_forkprofs_names_are_profile_names() {
        for yes in [
            "svc-77-20261206T192439123456-0.pprof.gz",
            "my.svc_x-1-20261206T192439123456-12.pprof",
            "a-b-c-4242-20261206T192439123456-3.pprof.zst",
        ] {
            assert!(is_profile_name(yes), "{yes}");
        }
        for no in [
            ".svc-77-20261206T192439123456-0.pprof.gz.tmp",
            ".svc-77-20261206T192439123456-0.pprof.gz",
            "svc-77-20261206T192439123456-0.pprof.gz.tmp",
            "-77-20261206T192439123456-0.pprof.gz",
            "svc-x-20261206T192439123456-0.pprof.gz",
            "svc-77-2026120619243912345-0.pprof.gz",
            "svc-77-20261206X192439123456-0.pprof.gz",
            "svc-77-20261206T192439123456-.pprof.gz",
            "svc 1-77-20261206T192439123456-0.pprof.gz",
            "flame.svg",
            "notes.pprof",
            ".forkprof-probe-77",
        ] {
            assert!(!is_profile_name(no), "{no}");
        }
    }

    /// A profile file `name` of `len` bytes, last modified `age_s` seconds ago.
    fn aged(dir: &Path, name: &str, len: usize, age_s: u64) {
        let f = fs::File::create(dir.join(name)).unwrap();
        f.set_len(len as u64).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .unwrap();
    }

    fn pname(pid: u32, seq: u64) -> String {
        format!("svc-{pid}-20261206T192439123456-{seq}.pprof.gz")
    }

    #[test]
    fn pruning_deletes_the_oldest_profiles_and_nothing_else() {
        let dir = temp_dir("prune-files");
        fs::create_dir_all(&dir).unwrap();
        // Five profiles of two processes, oldest first: pid 2's are older than pid 1's newest.
        for (i, (pid, seq)) in [(1, 0), (2, 0), (2, 1), (1, 1), (3, 0)].iter().enumerate() {
            aged(&dir, &pname(*pid, *seq), 10, 100 - 10 * i as u64);
        }
        // What is not a profile of forkprof's naming: never counted, never deleted, however old.
        aged(&dir, "notes.txt", 10, 1000);
        aged(
            &dir,
            ".svc-9-20261206T192439123456-0.pprof.gz.tmp",
            10,
            1000,
        );
        fs::create_dir(dir.join(pname(8, 0))).unwrap();
        std::os::unix::fs::symlink("notes.txt", dir.join(pname(7, 0))).unwrap();

        assert_eq!(prune(&dir, Retention::files(3), None).unwrap(), 2);
        let mut want = vec![
            pname(1, 1),
            pname(2, 1),
            pname(3, 0),
            pname(7, 0),
            pname(8, 0),
            ".svc-9-20261206T192439123456-0.pprof.gz.tmp".to_string(),
            "notes.txt".to_string(),
        ];
        want.sort();
        assert_eq!(names(&dir), want);
        // Within the bound: nothing more goes.
        assert_eq!(prune(&dir, Retention::files(3), None).unwrap(), 0);
        // Unbounded: nothing is even listed.
        assert_eq!(prune(&dir, Retention::UNBOUNDED, None).unwrap(), 0);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn pruning_by_bytes_keeps_the_newest_even_when_it_alone_is_over() {
        let dir = temp_dir("prune-bytes");
        fs::create_dir_all(&dir).unwrap();
        aged(&dir, &pname(1, 0), 400, 30);
        aged(&dir, &pname(1, 1), 400, 20);
        aged(&dir, &pname(1, 2), 400, 10);
        // 1000 bytes hold the two newest.
        assert_eq!(prune(&dir, Retention::bytes(1000), None).unwrap(), 1);
        assert_eq!(names(&dir), vec![pname(1, 1), pname(1, 2)]);
        // A bound smaller than one profile keeps the one just written, even if its clock
        // says it is older (a file system with coarse times).
        aged(&dir, &pname(2, 0), 400, 40);
        let written = dir.join(pname(2, 0));
        assert_eq!(prune(&dir, Retention::bytes(1), Some(&written)).unwrap(), 2);
        assert_eq!(names(&dir), vec![pname(2, 0)]);
        // Both bounds: whichever is reached first.
        for seq in 0..4 {
            aged(&dir, &pname(3, seq), 100, 5 - seq);
        }
        let both = Retention {
            max_files: 3,
            max_bytes: 250,
        };
        assert_eq!(prune(&dir, both, None).unwrap(), 3);
        assert_eq!(names(&dir), vec![pname(3, 2), pname(3, 3)]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_exporter_keeps_its_directory_within_the_retention() {
        let dir = temp_dir("retention");
        let config = Config::builder("svc")
            .sample_type("s", "count")
            .build()
            .unwrap();
        let ctx = config.export_context(4243);
        let mut e = FileExporter::open_with(&dir, Retention::files(2), &ctx).unwrap();
        e.prune_interval = Duration::ZERO;
        aged(&dir, "keep-me.txt", 1, 1000);
        for seq in 0..5 {
            e.export(&profile(4243, seq, b"p"), None).unwrap();
        }
        let all = names(&dir);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all.contains(&"keep-me.txt".to_string()), "{all:?}");
        // The two kept are the two last written.
        for seq in [3, 4] {
            assert!(
                all.iter().any(|n| n.ends_with(&format!("-{seq}.pprof.gz"))),
                "{all:?}"
            );
        }
        // One scan per interval: within it, the next writes are not pruned yet.
        e.prune_interval = Duration::from_secs(3600);
        e.export(&profile(4243, 5, b"p"), None).unwrap();
        e.export(&profile(4243, 6, b"p"), None).unwrap();
        assert_eq!(names(&dir).len(), 5, "no scan within the interval");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn stamps_are_utc_to_the_microsecond() {
        // 2026-12-06 19:24:39.000042 UTC
        assert_eq!(stamp_text(1_796_585_079_000_042), "20261206T192439000042");
        assert_eq!(stamp_text(0), "19700101T000000000000");
    }
}
