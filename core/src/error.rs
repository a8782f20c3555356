//! The one error type of forkprof. Every message says what to fix.

use std::fmt;

/// Everything that can go wrong in forkprof's API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field is invalid; `field` names it, `reason` says what is expected.
    InvalidConfig { field: &'static str, reason: String },
    /// A sample does not match the profiler's configuration.
    InvalidSample { field: &'static str, reason: String },
    /// The export destination cannot be used (for example a directory that is not writable).
    Export { reason: String },
    /// An operating-system call failed.
    Os { call: &'static str, errno: i32 },
    /// The fork hooks were called out of order (for example `after_fork_parent` without
    /// `before_fork`, or `before_fork` twice on one thread).
    ForkOrder { reason: &'static str },
    /// The profiler has been stopped or disabled in this process.
    NotRunning { reason: &'static str },
    /// An operation did not finish before its deadline; the profiler's threads keep going.
    Timeout { what: &'static str },
    /// The process-wide string table is full.
    InternerFull { capacity: usize },
}

impl From<forkprof_pprof::Error> for Error {
    fn from(e: forkprof_pprof::Error) -> Self {
        Error::Export { reason: e.0 }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { field, reason } => {
                write!(f, "invalid config: `{field}` {reason}")
            }
            Error::InvalidSample { field, reason } => {
                write!(f, "invalid sample: `{field}` {reason}")
            }
            Error::Export { reason } => write!(f, "export: {reason}"),
            Error::Os { call, errno } => write!(
                f,
                "{call} failed: {} (errno {errno})",
                std::io::Error::from_raw_os_error(*errno)
            ),
            Error::ForkOrder { reason } => write!(f, "fork hooks called out of order: {reason}"),
            Error::NotRunning { reason } => write!(f, "profiler is not running: {reason}"),
            Error::Timeout { what } => write!(f, "timed out: {what}"),
            Error::InternerFull { capacity } => write!(
                f,
                "string interner is full ({capacity} strings): intern names once at start-up, not per sample"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
    pub(crate) fn sample(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidSample {
            field,
            reason: reason.into(),
        }
    }
    pub(crate) fn last_os(call: &'static str) -> Self {
        Error::Os {
            call,
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
