//! The configuration builder handle: `forkprof_config_new`, one setter per field of the Rust
//! `ConfigBuilder`, `forkprof_config_free`. Validation happens in `forkprof_start` (or
//! `forkprof_config_validate`), where the message names the bad field.

use std::ffi::{c_char, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use forkprof::export::{pyroscope_settings, ExporterConfigExt, Pyroscope};
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
    // What C sees: nothing. The pointer is a `ConfigHandle`, whose layout is the library's
    // own business and so stays out of the ABI (and out of what abidiff compares).
    _opaque: [u8; 0],
}

pub(crate) struct ConfigHandle {
    builder: ConfigBuilder,
    /// Upload settings, applied at build to whichever HTTP exporter is configured then, so
    /// the order of the setter calls does not matter.
    http: HttpOverrides,
    pyroscope: PyroscopeOverrides,
    pub(crate) datadog: crate::datadog::DatadogOverrides,
}

#[derive(Clone, Default)]
struct HttpOverrides {
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    max_retries: Option<u32>,
    retry_budget: Option<Duration>,
    initial_backoff: Option<Duration>,
    max_backoff: Option<Duration>,
}

impl HttpOverrides {
    fn any(&self) -> bool {
        self.connect_timeout.is_some()
            || self.request_timeout.is_some()
            || self.max_retries.is_some()
            || self.retry_budget.is_some()
            || self.initial_backoff.is_some()
            || self.max_backoff.is_some()
    }
}

#[derive(Clone, Default)]
struct PyroscopeOverrides {
    basic_auth: Option<(String, String)>,
    bearer_token: Option<String>,
    tenant_id: Option<String>,
    headers: Vec<(String, String)>,
}

impl PyroscopeOverrides {
    fn any(&self) -> bool {
        self.basic_auth.is_some()
            || self.bearer_token.is_some()
            || self.tenant_id.is_some()
            || !self.headers.is_empty()
    }
}

/// # Safety
/// `cfg` is NULL or a live handle from `forkprof_config_new`.
pub(crate) unsafe fn config_ref<'a>(
    cfg: *const forkprof_config,
) -> Result<&'a ConfigHandle, FfiError> {
    // SAFETY: per the contract, a non-null `cfg` came from a `Box<ConfigHandle>`.
    unsafe { cfg.cast::<ConfigHandle>().as_ref() }.ok_or_else(|| FfiError::null("cfg"))
}

/// # Safety
/// As [`config_ref`], and no other thread uses the handle.
pub(crate) unsafe fn config_mut<'a>(
    cfg: *mut forkprof_config,
) -> Result<&'a mut ConfigHandle, FfiError> {
    // SAFETY: per the contract, a non-null `cfg` came from a `Box<ConfigHandle>`.
    unsafe { cfg.cast::<ConfigHandle>().as_mut() }.ok_or_else(|| FfiError::null("cfg"))
}

impl ConfigHandle {
    pub(crate) fn build(&self) -> Result<Config, FfiError> {
        let mut exporter = self.builder.exporter_config().clone();
        if self.pyroscope.any() {
            let Some(settings) = pyroscope_settings(&exporter) else {
                return Err(FfiError::from(forkprof::Error::InvalidConfig {
                    field: "pyroscope auth",
                    reason: "applies to a Pyroscope exporter: call forkprof_config_exporter_url with pyroscope+http://... (or the environment) first".into(),
                }));
            };
            let o = &self.pyroscope;
            let mut p: Pyroscope = settings.clone();
            if let Some((user, password)) = &o.basic_auth {
                p = p.basic_auth(user.clone(), password.clone());
            }
            if let Some(t) = &o.bearer_token {
                p = p.bearer_token(t.clone());
            }
            if let Some(t) = &o.tenant_id {
                p = p.tenant_id(t.clone());
            }
            for (k, v) in &o.headers {
                p = p.header(k.clone(), v.clone());
            }
            exporter = p.into();
        }
        exporter = self.datadog.apply(exporter)?;
        if self.http.any() {
            let Some(mut h) = exporter.http_options() else {
                return Err(FfiError::from(forkprof::Error::InvalidConfig {
                    field: "upload settings",
                    reason: "apply to an HTTP exporter: call forkprof_config_exporter_url (or forkprof_config_exporter_from_env) first".into(),
                }));
            };
            let o = &self.http;
            h.connect_timeout = o.connect_timeout.unwrap_or(h.connect_timeout);
            h.request_timeout = o.request_timeout.unwrap_or(h.request_timeout);
            h.max_retries = o.max_retries.unwrap_or(h.max_retries);
            h.retry_budget = o.retry_budget.unwrap_or(h.retry_budget);
            h.initial_backoff = o.initial_backoff.unwrap_or(h.initial_backoff);
            h.max_backoff = o.max_backoff.unwrap_or(h.max_backoff);
            exporter = exporter.with_http_options(h)?;
        }
        Ok(self.builder.clone().exporter(exporter).build()?)
    }
}

