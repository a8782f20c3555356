#!/usr/bin/env python3
"""forkprof's C ABI driven from a foreign runtime: CPython loads the cdylib with ctypes (no
build step on the Python side), records samples built from its own frames, and forks with
os.fork() and multiprocessing (start method "fork"), first relying on the pthread_atfork
handlers (the Linux way), then with os.register_at_fork wired to forkprof's interception
hooks (the macOS way, which must also work on Linux).

Each scenario runs in a fresh interpreter (`--scenario NAME`) under a timeout, because
register_at_fork cannot be undone and because a hang must fail with a message rather than
stall CI. Every child runs under its own timeout too.

Run: FORKPROF_LIB=target/debug/libforkprof.so python3 tests/python/test_ctypes.py
Profiles are checked with `go tool pprof -raw`.
"""

import ctypes
import faulthandler
import glob
import multiprocessing
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

SCENARIO_TIMEOUT_S = 90
CHILD_TIMEOUT_S = 30
PPROF_TIMEOUT_S = 60
SERVICE = "pyctypes"


# ---------------------------------------------------------------------------------------------
# The binding: a thin ctypes layer over include/forkprof.h, declared from ABI 1.0.

ABI_VERSION = 1 << 16 | 0  # FORKPROF_ABI_VERSION of the header these declarations follow


class Tagged(ctypes.Structure):
    """A size-tagged struct (ffi/README.md, "Compatibility"): `size` comes first and is set
    to ctypes.sizeof at construction, so the library reads and writes no more than this
    declaration has, whatever its own version."""

    def __init__(self, **fields):
        super().__init__(size=ctypes.sizeof(self), **fields)


class Frame(Tagged):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("line", ctypes.c_uint32),
        ("function", ctypes.c_char_p),
        ("function_len", ctypes.c_size_t),
        ("file", ctypes.c_char_p),
        ("file_len", ctypes.c_size_t),
    ]


def text_frame(function, function_len, file, file_len, line):
    return Frame(function=function, function_len=function_len, file=file, file_len=file_len, line=line)


class Label(Tagged):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("kind", ctypes.c_uint32),
        ("key", ctypes.c_char_p),
        ("key_len", ctypes.c_size_t),
        ("str", ctypes.c_char_p),
        ("str_len", ctypes.c_size_t),
        ("num", ctypes.c_int64),
        ("unit", ctypes.c_char_p),
        ("unit_len", ctypes.c_size_t),
    ]


class Stats(Tagged):
    _fields_ = [("size", ctypes.c_uint32), ("pid", ctypes.c_uint32)] + [
        (name, ctypes.c_uint64)
        for name in (
            "samples_recorded",
            "samples_dropped",
            "samples_too_large",
            "samples_ignored",
            "frames_truncated",
            "profiles_written",
            "profiles_failed",
            "profiles_dropped",
            "profiles_too_large",
            "bytes_written",
            "uploads_retried",
        )
    ] + [("disabled_reason", ctypes.c_uint32)]


class GuardedStats(ctypes.Structure):
    """Stats with bytes after them the library must never write: a library newer than this
    declaration writing its longer struct in full would land there (or, unguarded, in
    whatever the interpreter keeps next on its heap)."""

    CANARY = 0xA5
    _fields_ = [("stats", Stats), ("after", ctypes.c_ubyte * 64)]

    def __init__(self):
        super().__init__(stats=Stats(), after=(ctypes.c_ubyte * 64)(*[self.CANARY] * 64))

    def checked(self, call):
        written = [i for i, b in enumerate(self.after) if b != self.CANARY]
        assert not written, f"{call} wrote {len(written)} bytes past the caller's Stats"
        assert self.stats.size == ctypes.sizeof(Stats), f"{call} changed the size field"
        return self.stats


OK, ERR_NULL, ERR_INVALID, ERR_CONFIG, ERR_SAMPLE = 0, 1, 2, 3, 4
ERR_FORK_ORDER, ERR_NOT_RUNNING, ERR_ABI = 7, 8, 12
COMPRESSION_GZIP = 1
CHILD_RESTART = 0
LABEL_STR, LABEL_NUM = 0, 1


