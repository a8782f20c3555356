//! The configuration builder handle: `forkprof_config_new`, one setter per field of the Rust
//! `ConfigBuilder`, `forkprof_config_free`. Validation happens in `forkprof_start` (or
//! `forkprof_config_validate`), where the message names the bad field.

use std::ffi::{c_char, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use forkprof::{ChildPolicy, Compression, Config, ConfigBuilder, ExporterConfig, SampleType};

use crate::args::{bytes, text};
use crate::status::{forkprof_status, guard, FfiError};

/// Raw pprof protobuf, no compression.
pub const FORKPROF_COMPRESSION_NONE: u32 = 0;
/// gzip: what `go tool pprof` and Pyroscope read (the default).
pub const FORKPROF_COMPRESSION_GZIP: u32 = 1;
/// zstd level 1: what the Datadog intake prefers.
pub const FORKPROF_COMPRESSION_ZSTD: u32 = 2;

/// A forked child gets fresh profiler threads and its own profiles (the default).
pub const FORKPROF_CHILD_RESTART: u32 = 0;
/// A forked child records nothing; every call there is a cheap counted no-op.
pub const FORKPROF_CHILD_DISABLE: u32 = 1;

/// An opaque configuration being built. Create with `forkprof_config_new`, free with
/// `forkprof_config_free`. Not thread-safe: build it on one thread.
pub struct forkprof_config {
    builder: ConfigBuilder,
}

impl forkprof_config {
    pub(crate) fn build(&self) -> Result<Config, FfiError> {
        Ok(self.builder.clone().build()?)
    }
}

/// Applies a builder method. Works on a clone, so a panic part-way leaves the handle as it
/// was.
///
/// # Safety
/// `cfg` is NULL or a live handle from `forkprof_config_new`, used by no other thread.
unsafe fn update(
    cfg: *mut forkprof_config,
    f: impl FnOnce(ConfigBuilder) -> Result<ConfigBuilder, FfiError>,
) -> forkprof_status {
    guard(|| {
        // SAFETY: per this function's contract.
        let cfg = unsafe { cfg.as_mut() }.ok_or_else(|| FfiError::null("cfg"))?;
        cfg.builder = f(cfg.builder.clone())?;
        Ok(())
    })
}

/// Starts a configuration for `service` (`service_len` bytes, no NUL needed; invalid UTF-8 is
/// replaced). Defaults: profiles every 60 s, stacks cut at 128 frames, an 8 MiB buffer,
/// gzip files in `./profiles`, child policy RESTART. At least one sample type must be added.
///
/// # Safety
/// `service` points to `service_len` readable bytes; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_new(
    service: *const c_char,
    service_len: usize,
    out: *mut *mut forkprof_config,
) -> forkprof_status {
    guard(|| {
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        // SAFETY: `out` is non-null and writable per the contract.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: per the contract.
        let service = unsafe { text(service, service_len, "service") }?;
        let handle = Box::new(forkprof_config {
            builder: Config::builder(service),
        });
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(handle)) };
        Ok(())
    })
}

/// Frees a configuration. NULL is a no-op. A profiler started from it does not need it.
///
/// # Safety
/// `cfg` is NULL or a handle from `forkprof_config_new` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_free(cfg: *mut forkprof_config) {
    if !cfg.is_null() {
        let _ = guard(|| {
            // SAFETY: per the contract, `cfg` came from `Box::into_raw` and is freed once.
            drop(unsafe { Box::from_raw(cfg) });
            Ok(())
        });
    }
}

/// Adds a `key:value` tag attached to every profile.
///
/// # Safety
/// `cfg` is a live handle; `tag` points to `tag_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_tag(
    cfg: *mut forkprof_config,
    tag: *const c_char,
    tag_len: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe { update(cfg, |b| Ok(b.tag(text(tag, tag_len, "tag")?))) }
}

/// Adds a value column (e.g. "wall-time" / "nanoseconds"); samples carry one value per sample
/// type, in the order added.
///
/// # Safety
/// `cfg` is a live handle; `name` and `unit` point to that many readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_sample_type(
    cfg: *mut forkprof_config,
    name: *const c_char,
    name_len: usize,
    unit: *const c_char,
    unit_len: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update(cfg, |b| {
            Ok(b.sample_type(text(name, name_len, "name")?, text(unit, unit_len, "unit")?))
        })
    }
}

/// How often the current profile is closed and exported, in milliseconds.
///
/// # Safety
/// `cfg` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_period_ms(
    cfg: *mut forkprof_config,
    period_ms: u64,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe { update(cfg, |b| Ok(b.period(Duration::from_millis(period_ms)))) }
}

/// Stacks deeper than this keep their leaf-most `max_depth - 1` frames plus one frame saying
/// how many were cut (2..=65535).
///
/// # Safety
/// `cfg` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_max_depth(
    cfg: *mut forkprof_config,
    max_depth: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe { update(cfg, |b| Ok(b.max_stack_depth(max_depth))) }
}

