#!/usr/bin/env bash
# forkprof's C ABI end to end: header freshness, the C examples (shared and static), the
# pre-fork server's per-worker profiles read by `go tool pprof`, valgrind's leak check of the
# master, and the cdylib driven from CPython with ctypes across fork.
#
# Usage: ci/test-ffi.sh            (from anywhere; needs cargo, a C compiler, go, valgrind,
#                                   python3; installs cbindgen with cargo if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt_install golang-go valgrind gcc g++ python3
fi
command -v cbindgen >/dev/null 2>&1 || step "install cbindgen" cargo install cbindgen --locked

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
LIBDIR="$TARGET_DIR/debug"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/forkprof-ffi.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CC=${CC:-cc}
CXX=${CXX:-c++}
CFLAGS=(-std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -pedantic -Iffi/include)

fail() { echo "FAIL: $*" >&2; exit 1; }

step "build cdylib + staticlib" cargo build -p forkprof-ffi --locked

header_fresh() {
  (cd ffi && cbindgen -q --config cbindgen.toml --output "$WORK/forkprof.h")
  diff -u ffi/include/forkprof.h "$WORK/forkprof.h" ||
    fail "ffi/include/forkprof.h is stale: regenerate it with (cd ffi && cbindgen --config cbindgen.toml --output include/forkprof.h)"
}
step "header is fresh" header_fresh

header_cxx() {
  # cpp_compat: the header must also be usable from C++.
  echo '#include <forkprof.h>' | "$CXX" -x c++ -std=c++11 -Wall -Werror -Iffi/include -fsyntax-only -
}
step "header compiles as C++" header_cxx

quickstart() {
  # The READMEs' C snippets are exactly examples/quickstart.c.
  local readme
  for readme in ffi/README.md README.md; do
    python3 -c 'import re, sys; b = re.findall(r"```c\n(.*?)```", open(sys.argv[1]).read(), re.S); sys.stdout.write(b[0] if b else "")' \
      "$readme" > "$WORK/readme_snippet.c"
    diff -u ffi/examples/quickstart.c "$WORK/readme_snippet.c" ||
      fail "the C block in $readme differs from ffi/examples/quickstart.c"
  done
  "$CC" "${CFLAGS[@]}" ffi/examples/quickstart.c -L"$LIBDIR" -lforkprof -Wl,-rpath,"$LIBDIR" -o "$WORK/quickstart"
  "$CC" "${CFLAGS[@]}" ffi/examples/quickstart.c "$LIBDIR/libforkprof.a" -lpthread -ldl -lm -o "$WORK/quickstart_static"
  for exe in quickstart quickstart_static; do
    mkdir -p "$WORK/run-$exe" && (cd "$WORK/run-$exe" && timeout 60 "../$exe") | tee "$WORK/$exe.out"
    grep -q "recorded 1 samples, wrote 1 profiles" "$WORK/$exe.out" || fail "$exe: unexpected output"
    local f
    f=$(ls "$WORK/run-$exe"/profiles/my-service-*.pprof.gz)
    go tool pprof -raw "$f" 2>/dev/null | grep -q handle_request || fail "$exe: handle_request missing from $f"
  done
}
step "quick start (shared + static)" quickstart

# Checks the pre-fork server's profiles: each worker's own file, read by go tool pprof,
# holds its function and none of the master's pre-fork samples.
check_prefork_profiles() {
  local out=$1 dir=$2 workers=0
  while read -r _ i _ pid _ fn; do
    workers=$((workers + 1))
    local files=("$dir"/prefork-"$pid"-*.pprof.gz)
    [ -e "${files[0]}" ] || fail "worker $i (pid $pid): no profile in $dir"
    local raw
    raw=$(go tool pprof -raw "${files[@]}" 2>"$WORK/pprof.err") || {
      cat "$WORK/pprof.err"
      fail "go tool pprof -raw ${files[*]} failed"
    }
    grep -q "$fn" <<<"$raw" || fail "worker $i (pid $pid): $fn missing from its profile"
    grep -q master_accept_loop <<<"$raw" && fail "worker $i (pid $pid) exported the master's samples"
    echo "  worker $i pid $pid: ${#files[@]} profile(s), $fn present"
  done < <(grep '^worker ' "$out")
  [ "$workers" = 3 ] || fail "expected 3 workers, saw $workers"
  local master
  master=$(sed -n 's/^master pid \([0-9]*\) .*/\1/p' "$out")
  go tool pprof -raw "$dir"/prefork-"$master"-*.pprof.gz 2>/dev/null | grep -q master_accept_loop ||
    fail "master_accept_loop missing from the master's profile"
}