# void (*)(void *user_data, uint32_t level, uint32_t kind, const char *message, size_t len)
LOG_FN = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t
)
LOG_WARN, LOG_INFO = 2, 3
LOG_KIND_EXPORT_FAILED = 1


def load_library():
    path = os.environ.get("FORKPROF_LIB")
    if not path:
        raise SystemExit("set FORKPROF_LIB to the path of libforkprof.so (ci/test-ffi.sh does)")
    lib = ctypes.CDLL(path)
    st = ctypes.c_int
    p = ctypes.c_void_p
    sz = ctypes.c_size_t
    s = ctypes.c_char_p
    u32, u64, i64 = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int64
    sigs = {
        "forkprof_config_new": (st, [s, sz, ctypes.POINTER(p)]),
        "forkprof_config_free": (None, [p]),
        "forkprof_config_tag": (st, [p, s, sz]),
        "forkprof_config_sample_type": (st, [p, s, sz, s, sz]),
        "forkprof_config_period_ms": (st, [p, u64]),
        "forkprof_config_output_dir": (st, [p, s, sz, u32]),
        "forkprof_config_child_policy": (st, [p, u32]),
        "forkprof_start": (st, [p, ctypes.POINTER(p)]),
        "forkprof_record": (
            st,
            [p, ctypes.POINTER(Frame), sz, ctypes.POINTER(i64), sz, ctypes.POINTER(Label), sz, i64],
        ),
        "forkprof_intern": (st, [s, sz, ctypes.POINTER(u32)]),
        "forkprof_flush": (st, [p]),
        "forkprof_flush_sync": (st, [p, u64]),
        "forkprof_stop": (st, [p, u64, ctypes.POINTER(Stats)]),
        "forkprof_stats_get": (st, [p, ctypes.POINTER(Stats)]),
        "forkprof_is_running": (ctypes.c_int32, [p]),
        "forkprof_free": (None, [p]),
        "forkprof_before_fork": (st, []),
        "forkprof_after_fork_parent": (st, []),
        "forkprof_after_fork_child": (st, []),
        "forkprof_thread_cpu_time_ns": (i64, []),
        "forkprof_monotonic_ns": (u64, []),
        "forkprof_last_error": (s, []),
        "forkprof_status_name": (s, [ctypes.c_int32]),
        "forkprof_version": (s, []),
        "forkprof_config_exporter_url": (st, [p, s, sz]),
        "forkprof_config_upload_timeouts": (st, [p, u64, u64]),
        "forkprof_config_upload_retries": (st, [p, ctypes.c_int32, u64, u64, u64]),
        "forkprof_set_log_callback": (st, [u32, LOG_FN, p]),
        "forkprof_set_log_rate_limit_ms": (st, [u64]),
        "forkprof_set_log_delivery": (st, [u32]),
        "forkprof_drain_log": (sz, []),
        "forkprof_abi_version": (u32, []),
        "forkprof_abi_check": (st, [u32]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    # Before any other call: a library older than these declarations is refused here.
    if lib.forkprof_abi_check(ABI_VERSION) != OK:
        raise SystemExit(f"{path}: {lib.forkprof_last_error().decode()}")
    return lib


LIB = load_library()


class ForkprofError(Exception):
    def __init__(self, call, status):
        self.status = status
        name = LIB.forkprof_status_name(status).decode()
        message = LIB.forkprof_last_error().decode()
        super().__init__(f"{call}: {name}: {message}")


def check(call, status):
    if status != OK:
        raise ForkprofError(call, status)


def buf(text):
    b = text.encode() if isinstance(text, str) else text
    return b, len(b)


class Profiler:
    """One started profiler; `record()` samples the caller's Python stack."""

    def __init__(self, out_dir, sample_types=(("wall-time", "nanoseconds"), ("samples", "count"))):
        cfg = ctypes.c_void_p()
        check("config_new", LIB.forkprof_config_new(*buf(SERVICE), ctypes.byref(cfg)))
        try:
            for name, unit in sample_types:
                check("sample_type", LIB.forkprof_config_sample_type(cfg, *buf(name), *buf(unit)))
            check("tag", LIB.forkprof_config_tag(cfg, *buf("runtime:cpython")))
            check("period", LIB.forkprof_config_period_ms(cfg, 60_000))
            check("output_dir", LIB.forkprof_config_output_dir(cfg, *buf(out_dir), COMPRESSION_GZIP))
            check("child_policy", LIB.forkprof_config_child_policy(cfg, CHILD_RESTART))
            handle = ctypes.c_void_p()
            check("start", LIB.forkprof_start(cfg, ctypes.byref(handle)))
        finally:
            LIB.forkprof_config_free(cfg)
        self.handle = handle
        self.n_values = len(sample_types)

    def record(self, values, labels=(), skip=1):
        """Records the caller's stack (leaf first), walked with sys._getframe()."""
        names = []  # keeps the bytes alive for the call
        frames = []
        f = sys._getframe(skip)
        while f is not None:
            code = f.f_code
            fn = getattr(code, "co_qualname", code.co_name).encode()
            file = code.co_filename.encode()
            names.extend((fn, file))
            frames.append(text_frame(fn, len(fn), file, len(file), f.f_lineno or 0))
            f = f.f_back
        return self.record_frames(frames, values, labels)

    def record_frames(self, frames, values, labels=()):
        frame_arr = (Frame * len(frames))(*frames)
        value_arr = (ctypes.c_int64 * len(values))(*values)
        label_arr = (Label * len(labels))(*labels)
        return LIB.forkprof_record(
            self.handle, frame_arr, len(frames), value_arr, len(values), label_arr, len(labels), 0
        )

    def flush_sync(self, timeout_ms=10_000):
        check("flush_sync", LIB.forkprof_flush_sync(self.handle, timeout_ms))

    def stats(self):
        g = GuardedStats()
        check("stats_get", LIB.forkprof_stats_get(self.handle, ctypes.byref(g.stats)))
        return g.checked("forkprof_stats_get")

    def stop(self, timeout_ms=10_000):
        g = GuardedStats()
        check("stop", LIB.forkprof_stop(self.handle, timeout_ms, ctypes.byref(g.stats)))
        return g.checked("forkprof_stop")

    def free(self):
        LIB.forkprof_free(self.handle)
        self.handle = None


def thread_label(name):
    key, value = b"thread name", name.encode()
    return Label(key=key, key_len=len(key), kind=LABEL_STR, str=value, str_len=len(value))


# ---------------------------------------------------------------------------------------------
# Profiles and children.


def pprof_raw(path):
    go = shutil.which("go")
    if go is None:
        raise AssertionError("`go` is not installed: `go tool pprof -raw` checks every profile")
    r = subprocess.run(
        [go, "tool", "pprof", "-raw", path], capture_output=True, text=True, timeout=PPROF_TIMEOUT_S
    )
    assert r.returncode == 0, f"go tool pprof -raw {path} exited {r.returncode}: {r.stderr}"
    return r.stdout


def profiles_of(out_dir, pid):
    return sorted(glob.glob(os.path.join(out_dir, f"{SERVICE}-{pid}-*.pprof.gz")))


def profile_text(out_dir, pid):
    files = profiles_of(out_dir, pid)
    assert files, f"no profile for pid {pid} in {out_dir}: {sorted(os.listdir(out_dir))}"
    return "\n".join(pprof_raw(f) for f in files)


def wait_child(pid, what):
    """Waits for a forked child under CHILD_TIMEOUT_S; a hang kills it and fails."""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"{what} (pid {pid}) hung: killed after {CHILD_TIMEOUT_S} s")
            if pidfd is not None:
                select.select([pidfd], [], [], left)  # readable when the child exits
            else:
                time.sleep(min(0.01, left))  # no pidfd: poll, bounded by the deadline
    finally:
        if pidfd is not None:
            os.close(pidfd)
    code = os.waitstatus_to_exitcode(status)
    if code == -signal.SIGALRM:
        raise AssertionError(f"{what} (pid {pid}) hung: its {CHILD_TIMEOUT_S} s alarm fired")
    assert code == 0, f"{what} (pid {pid}) exited with {code}"


def in_child(body):
    """Runs `body` in a forked child's process and _exits with 0 on success, 1 on failure."""
    code = 1
    try:
        signal.alarm(CHILD_TIMEOUT_S)  # a hung child dies with SIGALRM, seen by the parent
        body()
        code = 0
    except BaseException:  # noqa: B036 - report anything, then leave without cleanup
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# Named functions whose names must show up in the right process's profile only.


def parent_before_fork(prof, n):
    for _ in range(n):
        check("record", prof.record([1000, 1], [thread_label("main")]))


def parent_after_fork(prof, n):
    for _ in range(n):
        check("record", prof.record([1000, 1], [thread_label("main")]))


def os_fork_child_work(prof, n):
    for _ in range(n):
        check("record", prof.record([2000, 1], [thread_label("child")]))


def mp_child_work(prof_handle, n, hooks_log=None):
    prof = Profiler.__new__(Profiler)  # the parent's handle, inherited through fork
    prof.handle = ctypes.c_void_p(prof_handle)
    prof.n_values = 2
    signal.alarm(CHILD_TIMEOUT_S)
    for _ in range(n):
        check("record", prof.record([3000, 1], [thread_label("mp-child")]))
    child_finish(prof, n)


def child_finish(prof, n):
    """Flush, stop, and check the child's own counters."""
    prof.flush_sync()
    stats = prof.stop()
    assert stats.pid == os.getpid(), (stats.pid, os.getpid())
    assert stats.samples_recorded == n, f"child recorded {stats.samples_recorded}, expected {n}"
    assert stats.profiles_written >= 1, "child wrote no profile"
    prof.free()


# ---------------------------------------------------------------------------------------------
# Scenarios, each run in its own interpreter.


def scenario_record(out_dir):
    """Recording from Python, and errors reported as codes plus messages."""
    prof = Profiler(out_dir)
    version = LIB.forkprof_version().decode()
    assert version.count(".") == 2, version
    cpu = LIB.forkprof_thread_cpu_time_ns()
    assert cpu > 0, f"thread cpu clock: {cpu}: {LIB.forkprof_last_error().decode()}"
    assert LIB.forkprof_monotonic_ns() > 0

    def python_leaf_function():
        for _ in range(20):
            check("record", prof.record([5, 1], [thread_label("main")]))

    python_leaf_function()

    # A function name with invalid UTF-8 is accepted and replaced in the profile.
    bad = b"broken_\xff_name"
    file = b"native.c"
    check("record", prof.record_frames([text_frame(bad, len(bad), file, len(file), 3)], [1, 1]))

    # Errors: the wrong number of values, NULL pointers with a length, unknown constants.
    status = prof.record([1], [])
    assert status == ERR_SAMPLE, status
    assert "values" in LIB.forkprof_last_error().decode()
    status = LIB.forkprof_record(prof.handle, None, 3, None, 0, None, 0, 0)
    assert status == ERR_NULL, status
    assert "frames" in LIB.forkprof_last_error().decode()
    status = LIB.forkprof_record(None, None, 0, None, 0, None, 0, 0)
    assert status == ERR_NULL, status
    frame = text_frame(None, 5, None, 0, 1)
    status = prof.record_frames([frame], [1, 1])
    assert status == ERR_NULL, status
    huge = text_frame(b"x", 2**63, None, 0, 1)
    assert prof.record_frames([huge], [1, 1]) == ERR_INVALID
    cfg = ctypes.c_void_p()
    check("config_new", LIB.forkprof_config_new(*buf("svc"), ctypes.byref(cfg)))
    assert LIB.forkprof_config_output_dir(cfg, *buf(out_dir), 99) == ERR_INVALID
    assert "compression" in LIB.forkprof_last_error().decode()
    started = ctypes.c_void_p()
    assert LIB.forkprof_start(cfg, ctypes.byref(started)) == ERR_CONFIG
    assert "sample_types" in LIB.forkprof_last_error().decode()
    assert not started.value, "a failed start must leave NULL"
    LIB.forkprof_config_free(cfg)
    # Fork hooks out of order.
    assert LIB.forkprof_after_fork_parent() == ERR_FORK_ORDER

    # Size tags: an unset size, and a struct from a newer binding, are refused untouched.
    unset = Stats()
    unset.size = 0
    assert LIB.forkprof_stats_get(prof.handle, ctypes.byref(unset)) == ERR_INVALID
    assert "sizeof(forkprof_stats)" in LIB.forkprof_last_error().decode()
    assert (unset.pid, unset.samples_recorded) == (0, 0)

    class NewerStats(Tagged):
        # Far newer than any library this test meets (a 1.1 library's stats may well be
        # 8 bytes longer than the 1.0 declaration above, and then accepted).
        _fields_ = Stats._fields_ + [("added_later", ctypes.c_uint64 * 512)]

    newer = NewerStats()
    newer.added_later[0] = 7
    status = LIB.forkprof_stats_get(prof.handle, ctypes.cast(ctypes.pointer(newer), ctypes.POINTER(Stats)))
    assert status == ERR_ABI, status
    assert "newer forkprof.h" in LIB.forkprof_last_error().decode()
    assert (newer.pid, newer.added_later[0]) == (0, 7)
    # The version query, and a binding declared from a newer minor refused cleanly.
    assert LIB.forkprof_abi_version() >> 16 == ABI_VERSION >> 16
    assert LIB.forkprof_abi_check(LIB.forkprof_abi_version() + 1) == ERR_ABI

    prof.flush_sync()
    stats = prof.stop()
    assert stats.samples_recorded == 21, stats.samples_recorded
    assert LIB.forkprof_stop(prof.handle, 1000, None) == ERR_NOT_RUNNING
    assert prof.record([1, 1]) == OK  # after stop: a counted no-op
    assert prof.stats().samples_ignored == 1
    prof.free()

    text = profile_text(out_dir, os.getpid())
    assert "python_leaf_function" in text, text
    assert "scenario_record" in text and "test_ctypes.py" in text, text
    assert "broken_\ufffd_name" in text, text


def check_family(out_dir, parent_pid, children, child_function):
    """Every child wrote its own profile with its own work and none of the parent's
    pre-fork samples; the parent's profile has no child samples."""
    for pid in children:
        text = profile_text(out_dir, pid)
        assert child_function in text, f"child {pid}: {child_function} missing:\n{text}"
        assert "parent_before_fork" not in text, f"child {pid} exported the parent's samples"
    text = profile_text(out_dir, parent_pid)
    assert "parent_before_fork" in text and "parent_after_fork" in text, text
    assert child_function not in text, "the parent's profile holds child samples"


def run_os_fork(prof, out_dir, n_children=2, n=30):
    parent_before_fork(prof, 40)  # buffered, not flushed, at fork time
    children = []
    for _ in range(n_children):
        pid = os.fork()
        if pid == 0:
            in_child(lambda: (os_fork_child_work(prof, n), child_finish(prof, n)))
        children.append(pid)
    for pid in children:
        wait_child(pid, "os.fork child")
    return children


def run_multiprocessing(prof, n_children=2, n=25):
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=mp_child_work, args=(prof.handle.value, n), name=f"mp-{i}")
        for i in range(n_children)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(CHILD_TIMEOUT_S)
        if p.is_alive():
            p.kill()
            p.join()
            raise AssertionError(f"multiprocessing child {p.pid} hung: killed after {CHILD_TIMEOUT_S} s")
        if p.exitcode == -signal.SIGALRM:
            raise AssertionError(f"multiprocessing child {p.pid} hung: its {CHILD_TIMEOUT_S} s alarm fired")
        assert p.exitcode == 0, f"multiprocessing child {p.pid} exited with {p.exitcode}"
    return [p.pid for p in procs]


