//! forkprof as a PHP extension (`extension=libforkprof_php.so`): wall-time and CPU-time
//! profiles of PHP code, correct across `pcntl_fork()` and php-fpm's workers.
//!
//! How a sample is taken: a tick thread ([`timer`]) raises the engine's VM interrupt flag
//! every `forkprof.period_ms`; the engine calls [`hooks`]' interrupt hook at its next check,
//! or the internal-call hook sees the flag when a blocking internal function returns; the
//! hook walks the PHP stack ([`stack`]) and records it ([`sampler`]). forkprof's core does the
//! rest: aggregation, export, and the fork protocol.
//!
//! Life cycle: MINIT reads the settings and installs the hooks; the first RINIT of a process
//! starts the profiler and the tick thread (so php-fpm's master, which serves no request,
//! profiles nothing, and each worker profiles itself). Every fork of a profiling process is
//! followed, whatever forked (`pcntl_fork`, Swoole's manager, FFI's `fork()`, another
//! extension): forkprof's atfork child handler restarts the profiler in the child and then
//! calls [`child_restarted`], which starts the child's own tick thread. MSHUTDOWN stops and
//! writes the last profile; a process that leaves by `exit()` without MSHUTDOWN (a Swoole
//! worker) writes it from forkprof's exit handler, within `forkprof.shutdown_timeout_ms`.

use std::ffi::CString;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use ext_php_rs::ffi::{
    ext_php_rs_executor_globals, php_error_docref, php_info_print_table_end,
    php_info_print_table_row, php_info_print_table_start, E_WARNING,
};
use ext_php_rs::prelude::*;
use ext_php_rs::zend::ModuleEntry;
use forkprof::export::{Datadog, Otlp};
use forkprof::{Compression, Config, ExporterConfig, Profiler, SampleType};

mod alloc;
mod endpoint;
mod exceptions;
mod hooks;
mod ini;
mod sampler;
mod settings;
mod sigmask;
mod stack;
mod timeline;
mod timer;
mod trace;

use settings::{Destination, Settings};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The extension's state in this process.
const OFF: u8 = 0; // forkprof.enabled=0
const BAD_SETTING: u8 = 1; // a setting could not be used: see REASON
const WAITING: u8 = 2; // starts at this process's first request
const RUNNING: u8 = 3;
const FAILED: u8 = 4; // the profiler or the tick thread could not start: see REASON
const STOPPED: u8 = 5;

static STATE: AtomicU8 = AtomicU8::new(OFF);
/// The `pthread_create` error of a tick thread that could not start in a forked child, where
/// no message can be composed (no allocation, no lock); [`reason`] tells it later. 0: none.
static CHILD_TICK_ERRNO: AtomicI32 = AtomicI32::new(0);
static REASON: Mutex<String> = Mutex::new(String::new());
static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn state_name(s: u8) -> &'static str {
    match s {
        OFF => "off (forkprof.enabled)",
        BAD_SETTING => "off (bad setting)",
        WAITING => "waiting for the first request",
        RUNNING => "running",
        FAILED => "off (failed to start)",
        STOPPED => "stopped",
        _ => "unknown",
    }
}

/// Why the extension is off, if it is.
fn reason() -> String {
    let errno = CHILD_TICK_ERRNO.load(Ordering::Relaxed);
    if errno != 0 {
        return format!(
            "the sampling thread could not start after a fork (pthread_create: errno {errno})"
        );
    }
    REASON.lock().map(|r| r.clone()).unwrap_or_default()
}

fn set_reason(reason: String) {
    if let Ok(mut r) = REASON.lock() {
        *r = reason;
    }
}

/// A PHP warning (`E_WARNING`), shown the way the engine shows any other.
fn warn(msg: &str) {
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: a format string with one `%s` and one NUL-terminated argument.
    unsafe {
        php_error_docref(
            std::ptr::null(),
            E_WARNING as i32,
            c"%s".as_ptr(),
            msg.as_ptr(),
        )
    };
}

