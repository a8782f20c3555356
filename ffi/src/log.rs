//! forkprof's messages for C hosts: a callback the host sets once, called with a level, a
//! kind and the text. It is called only on the host's own threads, inside a forkprof call the
//! host made (`forkprof_record`, `forkprof_flush`, `forkprof_flush_sync`, `forkprof_stop`,
//! or `forkprof_drain_log`), never on a forkprof thread, never from an atfork handler, and
//! never while forkprof holds a lock a `forkprof_record` needs. See `core/src/messages.rs`
//! for why (a fork landing while a forkprof thread sat inside the host's logger would leave
//! the child with the logger's lock held for ever).

use std::ffi::{c_char, c_void};
use std::time::Duration;

use forkprof::messages::{self, Delivery, Kind, Level, Message};

use crate::status::{forkprof_status, guard, guard_with, FfiError};

/// Something failed and was given up on (a child's restart).
pub const FORKPROF_LOG_ERROR: u32 = 1;
/// Something was lost (an export failed, a profile was dropped).
pub const FORKPROF_LOG_WARN: u32 = 2;
/// Worth knowing (a child that does not profile, by its policy).
pub const FORKPROF_LOG_INFO: u32 = 3;
/// Detail (an upload attempt that will be retried).
pub const FORKPROF_LOG_DEBUG: u32 = 4;

/// An upload attempt failed and will be retried (DEBUG).
pub const FORKPROF_LOG_KIND_EXPORT_RETRY: u32 = 0;
/// The exporter gave up on a profile: endpoint, HTTP status, the server's answer, attempts.
pub const FORKPROF_LOG_KIND_EXPORT_FAILED: u32 = 1;
/// A profile was dropped because the export queue was full.
pub const FORKPROF_LOG_KIND_PROFILE_DROPPED: u32 = 2;
/// A profile was refused before sending: larger than the destination accepts.
pub const FORKPROF_LOG_KIND_PROFILE_TOO_LARGE: u32 = 3;
/// A forked child does not profile (its policy, or a fork nobody observed).
pub const FORKPROF_LOG_KIND_CHILD_DISABLED: u32 = 4;
/// A forked child could not start its own profiler.
pub const FORKPROF_LOG_KIND_RESTART_FAILED: u32 = 5;

/// Pending messages are delivered on the host's next record, flush, stop or drain (default).
pub const FORKPROF_LOG_DELIVER_ON_CALLS: u32 = 0;
/// `forkprof_record` never calls the callback: only flush, stop and `forkprof_drain_log` do
/// (for hosts that record from a signal handler, or want their logger called from their own
/// loop only, e.g. PHP at request end).
pub const FORKPROF_LOG_DELIVER_ON_DRAIN: u32 = 1;

/// The callback: `user_data` as given, a FORKPROF_LOG_* level, a FORKPROF_LOG_KIND_* kind,
/// and the message (`len` bytes of UTF-8, also NUL-terminated), valid during the call only.
pub type forkprof_log_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: u32,
        kind: u32,
        message: *const c_char,
        len: usize,
    ),
>;

struct UserData(*mut c_void);
// SAFETY: the pointer is only handed back to the host's callback, which the host promises
// (in `forkprof_set_log_callback`'s contract) may be called from any of its threads.
unsafe impl Send for UserData {}
// SAFETY: as above; forkprof never dereferences it.
unsafe impl Sync for UserData {}

