//! The profiler handle: start, record (text or interned frames), intern, flush, stop, stats,
//! free.

use std::ffi::c_char;
use std::time::Duration;

use forkprof::{Frame, FrameIds, Label, LabelValue, Profiler, Sample, StrId};

use crate::args::{array, bytes, with_mapped};
use crate::config::{config_ref, forkprof_config};
use crate::sized::{OutSlot, SizeTagged, TaggedArray};
use crate::status::{forkprof_status, guard, FfiError};

/// A running profiler. Any thread may record into it at once. Create with `forkprof_start`,
/// stop with `forkprof_stop`, free with `forkprof_free`. A forked child keeps using the same
/// handle: its first call there starts the child's own profiling (or disables it, per the
/// child policy).
pub struct forkprof_profiler {
    // What C sees: nothing. The pointer is a `ProfilerHandle`, whose layout is the library's
    // own business and so stays out of the ABI (and out of what abidiff compares).
    _opaque: [u8; 0],
}

struct ProfilerHandle {
    inner: Profiler,
}

/// One frame given as text, leaf first in the array. Names are pointer + length (no NUL
/// needed); invalid UTF-8 is replaced when the profile is built, never on the recording
/// thread. A name of length 0 may have a NULL pointer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct forkprof_frame {
    /// `sizeof(forkprof_frame)`, set by the caller in every element.
    pub size: u32,
    pub line: u32,
    pub function: *const c_char,
    pub function_len: usize,
    pub file: *const c_char,
    pub file_len: usize,
}

// SAFETY: repr(C), `size: u32` first, integers and raw pointers only.
unsafe impl SizeTagged for forkprof_frame {
    const NAME: &'static str = "forkprof_frame";
    const MIN_SIZE: usize = std::mem::offset_of!(forkprof_frame, file_len) + size_of::<usize>();
}

/// One frame given as ids from `forkprof_intern`: the fastest way in.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct forkprof_frame_ids {
    /// `sizeof(forkprof_frame_ids)`, set by the caller in every element.
    pub size: u32,
    pub function: u32,
    pub file: u32,
    pub line: u32,
}

// SAFETY: repr(C), `size: u32` first, integers only.
unsafe impl SizeTagged for forkprof_frame_ids {
    const NAME: &'static str = "forkprof_frame_ids";
    const MIN_SIZE: usize = std::mem::offset_of!(forkprof_frame_ids, line) + size_of::<u32>();
}

/// A label whose value is `str` / `str_len`.
pub const FORKPROF_LABEL_STR: u32 = 0;
/// A label whose value is `num`, with an optional `unit` (length 0 for none).
pub const FORKPROF_LABEL_NUM: u32 = 1;

/// A `key = value` label on a sample (thread id, thread name, span id, ...). `kind` is
/// FORKPROF_LABEL_STR or FORKPROF_LABEL_NUM; the fields of the other kind are ignored.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct forkprof_label {
    /// `sizeof(forkprof_label)`, set by the caller in every element.
    pub size: u32,
    pub kind: u32,
    pub key: *const c_char,
    pub key_len: usize,
    pub str: *const c_char,
    pub str_len: usize,
    pub num: i64,
    pub unit: *const c_char,
    pub unit_len: usize,
}

// SAFETY: repr(C), `size: u32` first, integers and raw pointers only.
unsafe impl SizeTagged for forkprof_label {
    const NAME: &'static str = "forkprof_label";
    const MIN_SIZE: usize = std::mem::offset_of!(forkprof_label, unit_len) + size_of::<usize>();
}