/// Where each sample type sits in a sample's values: the order `config_of` declares them.
fn types_of(s: &Settings) -> sampler::Types {
    let mut t = sampler::Types {
        count: 3,
        alloc: None,
        exception: None,
        timeline: false,
    };
    if s.allocation_distance.is_some() {
        t.alloc = Some(t.count);
        t.count += 2;
    }
    if s.exception_distance.is_some() {
        t.exception = Some(t.count);
        t.count += 1;
    }
    if s.timeline {
        // Last: timeline events write their duration there.
        t.timeline = true;
        t.count += 1;
    }
    t
}

fn config_of(s: &Settings) -> forkprof::Result<Config> {
    let mut b = Config::builder(s.service.clone())
        .sample_type("sample", "count")
        .sample_type("wall-time", "nanoseconds")
        .sample_type("cpu-time", "nanoseconds")
        // What `go tool pprof` and `forkprof top` show when the user names no type: time,
        // not the sample count that comes first (as Datadog's PHP profiler orders them).
        .default_sample_type("wall-time")
        .sampling_period(
            SampleType::new("wall-time", "nanoseconds"),
            s.period.as_nanos() as i64,
        );
    if s.allocation_distance.is_some() {
        b = b
            .sample_type("alloc-samples", "count")
            .sample_type("alloc-size", "bytes");
    }
    if s.exception_distance.is_some() {
        b = b.sample_type("exception-samples", "count");
    }
    if s.timeline {
        b = b.sample_type("timeline", "nanoseconds");
    }
    b = b
        .period(s.export_period)
        .max_stack_depth(s.max_depth)
        .tag("language:php");
    for (k, v) in &s.tags {
        b = b.tag(format!("{k}:{v}"));
    }
    match &s.destination {
        Destination::Files(dir) => {
            if let Some(env) = &s.env {
                b = b.tag(format!("env:{env}"));
            }
            if let Some(version) = &s.version {
                b = b.tag(format!("version:{version}"));
            }
            b = b.output_dir(dir, Compression::Gzip);
        }
        Destination::Agent(url) => {
            let mut d = Datadog::agent(url)
                .service(s.service.clone())
                .family("php")
                .library("forkprof-php", env!("CARGO_PKG_VERSION"));
            if let Some(env) = &s.env {
                d = d.env(env.clone());
            }
            if let Some(version) = &s.version {
                d = d.version(version.clone());
            }
            b = b.exporter(ExporterConfig::from(d));
        }
        Destination::Otlp { url, whole } => {
            // The OTLP resource carries every Config tag as an attribute; env and version go
            // there as they go into files.
            if let Some(env) = &s.env {
                b = b.tag(format!("env:{env}"));
            }
            if let Some(version) = &s.version {
                b = b.tag(format!("version:{version}"));
            }
            let o = if *whole {
                Otlp::profiles_url(url)
            } else {
                Otlp::new(url)
            };
            b = b.exporter(ExporterConfig::from(o));
        }
    }
    b.build()
}

/// The settings in effect now: the directives' values (the environment already written into
/// them at MINIT; php-fpm's pool values applied in a worker before its first request).
fn read_settings() -> Result<Settings, settings::BadSetting> {
    Settings::read(&ini::current)
}

fn bad_setting(e: &dyn std::fmt::Display) {
    STATE.store(BAD_SETTING, Ordering::Release);
    set_reason(e.to_string());
    warn(&format!("forkprof: {e}; profiling is off"));
}

