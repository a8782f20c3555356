//! What a runtime uploading to Datadog through the C ABI says about itself: the family (its
//! language), its tracer's runtime id, its profiling library's name and version. Kept on the
//! configuration handle and applied at start to the Datadog exporter configured then, so the
//! order of the calls does not matter.

use std::ffi::c_char;

use forkprof::export::{datadog_settings, Datadog};
use forkprof::ExporterConfig;

use crate::args::text;
use crate::config::{config_mut, forkprof_config};
use crate::status::{forkprof_status, guard, FfiError};

#[derive(Clone, Default)]
pub(crate) struct DatadogOverrides {
    family: Option<String>,
    runtime_id: Option<String>,
    library: Option<(String, String)>,
}

impl DatadogOverrides {
    /// `exporter` with the overrides applied; an error if some are set and it is not Datadog.
    pub(crate) fn apply(&self, exporter: ExporterConfig) -> Result<ExporterConfig, FfiError> {
        if self.family.is_none() && self.runtime_id.is_none() && self.library.is_none() {
            return Ok(exporter);
        }
        let Some(settings) = datadog_settings(&exporter) else {
            return Err(FfiError::from(forkprof::Error::InvalidConfig {
                field: "datadog settings",
                reason: "apply to a Datadog exporter: call forkprof_config_exporter_url with the agent's URL (or forkprof_config_exporter_from_env) first".into(),
            }));
        };
        let mut d: Datadog = settings.clone();
        if let Some(f) = &self.family {
            d = d.family(f.clone());
        }
        if let Some(id) = &self.runtime_id {
            d = d.runtime_id(id.clone());
        }
        if let Some((name, version)) = &self.library {
            d = d.library(name.clone(), version.clone());
        }
        Ok(d.into())
    }
}

/// Changes the handle's Datadog settings. Works on a copy, so a panic part-way leaves the
/// handle as it was.
///
/// # Safety
/// `cfg` is NULL or a live handle from `forkprof_config_new`, used by no other thread.
unsafe fn update_datadog(
    cfg: *mut forkprof_config,
    f: impl FnOnce(&mut DatadogOverrides) -> Result<(), FfiError>,
) -> forkprof_status {
    guard(|| {
        // SAFETY: per this function's contract.
        let cfg = unsafe { config_mut(cfg) }?;
        let mut d = cfg.datadog.clone();
        f(&mut d)?;
        cfg.datadog = d;
        Ok(())
    })
}

/// The profiler family Datadog shows: the language of the profiled code (`php`, `ruby`,
/// `python`, ...; `native` when not set). Applies to the Datadog exporter configured when the
/// profiler starts; an error then if profiles go elsewhere.
///
/// # Safety
/// `cfg` is a live handle; `family` points to `family_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_datadog_family(
    cfg: *mut forkprof_config,
    family: *const c_char,
    family_len: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update_datadog(cfg, |d| {
            d.family = Some(text(family, family_len, "family")?);
            Ok(())
        })
    }
}

/// The `runtime-id` tag: the host tracer's runtime id (a UUID), so Datadog links profiles and
/// traces. It applies to the process that calls this; a forked child, another runtime, gets a
/// random id of its own (as every process does when none is set). Applies like
/// `forkprof_config_datadog_family`.
///
/// # Safety
/// `cfg` is a live handle; `runtime_id` points to `runtime_id_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_datadog_runtime_id(
    cfg: *mut forkprof_config,
    runtime_id: *const c_char,
    runtime_id_len: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update_datadog(cfg, |d| {
            d.runtime_id = Some(text(runtime_id, runtime_id_len, "runtime_id")?);
            Ok(())
        })
    }
}

/// The profiling library's name and version, sent as `DD-EVP-ORIGIN` and
/// `DD-EVP-ORIGIN-VERSION` (default: forkprof and its version, which stays in the
/// `profiler_version` tag). Applies like `forkprof_config_datadog_family`.
///
/// # Safety
/// `cfg` is a live handle; `name` and `version` point to that many readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_config_datadog_library(
    cfg: *mut forkprof_config,
    name: *const c_char,
    name_len: usize,
    version: *const c_char,
    version_len: usize,
) -> forkprof_status {
    // SAFETY: per the contract.
    unsafe {
        update_datadog(cfg, |d| {
            d.library = Some((
                text(name, name_len, "name")?,
                text(version, version_len, "version")?,
            ));
            Ok(())
        })
    }
}