/// Bytes of sample buffer between recording threads and the collector (at least 64 KiB).
/// When it is full, samples are dropped and counted; recording never blocks.
///
/// # Safety
/// `cfg` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_buffer_capacity(
    cfg: *mut forkprof_config,
    bytes: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe { update(cfg, |b| Ok(b.buffer_capacity(bytes))) }
}

/// How often the collector drains the sample buffer, in milliseconds.
///
/// # Safety
/// `cfg` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_drain_interval_ms(
    cfg: *mut forkprof_config,
    interval_ms: u64,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update(cfg, |b| {
            Ok(b.drain_interval(Duration::from_millis(interval_ms)))
        })
    }
}

/// Encoded profiles allowed to wait for the exporter; beyond this the oldest is dropped and
/// counted.
///
/// # Safety
/// `cfg` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_max_pending_profiles(
    cfg: *mut forkprof_config,
    n: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe { update(cfg, |b| Ok(b.max_pending_profiles(n))) }
}

/// Writes profiles as files `<dir>/<service>-<pid>-<seq>.pprof[.gz|.zst]`, compressed with
/// one of the FORKPROF_COMPRESSION_* constants. The directory is created at start.
///
/// # Safety
/// `cfg` is a live handle; `dir` points to `dir_len` readable bytes (a path, any bytes).
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_output_dir(
    cfg: *mut forkprof_config,
    dir: *const c_char,
    dir_len: usize,
    compression: u32,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update(cfg, |b| {
            let compression = match compression {
                FORKPROF_COMPRESSION_NONE => Compression::None,
                FORKPROF_COMPRESSION_GZIP => Compression::Gzip,
                FORKPROF_COMPRESSION_ZSTD => Compression::Zstd,
                other => {
                    return Err(FfiError::invalid(format!(
                        "compression {other} is not one of FORKPROF_COMPRESSION_NONE/GZIP/ZSTD"
                    )))
                }
            };
            let dir = PathBuf::from(OsStr::from_bytes(bytes(dir, dir_len, "dir")?));
            Ok(b.output_dir(dir, compression))
        })
    }
}

/// Exports to the endpoint a URL names, instead of files: `http://host:8126`, `https://...`
/// or `unix:///path/to/apm.socket` is a Datadog agent; `pyroscope+http://host:4040` (or
/// `+https`) a Pyroscope server. An unusable URL is reported by `forkprof_start` (or
/// `forkprof_config_validate`) as FORKPROF_ERR_CONFIG naming `endpoint`. Host names are
/// resolved once, at start, on the calling thread.
///
/// # Safety
/// `cfg` is a live handle; `url` points to `url_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_exporter_url(
    cfg: *mut forkprof_config,
    url: *const c_char,
    url_len: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update(cfg, |b| {
            Ok(b.exporter(ExporterConfig::from_url(&text(url, url_len, "url")?)))
        })
    }
}

/// Exports where the environment says: `FORKPROF_EXPORTER` / `FORKPROF_ENDPOINT` /
/// `FORKPROF_SERVICE` / ..., then the back end's own `DD_*` or `PYROSCOPE_*` variables, then
/// the defaults (the local Datadog agent). Reads the environment now, on this thread, and
/// never again (not in forked children, not on profiler threads).
///
/// # Safety
/// `cfg` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_exporter_from_env(
    cfg: *mut forkprof_config,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe { update(cfg, |b| Ok(b.exporter(ExporterConfig::from_env()?))) }
}

/// What a forked child does: FORKPROF_CHILD_RESTART or FORKPROF_CHILD_DISABLE.
///
/// # Safety
/// `cfg` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_child_policy(
    cfg: *mut forkprof_config,
    policy: u32,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update(cfg, |b| match policy {
            FORKPROF_CHILD_RESTART => Ok(b.child_policy(ChildPolicy::Restart)),
            FORKPROF_CHILD_DISABLE => Ok(b.child_policy(ChildPolicy::Disable)),
            other => Err(FfiError::invalid(format!(
                "child policy {other} is not FORKPROF_CHILD_RESTART or FORKPROF_CHILD_DISABLE"
            ))),
        })
    }
}

/// The pprof `period_type` and `period` (e.g. "cpu" / "nanoseconds", 10000000 at 100 Hz).
///
/// # Safety
/// `cfg` is a live handle; `name` and `unit` point to that many readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_sampling_period(
    cfg: *mut forkprof_config,
    name: *const c_char,
    name_len: usize,
    unit: *const c_char,
    unit_len: usize,
    period: i64,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update(cfg, |b| {
            let kind =
                SampleType::new(text(name, name_len, "name")?, text(unit, unit_len, "unit")?);
            Ok(b.sampling_period(kind, period))
        })
    }
}

/// Checks the configuration as `forkprof_start` would, without starting anything (the output
/// directory is only checked for being non-empty here).
///
/// # Safety
/// `cfg` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_validate(cfg: *const forkprof_config) -> forkprof_status {
    guard(|| {
        // SAFETY: per the contract.
        let cfg = unsafe { cfg.as_ref() }.ok_or_else(|| FfiError::null("cfg"))?;
        cfg.build().map(drop)
    })
}