fn minit(module_number: i32) {
    ini::register(module_number);
    // MINIT runs before any other thread exists: the environment is safe to read here, and
    // only here.
    ini::apply_env(&|n| std::env::var(n).ok());
    // Checked now so a bad php.ini says so at start-up; read again at each process's first
    // request, where php-fpm's pool values are in effect.
    let settings = match read_settings() {
        Ok(s) => s,
        Err(e) => return bad_setting(&e),
    };
    if !settings.enabled {
        STATE.store(OFF, Ordering::Release);
        return;
    }
    if ext_php_rs::ffi::USING_ZTS != 0 {
        // One tick thread raises one thread's VM interrupt flag, and the walk reads that
        // thread's executor globals: a thread-safe build (ZTS: FrankenPHP, Apache's worker
        // MPM) needs a flag per PHP thread, which is not built yet.
        return bad_setting(&"thread-safe (ZTS) PHP builds are not supported yet");
    }
    // Configuration errors (an unusable output_dir, a malformed URL) are found now, at MINIT,
    // rather than in each worker.
    if let Err(e) = config_of(&settings) {
        return bad_setting(&e);
    }
    // SAFETY: MINIT, on the engine's thread; the executor globals live as long as the process
    // and `vm_interrupt` is a one-byte atomic bool the engine polls.
    unsafe {
        let eg = ext_php_rs_executor_globals();
        if !eg.is_null() {
            timer::VM_INTERRUPT.store(
                std::ptr::addr_of_mut!((*eg).vm_interrupt).cast(),
                Ordering::Release,
            );
        }
        hooks::install();
        hooks::wrap_pcntl_fork();
        if settings.timeline {
            timeline::install();
        }
    }
    if let Err(e) = forkprof::fork::on_child_restart(child_restarted) {
        // Only forks through pcntl_fork would be followed: say so rather than profile some
        // children and not others.
        return bad_setting(&e);
    }
    STATE.store(WAITING, Ordering::Release);
}

/// The first request of a process that profiles: its settings as they are now (a php-fpm
/// pool's own), or why it does not profile.
fn first_request_settings() -> Option<&'static Settings> {
    if let Some(s) = SETTINGS.get() {
        return Some(s);
    }
    let settings = match read_settings().and_then(|s| {
        // A pool's values are checked as MINIT checked the master's.
        config_of(&s)
            .map(|_| s)
            .map_err(|e| settings::BadSetting(e.to_string()))
    }) {
        Ok(s) => s,
        Err(e) => {
            bad_setting(&e);
            return None;
        }
    };
    if !settings.enabled {
        STATE.store(OFF, Ordering::Release);
        return None;
    }
    sampler::MAX_DEPTH.store(settings.max_depth as u64, Ordering::Relaxed);
    endpoint::ENABLED.store(settings.endpoint_label, Ordering::Relaxed);
    sampler::set_types(types_of(&settings));
    if let Some(d) = settings.allocation_distance {
        alloc::configure(d);
    }
    if let Some(d) = settings.exception_distance {
        // SAFETY: the first request's RINIT, on the engine's thread.
        unsafe { exceptions::install(d) };
    }
    let _ = SETTINGS.set(settings);
    SETTINGS.get()
}

/// Starts the profiler of this process (first request) and its tick thread (first request,
/// or first request after a fork the extension did not see).
fn rinit() {
    match STATE.load(Ordering::Acquire) {
        WAITING => {
            let Some(settings) = first_request_settings() else {
                return;
            };
            // SAFETY: RINIT, on the engine's thread.
            unsafe { hooks::wrap_pcntl_fork() };
            trace::find_ddtrace();
            let started = config_of(settings).and_then(Profiler::start);
            match started {
                Ok(p) => {
                    // A process that leaves by `exit()` without MSHUTDOWN (a Swoole worker at
                    // its max_request or at SIGTERM, any child that calls exit() from C) still
                    // writes its last profile, within the shutdown timeout. MSHUTDOWN cancels
                    // this and stops the profiler itself. Without it such a process loses what
                    // it sampled since its last export: not worth failing the start over.
                    let _ = p.stop_at_exit(settings.shutdown_timeout);
                    let _ = sampler::PROFILER.set(p);
                }
                Err(e) => {
                    STATE.store(FAILED, Ordering::Release);
                    set_reason(e.to_string());
                    warn(&format!("forkprof: could not start: {e}; profiling is off"));
                    return;
                }
            }
            STATE.store(RUNNING, Ordering::Release);
            sampler::reset_interval();
        }
        RUNNING => {}
        _ => return,
    }
    if !start_ticks() {
        return;
    }
    sampler::request_started();
    endpoint::request_started();
    // SAFETY: RINIT, on the engine's thread.
    unsafe { alloc::install() };
    // A tick that came after the previous request's last interrupt check is still due: the
    // engine cleared its interrupt flag for this request, so it is raised again.
    timer::rearm_if_due();
    timer::request_started();
}

