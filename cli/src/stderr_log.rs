//! The CLI is a host of forkprof like any other: forkprof's messages (an upload answered 429
//! and the wait it asked for, a refused connection, a dropped profile, a child that could not
//! restart) reach it through the `log` facade, and this logger prints them on stderr.
//!
//! # Why a logger of its own, not `env_logger`
//! The CLI forks, from several threads at once (`torture`), and forked children deliver their
//! own messages (a child's `flush`, `stats` or `stop` hands over what it queued). A logger
//! that takes a lock is a lock a child can inherit held: `env_logger` formats into an
//! allocated buffer and writes through std's stderr handle, whose reentrant lock a child forked
//! while another thread was printing keeps held by a thread it does not have, and the child's
//! next message would wait for ever (`torture --chaos` prints from other threads on purpose).
//! This one formats into a buffer on the stack and hands the line to the kernel with
//! `write(2)` on descriptor 2: no lock, no allocation, and each line arrives whole (one write
//! per line, shorter than `PIPE_BUF`), so the master's and the workers' lines never mix. What
//! the CLI needs of the level syntax (one level, for forkprof's target or for everything) is a
//! few lines here, not a dependency.
//!
//! # The level
//! `--log-level LEVEL` wins; else `RUST_LOG` in its usual form (`info`, `forkprof=debug`,
//! `warn,forkprof=info`: the directive for the `forkprof` target, else the bare level); else
//! `info`, which shows every message forkprof sends but its routine retries (debug).

use std::fmt::{self, Write as _};

use log::{LevelFilter, Log, Metadata, Record};

/// What `--log-level` and `RUST_LOG` accept.
pub const LEVELS: &str = "off, error, warn, info, debug, trace";
/// The level when neither `--log-level` nor `RUST_LOG` says.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::Info;
/// Longest line written, ending with `…` when cut; below `PIPE_BUF` (4096 on Linux, 512 by
/// POSIX: a line to a pipe is then never split by another process's line on Linux and macOS).
const LINE_BYTES: usize = 1024;

/// A level name (`warn`, `INFO`, ...).
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.trim()
        .parse::<LevelFilter>()
        .map_err(|_| format!("`{s}` is not a log level: one of {LEVELS}"))
}

/// The level `RUST_LOG` gives forkprof's messages: the last directive naming the `forkprof`
/// target, else the last bare level. `Err` names a directive that is neither, and `Ok(None)` is
/// a value that names no level for forkprof (`RUST_LOG=hyper=debug`).
pub fn level_from_rust_log(v: &str) -> Result<Option<LevelFilter>, String> {
    let mut target = None;
    let mut bare = None;
    // `RUST_LOG`'s optional `/regex` suffix filters message text: not supported, ignored.
    let directives = v.split('/').next().unwrap_or("");
    for d in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        match d.split_once('=') {
            Some((name, level)) => {
                let level = parse_level(level)?;
                if name.trim() == "forkprof" {
                    target = Some(level);
                }
            }
            // A bare name is a level, or a target at every level.
            None => match parse_level(d) {
                Ok(level) => bare = Some(level),
                Err(_) if d == "forkprof" => target = Some(LevelFilter::Trace),
                Err(_) => {}
            },
        }
    }
    Ok(target.or(bare))
}

/// Installs the logger at `flag` (the `--log-level` value), else what `RUST_LOG` says, else
/// [`DEFAULT_LEVEL`]. An unusable `RUST_LOG` is said on stderr and the default used: a
/// variable meant for another program must not stop this one.
pub fn install(flag: Option<LevelFilter>) {
    let level = flag.unwrap_or_else(|| match std::env::var("RUST_LOG") {
        Ok(v) => match level_from_rust_log(&v) {
            Ok(level) => level.unwrap_or(DEFAULT_LEVEL),
            Err(e) => {
                eprintln!("forkprof: RUST_LOG: {e}; logging at {DEFAULT_LEVEL}");
                DEFAULT_LEVEL
            }
        },
        Err(_) => DEFAULT_LEVEL,
    });
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        // forkprof reads this to decide whether a message is worth queueing at all.
        log::set_max_level(level);
    }
}

/// Lowers the level to at most `level` in this process only (a forked child's level is its
/// own: one atomic store, safe right after `fork()`).
pub fn cap(level: LevelFilter) {
    if log::max_level() > level {
        log::set_max_level(level);
    }
}

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        // SAFETY: getpid has no preconditions and takes no lock.
        let pid = unsafe { libc::getpid() };
        Line::format(r.level(), pid, *r.args()).write_to_stderr();
    }

    fn flush(&self) {}
}

/// One line, formatted on the stack.
struct Line {
    buf: [u8; LINE_BYTES],
    len: usize,
    cut: bool,
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        // Room for `…` (3 bytes) and the newline.
        let room = LINE_BYTES - 4 - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            let dots = "…".as_bytes();
            self.buf[self.len..self.len + dots.len()].copy_from_slice(dots);
            self.len += dots.len();
            self.cut = true;
        }
        Ok(())
    }
}

impl Line {
    /// `[LEVEL pid N] text` and a newline.
    fn format(level: log::Level, pid: libc::pid_t, text: fmt::Arguments<'_>) -> Line {
        let mut line = Line {
            buf: [0; LINE_BYTES],
            len: 0,
            cut: false,
        };
        let _ = write!(line, "[{level} pid {pid}] {text}");
        line.finish();
        line
    }

    fn finish(&mut self) {
        self.buf[self.len] = b'\n';
        self.len += 1;
    }

    fn text(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// `write(2)` until the line is out; a closed or full stderr loses the line, nothing else.
    fn write_to_stderr(&self) {
        let mut rest = self.text();
        while !rest.is_empty() {
            // SAFETY: `rest` is a live, readable slice of `rest.len()` bytes.
            let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                rest = &rest[n as usize..];
            } else if n < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            } else {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_gives_forkprofs_directive_else_the_bare_level() {
        let l = |v: &str| level_from_rust_log(v).unwrap();
        assert_eq!(l("debug"), Some(LevelFilter::Debug));
        assert_eq!(l("forkprof=warn"), Some(LevelFilter::Warn));
        assert_eq!(l("error,forkprof=debug"), Some(LevelFilter::Debug));
        assert_eq!(l("forkprof=debug,error"), Some(LevelFilter::Debug));
        assert_eq!(l("forkprof"), Some(LevelFilter::Trace));
        assert_eq!(l("OFF"), Some(LevelFilter::Off));
        assert_eq!(l("info/export"), Some(LevelFilter::Info));
        assert_eq!(l("hyper=debug"), None);
        assert_eq!(l(""), None);
        let e = level_from_rust_log("forkprof=loud").unwrap_err();
        assert!(e.contains("`loud` is not a log level"), "{e}");
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary() {
        let long = "é".repeat(LINE_BYTES);
        let line = Line::format(log::Level::Warn, 7, format_args!("{long}"));
        let text = std::str::from_utf8(line.text()).expect("whole characters");
        assert!(text.starts_with("[WARN pid 7] éé"), "{text}");
        assert!(text.ends_with("…\n"), "{text}");
        assert!(text.len() <= LINE_BYTES);
        let short = Line::format(log::Level::Info, 42, format_args!("forkprof: x"));
        assert_eq!(short.text(), b"[INFO pid 42] forkprof: x\n");
    }
}