def scenario_os_fork(out_dir):
    """Plain os.fork(): the pthread_atfork handlers are all it takes on Linux."""
    prof = Profiler(out_dir)
    children = run_os_fork(prof, out_dir)
    parent_after_fork(prof, 10)
    stats = prof.stop()
    assert stats.samples_recorded == 50, stats.samples_recorded
    prof.free()
    check_family(out_dir, os.getpid(), children, "os_fork_child_work")


def scenario_multiprocessing(out_dir):
    """multiprocessing with the "fork" start method."""
    prof = Profiler(out_dir)
    parent_before_fork(prof, 40)
    children = run_multiprocessing(prof)
    parent_after_fork(prof, 10)
    stats = prof.stop()
    assert stats.samples_recorded == 50, stats.samples_recorded
    prof.free()
    check_family(out_dir, os.getpid(), children, "mp_child_work")


HOOK_ERRORS = []


def hook(name, fn):
    """os.register_at_fork ignores exceptions (it only prints them): keep failures to assert."""

    def run():
        status = fn()
        if status != OK:
            HOOK_ERRORS.append(f"{name}: {ForkprofError(name, status)} in pid {os.getpid()}")

    return run


def scenario_register_at_fork(out_dir):
    """The macOS way: the host's own fork entry point calls the interception hooks. On Linux
    the atfork handlers run as well; both together must still be correct."""
    os.register_at_fork(
        before=hook("before_fork", LIB.forkprof_before_fork),
        after_in_parent=hook("after_fork_parent", LIB.forkprof_after_fork_parent),
        after_in_child=hook("after_fork_child", LIB.forkprof_after_fork_child),
    )
    prof = Profiler(out_dir)

    def eager_child():
        # after_fork_child restarted the profiler already, before any record.
        assert not HOOK_ERRORS, HOOK_ERRORS
        assert LIB.forkprof_is_running(prof.handle) == 1
        assert prof.stats().pid == os.getpid()
        os_fork_child_work(prof, 30)
        child_finish(prof, 30)

    parent_before_fork(prof, 40)
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            in_child(eager_child)
        children.append(pid)
    for pid in children:
        wait_child(pid, "os.fork child (register_at_fork hooks)")
    mp_children = run_multiprocessing(prof)
    assert not HOOK_ERRORS, HOOK_ERRORS
    parent_after_fork(prof, 10)
    stats = prof.stop()
    assert stats.samples_recorded == 50, stats.samples_recorded
    prof.free()
    check_family(out_dir, os.getpid(), children, "os_fork_child_work")
    check_family(out_dir, os.getpid(), mp_children, "mp_child_work")