/// Ensures this process has a tick thread; turns profiling off with a warning when the
/// thread cannot start.
fn start_ticks() -> bool {
    let Some(settings) = SETTINGS.get() else {
        return false;
    };
    if timer::running_here() {
        return true;
    }
    match timer::ensure_started(settings.period.as_nanos() as u64) {
        Ok(()) => true,
        Err(errno) => {
            STATE.store(FAILED, Ordering::Release);
            let msg =
                format!("the sampling thread could not start (pthread_create: errno {errno})");
            warn(&format!("forkprof: {msg}; profiling is off"));
            set_reason(msg);
            false
        }
    }
}

fn rshutdown() {
    // Before the engine shuts the request heap down, which it would skip for a custom one.
    // SAFETY: RSHUTDOWN, on the engine's thread.
    unsafe { alloc::uninstall() };
    timer::request_ended();
    trace::request_ended();
    if STATE.load(Ordering::Acquire) == RUNNING {
        sampler::request_ended();
    }
}

fn mshutdown() {
    timer::request_ended();
    timer::stop();
    if STATE.load(Ordering::Acquire) == RUNNING {
        if let (Some(p), Some(s)) = (sampler::PROFILER.get(), SETTINGS.get()) {
            forkprof::exit::cancel_stop_at_exit(p);
            // The process exits next: wait for the last profile to be encoded and written (a
            // file) or sent (the agent), never for the agent's answer, so a hung agent delays
            // no exit. Bounded for what is left (a connect that hangs, a slow disk).
            let _ = p.stop_for_exit(s.shutdown_timeout);
        }
        STATE.store(STOPPED, Ordering::Release);
    }
    // SAFETY: MSHUTDOWN, on the engine's thread.
    unsafe {
        hooks::uninstall();
        exceptions::uninstall();
        timeline::uninstall();
    }
}

/// Right before `pcntl_fork`. Returns whether forkprof's `before_fork` was paired.
fn before_fork() -> bool {
    hooks::FORKS.fetch_add(1, Ordering::Relaxed);
    STATE.load(Ordering::Acquire) == RUNNING && forkprof::fork::before_fork().is_ok()
}

fn after_fork_parent(paired: bool) {
    if paired {
        let _ = forkprof::fork::after_fork_parent();
    }
}

/// In the child of `pcntl_fork`. Where forkprof follows forks with atfork handlers (glibc,
/// musl) the child has restarted already, from inside the fork; under explicit interception
/// (macOS) forkprof's `after_fork_child` restarts it and calls [`child_restarted`].
fn after_fork_child(paired: bool) {
    hooks::FORKS.store(0, Ordering::Relaxed);
    if paired {
        let _ = forkprof::fork::after_fork_child();
    }
}