/// A snapshot of this process's profiler counters (zero-based in a forked child). Set `size`
/// before the call; the library fills the fields that fit in it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct forkprof_stats {
    /// `sizeof(forkprof_stats)`, set by the caller; the library writes no byte past it.
    pub size: u32,
    pub pid: u32,
    /// Samples accepted into the buffer.
    pub samples_recorded: u64,
    /// Samples dropped because the buffer was full.
    pub samples_dropped: u64,
    /// Samples larger than a buffer shard, dropped.
    pub samples_too_large: u64,
    /// Samples recorded after stop, or in a child under FORKPROF_CHILD_DISABLE.
    pub samples_ignored: u64,
    /// Samples whose stacks were cut to the maximum depth.
    pub frames_truncated: u64,
    /// Profiles the exporter delivered.
    pub profiles_written: u64,
    /// Profiles the exporter gave up on.
    pub profiles_failed: u64,
    /// Profiles dropped because the export queue was full.
    pub profiles_dropped: u64,
    /// Profiles refused for exceeding the destination's size limit.
    pub profiles_too_large: u64,
    /// Compressed bytes delivered.
    pub bytes_written: u64,
    /// Upload attempts repeated after a retryable failure.
    pub uploads_retried: u64,
    /// Why profiling is off in this process: 0 when it is not, else one of the
    /// `FORKPROF_DISABLED_*` values; `forkprof_disabled_reason_text` says it in words.
    pub disabled_reason: u32,
    /// Endpoint registrations and counts dropped because the period's table was full
    /// (ABI 1.1).
    pub endpoints_dropped: u64,
}

// SAFETY: repr(C), `size: u32` first, integers only.
unsafe impl SizeTagged for forkprof_stats {
    const NAME: &'static str = "forkprof_stats";
    const MIN_SIZE: usize =
        std::mem::offset_of!(forkprof_stats, disabled_reason) + size_of::<u32>();
}

impl Default for forkprof_stats {
    /// All zero, `size` set: ready to be filled.
    fn default() -> Self {
        forkprof_stats {
            size: size_of::<forkprof_stats>() as u32,
            pid: 0,
            samples_recorded: 0,
            samples_dropped: 0,
            samples_too_large: 0,
            samples_ignored: 0,
            frames_truncated: 0,
            profiles_written: 0,
            profiles_failed: 0,
            profiles_dropped: 0,
            profiles_too_large: 0,
            bytes_written: 0,
            uploads_retried: 0,
            disabled_reason: 0,
            endpoints_dropped: 0,
        }
    }
}

/// A forked child under `FORKPROF_CHILD_DISABLE`.
pub const FORKPROF_DISABLED_CHILD_POLICY: u32 = 1;
/// A child forked without forkprof's fork hooks (`_Fork`, raw `clone`, an unintercepted fork
/// on macOS).
pub const FORKPROF_DISABLED_UNOBSERVED_FORK: u32 = 2;
/// A forked child could not start its own profiler.
pub const FORKPROF_DISABLED_RESTART_FAILED: u32 = 3;
/// The profiler's threads did not start within 2 s (in a child: a lock inherited held).
pub const FORKPROF_DISABLED_THREADS_DID_NOT_START: u32 = 4;

// The C numbers are core's.
const _: () = {
    assert!(forkprof::Disabled::ChildPolicy as u32 == FORKPROF_DISABLED_CHILD_POLICY);
    assert!(forkprof::Disabled::UnobservedFork as u32 == FORKPROF_DISABLED_UNOBSERVED_FORK);
    assert!(forkprof::Disabled::RestartFailed as u32 == FORKPROF_DISABLED_RESTART_FAILED);
    assert!(
        forkprof::Disabled::ThreadsDidNotStart as u32 == FORKPROF_DISABLED_THREADS_DID_NOT_START
    );
};

/// What a `forkprof_stats.disabled_reason` means, in words. Static storage; NULL for 0 or an
/// unknown value.
#[no_mangle]
pub extern "C" fn forkprof_disabled_reason_text(reason: u32) -> *const c_char {
    match forkprof::Disabled::from_code(reason) {
        Some(d) => d.as_c_str().as_ptr(),
        None => std::ptr::null(),
    }
}

impl From<forkprof::Stats> for forkprof_stats {
    fn from(s: forkprof::Stats) -> Self {
        forkprof_stats {
            size: size_of::<forkprof_stats>() as u32,
            pid: s.pid,
            samples_recorded: s.samples_recorded,
            samples_dropped: s.samples_dropped,
            samples_too_large: s.samples_too_large,
            samples_ignored: s.samples_ignored,
            frames_truncated: s.frames_truncated,
            profiles_written: s.profiles_written,
            profiles_failed: s.profiles_failed,
            profiles_dropped: s.profiles_dropped,
            profiles_too_large: s.profiles_too_large,
            bytes_written: s.bytes_written,
            uploads_retried: s.uploads_retried,
            disabled_reason: s.disabled.map_or(0, |d| d.code()),
            endpoints_dropped: s.endpoints_dropped,
        }
    }
}