/// Changes the handle's upload or Pyroscope settings. Works on a copy, like [`update`].
///
/// # Safety
/// As [`update`].
unsafe fn update_extra(
    cfg: *mut forkprof_config,
    f: impl FnOnce(&mut HttpOverrides, &mut PyroscopeOverrides) -> Result<(), FfiError>,
) -> forkprof_status {
    guard(|| {
        // SAFETY: per this function's contract.
        let cfg = unsafe { config_mut(cfg) }?;
        let (mut http, mut pyro) = (cfg.http.clone(), cfg.pyroscope.clone());
        f(&mut http, &mut pyro)?;
        cfg.http = http;
        cfg.pyroscope = pyro;
        Ok(())
    })
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
        let cfg = unsafe { config_mut(cfg) }?;
        cfg.builder = f(cfg.builder.clone())?;
        Ok(())
    })
}

/// Starts a configuration for `service` (`service_len` bytes, no NUL needed; invalid UTF-8 is
/// replaced). Defaults: profiles every 60 s, stacks cut at 128 frames, a 4 MiB buffer (8 MiB mapped: two halves),
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
        let handle = Box::new(ConfigHandle {
            builder: Config::builder(service),
            http: HttpOverrides::default(),
            pyroscope: PyroscopeOverrides::default(),
            datadog: Default::default(),
        });
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(handle).cast()) };
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
            // SAFETY: per the contract, `cfg` came from `Box::into_raw` of a `ConfigHandle` and
            // is freed once.
            drop(unsafe { Box::from_raw(cfg.cast::<ConfigHandle>()) });
            Ok(())
        });
    }
}

/// Adds a `key:value` tag (or a bare `key`: a tag with an empty value) attached to every
/// profile.
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

/// Writes profiles as files `<dir>/<service>-<pid>-<stamp>-<seq>.pprof[.gz|.zst]`, compressed with
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

/// How much of the output directory the file exporter keeps: after each profile it writes,
/// the oldest profile files of the directory beyond `max_files` files or `max_bytes` bytes are
/// deleted (0: no bound of that kind; both 0: keep everything). Only files named as forkprof
/// names profiles count and are deleted, of any service, and the newest always stays. Default
/// when not called: 1000 files and 256 MiB. An error at start if profiles do not go to files.
///
/// # Safety
/// `cfg` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_output_retention(
    cfg: *mut forkprof_config,
    max_files: u64,
    max_bytes: u64,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update(cfg, |b| {
            Ok(b.output_retention(forkprof::Retention {
                max_files,
                max_bytes,
            }))
        })
    }
}

/// Exports to the endpoint a URL names, instead of files: `http://host:8126`, `https://...`
/// or `unix:///path/to/apm.socket` is a Datadog agent; `pyroscope+http://host:4040` (or
/// `+https`) a Pyroscope server; `otlp+http://host:4318` (or `+https`) an OpenTelemetry
/// collector's OTLP/HTTP receiver (profiles go to `/v1development/profiles`). An unusable URL is reported by `forkprof_start` (or
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