/// Run by forkprof in every child it follows, whatever forked, right after it restarted its
/// profiler there: on glibc and musl from its atfork child handler, with the child's only
/// thread and signals blocked. The parent's tick thread does not exist in the child: this
/// starts the child's own, and zeroes what the child inherited of its parent's sampling.
///
/// What it may call: atomics, `clock_gettime`, and `pthread_create` (whose only lock, libc's
/// thread list, libc resets in the child). Never a PHP API, the environment, a Mutex, a
/// message or a warning: another parent thread may have held their locks at the fork. A tick
/// thread that cannot start is recorded as a number, turned into a message later ([`reason`]).
fn child_restarted() {
    // `fn()` hooks are called from an `extern "C"` handler: nothing may unwind out of here.
    let _ = hooks::guard(|| {
        if timer::running_here() {
            return; // a second call for the same fork (the pcntl_fork wrapper under interception)
        }
        hooks::FORKS.store(0, Ordering::Relaxed);
        sampler::reset_counters();
        alloc::reseed();
        exceptions::reseed();
        timeline::reset_counters();
        // A tick that was due in the parent is the parent's: its time is in the parent's
        // next sample, not in the child's first.
        timer::SAMPLE_DUE.store(false, Ordering::Release);
        if STATE.load(Ordering::Acquire) != RUNNING {
            return; // not started in the parent (php-fpm's master): starts at RINIT
        }
        let Some(settings) = SETTINGS.get() else {
            return;
        };
        match timer::ensure_started(settings.period.as_nanos() as u64) {
            Ok(()) => sampler::reset_interval(),
            Err(errno) => {
                CHILD_TICK_ERRNO.store(errno, Ordering::Relaxed);
                STATE.store(FAILED, Ordering::Release);
            }
        }
    });
}

fn guarded(f: impl FnOnce()) -> i32 {
    // 0 is SUCCESS: a failure of forkprof never fails PHP's start-up or a request.
    let _ = hooks::guard(f);
    0
}

extern "C" fn on_minit(_ty: i32, module_number: i32) -> i32 {
    guarded(|| minit(module_number))
}
extern "C" fn on_mshutdown(_ty: i32, _module_number: i32) -> i32 {
    guarded(mshutdown)
}
extern "C" fn on_rinit(_ty: i32, _module_number: i32) -> i32 {
    guarded(rinit)
}
extern "C" fn on_rshutdown(_ty: i32, _module_number: i32) -> i32 {
    guarded(rshutdown)
}

/// This process's figures, as `name => value` (also what `php --ri forkprof` shows).
fn counters() -> Vec<(&'static str, i64)> {
    use std::sync::atomic::Ordering::Relaxed;
    let samples = sampler::SAMPLES.load(Relaxed);
    let cost = sampler::SAMPLE_COST_NS.load(Relaxed);
    let mut out = vec![
        ("pid", std::process::id() as i64),
        ("samples", samples as i64),
        (
            "samples_in_internal_functions",
            sampler::SAMPLES_IN_INTERNAL.load(Relaxed) as i64,
        ),
        ("sample_cost_ns_total", cost as i64),
        (
            "sample_cost_ns_mean",
            cost.checked_div(samples).unwrap_or(0) as i64,
        ),
        ("sample_cost_ns_median", sampler::median_cost_ns() as i64),
        ("record_errors", sampler::RECORD_ERRORS.load(Relaxed) as i64),
        ("ticks", timer::TICKS.load(Relaxed) as i64),
        ("request_time_ns", timer::request_clock_ns() as i64),
        ("tick_thread_starts", timer::STARTS.load(Relaxed) as i64),
        ("tick_wakeups", timer::WAKEUPS.load(Relaxed) as i64),
        ("pcntl_forks", hooks::FORKS.load(Relaxed) as i64),
        ("alloc_hooks_installed", i64::from(alloc::installed())),
        ("alloc_samples", alloc::SAMPLED.load(Relaxed) as i64),
        (
            "alloc_samples_without_stack",
            alloc::WITHOUT_STACK.load(Relaxed) as i64,
        ),
        (
            "exception_samples",
            exceptions::SAMPLED.load(Relaxed) as i64,
        ),
        (
            "exception_hook_installed",
            i64::from(exceptions::installed()),
        ),
        ("timeline_hooks_installed", timeline::installed()),
        ("timeline_gc_runs", timeline::GC_RUNS.load(Relaxed) as i64),
        (
            "timeline_compilations",
            timeline::COMPILATIONS.load(Relaxed) as i64,
        ),
        ("hook_panics", hooks::PANICS.load(Relaxed) as i64),
    ];
    if let Some(p) = sampler::PROFILER.get() {
        let s = p.stats();
        out.extend([
            ("samples_recorded", s.samples_recorded as i64),
            ("samples_dropped", s.samples_dropped as i64),
            ("profiles_written", s.profiles_written as i64),
            ("profiles_failed", s.profiles_failed as i64),
            ("profiles_dropped", s.profiles_dropped as i64),
            ("bytes_written", s.bytes_written as i64),
            ("samples_ignored", s.samples_ignored as i64),
            // 0, or why forkprof is off in this process (`forkprof::Disabled::code`).
            ("disabled", s.disabled.map_or(0, |d| i64::from(d.code()))),
        ]);
    }
    out
}