/// Frames converted on the stack up to this depth; deeper stacks cost one allocation.
const STACK_FRAMES: usize = 128;
/// Labels converted on the stack up to this count.
const STACK_LABELS: usize = 16;

// The header promises any thread may use a handle at once.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<ProfilerHandle>()
};

impl forkprof_profiler {
    /// A handle around a profiler started from Rust (the ABI benchmark uses it); free it with
    /// `forkprof_free`.
    pub fn wrap(inner: Profiler) -> *mut forkprof_profiler {
        Box::into_raw(Box::new(ProfilerHandle { inner })).cast()
    }
}

/// # Safety
/// `p` is NULL or a live handle from `forkprof_start`.
pub(crate) unsafe fn profiler<'a>(p: *const forkprof_profiler) -> Result<&'a Profiler, FfiError> {
    // SAFETY: per the contract, a non-null `p` came from a `Box<ProfilerHandle>`.
    unsafe { p.cast::<ProfilerHandle>().as_ref() }
        .map(|p| &p.inner)
        .ok_or_else(|| FfiError::null("profiler"))
}

/// Starts profiling with `cfg` (validated here; the message names a bad field) and stores the
/// handle in `*out` (NULL on failure). `cfg` stays owned by the caller.
///
/// # Safety
/// `cfg` is a live config handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn forkprof_start(
    cfg: *const forkprof_config,
    out: *mut *mut forkprof_profiler,
) -> forkprof_status {
    guard(|| {
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        // SAFETY: `out` is non-null and writable per the contract.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: per the contract.
        let cfg = unsafe { config_ref(cfg) }?;
        let inner = Profiler::start(cfg.build()?)?;
        // SAFETY: as above.
        unsafe { out.write(forkprof_profiler::wrap(inner)) };
        Ok(())
    })
}

/// Why a label could not be borrowed as is.
enum LabelError {
    Ffi(FfiError),
    /// The key or unit is not UTF-8: take the (allocating) lossy path.
    NotUtf8,
}

impl From<FfiError> for LabelError {
    fn from(e: FfiError) -> Self {
        LabelError::Ffi(e)
    }
}

/// Borrows a label's key and unit as text, failing with `NotUtf8` rather than copying.
///
/// # Safety
/// The label's pointers are valid for their lengths for `'a`.
unsafe fn borrow_label<'a>(l: &forkprof_label) -> Result<Label<'a>, LabelError> {
    // SAFETY: per the contract.
    let key = unsafe { bytes(l.key, l.key_len, "label key") }?;
    let key = std::str::from_utf8(key).map_err(|_| LabelError::NotUtf8)?;
    // SAFETY: per the contract.
    let value = match unsafe { label_value(l) }? {
        RawValue::Str(s) => LabelValue::Str(s),
        RawValue::Num(n) => LabelValue::Num(n),
        RawValue::NumUnit(n, unit) => LabelValue::NumUnit(
            n,
            std::str::from_utf8(unit).map_err(|_| LabelError::NotUtf8)?,
        ),
    };
    Ok(Label { key, value })
}

/// A label value with its unit copied to valid UTF-8 (the lossy path).
enum OwnedValue<'a> {
    Str(&'a [u8]),
    Num(i64),
    NumUnit(i64, String),
}

