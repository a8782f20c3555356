//! The C ABI called the way C calls it: status codes, NULL and bad-length handling, the
//! thread-local message, the lossy UTF-8 paths, deep stacks, interned ids, and a fork through
//! `forkprof_fork`. Compiled into the library's unit tests (see `src/lib.rs`), one process
//! per test under nextest.

use std::ffi::{c_char, CStr};
use std::path::Path;
use std::ptr::{null, null_mut};
use std::time::Duration;

use crate::support::{read_profiles, TempDir, Watchdog};
use crate::*;

use forkprof_status::*;

fn last_error() -> String {
    // SAFETY: forkprof_last_error never returns NULL and the string lives until this
    // thread's next forkprof call; it is copied at once.
    unsafe { CStr::from_ptr(forkprof_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn ptr(s: &[u8]) -> *const c_char {
    s.as_ptr().cast()
}

/// A config handle with one sample type (two when `two`), writing gzip files into `dir`.
fn config(dir: &Path, two: bool) -> *mut forkprof_config {
    let mut cfg = null_mut();
    let d = dir.to_str().unwrap().as_bytes();
    // SAFETY: every pointer is a live Rust slice with its exact length; `cfg` is written by
    // config_new before the setters use it.
    unsafe {
        assert_eq!(forkprof_config_new(ptr(b"abi"), 3, &mut cfg), FORKPROF_OK);
        assert_eq!(
            forkprof_config_sample_type(cfg, ptr(b"wall-time"), 9, ptr(b"nanoseconds"), 11),
            FORKPROF_OK
        );
        if two {
            assert_eq!(
                forkprof_config_sample_type(cfg, ptr(b"samples"), 7, ptr(b"count"), 5),
                FORKPROF_OK
            );
        }
        assert_eq!(
            forkprof_config_output_dir(cfg, ptr(d), d.len(), FORKPROF_COMPRESSION_GZIP),
            FORKPROF_OK
        );
    }
    cfg
}

fn start(dir: &Path) -> *mut forkprof_profiler {
    let cfg = config(dir, false);
    let mut p = null_mut();
    // SAFETY: `cfg` is a live handle, freed once after start copied what it needs.
    unsafe {
        assert_eq!(forkprof_start(cfg, &mut p), FORKPROF_OK, "{}", last_error());
        forkprof_config_free(cfg);
    }
    assert!(!p.is_null());
    p
}

fn frame(function: &[u8], file: &[u8], line: u32) -> forkprof_frame {
    forkprof_frame {
        size: size_of::<forkprof_frame>() as u32,
        function: ptr(function),
        function_len: function.len(),
        file: ptr(file),
        file_len: file.len(),
        line,
    }
}

fn str_label(key: &[u8], value: &[u8]) -> forkprof_label {
    forkprof_label {
        size: size_of::<forkprof_label>() as u32,
        key: ptr(key),
        key_len: key.len(),
        kind: FORKPROF_LABEL_STR,
        str: ptr(value),
        str_len: value.len(),
        num: 0,
        unit: null(),
        unit_len: 0,
    }
}

fn record(
    p: *const forkprof_profiler,
    frames: &[forkprof_frame],
    values: &[i64],
) -> forkprof_status {
    record_labeled(p, frames, values, &[])
}

fn record_labeled(
    p: *const forkprof_profiler,
    frames: &[forkprof_frame],
    values: &[i64],
    labels: &[forkprof_label],
) -> forkprof_status {
    // SAFETY: arrays are live slices with their lengths; their strings come from `frame` /
    // `str_label`, which borrow live byte strings.
    unsafe {
        forkprof_record(
            p,
            frames.as_ptr(),
            frames.len(),
            values.as_ptr(),
            values.len(),
            labels.as_ptr(),
            labels.len(),
            0,
        )
    }
}

fn stop(p: *mut forkprof_profiler) -> forkprof_stats {
    let mut stats = forkprof_stats::default();
    // SAFETY: `p` is a live handle; freed once, after stop.
    unsafe {
        assert_eq!(
            forkprof_stop(p, 10_000, &mut stats),
            FORKPROF_OK,
            "{}",
            last_error()
        );
        forkprof_free(p);
    }
    stats
}

fn all_function_names(dir: &Path) -> Vec<String> {
    read_profiles(dir)
        .iter()
        .flat_map(|(_, prof)| {
            prof.samples
                .iter()
                .flat_map(|s| prof.stack_names(s))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn null_pointers_are_errors_with_messages() {
    let dir = TempDir::new("ffi-null");
    let p = start(dir.path());
    // SAFETY: every call passes NULL where the ABI promises to check for it.
    unsafe {
        assert_eq!(
            forkprof_config_new(ptr(b"x"), 1, null_mut()),
            FORKPROF_ERR_NULL
        );
        assert!(last_error().contains("`out`"), "{}", last_error());
        let mut cfg = null_mut();
        assert_eq!(forkprof_config_new(null(), 4, &mut cfg), FORKPROF_ERR_NULL);
        assert!(cfg.is_null());
        assert_eq!(
            forkprof_config_tag(null_mut(), ptr(b"a:b"), 3),
            FORKPROF_ERR_NULL
        );
        assert_eq!(forkprof_config_validate(null()), FORKPROF_ERR_NULL);
        assert_eq!(forkprof_start(null(), &mut null_mut()), FORKPROF_ERR_NULL);
        assert_eq!(
            forkprof_record(null(), null(), 0, null(), 0, null(), 0, 0),
            FORKPROF_ERR_NULL
        );
        assert!(last_error().contains("profiler"), "{}", last_error());
        assert_eq!(
            forkprof_record(p, null(), 2, null(), 0, null(), 0, 0),
            FORKPROF_ERR_NULL
        );
        assert!(last_error().contains("frames"), "{}", last_error());
        let v = [1i64];
        assert_eq!(
            forkprof_record(p, null(), 0, v.as_ptr(), 1, null(), 3, 0),
            FORKPROF_ERR_NULL
        );
        assert!(last_error().contains("labels"), "{}", last_error());
        assert_eq!(forkprof_intern(ptr(b"f"), 1, null_mut()), FORKPROF_ERR_NULL);
        assert_eq!(forkprof_flush(null()), FORKPROF_ERR_NULL);
        assert_eq!(forkprof_flush_sync(null(), 10), FORKPROF_ERR_NULL);
        assert_eq!(forkprof_stop(null(), 10, null_mut()), FORKPROF_ERR_NULL);
        assert_eq!(forkprof_stats_get(p, null_mut()), FORKPROF_ERR_NULL);
        assert_eq!(forkprof_is_running(null()), 0);
        forkprof_free(null_mut());
        forkprof_config_free(null_mut());
    }
    // A frame with a NULL name but a length.
    let bad = forkprof_frame {
        function: null(),
        function_len: 3,
        ..frame(b"", b"", 1)
    };
    assert_eq!(record(p, &[bad], &[1]), FORKPROF_ERR_NULL);
    assert!(last_error().contains("frame function"), "{}", last_error());
    let stats = stop(p);
    assert_eq!(
        stats.samples_recorded, 0,
        "nothing bad may have been recorded"
    );
}

#[test]
fn bad_lengths_and_constants_are_invalid() {
    let dir = TempDir::new("ffi-invalid");
    let p = start(dir.path());
    let huge = forkprof_frame {
        function_len: usize::MAX,
        ..frame(b"f", b"", 1)
    };
    assert_eq!(record(p, &[huge], &[1]), FORKPROF_ERR_INVALID);
    assert!(last_error().contains("length"), "{}", last_error());
    let frames = [frame(b"f", b"f.c", 1)];
    let v = [1i64];
    // SAFETY: the counts are deliberately impossible; the ABI rejects them before reading.
    unsafe {
        assert_eq!(
            forkprof_record(
                p,
                frames.as_ptr(),
                usize::MAX / 2,
                v.as_ptr(),
                1,
                null(),
                0,
                0
            ),
            FORKPROF_ERR_INVALID
        );
        // A misaligned values array.
        let raw = [0u8; 16];
        let misaligned = raw.as_ptr().add(1).cast::<i64>();
        assert_eq!(
            forkprof_record(p, frames.as_ptr(), 1, misaligned, 1, null(), 0, 0),
            FORKPROF_ERR_INVALID
        );
        assert!(last_error().contains("aligned"), "{}", last_error());
    }
    let mut label = str_label(b"k", b"v");
    label.kind = 7;
    assert_eq!(
        record_labeled(p, &frames, &[1], &[label]),
        FORKPROF_ERR_INVALID
    );
    assert!(last_error().contains("label kind 7"), "{}", last_error());
    // The wrong number of values is the sample's fault, not an ABI one.
    assert_eq!(record(p, &frames, &[1, 2]), FORKPROF_ERR_SAMPLE);
    assert!(last_error().contains("values"), "{}", last_error());

    let cfg = config(dir.path(), false);
    // SAFETY: `cfg` is a live handle; strings are live slices.
    unsafe {
        assert_eq!(
            forkprof_config_output_dir(cfg, ptr(b"d"), 1, 9),
            FORKPROF_ERR_INVALID
        );
        assert!(last_error().contains("compression 9"), "{}", last_error());
        assert_eq!(forkprof_config_child_policy(cfg, 5), FORKPROF_ERR_INVALID);
        assert_eq!(forkprof_config_period_ms(cfg, 0), FORKPROF_OK);
        assert_eq!(forkprof_config_validate(cfg), FORKPROF_ERR_CONFIG);
        assert!(last_error().contains("period"), "{}", last_error());
        assert_eq!(forkprof_config_period_ms(cfg, 1000), FORKPROF_OK);
        // A tag without a key (a bare key is a tag with an empty value, and fine).
        assert_eq!(forkprof_config_tag(cfg, ptr(b":v"), 2), FORKPROF_OK);
        let mut q = null_mut();
        assert_eq!(forkprof_start(cfg, &mut q), FORKPROF_ERR_CONFIG);
        assert!(last_error().contains("tags"), "{}", last_error());
        assert!(q.is_null());
        forkprof_config_free(cfg);
    }
    stop(p);
}

#[test]
fn last_error_is_per_thread_and_names_statuses() {
    assert_eq!(last_error(), "");
    // SAFETY: NULL is checked.
    assert_eq!(unsafe { forkprof_flush(null()) }, FORKPROF_ERR_NULL);
    let here = last_error();
    assert!(here.contains("NULL"), "{here}");
    let other = std::thread::spawn(last_error).join().unwrap();
    assert_eq!(other, "", "another thread's message leaked across threads");
    for code in 0..=11 {
        // SAFETY: status_name returns a static NUL-terminated string for any int.
        let name = unsafe { CStr::from_ptr(forkprof_status_name(code)) };
        assert!(name.to_str().unwrap().starts_with("FORKPROF_"), "{name:?}");
        assert!(!name.to_str().unwrap().contains("UNKNOWN"), "{name:?}");
    }
    // SAFETY: as above.
    let unknown = unsafe { CStr::from_ptr(forkprof_status_name(-3)) };
    assert_eq!(unknown.to_str().unwrap(), "FORKPROF_UNKNOWN_STATUS");
    // SAFETY: static string.
    let v = unsafe { CStr::from_ptr(forkprof_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn invalid_utf8_is_replaced_and_deep_stacks_cost_no_error() {
    let dir = TempDir::new("ffi-utf8");
    let p = start(dir.path());
    // Invalid UTF-8 in a function name and in a label key (the lossy, allocating path).
    let frames = [frame(b"bad_\xff_fn", b"x.c", 1), frame(b"main", b"x.c", 2)];
    let labels = [str_label(b"key_\xfe", b"value")];
    assert_eq!(
        record_labeled(p, &frames, &[7], &labels),
        FORKPROF_OK,
        "{}",
        last_error()
    );
    // More than the on-stack capacities: 300 frames and 20 labels.
    let names: Vec<String> = (0..300).map(|i| format!("deep_{i}")).collect();
    let deep: Vec<forkprof_frame> = names
        .iter()
        .map(|n| frame(n.as_bytes(), b"d.c", 1))
        .collect();
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let many: Vec<forkprof_label> = keys.iter().map(|k| str_label(k.as_bytes(), b"v")).collect();
    assert_eq!(
        record_labeled(p, &deep, &[1], &many),
        FORKPROF_OK,
        "{}",
        last_error()
    );
    let stats = stop(p);
    assert_eq!(stats.samples_recorded, 2);
    assert_eq!(
        stats.frames_truncated, 1,
        "300 frames exceed the default depth of 128"
    );

    let profiles = read_profiles(dir.path());
    let names = all_function_names(dir.path());
    assert!(names.iter().any(|n| n == "bad_\u{fffd}_fn"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "deep_0"),
        "leaf of the deep stack missing"
    );
    let keys: Vec<&str> = profiles
        .iter()
        .flat_map(|(_, prof)| prof.samples.iter().flat_map(|s| s.labels.iter()))
        .map(|l| l.key.as_str())
        .collect();
    assert!(keys.contains(&"key_\u{fffd}"), "{keys:?}");
    assert!(keys.contains(&"k19"), "{keys:?}");
}

#[test]
fn interned_ids_record_and_stats_count() {
    let dir = TempDir::new("ffi-ids");
    let cfg = config(dir.path(), true);
    let mut p = null_mut();
    let (mut f, mut file) = (0u32, 0u32);
    // SAFETY: live handles and slices throughout.
    unsafe {
        assert_eq!(forkprof_start(cfg, &mut p), FORKPROF_OK, "{}", last_error());
        forkprof_config_free(cfg);
        assert_eq!(
            forkprof_intern(ptr(b"interned_fn"), 11, &mut f),
            FORKPROF_OK
        );
        assert_eq!(forkprof_intern(ptr(b"lib.c"), 5, &mut file), FORKPROF_OK);
        let mut again = 0;
        assert_eq!(
            forkprof_intern(ptr(b"interned_fn"), 11, &mut again),
            FORKPROF_OK
        );
        assert_eq!(again, f, "interning is idempotent");
        let frames = [forkprof_frame_ids {
            size: size_of::<forkprof_frame_ids>() as u32,
            function: f,
            file,
            line: 9,
        }];
        let values = [5i64, 1];
        for _ in 0..10 {
            assert_eq!(
                forkprof_record_ids(p, frames.as_ptr(), 1, values.as_ptr(), 2, null(), 0, 1),
                FORKPROF_OK
            );
        }
        assert_eq!(forkprof_is_running(p), 1);
        let mut s = forkprof_stats::default();
        assert_eq!(forkprof_stats_get(p, &mut s), FORKPROF_OK);
        assert_eq!(s.pid, std::process::id());
        assert_eq!(s.samples_recorded, 10);
        assert_eq!(
            forkprof_flush_sync(p, 10_000),
            FORKPROF_OK,
            "{}",
            last_error()
        );
        assert_eq!(forkprof_stop(p, 10_000, null_mut()), FORKPROF_OK);
        assert_eq!(forkprof_is_running(p), 0);
        assert_eq!(forkprof_stop(p, 10, null_mut()), FORKPROF_ERR_NOT_RUNNING);
        assert_eq!(forkprof_flush(p), FORKPROF_ERR_NOT_RUNNING);
        let frames = [frame(b"late", b"x.c", 1)];
        assert_eq!(
            record(p, &frames, &[1, 1]),
            FORKPROF_OK,
            "after stop: a no-op"
        );
        let mut s = forkprof_stats::default();
        assert_eq!(forkprof_stats_get(p, &mut s), FORKPROF_OK);
        assert_eq!(s.samples_ignored, 1);
        forkprof_free(p);
    }
    let profiles = read_profiles(dir.path());
    let total: i64 = profiles
        .iter()
        .flat_map(|(_, prof)| prof.samples.iter())
        .filter(|s| s.values.len() == 2)
        .map(|s| s.values[0])
        .sum();
    assert_eq!(total, 50, "10 timestamped samples of 5");
    assert!(all_function_names(dir.path())
        .iter()
        .any(|n| n == "interned_fn"));
}

#[test]
fn fork_hooks_check_their_order_and_clocks_tick() {
    assert_eq!(forkprof_after_fork_parent(), FORKPROF_ERR_FORK_ORDER);
    assert!(last_error().contains("before_fork"), "{}", last_error());
    assert_eq!(forkprof_after_fork_child(), FORKPROF_ERR_FORK_ORDER);
    assert_eq!(forkprof_before_fork(), FORKPROF_OK);
    assert_eq!(forkprof_before_fork(), FORKPROF_ERR_FORK_ORDER);
    assert_eq!(forkprof_after_fork_parent(), FORKPROF_OK);

    let a = forkprof_thread_cpu_time_ns();
    assert!(a >= 0, "{}", last_error());
    let mut x = 0u64;
    for i in 0..2_000_000u64 {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    let b = forkprof_thread_cpu_time_ns();
    assert!(b > a, "thread cpu clock did not advance: {a} -> {b}");
    let m1 = forkprof_monotonic_ns();
    let m2 = forkprof_monotonic_ns();
    assert!(m2 >= m1 && m1 > 0);
}

#[test]
fn forkprof_fork_gives_the_child_its_own_profile() {
    let _watchdog = Watchdog::new("forkprof_fork child", Duration::from_secs(60));
    let dir = TempDir::new("ffi-fork");
    let p = start(dir.path());
    let parent_frames = [frame(b"parent_fn", b"p.c", 1)];
    assert_eq!(record(p, &parent_frames, &[1]), FORKPROF_OK);

    let pid = forkprof_fork();
    assert!(pid >= 0, "forkprof_fork: {}", last_error());
    if pid == 0 {
        // The child: record, flush, stop, and report through the exit status only.
        let frames = [frame(b"child_fn", b"c.c", 1)];
        let mut code = 0;
        // SAFETY: `p` is the inherited handle, live in the child.
        if unsafe { forkprof_is_running(p) } != 1 {
            code = 10; // after_fork_child restarted it already
        } else if record(p, &frames, &[1]) != FORKPROF_OK {
            code = 11;
        } else {
            let mut s = forkprof_stats::default();
            // SAFETY: `p` is the inherited handle, live in the child.
            let st = unsafe { forkprof_stop(p, 10_000, &mut s) };
            if st != FORKPROF_OK {
                code = 12;
            } else if s.samples_recorded != 1 || s.pid != std::process::id() {
                code = 13;
            }
        }
        // SAFETY: _exit skips the test harness's teardown, which belongs to the parent.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status:#x} (exit codes: 10 not running, 11 record, 12 stop, 13 stats)"
    );
    let stats = stop(p);
    assert_eq!(stats.samples_recorded, 1);

    for (path, prof) in read_profiles(dir.path()) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let fns: Vec<String> = prof
            .samples
            .iter()
            .flat_map(|s| prof.stack_names(s))
            .collect();
        if name.contains(&format!("-{pid}-")) {
            assert_eq!(
                fns,
                ["child_fn"],
                "{name}: the child's profile holds only its samples"
            );
        } else {
            assert_eq!(fns, ["parent_fn"], "{name}");
        }
    }
}

#[test]
fn a_panic_stops_at_the_boundary() {
    let status = crate::status::guard(|| panic!("boom at the boundary"));
    assert_eq!(status, FORKPROF_ERR_PANIC);
    let msg = last_error();
    assert!(msg.contains("boom at the boundary"), "{msg}");
    let (value, status) = crate::status::guard_with(-1, || -> Result<i32, _> {
        panic!("{}", String::from("owned payload"))
    });
    assert_eq!((value, status), (-1, FORKPROF_ERR_PANIC));
    assert!(last_error().contains("owned payload"), "{}", last_error());
}

#[test]
fn threads_record_into_one_handle() {
    let dir = TempDir::new("ffi-threads");
    let p = start(dir.path());
    // Raw pointers are not Send; the handle is documented as shareable across threads.
    let addr = p as usize;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let name = format!("thread_{t}_fn");
                let frames = [frame(name.as_bytes(), b"t.c", 1)];
                for _ in 0..500 {
                    let status = record(addr as *const forkprof_profiler, &frames, &[1]);
                    assert_eq!(status, FORKPROF_OK, "{}", last_error());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = stop(p);
    assert_eq!(stats.samples_recorded + stats.samples_dropped, 2000);
    let names = all_function_names(dir.path());
    for t in 0..4 {
        assert!(
            names.contains(&format!("thread_{t}_fn")),
            "thread {t} missing"
        );
    }
}

#[test]
fn child_policy_disable_turns_the_child_off() {
    let _watchdog = Watchdog::new("forkprof_fork child under Disable", Duration::from_secs(60));
    let dir = TempDir::new("ffi-disable");
    let cfg = config(dir.path(), false);
    let mut p = null_mut();
    // SAFETY: live handles.
    unsafe {
        assert_eq!(
            forkprof_config_child_policy(cfg, FORKPROF_CHILD_DISABLE),
            FORKPROF_OK
        );
        assert_eq!(forkprof_start(cfg, &mut p), FORKPROF_OK, "{}", last_error());
        forkprof_config_free(cfg);
    }
    let pid = forkprof_fork();
    assert!(pid >= 0, "forkprof_fork: {}", last_error());
    if pid == 0 {
        let frames = [frame(b"child_fn", b"c.c", 1)];
        let mut s = forkprof_stats::default();
        // SAFETY: the inherited handle, live in the child.
        let code = unsafe {
            if record(p, &frames, &[1]) != FORKPROF_OK {
                20
            } else if forkprof_is_running(p) != 0 {
                21
            } else if forkprof_flush(p) != FORKPROF_ERR_NOT_RUNNING {
                22
            } else if forkprof_stats_get(p, &mut s) != FORKPROF_OK || s.samples_ignored != 1 {
                23
            } else if s.disabled_reason != FORKPROF_DISABLED_CHILD_POLICY
                || forkprof_disabled_reason_text(s.disabled_reason).is_null()
            {
                24
            } else {
                0
            }
        };
        // SAFETY: leave without the harness's teardown, which belongs to the parent.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status:#x} (20 record, 21 running, 22 flush, 23 stats, 24 disabled reason)"
    );
    stop(p);
    let children: Vec<_> = read_profiles(dir.path())
        .into_iter()
        .filter(|(path, _)| path.to_string_lossy().contains(&format!("-{pid}-")))
        .collect();
    assert!(children.is_empty(), "a disabled child wrote profiles");
}

/// A profiler exporting to `url` (no files).
fn start_with_url(url: &str) -> Result<*mut forkprof_profiler, (forkprof_status, String)> {
    let mut cfg = null_mut();
    let mut p = null_mut();
    // SAFETY: live handles and slices.
    unsafe {
        assert_eq!(
            forkprof_config_new(ptr(b"abi-http"), 8, &mut cfg),
            FORKPROF_OK
        );
        assert_eq!(
            forkprof_config_sample_type(cfg, ptr(b"wall-time"), 9, ptr(b"nanoseconds"), 11),
            FORKPROF_OK
        );
        assert_eq!(
            forkprof_config_exporter_url(cfg, ptr(url.as_bytes()), url.len()),
            FORKPROF_OK
        );
        let status = forkprof_start(cfg, &mut p);
        let message = last_error();
        forkprof_config_free(cfg);
        if status == FORKPROF_OK {
            Ok(p)
        } else {
            Err((status, message))
        }
    }
}

#[test]
fn exporter_urls_reach_an_agent_and_bad_ones_name_the_endpoint() {
    use crate::export_support::{Reply, TestServer};

    let server = TestServer::tcp(|_| Reply::Status(200));
    let p = start_with_url(&server.url()).expect("start with the test server's URL");
    let frames = [frame(b"uploaded_fn", b"u.c", 1)];
    assert_eq!(record(p, &frames, &[1]), FORKPROF_OK);
    // SAFETY: live handle.
    let flushed = unsafe { forkprof_flush_sync(p, 10_000) };
    assert_eq!(flushed, FORKPROF_OK, "{}", last_error());
    let stats = stop(p);
    assert!(stats.profiles_written >= 1, "{stats:?}");
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "POST" && !r.body.is_empty()),
        "the agent saw no upload: {requests:?}"
    );

    let (status, message) = start_with_url("ftp://nowhere").expect_err("ftp is no exporter");
    assert_eq!(status, FORKPROF_ERR_CONFIG);
    assert!(message.contains("endpoint"), "{message}");
}

/// Messages a C callback received: (level, kind, text), with `user_data` checked.
static C_LOG: std::sync::Mutex<Vec<(u32, u32, String)>> = std::sync::Mutex::new(Vec::new());
const USER_DATA: usize = 0x5eed;

unsafe extern "C" fn c_logger(
    user: *mut std::ffi::c_void,
    level: u32,
    kind: u32,
    message: *const c_char,
    len: usize,
) {
    assert_eq!(user as usize, USER_DATA);
    // SAFETY: forkprof passes `len` bytes, NUL-terminated, valid during the call.
    let text = unsafe { CStr::from_ptr(message) }
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(text.len(), len);
    C_LOG.lock().unwrap().push((level, kind, text));
}

/// A config exporting to `url` with the given extra setters applied.
fn http_config(url: &str, extra: impl FnOnce(*mut forkprof_config)) -> *mut forkprof_config {
    let mut cfg = null_mut();
    // SAFETY: live handles and slices.
    unsafe {
        assert_eq!(
            forkprof_config_new(ptr(b"abi-log"), 7, &mut cfg),
            FORKPROF_OK
        );
        assert_eq!(
            forkprof_config_sample_type(cfg, ptr(b"wall-time"), 9, ptr(b"nanoseconds"), 11),
            FORKPROF_OK
        );
        assert_eq!(
            forkprof_config_exporter_url(cfg, ptr(url.as_bytes()), url.len()),
            FORKPROF_OK
        );
    }
    extra(cfg);
    cfg
}

#[test]
fn the_log_callback_gets_export_failures_with_the_upload_settings_applied() {
    use crate::export_support::{Reply, TestServer};
    let _w = Watchdog::new("c log callback", Duration::from_secs(60));
    assert_eq!(forkprof_set_log_rate_limit_ms(0), FORKPROF_OK);
    // SAFETY: `c_logger` may be called from any thread for the life of the process.
    unsafe {
        assert_eq!(
            forkprof_set_log_callback(9, Some(c_logger), null_mut()),
            FORKPROF_ERR_INVALID
        );
        assert_eq!(
            forkprof_set_log_callback(FORKPROF_LOG_DEBUG, Some(c_logger), USER_DATA as *mut _),
            FORKPROF_OK
        );
    }
    assert_eq!(
        forkprof_set_log_delivery(FORKPROF_LOG_DELIVER_ON_DRAIN),
        FORKPROF_OK
    );
    assert_eq!(forkprof_set_log_delivery(7), FORKPROF_ERR_INVALID);

    let server = TestServer::tcp(|_| Reply::Status(503));
    // Retries and timeouts set before the URL: applied at start whatever the order.
    let cfg = http_config(&server.url(), |cfg| {
        // SAFETY: live handle.
        unsafe {
            assert_eq!(
                forkprof_config_upload_retries(cfg, 1, 5_000, 5, 10),
                FORKPROF_OK
            );
            assert_eq!(forkprof_config_upload_timeouts(cfg, 300, 500), FORKPROF_OK);
        }
    });
    let mut p = null_mut();
    // SAFETY: live handles.
    unsafe {
        assert_eq!(forkprof_start(cfg, &mut p), FORKPROF_OK, "{}", last_error());
        forkprof_config_free(cfg);
        assert_eq!(forkprof_stop_at_exit(p, 1000), FORKPROF_OK);
    }
    let frames = [frame(b"f", b"f.c", 1)];
    assert_eq!(record(p, &frames, &[1]), FORKPROF_OK);
    // SAFETY: live handle.
    assert_eq!(unsafe { forkprof_flush_sync(p, 20_000) }, FORKPROF_OK);
    assert_eq!(server.attempts(), 2, "one retry, as configured");
    // flush_sync delivers too; whatever arrived since is drained here.
    forkprof_drain_log();
    let got = C_LOG.lock().unwrap().clone();
    let failed: Vec<_> = got
        .iter()
        .filter(|(_, k, _)| *k == FORKPROF_LOG_KIND_EXPORT_FAILED)
        .collect();
    assert_eq!(failed.len(), 1, "{got:?}");
    assert_eq!(failed[0].0, FORKPROF_LOG_WARN);
    assert!(
        failed[0].2.contains("HTTP 503") && failed[0].2.contains("gave up after 2 attempts"),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|(l, k, _)| *l == FORKPROF_LOG_DEBUG && *k == FORKPROF_LOG_KIND_EXPORT_RETRY),
        "{got:?}"
    );
    assert_eq!(forkprof_drain_log(), 0);
    stop(p);
    // SAFETY: back to no callback.
    unsafe {
        assert_eq!(
            forkprof_set_log_callback(FORKPROF_LOG_WARN, None, null_mut()),
            FORKPROF_OK
        )
    };
}

#[test]
fn pyroscope_auth_and_tenant_through_the_abi() {
    use crate::export_support::{Reply, TestServer};
    let _w = Watchdog::new("c pyroscope auth", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Status(200));
    let url = format!("pyroscope+{}", server.url());
    let cfg = http_config(&url, |cfg| {
        // SAFETY: live handle and slices.
        unsafe {
            assert_eq!(
                forkprof_config_pyroscope_basic_auth(cfg, ptr(b"123"), 3, ptr(b"pw"), 2),
                FORKPROF_OK
            );
            assert_eq!(
                forkprof_config_pyroscope_tenant(cfg, ptr(b"team-a"), 6),
                FORKPROF_OK
            );
            assert_eq!(
                forkprof_config_pyroscope_header(cfg, ptr(b"X-Extra"), 7, ptr(b"v1"), 2),
                FORKPROF_OK
            );
        }
    });
    let mut p = null_mut();
    // SAFETY: live handles.
    unsafe {
        assert_eq!(forkprof_start(cfg, &mut p), FORKPROF_OK, "{}", last_error());
    }
    let frames = [frame(b"f", b"f.c", 1)];
    assert_eq!(record(p, &frames, &[1]), FORKPROF_OK);
    let stats = stop(p);
    assert_eq!(stats.profiles_written, 1, "{stats:?}");
    let r = &server.requests()[0];
    assert_eq!(r.header("Authorization"), Some("Basic MTIzOnB3")); // base64("123:pw")
    assert_eq!(r.header("X-Scope-OrgID"), Some("team-a"));
    assert_eq!(r.header("X-Extra"), Some("v1"));

    // Basic auth and a bearer token together: refused at start, naming the setting, and the
    // password is not in the message.
    // SAFETY: live handle and slices.
    unsafe {
        assert_eq!(
            forkprof_config_pyroscope_bearer_token(cfg, ptr(b"tok-xyz"), 7),
            FORKPROF_OK
        );
        let mut q = null_mut();
        assert_eq!(forkprof_start(cfg, &mut q), FORKPROF_ERR_CONFIG);
        let m = last_error();
        assert!(
            m.contains("auth") && !m.contains("pw") && !m.contains("tok-xyz"),
            "{m}"
        );
        forkprof_config_free(cfg);
    }

    // Pyroscope settings or upload settings on a file exporter: an error naming them.
    let dir = TempDir::new("abi-pyro-file");
    let cfg = config(dir.path(), false);
    // SAFETY: live handle and slices.
    unsafe {
        assert_eq!(
            forkprof_config_pyroscope_tenant(cfg, ptr(b"t"), 1),
            FORKPROF_OK
        );
        assert_eq!(forkprof_config_validate(cfg), FORKPROF_ERR_CONFIG);
        assert!(last_error().contains("pyroscope"), "{}", last_error());
        forkprof_config_free(cfg);
        let cfg = config(dir.path(), false);
        assert_eq!(forkprof_config_upload_timeouts(cfg, 100, 0), FORKPROF_OK);
        assert_eq!(forkprof_config_validate(cfg), FORKPROF_ERR_CONFIG);
        assert!(last_error().contains("upload settings"), "{}", last_error());
        forkprof_config_free(cfg);
    }
}

// ---- The size-tag rule (ffi/README.md, "Compatibility") ----

/// A caller's struct followed by bytes the library must never touch.
#[repr(C, align(8))]
struct Guarded<T> {
    value: T,
    after: [u8; 64],
}

const CANARY: u8 = 0xA5;

fn guarded_stats(size: usize) -> Guarded<forkprof_stats> {
    // All canary bytes, `size` set: whatever the library writes shows.
    // SAFETY: forkprof_stats is integers only, so any bytes are a valid value.
    let mut g: Guarded<forkprof_stats> =
        unsafe { std::mem::transmute([CANARY; size_of::<Guarded<forkprof_stats>>()]) };
    g.value.size = size as u32;
    g
}

fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: reading a live value's bytes; callers only look at bytes the value was filled
    // with (canaries or fields the library wrote).
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
}

#[test]
fn stats_are_written_up_to_the_callers_size_and_no_further() {
    // ABI 1.0's struct, plus `endpoints_dropped` (1.1), plus the guard bytes.
    assert_eq!(size_of::<Guarded<forkprof_stats>>(), 168 + 8);
    let dir = TempDir::new("ffi-stats-size");
    let p = start(dir.path());
    assert_eq!(record(p, &[frame(b"f", b"f.c", 1)], &[1]), FORKPROF_OK);
    let full = size_of::<forkprof_stats>();
    let min = <forkprof_stats as crate::sized::SizeTagged>::MIN_SIZE;
    assert!(min > size_of::<u32>() && min <= full);

    // The smallest size a 1.x caller can have: every byte from there on stays the caller's.
    let mut g = guarded_stats(min);
    // SAFETY: `g.value` is writable for its size.
    assert_eq!(unsafe { forkprof_stats_get(p, &mut g.value) }, FORKPROF_OK);
    assert_eq!(g.value.size as usize, min, "the size field is the caller's");
    assert_eq!(g.value.pid, std::process::id());
    assert_eq!(g.value.samples_recorded, 1);
    assert_eq!(g.value.disabled_reason, 0);
    let raw = bytes_of(&g);
    assert!(
        raw[min..].iter().all(|&b| b == CANARY),
        "bytes past size {min} were written: {:?}",
        &raw[min..full]
    );

    // Size 0 (never set), and a size from a newer header: refused, nothing written.
    for (size, status, says) in [
        (0, FORKPROF_ERR_INVALID, "set it to sizeof(forkprof_stats)"),
        (
            min - 1,
            FORKPROF_ERR_INVALID,
            "set it to sizeof(forkprof_stats)",
        ),
        (full + 8, FORKPROF_ERR_ABI, "newer forkprof.h"),
    ] {
        let mut g = guarded_stats(size);
        // SAFETY: as above; the library must not write at all.
        assert_eq!(
            unsafe { forkprof_stats_get(p, &mut g.value) },
            status,
            "size {size}"
        );
        assert!(last_error().contains(says), "size {size}: {}", last_error());
        assert!(
            bytes_of(&g)[size_of::<u32>()..]
                .iter()
                .all(|&b| b == CANARY),
            "size {size}: the library wrote into a struct it refused"
        );
        // SAFETY: as above. A refused size is checked before stopping.
        assert_eq!(unsafe { forkprof_stop(p, 10_000, &mut g.value) }, status);
        // SAFETY: `p` is live.
        assert_eq!(
            unsafe { forkprof_is_running(p) },
            1,
            "refused, so not stopped"
        );
    }
    let stats = stop(p);
    assert_eq!(stats.size as usize, full);
    assert_eq!(stats.samples_recorded, 1);
}

#[test]
fn every_array_element_carries_the_same_size() {
    let dir = TempDir::new("ffi-array-size");
    let p = start(dir.path());
    let mut frames = [frame(b"leaf", b"a.c", 1), frame(b"root", b"a.c", 2)];
    frames[1].size = 0;
    assert_eq!(record(p, &frames, &[1]), FORKPROF_ERR_INVALID);
    assert!(
        last_error().contains("`frames[1].size` is 0"),
        "{}",
        last_error()
    );
    frames[0].size = 0;
    assert_eq!(record(p, &frames, &[1]), FORKPROF_ERR_INVALID);
    assert!(
        last_error().contains("`frames[0].size` is 0"),
        "{}",
        last_error()
    );

    let frames = [frame(b"leaf", b"a.c", 1)];
    let mut labels = [str_label(b"k", b"v")];
    labels[0].size += 8;
    assert_eq!(record_labeled(p, &frames, &[1], &labels), FORKPROF_ERR_ABI);
    assert!(
        last_error().contains("`labels[0].size`"),
        "{}",
        last_error()
    );

    // A newer caller's frames, 8 bytes longer each: refused, not read at the wrong stride.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct NewerFrame {
        frame: forkprof_frame,
        added: u64,
    }
    let mut newer = [NewerFrame {
        frame: frame(b"leaf", b"a.c", 1),
        added: 7,
    }; 2];
    for f in &mut newer {
        f.frame.size = size_of::<NewerFrame>() as u32;
    }
    // SAFETY: two live elements of the size they carry.
    let status = unsafe {
        forkprof_record(
            p,
            newer.as_ptr().cast(),
            2,
            [1i64].as_ptr(),
            1,
            null(),
            0,
            0,
        )
    };
    assert_eq!(status, FORKPROF_ERR_ABI);
    assert!(
        last_error().contains("newer forkprof.h"),
        "{}",
        last_error()
    );

    let ids = [forkprof_frame_ids {
        size: 0,
        function: 0,
        file: 0,
        line: 0,
    }];
    // SAFETY: one live element.
    let status =
        unsafe { forkprof_record_ids(p, ids.as_ptr(), 1, [1i64].as_ptr(), 1, null(), 0, 0) };
    assert_eq!(status, FORKPROF_ERR_INVALID);
    assert!(
        last_error().contains("sizeof(forkprof_frame_ids)"),
        "{}",
        last_error()
    );
    assert_eq!(
        stop(p).samples_recorded,
        0,
        "nothing refused may be recorded"
    );
}

/// The mechanism itself, on a struct that grew: version 1 had `a` and `b`, version 2 added
/// `c`. A version-1 caller's arrays are read at its own stride with `c` as zero, and a
/// version-1 caller's struct is filled up to `b` and not a byte further.
#[test]
fn a_struct_can_grow_without_an_older_caller_noticing() {
    use crate::sized::{OutSlot, SizeTagged, TaggedArray};

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct V1 {
        size: u32,
        a: u32,
        b: u64,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct V2 {
        size: u32,
        a: u32,
        b: u64,
        c: u64,
    }
    // SAFETY: repr(C), `size: u32` first, integers only.
    unsafe impl SizeTagged for V2 {
        const NAME: &'static str = "v2";
        const MIN_SIZE: usize = size_of::<V1>();
    }
    let v1_size = size_of::<V1>() as u32;
    let old = [
        V1 {
            size: v1_size,
            a: 1,
            b: 10,
        },
        V1 {
            size: v1_size,
            a: 2,
            b: 20,
        },
    ];
    // SAFETY: two live elements of `v1_size` bytes, as a version-1 caller passes them.
    let array = unsafe { TaggedArray::<V2>::new(old.as_ptr().cast(), 2, "old") }
        .unwrap_or_else(|e| panic!("{}", e.message));
    let read: Vec<V2> = array.with_slice::<4, _>(|s| s.to_vec());
    assert_eq!(
        read,
        [
            V2 {
                size: v1_size,
                a: 1,
                b: 10,
                c: 0
            },
            V2 {
                size: v1_size,
                a: 2,
                b: 20,
                c: 0
            }
        ]
    );

    let mut g = Guarded {
        value: V1 {
            size: v1_size,
            a: 0,
            b: 0,
        },
        after: [CANARY; 64],
    };
    // SAFETY: `g.value` is writable for the size it carries.
    let slot = unsafe { OutSlot::<V2>::new(std::ptr::from_mut(&mut g.value).cast(), "old") }
        .unwrap_or_else(|e| panic!("{}", e.message));
    slot.write(&V2 {
        size: 24,
        a: 3,
        b: 30,
        c: u64::MAX,
    });
    assert_eq!(
        g.value,
        V1 {
            size: v1_size,
            a: 3,
            b: 30
        }
    );
    assert!(
        g.after.iter().all(|&b| b == CANARY),
        "c was written past the caller's struct"
    );
}

#[test]
fn the_abi_version_is_checked_against_the_callers_header() {
    assert_eq!(forkprof_abi_version(), FORKPROF_ABI_VERSION);
    assert_eq!(FORKPROF_ABI_VERSION >> 16, FORKPROF_ABI_VERSION_MAJOR);
    assert_eq!(forkprof_abi_check(FORKPROF_ABI_VERSION), FORKPROF_OK);
    // An older minor of the same major is served.
    assert_eq!(
        forkprof_abi_check(FORKPROF_ABI_VERSION_MAJOR << 16),
        FORKPROF_OK
    );
    let newer_minor = FORKPROF_ABI_VERSION + 1;
    assert_eq!(forkprof_abi_check(newer_minor), FORKPROF_ERR_ABI);
    let msg = last_error();
    assert!(
        msg.contains(&format!(
            "ABI {FORKPROF_ABI_VERSION_MAJOR}.{}",
            FORKPROF_ABI_VERSION_MINOR + 1
        )) && msg.contains("or later"),
        "{msg}"
    );
    for other in [
        FORKPROF_ABI_VERSION_MAJOR - 1,
        FORKPROF_ABI_VERSION_MAJOR + 1,
    ] {
        assert_eq!(forkprof_abi_check(other << 16), FORKPROF_ERR_ABI);
        assert!(
            last_error().contains(&format!("libforkprof.so.{other}")),
            "{}",
            last_error()
        );
    }
    // SAFETY: static NUL-terminated strings.
    let name = unsafe { CStr::from_ptr(forkprof_status_name(FORKPROF_ERR_ABI as i32)) };
    assert_eq!(name.to_str(), Ok("FORKPROF_ERR_ABI"));
}

// ---- Datadog identity and file retention (ABI 1.1) ----

#[test]
fn datadog_family_runtime_id_and_library_through_the_abi() {
    use crate::export_support::{parse_multipart, Reply, TestServer};
    let _w = Watchdog::new("c datadog identity", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Status(202));
    let id = b"0b1d5e0c-6d3f-4a52-9f1e-1c2b3a4d5e6f";
    // Set before the URL: applied at start, whatever the order.
    let mut cfg = null_mut();
    // SAFETY: live handles and slices.
    unsafe {
        assert_eq!(
            forkprof_config_new(ptr(b"abi-dd"), 6, &mut cfg),
            FORKPROF_OK
        );
        assert_eq!(
            forkprof_config_sample_type(cfg, ptr(b"wall-time"), 9, ptr(b"nanoseconds"), 11),
            FORKPROF_OK
        );
        assert_eq!(
            forkprof_config_datadog_family(cfg, ptr(b"ruby"), 4),
            FORKPROF_OK
        );
        assert_eq!(
            forkprof_config_datadog_runtime_id(cfg, ptr(id), id.len()),
            FORKPROF_OK
        );
        assert_eq!(
            forkprof_config_datadog_library(cfg, ptr(b"forkprof-rb"), 11, ptr(b"0.9.0"), 5),
            FORKPROF_OK
        );
        let url = server.url();
        assert_eq!(
            forkprof_config_exporter_url(cfg, ptr(url.as_bytes()), url.len()),
            FORKPROF_OK
        );
    }
    let mut p = null_mut();
    // SAFETY: live handles.
    unsafe {
        assert_eq!(forkprof_start(cfg, &mut p), FORKPROF_OK, "{}", last_error());
        forkprof_config_free(cfg);
    }
    let frames = [frame(b"f", b"f.rb", 1)];
    assert_eq!(record(p, &frames, &[1]), FORKPROF_OK);
    let stats = stop(p);
    assert_eq!(stats.profiles_written, 1, "{stats:?}");
    let r = &server.requests()[0];
    assert_eq!(r.header("DD-EVP-ORIGIN"), Some("forkprof-rb"));
    assert_eq!(r.header("DD-EVP-ORIGIN-VERSION"), Some("0.9.0"));
    let parts = parse_multipart(r.header("Content-Type").unwrap(), &r.body);
    let event = String::from_utf8_lossy(&parts[0].data).into_owned();
    assert!(event.contains("\"family\":\"ruby\""), "{event}");
    assert!(
        event.contains(&format!("runtime-id:{}", std::str::from_utf8(id).unwrap())),
        "{event}"
    );

    // On a file exporter: an error naming the settings. A bad value: an error naming it.
    let dir = TempDir::new("abi-dd-file");
    let cfg = config(dir.path(), false);
    // SAFETY: live handle and slices.
    unsafe {
        assert_eq!(
            forkprof_config_datadog_family(cfg, ptr(b"php"), 3),
            FORKPROF_OK
        );
        assert_eq!(forkprof_config_validate(cfg), FORKPROF_ERR_CONFIG);
        assert!(
            last_error().contains("datadog settings"),
            "{}",
            last_error()
        );
        forkprof_config_free(cfg);
        let cfg = http_config(&server.url(), |_| {});
        assert_eq!(
            forkprof_config_datadog_runtime_id(cfg, ptr(b"a,b"), 3),
            FORKPROF_OK
        );
        assert_eq!(forkprof_config_validate(cfg), FORKPROF_ERR_CONFIG);
        assert!(last_error().contains("runtime_id"), "{}", last_error());
        forkprof_config_free(cfg);
    }
}

#[test]
fn output_retention_through_the_abi() {
    let _w = Watchdog::new("c retention", Duration::from_secs(60));
    let dir = TempDir::new("abi-retention");
    // Three older profiles of another process, and a file that is not a profile.
    for seq in 0..3u64 {
        let f = std::fs::File::create(
            dir.path()
                .join(format!("abi-1-20260101T000000000000-{seq}.pprof.gz")),
        )
        .unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(100 - seq))
            .unwrap();
    }
    std::fs::write(dir.path().join("README"), b"kept").unwrap();
    let cfg = config(dir.path(), false);
    let mut p = null_mut();
    // SAFETY: live handles.
    unsafe {
        assert_eq!(forkprof_config_output_retention(cfg, 2, 0), FORKPROF_OK);
        assert_eq!(forkprof_start(cfg, &mut p), FORKPROF_OK, "{}", last_error());
        forkprof_config_free(cfg);
    }
    let frames = [frame(b"f", b"f.c", 1)];
    assert_eq!(record(p, &frames, &[1]), FORKPROF_OK);
    let stats = stop(p);
    assert_eq!(stats.profiles_written, 1, "{stats:?}");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let own = format!("abi-{}-", std::process::id());
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&"README".to_string()), "{names:?}");
    assert!(
        names.contains(&"abi-1-20260101T000000000000-2.pprof.gz".to_string()),
        "the newest older profile stays: {names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with(&own)), "{names:?}");

    // On an HTTP exporter: an error naming it.
    let cfg = http_config("http://127.0.0.1:1", |cfg| {
        // SAFETY: live handle.
        unsafe { assert_eq!(forkprof_config_output_retention(cfg, 5, 0), FORKPROF_OK) };
    });
    // SAFETY: live handle, freed once.
    unsafe {
        assert_eq!(forkprof_config_validate(cfg), FORKPROF_ERR_CONFIG);
        assert!(
            last_error().contains("output_retention"),
            "{}",
            last_error()
        );
        forkprof_config_free(cfg);
    }
}

#[test]
fn otlp_urls_through_the_abi() {
    use crate::export_support::{Reply, TestServer};
    let _w = Watchdog::new("c otlp url", Duration::from_secs(60));
    let server = TestServer::tcp(|_| Reply::Status(200));
    let p = start_with_url(&format!("otlp+{}", server.url())).expect("otlp+http URL accepted");
    let frames = [frame(b"otlp_leaf", b"o.c", 1)];
    assert_eq!(record(p, &frames, &[5]), FORKPROF_OK);
    let stats = stop(p);
    assert_eq!(stats.profiles_written, 1, "{stats:?}");
    let r = &server.requests()[0];
    assert_eq!(r.target, "/v1development/profiles");
    assert_eq!(r.header("Content-Type"), Some("application/x-protobuf"));
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    let raw = forkprof::compress::decompress_any(&r.body, 1 << 30).unwrap();
    // An ExportProfilesServiceRequest starts with its ResourceProfiles (field 1, length
    // delimited); the function name is in its dictionary. tests/export_otlp.rs decodes it all.
    assert_eq!(raw[0], 0x0a);
    assert!(raw.windows(9).any(|w| w == b"otlp_leaf"));
    // A Unix socket cannot carry OTLP/HTTP: refused at start, naming the endpoint.
    let err = start_with_url("otlp+unix:///tmp/x.sock").unwrap_err();
    assert_eq!(err.0, FORKPROF_ERR_CONFIG);
    assert!(err.1.contains("endpoint"), "{}", err.1);
}