impl UserData {
    // A method, so closures capture the whole (Send + Sync) wrapper, not the raw field.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

fn kind_code(k: Kind) -> u32 {
    match k {
        Kind::ExportRetry => FORKPROF_LOG_KIND_EXPORT_RETRY,
        Kind::ExportFailed => FORKPROF_LOG_KIND_EXPORT_FAILED,
        Kind::ProfileDropped => FORKPROF_LOG_KIND_PROFILE_DROPPED,
        Kind::ProfileTooLarge => FORKPROF_LOG_KIND_PROFILE_TOO_LARGE,
        Kind::ChildDisabled => FORKPROF_LOG_KIND_CHILD_DISABLED,
        Kind::RestartFailed => FORKPROF_LOG_KIND_RESTART_FAILED,
    }
}

/// Sends forkprof's messages at `min_level` or more serious (FORKPROF_LOG_ERROR ..
/// FORKPROF_LOG_DEBUG) to `callback`. NULL turns messages off again (the library then logs
/// through Rust's `log` facade, which is silent in a C program). Set it once at start-up,
/// before `forkprof_start`; the callback may be called from any host thread that calls into
/// forkprof, one call at a time per process. It may call forkprof itself (a nested
/// `forkprof_drain_log` delivers nothing).
///
/// # Safety
/// `callback` is NULL or a function safe to call with `user_data` from any thread, until the
/// process exits (a replaced callback may still be running on another thread).
#[no_mangle]
pub unsafe extern "C" fn forkprof_set_log_callback(
    min_level: u32,
    callback: forkprof_log_fn,
    user_data: *mut c_void,
) -> forkprof_status {
    guard(|| {
        let level = match min_level {
            FORKPROF_LOG_ERROR => Level::Error,
            FORKPROF_LOG_WARN => Level::Warn,
            FORKPROF_LOG_INFO => Level::Info,
            FORKPROF_LOG_DEBUG => Level::Debug,
            other => {
                return Err(FfiError::invalid(format!(
                    "log level {other} is not one of FORKPROF_LOG_ERROR/WARN/INFO/DEBUG"
                )))
            }
        };
        let Some(cb) = callback else {
            messages::set_sink(None);
            return Ok(());
        };
        let user = UserData(user_data);
        messages::set_sink(Some((
            Box::new(move |m: &Message<'_>| {
                // The text plus a NUL, on the stack: delivery allocates nothing.
                let mut buf = [0u8; messages::MAX_MESSAGE_BYTES + 1];
                let n = m.text.len().min(messages::MAX_MESSAGE_BYTES);
                buf[..n].copy_from_slice(&m.text.as_bytes()[..n]);
                // SAFETY: per this function's contract; `buf` outlives the call.
                unsafe {
                    cb(
                        user.get(),
                        m.level as u32,
                        kind_code(m.kind),
                        buf.as_ptr().cast(),
                        n,
                    )
                };
            }),
            level,
        )));
        Ok(())
    })
}

/// When pending messages reach the callback: FORKPROF_LOG_DELIVER_ON_CALLS (the default) or
/// FORKPROF_LOG_DELIVER_ON_DRAIN.
#[no_mangle]
pub extern "C" fn forkprof_set_log_delivery(mode: u32) -> forkprof_status {
    guard(|| {
        messages::set_delivery(match mode {
            FORKPROF_LOG_DELIVER_ON_CALLS => Delivery::OnCalls,
            FORKPROF_LOG_DELIVER_ON_DRAIN => Delivery::DrainOnly,
            other => {
                return Err(FfiError::invalid(format!(
                    "log delivery {other} is not FORKPROF_LOG_DELIVER_ON_CALLS or FORKPROF_LOG_DELIVER_ON_DRAIN"
                )))
            }
        });
        Ok(())
    })
}

/// At most one message of each kind per `interval_ms` (60000 by default; 0: no limit). The
/// next message of a kind says how many were suppressed.
#[no_mangle]
pub extern "C" fn forkprof_set_log_rate_limit_ms(interval_ms: u64) -> forkprof_status {
    guard(|| {
        messages::set_rate_limit(Duration::from_millis(interval_ms));
        Ok(())
    })
}

/// Delivers this process's pending messages to the callback now, on the calling thread, and
/// returns how many. Cheap when nothing is pending; call it from the runtime's own loop (a
/// request's end, an idle tick). Returns 0 when called from inside the callback.
#[no_mangle]
pub extern "C" fn forkprof_drain_log() -> usize {
    guard_with(0, || Ok(messages::drain())).0
}