def scenario_log_callback(out_dir):
    """forkprof's messages into Python's own `logging`, through a ctypes callback, across a
    fork that lands while another thread is inside the logging handler (holding its lock).
    The callback only ever runs on the Python thread that called into forkprof; CPython's
    logging re-initialises its locks in the child, and the child then logs its own failure."""
    import logging
    import threading

    records = []  # (pid, thread name, message)
    entered = threading.Event()
    release = threading.Event()
    block_once = [True]

    class Handler(logging.Handler):
        def emit(self, record):  # runs with the handler's lock held
            records.append((os.getpid(), threading.current_thread().name, record.getMessage()))
            if block_once[0]:
                block_once[0] = False
                entered.set()
                release.wait(CHILD_TIMEOUT_S)

    log = logging.getLogger("forkprof")
    log.addHandler(Handler())
    log.setLevel(logging.INFO)
    levels = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG}

    @LOG_FN
    def on_message(_user, level, kind, message, length):
        log.log(levels.get(level, logging.DEBUG), "%s", message[:length].decode())

    check("set_log_callback", LIB.forkprof_set_log_callback(LOG_INFO, on_message, None))
    check("rate_limit", LIB.forkprof_set_log_rate_limit_ms(0))
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: every upload is refused

    cfg = ctypes.c_void_p()
    check("config_new", LIB.forkprof_config_new(*buf(SERVICE), ctypes.byref(cfg)))
    check("sample_type", LIB.forkprof_config_sample_type(cfg, *buf("samples"), *buf("count")))
    check("url", LIB.forkprof_config_exporter_url(cfg, *buf(f"http://127.0.0.1:{port}")))
    check("timeouts", LIB.forkprof_config_upload_timeouts(cfg, 500, 1000))
    check("retries", LIB.forkprof_config_upload_retries(cfg, 0, 5000, 0, 0))
    handle = ctypes.c_void_p()
    check("start", LIB.forkprof_start(cfg, ctypes.byref(handle)))
    LIB.forkprof_config_free(cfg)
    prof = Profiler.__new__(Profiler)
    prof.handle, prof.n_values = handle, 1

    def fail_one():
        check("record", prof.record([1]))
        prof.flush_sync()

    # Thread A's flush_sync delivers the first failure and blocks inside the handler.
    a = threading.Thread(target=fail_one, name="host-thread-A")
    a.start()
    assert entered.wait(CHILD_TIMEOUT_S), "A never entered the logging handler"

    pid = os.fork()
    if pid == 0:

        def child():
            del records[:]
            assert LIB.forkprof_drain_log() == 0, "the child delivered a parent's message"
            fail_one()
            mine = [r for r in records if "export failed" in r[2]]
            assert len(mine) == 1, records
            assert mine[0][0] == os.getpid() and mine[0][1] == "MainThread", mine
            assert f"of pid {os.getpid()} " in mine[0][2], mine
            print("child:", mine[0][2])

        in_child(child)
    wait_child(pid, "child forked while a thread was inside the logging handler")
    release.set()
    a.join(CHILD_TIMEOUT_S)
    assert not a.is_alive()
    fail_one()
    failures = [r for r in records if "export failed" in r[2]]
    assert len(failures) == 2, records
    assert failures[0][1] == "host-thread-A" and failures[1][1] == "MainThread", failures
    for r in records:
        assert r[0] == os.getpid() and not r[1].startswith("forkprof"), r
    print("parent:", failures[0][2])
    prof.stop()
    prof.free()
    check("unset_log_callback", LIB.forkprof_set_log_callback(LOG_WARN, LOG_FN(), None))


