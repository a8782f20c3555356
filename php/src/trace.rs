//! Trace context in PHP: the span the next samples belong to, set from userland
//! (`forkprof_set_trace_context()`) or, when the `ddtrace` extension is loaded and userland set
//! none, read from ddtrace at each sample; and late-bound endpoints (`forkprof_set_endpoint()`).
//!
//! The context lives in plain atomics written and read on the PHP thread (the sampler runs
//! there, in an engine hook), so taking it costs a few loads and no lock. It is cleared at the
//! end of each request. A `pcntl_fork()` child keeps it: it runs the same request's code.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use ext_php_rs::prelude::*;
use ext_php_rs::types::Zval;
use forkprof::{TraceContext, TracedLabels};

static SPAN_ID: AtomicU64 = AtomicU64::new(0);
static LOCAL_ROOT_SPAN_ID: AtomicU64 = AtomicU64::new(0);
static TRACE_ID_HIGH: AtomicU64 = AtomicU64::new(0);
static TRACE_ID_LOW: AtomicU64 = AtomicU64::new(0);

/// What `ddtrace_get_profiling_context()` returns (as ddtrace declares it): the ids of
/// the active span and its local root, zeros when none.
#[repr(C)]
#[derive(Clone, Copy)]
struct DdtraceContext {
    local_root_span_id: u64,
    span_id: u64,
}

type DdtraceGetContext = unsafe extern "C" fn() -> DdtraceContext;

/// ddtrace's context function, looked up once at the first request (never in the sampler).
static DDTRACE: OnceLock<Option<DdtraceGetContext>> = OnceLock::new();

/// Looks ddtrace up, once per process tree: at the first request every extension is loaded.
pub fn find_ddtrace() {
    DDTRACE.get_or_init(|| {
        // SAFETY: a NUL-terminated name; `dlsym` on the global scope, from RINIT on the PHP
        // thread (not a signal handler, not after a fork in this call).
        let sym = unsafe {
            libc::dlsym(
                libc::RTLD_DEFAULT,
                c"ddtrace_get_profiling_context".as_ptr(),
            )
        };
        // SAFETY: ddtrace exports this name with exactly this signature (`DDTRACE_PUBLIC
        // struct ddtrace_profiling_context ddtrace_get_profiling_context(void)`).
        (!sym.is_null())
            .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, DdtraceGetContext>(sym) })
    });
}

fn set(ctx: TraceContext) {
    TRACE_ID_HIGH.store((ctx.trace_id >> 64) as u64, Relaxed);
    TRACE_ID_LOW.store(ctx.trace_id as u64, Relaxed);
    LOCAL_ROOT_SPAN_ID.store(ctx.local_root_span_id, Relaxed);
    SPAN_ID.store(ctx.span_id, Relaxed);
}

/// The request ended: its spans are over.
pub fn request_ended() {
    set(TraceContext::default());
}

/// The span the sample being taken belongs to: userland's if set, else ddtrace's, else none.
fn current() -> TraceContext {
    let span_id = SPAN_ID.load(Relaxed);
    if span_id != 0 {
        return TraceContext {
            trace_id: (TRACE_ID_HIGH.load(Relaxed) as u128) << 64
                | TRACE_ID_LOW.load(Relaxed) as u128,
            span_id,
            local_root_span_id: LOCAL_ROOT_SPAN_ID.load(Relaxed),
        };
    }
    if let Some(Some(get)) = DDTRACE.get() {
        // SAFETY: ddtrace documents the call as safe on a PHP thread whether or not tracing
        // is enabled; the sampler runs on the PHP thread, in an engine hook.
        let c = unsafe { get() };
        return TraceContext {
            trace_id: 0,
            span_id: c.span_id,
            local_root_span_id: c.local_root_span_id,
        };
    }
    TraceContext::default()
}

/// The labels a sample taken now carries: the span's four, or none.
pub fn labels() -> TracedLabels<'static, 4> {
    current().labels()
}

