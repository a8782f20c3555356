//! Trace context from C: the labels that attach a span to a sample (filled into the caller's
//! label array, so `forkprof_record` itself is unchanged), and late-bound endpoints.

use std::ffi::c_char;

use forkprof::trace::{LOCAL_ROOT_SPAN_ID, SPAN_ID, TRACE_ID_HIGH, TRACE_ID_LOW};

use crate::args::bytes;
use crate::profiler::{forkprof_label, forkprof_profiler, profiler, FORKPROF_LABEL_NUM};
use crate::sized::OutSlot;
use crate::status::{forkprof_status, guard, FfiError};

/// Labels a span adds to a sample (`forkprof_trace_labels`).
pub const FORKPROF_TRACE_LABELS: usize = 4;

fn num_label(key: &'static str, value: u64) -> forkprof_label {
    forkprof_label {
        size: size_of::<forkprof_label>() as u32,
        kind: FORKPROF_LABEL_NUM,
        key: key.as_ptr().cast::<c_char>(),
        key_len: key.len(),
        str: std::ptr::null(),
        str_len: 0,
        // The bits of the id: pprof numeric labels are signed.
        num: value as i64,
        unit: std::ptr::null(),
        unit_len: 0,
    }
}

/// Fills `out` with the labels that attach a span to a sample: "span id", "local root span
/// id", "trace id high" and "trace id low" (the 128-bit trace id's halves), the names every
/// exporter reads. Append them to the sample's own labels and pass the whole array to
/// `forkprof_record`. `*n_written` (when not NULL) is set to the number written:
/// FORKPROF_TRACE_LABELS, or 0 when `span_id` is 0 (no span: the sample goes without).
/// `out` holds `out_len` elements with `size` set in each, like every label array; the keys
/// point to static storage of the library.
///
/// Async-signal-safe when the call is valid (stores only), like `forkprof_record`.
///
/// # Safety
/// `out` points to `out_len` writable labels of `out[0].size` bytes each, their `size` set;
/// `n_written` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn forkprof_trace_labels(
    span_id: u64,
    local_root_span_id: u64,
    trace_id_high: u64,
    trace_id_low: u64,
    out: *mut forkprof_label,
    out_len: usize,
    n_written: *mut usize,
) -> forkprof_status {
    guard(|| {
        if !n_written.is_null() {
            // SAFETY: non-null and writable per the contract.
            unsafe { n_written.write(0) };
        }
        if span_id == 0 {
            return Ok(());
        }
        if out_len < FORKPROF_TRACE_LABELS {
            return Err(FfiError::invalid(format!(
                "`out_len` is {out_len}: a span takes FORKPROF_TRACE_LABELS ({FORKPROF_TRACE_LABELS}) labels"
            )));
        }
        let labels = [
            num_label(SPAN_ID, span_id),
            num_label(LOCAL_ROOT_SPAN_ID, local_root_span_id),
            num_label(TRACE_ID_HIGH, trace_id_high),
            num_label(TRACE_ID_LOW, trace_id_low),
        ];
        // Every element's size is checked before any is written, so a refusal writes nothing.
        // SAFETY: `out` points to at least 4 labels with `size` set (checked length above).
        let first = unsafe { OutSlot::new(out, "out") }?;
        let stride = first.size();
        let mut slots = [Some(first), None, None, None];
        for (i, slot) in slots.iter_mut().enumerate().skip(1) {
            // SAFETY: element `i < out_len` lies at `i * stride` bytes in the caller's array.
            let at = unsafe { out.cast::<u8>().add(i * stride).cast::<forkprof_label>() };
            // SAFETY: as above; its size is read and checked before anything is written.
            let s = unsafe { OutSlot::new(at, "out") }?;
            if s.size() != stride {
                return Err(FfiError::invalid(format!(
                    "`out[{i}].size` is {} but `out[0].size` is {stride}: set every element's \
                     size to sizeof(forkprof_label)",
                    s.size()
                )));
            }
            *slot = Some(s);
        }
        for (slot, label) in slots.into_iter().zip(&labels) {
            if let Some(s) = slot {
                s.write(label);
            }
        }
        if !n_written.is_null() {
            // SAFETY: as above.
            unsafe { n_written.write(FORKPROF_TRACE_LABELS) };
        }
        Ok(())
    })
}

/// Registers the endpoint (route, script, resource; UTF-8, invalid bytes replaced) of the
/// request whose root span is `local_root_span_id`, typically when that span ends. When the
/// profile is written, every sample whose "local root span id" label has this id gets a
/// "trace endpoint" label, samples recorded before this call included. Bounded per profile
/// period (what does not fit is dropped and counted in `forkprof_stats.endpoints_dropped`).
/// FORKPROF_ERR_SAMPLE for id 0; FORKPROF_ERR_NOT_RUNNING when the profiler does not run
/// in this process. Takes a lock and allocates: not for signal handlers.
///
/// # Safety
/// `p` is a live profiler handle; `endpoint` points to `endpoint_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_set_endpoint(
    p: *const forkprof_profiler,
    local_root_span_id: u64,
    endpoint: *const c_char,
    endpoint_len: usize,
) -> forkprof_status {
    guard(|| {
        // SAFETY: per the contract.
        let prof = unsafe { profiler(p) }?;
        // SAFETY: per the contract.
        let endpoint = unsafe { bytes(endpoint, endpoint_len, "endpoint") }?;
        Ok(prof.set_endpoint(local_root_span_id, &String::from_utf8_lossy(endpoint))?)
    })
}

/// Counts `hits` requests served by `endpoint` in this profile period (Datadog's
/// `endpoint_counts`): call it once per request, when its root span ends. Bounded like
/// `forkprof_set_endpoint`; not for signal handlers.
///
/// # Safety
/// As `forkprof_set_endpoint`.
#[no_mangle]
pub unsafe extern "C" fn forkprof_count_endpoint(
    p: *const forkprof_profiler,
    endpoint: *const c_char,
    endpoint_len: usize,
    hits: u64,
) -> forkprof_status {
    guard(|| {
        // SAFETY: per the contract.
        let prof = unsafe { profiler(p) }?;
        // SAFETY: per the contract.
        let endpoint = unsafe { bytes(endpoint, endpoint_len, "endpoint") }?;
        Ok(prof.count_endpoint(&String::from_utf8_lossy(endpoint), hits)?)
    })
}