SCENARIOS = {
    "record": scenario_record,
    "os_fork": scenario_os_fork,
    "multiprocessing": scenario_multiprocessing,
    "register_at_fork": scenario_register_at_fork,
    "log_callback": scenario_log_callback,
}


def run_scenario(name):
    # A hang prints every thread's Python stack and exits, before the driver's kill.
    faulthandler.dump_traceback_later(SCENARIO_TIMEOUT_S - 10, exit=True)
    out_dir = tempfile.mkdtemp(prefix=f"forkprof-py-{name}-")
    try:
        SCENARIOS[name](out_dir)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    print(f"scenario {name}: ok")


class CtypesTest(unittest.TestCase):
    def run_in_subprocess(self, name):
        try:
            r = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--scenario", name],
                capture_output=True,
                text=True,
                timeout=SCENARIO_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as e:
            self.fail(f"scenario {name} hung: killed after {SCENARIO_TIMEOUT_S} s\n{e.stdout}\n{e.stderr}")
        self.assertEqual(
            r.returncode, 0, f"scenario {name} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        )


for _name in SCENARIOS:
    setattr(
        CtypesTest,
        f"test_{_name}",
        lambda self, n=_name: self.run_in_subprocess(n),
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--scenario":
        run_scenario(sys.argv[2])
    else:
        unittest.main(verbosity=2)