enum RawValue<'a> {
    Str(&'a [u8]),
    Num(i64),
    NumUnit(i64, &'a [u8]),
}

/// # Safety
/// The label's pointers are valid for their lengths for `'a`.
unsafe fn label_value<'a>(l: &forkprof_label) -> Result<RawValue<'a>, FfiError> {
    match l.kind {
        // SAFETY: per the contract.
        FORKPROF_LABEL_STR => Ok(RawValue::Str(unsafe {
            bytes(l.str, l.str_len, "label str")
        }?)),
        FORKPROF_LABEL_NUM if l.unit_len == 0 => Ok(RawValue::Num(l.num)),
        // SAFETY: per the contract.
        FORKPROF_LABEL_NUM => Ok(RawValue::NumUnit(l.num, unsafe {
            bytes(l.unit, l.unit_len, "label unit")
        }?)),
        other => Err(FfiError::invalid(format!(
            "label kind {other} is not FORKPROF_LABEL_STR or FORKPROF_LABEL_NUM"
        ))),
    }
}

/// Converts the labels and hands the sample-to-be its label slice.
///
/// # Safety
/// Every label's pointers are valid for their lengths during the call.
unsafe fn with_labels(
    labels: &[forkprof_label],
    k: impl FnOnce(&[Label<'_>]) -> Result<(), FfiError>,
) -> Result<(), FfiError> {
    let mut k = Some(k);
    // SAFETY: per the contract.
    let fast = with_mapped::<_, _, _, _, STACK_LABELS>(
        labels,
        |l| unsafe { borrow_label(l) },
        |ls| (k.take().expect("called once"))(ls),
    );
    match fast {
        Ok(r) => r,
        Err(LabelError::Ffi(e)) => Err(e),
        Err(LabelError::NotUtf8) => {
            // Rare: a key or unit with invalid UTF-8. Copy every one lossily.
            let mut owned: Vec<(String, OwnedValue<'_>)> = Vec::new();
            for l in labels {
                // SAFETY: per the contract.
                let key = unsafe { bytes(l.key, l.key_len, "label key") }?;
                // SAFETY: per the contract.
                let value = match unsafe { label_value(l) }? {
                    RawValue::Str(s) => OwnedValue::Str(s),
                    RawValue::Num(n) => OwnedValue::Num(n),
                    RawValue::NumUnit(n, u) => {
                        OwnedValue::NumUnit(n, String::from_utf8_lossy(u).into_owned())
                    }
                };
                owned.push((String::from_utf8_lossy(key).into_owned(), value));
            }
            let converted: Vec<Label<'_>> = owned
                .iter()
                .map(|(key, value)| Label {
                    key,
                    value: match value {
                        OwnedValue::Str(s) => LabelValue::Str(s),
                        OwnedValue::Num(n) => LabelValue::Num(*n),
                        OwnedValue::NumUnit(n, u) => LabelValue::NumUnit(*n, u),
                    },
                })
                .collect();
            (k.take().expect("called once"))(&converted)
        }
    }
}

fn timestamp(ts: i64) -> Option<i64> {
    (ts > 0).then_some(ts)
}

/// Records one sample: `n_frames` frames (leaf first), exactly one value per configured sample
/// type, optional labels, and `timestamp_ns` (Unix epoch nanoseconds; 0 for none: samples
/// without a timestamp and with the same stack and labels are summed). Never blocks and never
/// allocates for stacks up to 128 frames and 16 labels; when the buffer is full the sample is
/// dropped and counted. After stop, or in a child under FORKPROF_CHILD_DISABLE, it is a
/// counted no-op returning FORKPROF_OK. The profiler copies what it needs before returning.
///
/// Async-signal-safe (it may be called from a SIGPROF handler on any thread, in a parent or in
/// a freshly forked child, during and after forkprof_stop) when the stack has at most 128
/// frames and 16 labels and the call is valid: it then takes no lock the interrupted code
/// could hold, allocates nothing and calls no logger. A call that fails builds its error
/// message (allocates): check arguments outside the handler first. `forkprof_record_ids` is
/// the same; no other call of this library is async-signal-safe.
///
/// # Safety
/// `p` is a live profiler handle; each array points to that many elements (NULL allowed
/// when the count is 0), of `size` bytes each for frames and labels, and every string in them
/// to its length in readable bytes.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // a flat C signature is easiest to call from any FFI
pub unsafe extern "C" fn forkprof_record(
    p: *const forkprof_profiler,
    frames: *const forkprof_frame,
    n_frames: usize,
    values: *const i64,
    n_values: usize,
    labels: *const forkprof_label,
    n_labels: usize,
    timestamp_ns: i64,
) -> forkprof_status {
    guard(|| {
        // SAFETY: the caller's contract covers every pointer below for the whole call.
        unsafe {
            let prof = profiler(p)?;
            let frames = TaggedArray::new(frames, n_frames, "frames")?;
            let values = array(values, n_values, "values")?;
            let labels = TaggedArray::new(labels, n_labels, "labels")?;
            labels.with_slice::<STACK_LABELS, _>(|labels| {
                with_labels(labels, |labels| {
                    frames.with_slice::<STACK_FRAMES, _>(|frames| {
                        with_mapped::<_, _, FfiError, _, STACK_FRAMES>(
                            frames,
                            |f| {
                                Ok(Frame::from_bytes(
                                    bytes(f.function, f.function_len, "frame function")?,
                                    bytes(f.file, f.file_len, "frame file")?,
                                    f.line,
                                ))
                            },
                            |frames| {
                                let mut sample = Sample::new(frames, values).labels(labels);
                                sample.timestamp_ns = timestamp(timestamp_ns);
                                prof.record(&sample)
                            },
                        )?
                        .map_err(FfiError::from)
                    })
                })
            })
        }
    })
}

/// `forkprof_record` with frames given as interned ids (from `forkprof_intern`).
/// An id never handed out shows as "[unknown string id N]" in the profile.
///
/// # Safety
/// As `forkprof_record`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn forkprof_record_ids(
    p: *const forkprof_profiler,
    frames: *const forkprof_frame_ids,
    n_frames: usize,
    values: *const i64,
    n_values: usize,
    labels: *const forkprof_label,
    n_labels: usize,
    timestamp_ns: i64,
) -> forkprof_status {
    guard(|| {
        // SAFETY: the caller's contract covers every pointer below for the whole call.
        unsafe {
            let prof = profiler(p)?;
            let frames = TaggedArray::new(frames, n_frames, "frames")?;
            let values = array(values, n_values, "values")?;
            let labels = TaggedArray::new(labels, n_labels, "labels")?;
            labels.with_slice::<STACK_LABELS, _>(|labels| {
                with_labels(labels, |labels| {
                    frames.with_slice::<STACK_FRAMES, _>(|frames| {
                        with_mapped::<_, _, FfiError, _, STACK_FRAMES>(
                            frames,
                            |f| {
                                Ok(FrameIds {
                                    function: StrId::from_u32(f.function),
                                    file: StrId::from_u32(f.file),
                                    line: f.line,
                                })
                            },
                            |frames| {
                                let mut sample = Sample::with_ids(frames, values).labels(labels);
                                sample.timestamp_ns = timestamp(timestamp_ns);
                                prof.record(&sample)
                            },
                        )?
                        .map_err(FfiError::from)
                    })
                })
            })
        }
    })
}

/// Interns a function or file name once (invalid UTF-8 replaced) and stores its id in
/// `*out_id`. Ids are valid for the life of the process, in every profiler and in forked
/// children. Interned strings are kept until the process exits.
///
/// # Safety
/// `name` points to `name_len` readable bytes; `out_id` is writable.
#[no_mangle]
pub unsafe extern "C" fn forkprof_intern(
    name: *const c_char,
    name_len: usize,
    out_id: *mut u32,
) -> forkprof_status {
    guard(|| {
        if out_id.is_null() {
            return Err(FfiError::null("out_id"));
        }
        // SAFETY: per the contract.
        let name = unsafe { bytes(name, name_len, "name") }?;
        let id = forkprof::intern(&String::from_utf8_lossy(name))?;
        // SAFETY: non-null and writable per the contract.
        unsafe { out_id.write(id.as_u32()) };
        Ok(())
    })
}

/// Closes the current profile now and queues it for export; returns at once.
///
/// # Safety
/// `p` is a live profiler handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_flush(p: *const forkprof_profiler) -> forkprof_status {
    // SAFETY: per the contract.
    guard(|| Ok(unsafe { profiler(p) }?.flush()?))
}

/// Like `forkprof_flush`, then waits up to `timeout_ms` until the exporter has handled the
/// profile (and all queued before it). FORKPROF_ERR_TIMEOUT if it has not.
///
/// # Safety
/// `p` is a live profiler handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_flush_sync(
    p: *const forkprof_profiler,
    timeout_ms: u64,
) -> forkprof_status {
    guard(|| {
        // SAFETY: per the contract.
        let prof = unsafe { profiler(p) }?;
        Ok(prof.flush_sync(Duration::from_millis(timeout_ms))?)
    })
}

/// Writes the last profile and joins the profiler's threads if they finish within
/// `timeout_ms` (FORKPROF_ERR_TIMEOUT otherwise; a stuck export is left to finish alone).
/// Later records are counted no-ops. Fills `*out_stats` when it is not NULL (its `size` set
/// first; a bad size is refused before stopping). The handle must still be freed with
/// `forkprof_free`.
///
/// # Safety
/// `p` is a live profiler handle; `out_stats` is NULL or a writable struct of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_stop(
    p: *const forkprof_profiler,
    timeout_ms: u64,
    out_stats: *mut forkprof_stats,
) -> forkprof_status {
    guard(|| {
        // SAFETY: per the contract.
        let prof = unsafe { profiler(p) }?;
        // Checked before stopping, so a refused size leaves the profiler running.
        let slot = if out_stats.is_null() {
            None
        } else {
            // SAFETY: per the contract.
            Some(unsafe { OutSlot::new(out_stats, "out_stats") }?)
        };
        let stats = prof.stop(Duration::from_millis(timeout_ms))?;
        if let Some(slot) = slot {
            slot.write(&stats.into());
        }
        Ok(())
    })
}