fn info_row(key: &str, value: &str) {
    let k = CString::new(key.replace('\0', " ")).unwrap_or_default();
    let v = CString::new(value.replace('\0', " ")).unwrap_or_default();
    // SAFETY: two NUL-terminated strings for a two-column row.
    unsafe { php_info_print_table_row(2, k.as_ptr(), v.as_ptr()) };
}

extern "C" fn on_minfo(module: *mut ModuleEntry) {
    hooks::guard(|| {
        // SAFETY: the engine calls MINFO between its own table calls.
        unsafe { php_info_print_table_start() };
        info_row("forkprof support", "enabled");
        info_row("version", VERSION);
        info_row("backend", forkprof::platform().name());
        let state = STATE.load(Ordering::Acquire);
        info_row("state", state_name(state));
        let r = reason();
        if !r.is_empty() {
            info_row("reason", &r);
        }
        if let Some(d) = sampler::PROFILER.get().and_then(|p| p.stats().disabled) {
            info_row("profiler", d.as_str());
        }
        info_row(
            "pcntl_fork",
            if hooks::pcntl_fork_wrapped() {
                "wrapped"
            } else {
                "not loaded"
            },
        );
        if let Some(s) = SETTINGS.get() {
            let dest = match &s.destination {
                Destination::Files(d) => format!("files in {d}"),
                Destination::Agent(u) => format!("Datadog agent at {u}"),
                Destination::Otlp { url, whole: false } => format!("OTLP receiver at {url}"),
                Destination::Otlp { url, whole: true } => format!("OTLP profiles URL {url}"),
            };
            info_row("destination", &dest);
            info_row("service", &s.service);
            info_row("period", &format!("{} ms", s.period.as_millis()));
        }
        for (k, v) in counters() {
            info_row(k, &v.to_string());
        }
        // SAFETY: closes the table opened above.
        unsafe { php_info_print_table_end() };
        // Every directive with its value in effect ("Local Value") and its start-up value
        // ("Master Value"); the defaults are in php/forkprof.ini and the README.
        // SAFETY: MINFO, with the module the engine is describing.
        unsafe { ini::display(module) };
    });
}

/// `forkprof_stats(): array`: this process's counters (samples, ticks, forks, profiles
/// written...), for tests and health checks.
#[php_function]
pub fn forkprof_stats() -> std::collections::HashMap<String, i64> {
    hooks::guard(|| {
        let mut m: std::collections::HashMap<String, i64> = counters()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        m.insert(
            "running".into(),
            i64::from(STATE.load(Ordering::Acquire) == RUNNING),
        );
        m
    })
    .unwrap_or_default()
}

#[php_module]
pub fn get_module(module: ModuleBuilder) -> ModuleBuilder {
    let module = module
        .name("forkprof")
        .version(VERSION)
        .startup_function(on_minit)
        .shutdown_function(on_mshutdown)
        .request_startup_function(on_rinit)
        .request_shutdown_function(on_rshutdown)
        .info_function(on_minfo)
        .function(wrap_function!(forkprof_stats));
    trace::register(module)
}