/// Upload timeouts: connecting (default 2000 ms) and one whole attempt (default 10000 ms).
/// 0 keeps the current value (the default, or the environment's when the exporter came from
/// `forkprof_config_exporter_from_env`). Applies to the HTTP exporter configured when the
/// profiler starts; an error then if profiles go to files.
///
/// # Safety
/// `cfg` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_upload_timeouts(
    cfg: *mut forkprof_config,
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
) -> forkprof_status {
    let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
    // SAFETY: per the contract.
    unsafe {
        update_extra(cfg, |h, _| {
            h.connect_timeout = ms(connect_timeout_ms).or(h.connect_timeout);
            h.request_timeout = ms(request_timeout_ms).or(h.request_timeout);
            Ok(())
        })
    }
}

/// Retry policy of one profile's upload: at most `max_retries` more attempts (default 3; a
/// negative value keeps the current one) on connection errors, timeouts, 408, 429 and 5xx,
/// all attempts and pauses within `retry_budget_ms` (default 30000), pauses starting at
/// `initial_backoff_ms` (250) and doubling up to `max_backoff_ms` (4000), with jitter; a
/// server's `Retry-After` on 429/503 sets the pause instead when longer. 0 keeps the current
/// value of a duration. Applies like `forkprof_config_upload_timeouts`.
///
/// # Safety
/// `cfg` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_upload_retries(
    cfg: *mut forkprof_config,
    max_retries: i32,
    retry_budget_ms: u64,
    initial_backoff_ms: u64,
    max_backoff_ms: u64,
) -> forkprof_status {
    let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
    // SAFETY: per the contract.
    unsafe {
        update_extra(cfg, |h, _| {
            if max_retries >= 0 {
                h.max_retries = Some(max_retries as u32);
            }
            h.retry_budget = ms(retry_budget_ms).or(h.retry_budget);
            h.initial_backoff = ms(initial_backoff_ms).or(h.initial_backoff);
            h.max_backoff = ms(max_backoff_ms).or(h.max_backoff);
            Ok(())
        })
    }
}

/// Basic auth for a Pyroscope server (Grafana Cloud: the stack's user id and an access
/// token); replaces credentials given in the URL. The password is never shown in a message.
///
/// # Safety
/// `cfg` is a live handle; `user` and `password` point to that many readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_pyroscope_basic_auth(
    cfg: *mut forkprof_config,
    user: *const c_char,
    user_len: usize,
    password: *const c_char,
    password_len: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update_extra(cfg, |_, p| {
            p.basic_auth = Some((
                text(user, user_len, "user")?,
                text(password, password_len, "password")?,
            ));
            Ok(())
        })
    }
}

/// `Authorization: Bearer <token>` for a Pyroscope server (not with basic auth).
///
/// # Safety
/// `cfg` is a live handle; `token` points to `token_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_pyroscope_bearer_token(
    cfg: *mut forkprof_config,
    token: *const c_char,
    token_len: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update_extra(cfg, |_, p| {
            p.bearer_token = Some(text(token, token_len, "token")?);
            Ok(())
        })
    }
}

/// The tenant of a multi-tenant Pyroscope, sent as `X-Scope-OrgID`.
///
/// # Safety
/// `cfg` is a live handle; `tenant` points to `tenant_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_pyroscope_tenant(
    cfg: *mut forkprof_config,
    tenant: *const c_char,
    tenant_len: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update_extra(cfg, |_, p| {
            p.tenant_id = Some(text(tenant, tenant_len, "tenant")?);
            Ok(())
        })
    }
}

/// An extra header on every request to the Pyroscope server; its value is treated as a
/// secret (never shown).
///
/// # Safety
/// `cfg` is a live handle; `name` and `value` point to that many readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_pyroscope_header(
    cfg: *mut forkprof_config,
    name: *const c_char,
    name_len: usize,
    value: *const c_char,
    value_len: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update_extra(cfg, |_, p| {
            p.headers.push((
                text(name, name_len, "name")?,
                text(value, value_len, "value")?,
            ));
            Ok(())
        })
    }
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
        let cfg = unsafe { config_ref(cfg) }?;
        cfg.build().map(drop)
    })
}
