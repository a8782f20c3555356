//! The embedded default exporter: `<dir>/<service>-<pid>-<seq>.pprof[.gz|.zst]`, written to a
//! hidden temporary file in the same directory and renamed, so a crash never leaves a
//! half-written file under the final name.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
        Ok(FileExporter {
            dir: dir.to_path_buf(),
            service: file_safe(ctx.config.service()),
        })
    }

    pub fn path_for(&self, profile: &EncodedProfile) -> PathBuf {
        self.dir.join(format!(
            "{}-{}-{}.pprof{}",
            self.service,
            profile.pid,
            profile.seq,
            profile.compression.extension()
        ))
    }
}

impl Exporter for FileExporter {
    fn export(
        &mut self,
        profile: &EncodedProfile,
        _deadline: Option<Instant>,
    ) -> Result<Delivered, ExportFailure> {
        let path = self.path_for(profile);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            // No fsync: the rename is what keeps a crashed process from leaving a partial file
            // under the final name; surviving power loss is not worth a disk flush per profile
            // (it made short-lived forked workers' `stop()` 10–30 ms slower).
            f.write_all(&profile.bytes)?;
            fs::rename(&tmp, &path)
        };
        match write() {
            Ok(()) => Ok(Delivered {
                bytes: profile.bytes.len() as u64,
                retries: 0,
            }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(ExportFailure {
                    reason: format!("{}: {e}", path.display()),
                    ..Default::default()
                })
            }
        }
    }
}