/// Opt-in flush at exit: when the process ends through `exit()` (or `main` returning) without
/// having called `forkprof_stop`, the profiler is stopped then, writing its last profile and
/// waiting at most `timeout_ms`. Cannot cover `_exit()`, a death by signal or `exec`: hosts
/// that end that way must call `forkprof_stop` first. Does nothing in a forked child whose
/// profiler has not restarted there, and delivers no message at exit (the host's logger may be
/// gone). `forkprof_free` cancels it.
///
/// # Safety
/// `p` is a live profiler handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_stop_at_exit(
    p: *const forkprof_profiler,
    timeout_ms: u64,
) -> forkprof_status {
    guard(|| {
        // SAFETY: per the contract.
        let prof = unsafe { profiler(p) }?;
        Ok(prof.stop_at_exit(Duration::from_millis(timeout_ms))?)
    })
}

/// Fills `*out` with this process's counters; set `out->size` first.
///
/// # Safety
/// `p` is a live profiler handle; `out` is a writable struct of `out->size` bytes.
#[no_mangle]
pub unsafe extern "C" fn forkprof_stats_get(
    p: *const forkprof_profiler,
    out: *mut forkprof_stats,
) -> forkprof_status {
    guard(|| {
        // SAFETY: per the contract.
        let slot = unsafe { OutSlot::new(out, "out") }?;
        // SAFETY: per the contract.
        slot.write(&unsafe { profiler(p) }?.stats().into());
        Ok(())
    })
}

