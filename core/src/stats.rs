//! Counters a host can read at any time (`Profiler::stats`), kept as relaxed atomics so the
//! hot path pays one uncontended add.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub(crate) struct Counters {
    pub samples_recorded: AtomicU64,
    pub samples_dropped: AtomicU64,
    pub samples_too_large: AtomicU64,
    pub samples_dropped_no_memory: AtomicU64,
    pub frames_truncated: AtomicU64,
    pub profiles_written: AtomicU64,
    pub profiles_failed: AtomicU64,
    pub profiles_dropped: AtomicU64,
    pub profiles_too_large: AtomicU64,
    pub bytes_written: AtomicU64,
    pub uploads_retried: AtomicU64,
    pub encode_failures: AtomicU64,
}

/// A snapshot of one process's profiler counters. In a forked child the counters start at
/// zero: they describe what that process recorded and exported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub pid: u32,
    /// Samples accepted into the buffer.
    pub samples_recorded: u64,
    /// Samples dropped because the buffer was full (overload never blocks the host).
    pub samples_dropped: u64,
    /// Samples larger than a buffer shard, dropped.
    pub samples_too_large: u64,
    /// Samples accepted into the buffer that the collector could not add to the profile
    /// because its memory could not grow (the kernel refused a mapping, e.g. under a low
    /// `RLIMIT_AS`): dropped, and the profiler carries on.
    pub samples_dropped_no_memory: u64,
    /// Samples recorded after `stop()` or in a child with the `Disable` policy: counted no-ops.
    pub samples_ignored: u64,
    /// Samples whose stacks were cut to `max_stack_depth`.
    pub frames_truncated: u64,
    /// Profiles the exporter delivered (file written, upload accepted).
    pub profiles_written: u64,
    /// Profiles the exporter gave up on.
    pub profiles_failed: u64,
    /// Profiles dropped because the export queue was full (the oldest goes).
    pub profiles_dropped: u64,
    /// Profiles refused before sending because they exceed the endpoint's size limit.
    pub profiles_too_large: u64,
    /// Compressed bytes delivered.
    pub bytes_written: u64,
    /// Upload attempts repeated after a retryable failure.
    pub uploads_retried: u64,
    /// Endpoint registrations and counts dropped because the period's table was full
    /// (`forkprof_core::endpoints::MAX_ENDPOINTS`).
    pub endpoints_dropped: u64,
    /// Why profiling is off in this process, when it is.
    pub disabled: Option<Disabled>,
}

/// Why a profiler records nothing in this process. Each says what happened and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Disabled {
    /// A forked child under `ChildPolicy::Disable`.
    ChildPolicy = 1,
    /// A child created without forkprof's fork handlers running (`_Fork`, raw `clone`, a fork
    /// on macOS that bypassed the interception): its inherited locks cannot be trusted.
    UnobservedFork = 2,
    /// A forked child could not start its own profiler (memory, exporter or thread creation).
    RestartFailed = 3,
    /// A profiler's threads did not start within the grace period.
    ThreadsDidNotStart = 4,
}

impl Disabled {
    pub fn as_str(self) -> &'static str {
        self.as_c_str()
            .to_str()
            .unwrap_or("profiling is off in this process")
    }

    /// [`Disabled::as_str`], NUL-terminated (the C ABI hands it out as is).
    pub fn as_c_str(self) -> &'static std::ffi::CStr {
        match self {
            Disabled::ChildPolicy => c"this is a forked child and the child policy is Disable",
            Disabled::UnobservedFork => c"this process was forked without forkprof's fork hooks (e.g. _Fork or clone, or a macOS fork that was not intercepted); profiling is off in it",
            Disabled::RestartFailed => c"this forked child could not start its own profiler (sample buffer, exporter or thread creation failed); profiling is off in it",
            Disabled::ThreadsDidNotStart => c"the profiler's threads did not start within 2 s (in a forked child: a lock inherited held); profiling is off in this process",
        }
    }

    /// The C ABI's number for it (`forkprof_stats.disabled_reason`); 0 means not disabled.
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(v: u32) -> Option<Disabled> {
        match v {
            1 => Some(Disabled::ChildPolicy),
            2 => Some(Disabled::UnobservedFork),
            3 => Some(Disabled::RestartFailed),
            4 => Some(Disabled::ThreadsDidNotStart),
            _ => None,
        }
    }
}

impl std::fmt::Display for Disabled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Counters {
    pub fn snapshot(&self, pid: u32, ignored: u64) -> Stats {
        Stats {
            pid,
            samples_recorded: self.samples_recorded.load(Relaxed),
            samples_dropped: self.samples_dropped.load(Relaxed),
            samples_too_large: self.samples_too_large.load(Relaxed),
            samples_dropped_no_memory: self.samples_dropped_no_memory.load(Relaxed),
            samples_ignored: ignored,
            frames_truncated: self.frames_truncated.load(Relaxed),
            profiles_written: self.profiles_written.load(Relaxed),
            profiles_failed: self.profiles_failed.load(Relaxed)
                + self.encode_failures.load(Relaxed),
            profiles_dropped: self.profiles_dropped.load(Relaxed),
            profiles_too_large: self.profiles_too_large.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            uploads_retried: self.uploads_retried.load(Relaxed),
            // Kept by the session's endpoint table; `Profiler::stats` fills it in.
            endpoints_dropped: 0,
            disabled: None,
        }
    }
}