/// An id given as a PHP int (its 64 bits: PHP ints are signed, so ids of 2^63 and above come
/// negative) or as a decimal string (how ddtrace hands out span ids).
fn id_of(v: &Zval) -> Option<u64> {
    if let Some(n) = v.long() {
        return Some(n as u64);
    }
    v.str()?.trim().parse::<u64>().ok()
}

/// A 128-bit trace id: 32 hex digits (W3C `traceparent`), or decimal digits; "" for none.
fn trace_id_of(s: &str) -> Option<u128> {
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    if s.len() == 32 {
        return u128::from_str_radix(s, 16).ok();
    }
    s.parse::<u128>().ok()
}

/// `forkprof_set_trace_context(string $traceId, int|string $spanId, int|string
/// $localRootSpanId): bool`: the samples taken from now on, until the next call or the end of
/// the request, belong to this span. `$traceId` is 32 hex digits or a decimal number ("" for
/// none); span ids are ints or decimal strings; a `$spanId` of 0 clears the context. False,
/// with a warning, for an id that cannot be read.
#[php_function]
pub fn forkprof_set_trace_context(
    trace_id: String,
    span_id: &Zval,
    local_root_span_id: &Zval,
) -> bool {
    crate::hooks::guard(|| {
        let (Some(trace_id), Some(span_id), Some(root)) = (
            trace_id_of(&trace_id),
            id_of(span_id),
            id_of(local_root_span_id),
        ) else {
            crate::warn(
                "forkprof_set_trace_context: ids are a trace id of 32 hex digits or decimal \
                 digits, and span ids as ints or decimal strings",
            );
            return false;
        };
        set(TraceContext {
            trace_id,
            span_id,
            local_root_span_id: root,
        });
        true
    })
    .unwrap_or(false)
}

/// `forkprof_set_endpoint(int|string $localRootSpanId, string $endpoint): bool`: the request
/// whose root span is `$localRootSpanId` served `$endpoint` (a route, a script): its samples get
/// a `trace endpoint` label when the profile is written, those taken before this call
/// included, and the request is counted for Datadog's `endpoint_counts`. Call it when the
/// request's endpoint is known (at its end, say). False, with a warning, when the profiler does
/// not run here or the id is 0 or unreadable.
#[php_function]
pub fn forkprof_set_endpoint(local_root_span_id: &Zval, endpoint: String) -> bool {
    crate::hooks::guard(|| {
        let Some(profiler) = crate::sampler::PROFILER.get() else {
            return false;
        };
        let result = match id_of(local_root_span_id) {
            Some(id) => profiler
                .set_endpoint(id, &endpoint)
                .and_then(|()| profiler.count_endpoint(&endpoint, 1)),
            None => {
                crate::warn(
                    "forkprof_set_endpoint: the root span id is an int or a decimal string",
                );
                return false;
            }
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                crate::warn(&format!("forkprof_set_endpoint: {e}"));
                false
            }
        }
    })
    .unwrap_or(false)
}

/// Adds this module's userland functions to the extension.
pub fn register(module: ModuleBuilder) -> ModuleBuilder {
    module
        .function(wrap_function!(forkprof_set_trace_context))
        .function(wrap_function!(forkprof_set_endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_read_as_hex_or_decimal() {
        assert_eq!(
            trace_id_of("0af7651916cd43dd8448eb211c80319c"),
            Some(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c)
        );
        assert_eq!(trace_id_of("12345"), Some(12345));
        assert_eq!(trace_id_of(""), Some(0));
        assert_eq!(trace_id_of("0af7651916cd43dd8448eb211c80319z"), None);
        assert_eq!(trace_id_of("-1"), None);
    }

    #[test]
    fn the_context_set_is_the_one_sampled_and_a_request_end_clears_it() {
        set(TraceContext {
            trace_id: 1 << 64 | 2,
            span_id: u64::MAX,
            local_root_span_id: 7,
        });
        let l = labels();
        assert_eq!(l.as_slice().len(), 4);
        assert_eq!(current().span_id, u64::MAX);
        assert_eq!(current().trace_id, 1 << 64 | 2);
        request_ended();
        assert!(labels().as_slice().is_empty());
    }
}