/// 1 while the profiler records in this process, 0 otherwise (stopped, disabled in this
/// child, or NULL).
///
/// # Safety
/// `p` is NULL or a live profiler handle.
#[no_mangle]
pub unsafe extern "C" fn forkprof_is_running(p: *const forkprof_profiler) -> i32 {
    crate::status::guard_with(0, || {
        // SAFETY: per the contract.
        Ok(i32::from(unsafe { profiler(p) }?.is_running()))
    })
    .0
}

/// Frees a profiler handle. NULL is a no-op. If it is still running it stops without waiting
/// (call `forkprof_stop` first to get the last profile written). In a forked child the
/// parent's state is left alone, as the fork protocol requires.
///
/// # Safety
/// `p` is NULL or a handle from `forkprof_start` not yet freed, and no other thread uses it.
#[no_mangle]
pub unsafe extern "C" fn forkprof_free(p: *mut forkprof_profiler) {
    if !p.is_null() {
        let _ = guard(|| {
            // SAFETY: per the contract, `p` came from `Box::into_raw` of a `ProfilerHandle`
            // and is freed once.
            let handle = unsafe { Box::from_raw(p.cast::<ProfilerHandle>()) };
            forkprof::exit::cancel_stop_at_exit(&handle.inner);
            drop(handle);
            Ok(())
        });
    }
}