prefork() {
  "$CC" "${CFLAGS[@]}" -g ffi/examples/prefork_server.c -L"$LIBDIR" -lforkprof -Wl,-rpath,"$LIBDIR" -o "$WORK/prefork_server"
  timeout 60 "$WORK/prefork_server" "$WORK/prefork" | tee "$WORK/prefork.out"
  check_prefork_profiles "$WORK/prefork.out" "$WORK/prefork"
}
step "pre-fork server (3 workers, plain fork)" prefork

prefork_valgrind() {
  # The master's leak check after stop. Workers exit with valgrind's error code 1 (their
  # abandoned copy of the master's profiler thread state is "definitely lost" in them, by
  # design), so the master is told to accept 1 from them; their own failures exit 3.
  timeout 300 valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 \
    --child-silent-after-fork=yes "$WORK/prefork_server" "$WORK/prefork-vg" 1 \
    >"$WORK/prefork-vg.out" 2>"$WORK/valgrind.log" || {
      cat "$WORK/prefork-vg.out" "$WORK/valgrind.log"
      fail "valgrind: the master leaked or failed"
    }
  cat "$WORK/prefork-vg.out"
  grep -E "definitely lost|ERROR SUMMARY" "$WORK/valgrind.log"
  check_prefork_profiles "$WORK/prefork-vg.out" "$WORK/prefork-vg"
}
step "pre-fork server under valgrind" prefork_valgrind

prefork_musl() {
  # The staticlib on musl, linked into a fully static C program with musl-gcc. Rust's musl
  # staticlib leaves unwinding to the linker: take the libunwind Rust ships for musl, not
  # the host gcc's (glibc-only) libgcc_eh.
  # Only the staticlib: a cdylib is not supported on the static-CRT musl target.
  CC_x86_64_unknown_linux_musl=musl-gcc cargo rustc -p forkprof-ffi --lib --crate-type staticlib \
    --locked --target x86_64-unknown-linux-musl
  local unwind
  unwind="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-musl/lib/self-contained/libunwind.a"
  musl-gcc "${CFLAGS[@]}" ffi/examples/prefork_server.c \
    "$TARGET_DIR/x86_64-unknown-linux-musl/debug/libforkprof.a" "$unwind" \
    -static -nodefaultlibs -lc -lgcc -o "$WORK/prefork_server_musl"
  timeout 60 "$WORK/prefork_server_musl" "$WORK/prefork-musl" | tee "$WORK/prefork-musl.out"
  check_prefork_profiles "$WORK/prefork-musl.out" "$WORK/prefork-musl"
}
if command -v musl-gcc >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  step "pre-fork server, static musl" prefork_musl
else
  echo "=== skipping the musl run: needs musl-gcc (musl-tools) and rustup target x86_64-unknown-linux-musl"
fi

log_callback() {
  # The log callback across a fork: each process logs its own failed upload, on its own
  # thread, and the child none of the parent's.
  "$CC" "${CFLAGS[@]}" ffi/examples/log_callback.c -L"$LIBDIR" -lforkprof -Wl,-rpath,"$LIBDIR" -o "$WORK/log_callback"
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  timeout 60 "$WORK/log_callback" "$port" | tee "$WORK/log_callback.out"
  local master child
  master=$(sed -n 's/^master \([0-9]*\) ok$/\1/p' "$WORK/log_callback.out")
  child=$(sed -n 's/^child \([0-9]*\) ok$/\1/p' "$WORK/log_callback.out")
  [ -n "$master" ] && [ -n "$child" ] || fail "log_callback: a process did not finish"
  grep -q "^log $master WARN 1: forkprof: export failed: POST http://127.0.0.1:$port/profiling/v1/input: .*profile 0 of pid $master" "$WORK/log_callback.out" ||
    fail "log_callback: the master's export failure was not logged"
  grep -q "^log $child WARN 1: forkprof: export failed: .*of pid $child " "$WORK/log_callback.out" ||
    fail "log_callback: the child's export failure was not logged"
  [ "$(grep -c "^log " "$WORK/log_callback.out")" = 2 ] || fail "log_callback: expected exactly 2 messages"
}
step "C log callback across fork" log_callback

step "CPython ctypes across fork" env FORKPROF_LIB="$LIBDIR/libforkprof.so" \
  timeout 400 python3 tests/python/test_ctypes.py

summary
