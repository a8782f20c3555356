#!/usr/bin/env bash
# forkprof's C ABI end to end: header freshness, the soname, the ABI against the baseline of
# its major version (abidiff, ffi/abi/), a program built against the baseline header run
# against this library, the C examples (shared and static), the pre-fork server's per-worker
# profiles read by `go tool pprof`, valgrind's leak check of the master, and the cdylib driven
# from CPython with ctypes across fork.
#
# Usage: ci/test-ffi.sh            (from anywhere; needs cargo, a C compiler, go, valgrind,
#                                   python3, abigail-tools, git history; installs cbindgen
#                                   with cargo if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt_install golang-go valgrind gcc g++ python3 abigail-tools binutils git
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

MAJOR=$(sed -n 's/^#define FORKPROF_ABI_VERSION_MAJOR \([0-9][0-9]*\)$/\1/p' ffi/include/forkprof.h)
[ -n "$MAJOR" ] || fail "no FORKPROF_ABI_VERSION_MAJOR in ffi/include/forkprof.h"
# Installed the way ffi/README.md says: the file under its soname, and the unversioned name
# the linker looks for (-lforkprof) pointing at it. Programs below link against this.
PREFIX="$WORK/prefix"
install_lib() {
  mkdir -p "$PREFIX/lib" "$PREFIX/include"
  install -m 0755 "$LIBDIR/libforkprof.so" "$PREFIX/lib/libforkprof.so.$MAJOR"
  ln -sf "libforkprof.so.$MAJOR" "$PREFIX/lib/libforkprof.so"
  install -m 0644 ffi/include/forkprof.h "$PREFIX/include/forkprof.h"
}
step "install into $PREFIX" install_lib
SHARED=(-L"$PREFIX/lib" -lforkprof -Wl,-rpath,"$PREFIX/lib")

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

soname() {
  local got
  got=$(readelf -d "$LIBDIR/libforkprof.so" | sed -n 's/.*Library soname: \[\(.*\)\]$/\1/p')
  echo "  soname: $got"
  [ "$got" = "libforkprof.so.$MAJOR" ] ||
    fail "the soname is '$got', not libforkprof.so.$MAJOR (FORKPROF_ABI_VERSION_MAJOR): see ffi/build.rs"
}
step "soname carries the ABI major" soname

# The ABI check. Each committed revision of ffi/abi/v$MAJOR/ (and the working copy) is a
# promise: this library and header must still keep it. Additions pass (new calls, enum values,
# fields appended to size-tagged structs: ffi/abi/compatible.abignore); anything else fails,
# unless FORKPROF_ABI_VERSION_MAJOR moved and the new major's baseline was recorded in the same
# commit (ffi/abi/update-baseline.sh), since a new directory has no earlier promises.
ABIDIFF=(abidiff --no-added-syms --suppressions ffi/abi/compatible.abignore)

# abidiff, passing only when nothing was removed or changed: its exit status is 0 for no
# change and 4 for any change, additions included (added types cannot be filtered out), so
# a 4 is read from its summary lines.
abidiff_compatible() {
  local rc=0
  "${ABIDIFF[@]}" "$@" >"$WORK/abidiff.out" 2>&1 || rc=$?
  sed 's/^/  /' "$WORK/abidiff.out"
  case $rc in
    0) return 0 ;;
    4)
      grep 'summary:' "$WORK/abidiff.out" >"$WORK/abidiff.summary" || return 1
      ! grep -Eqv ': 0 [Rr]emoved, (0 [Cc]hanged( \([0-9]+ filtered out\))?, )?[0-9]+ [Aa]dded' \
        "$WORK/abidiff.summary"
      ;;
    *) return 1 ;;
  esac
}
BREAK_HELP="undo the change, or move FORKPROF_ABI_VERSION_MAJOR (ffi/src/version.rs) to $((MAJOR + 1)) and record ffi/abi/v$((MAJOR + 1)) with ffi/abi/update-baseline.sh in the same commit (ffi/README.md, Compatibility)"

# The baseline revisions to hold the build to: "<label> <dir>", one per line.
baseline_revisions() {
  local base=ffi/abi/v$MAJOR rev
  echo "working-copy $base"
  for rev in $(git log --format=%h -- "$base"); do
    mkdir -p "$WORK/baseline-$rev/$base"
    git show "$rev:$base/libforkprof.abi" >"$WORK/baseline-$rev/$base/libforkprof.abi"
    git show "$rev:$base/forkprof.h" >"$WORK/baseline-$rev/$base/forkprof.h"
    echo "$rev $WORK/baseline-$rev/$base"
  done
}

# The header's view through C's debug info: every type it declares, as a C compiler lays it
# out (the library's own debug info is Rust's).
header_probe() {
  printf '#include <forkprof.h>\nint forkprof_header_probe;\n' |
    "$CC" -x c -g -fno-eliminate-unused-debug-types -shared -fPIC -I"$1" -o "$2" -
}

# Every `#define FORKPROF_*` of the baseline header keeps its value (only the minor may grow).
header_constants() {
  python3 - "$1" ffi/include/forkprof.h <<'PY'
import re, sys
def defines(path):
    return dict(re.findall(r"^#define (FORKPROF_\w+) (.+)$", open(path).read(), re.M))
old, new = defines(sys.argv[1]), defines(sys.argv[2])
bad = []
for name, value in old.items():
    if name == "FORKPROF_H":
        continue
    if name == "FORKPROF_ABI_VERSION_MINOR":
        if name not in new or int(new[name]) < int(value):
            bad.append(f"{name}: {value} -> {new.get(name, 'removed')} (may only grow)")
    elif new.get(name) != value:
        bad.append(f"{name}: {value} -> {new.get(name, 'removed')}")
for b in bad:
    print("  changed constant " + b)
sys.exit(1 if bad else 0)
PY
}

abi_check() {
  local base=ffi/abi/v$MAJOR
  [ -f "$base/libforkprof.abi" ] && [ -f "$base/forkprof.h" ] ||
    fail "FORKPROF_ABI_VERSION_MAJOR is $MAJOR but $base holds no baseline: a major version moves with its baseline, recorded by ffi/abi/update-baseline.sh in the same commit"
  local newest
  newest=$(find ffi/abi -maxdepth 1 -name 'v[0-9]*' -printf '%f\n' | sed 's/^v//' | sort -n | tail -1)
  [ "$newest" = "$MAJOR" ] ||
    fail "ffi/abi/v$newest is newer than FORKPROF_ABI_VERSION_MAJOR $MAJOR: the major version never moves back"
  [ "$(git rev-parse --is-shallow-repository)" = false ] ||
    fail "a shallow clone hides the earlier baselines: check out the full history (actions/checkout fetch-depth: 0)"
  header_probe ffi/include "$WORK/probe-current.so"
  local label dir failed=0 checked=0
  baseline_revisions >"$WORK/revisions"
  while read -r label dir; do
    checked=$((checked + 1))
    echo "--- against $dir ($label)"
    if ! abidiff_compatible "$dir/libforkprof.abi" "$LIBDIR/libforkprof.so"; then
      echo "  ^ the library breaks the ABI of $label"
      failed=1
    fi
    header_probe "$dir" "$WORK/probe-$label.so"
    if ! abidiff_compatible --non-reachable-types --headers-dir1 "$dir" --headers-dir2 ffi/include \
      "$WORK/probe-$label.so" "$WORK/probe-current.so"; then
      echo "  ^ ffi/include/forkprof.h breaks the types of $label's header"
      failed=1
    fi
    if ! header_constants "$dir/forkprof.h"; then
      echo "  ^ ffi/include/forkprof.h changes constants of $label's header"
      failed=1
    fi
  done <"$WORK/revisions"
  [ "$failed" = 0 ] || fail "incompatible ABI change within major $MAJOR: $BREAK_HELP"
  echo "  compatible with $checked revision(s) of $base"
}
step "ABI against the baseline (abidiff)" abi_check

old_caller() {
  # Built against the baseline header, run against this library (ffi/tests/old_caller.c
  # checks stats, labelled records, stop and a fork itself); then its profiles are read.
  local base=ffi/abi/v$MAJOR
  "$CC" -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -pedantic -I"$base" \
    ffi/tests/old_caller.c "${SHARED[@]}" -o "$WORK/old_caller"
  timeout 60 "$WORK/old_caller" "$WORK/old-caller" | tee "$WORK/old_caller.out"
  local who pid expect raw worker=0
  for who in parent child; do
    worker=$((worker + 1))
    pid=$(sed -n "s/^$who pid \([0-9]*\) .*/\1/p" "$WORK/old_caller.out")
    [ -n "$pid" ] || fail "old_caller: the $who did not finish"
    expect=old_caller_${who}_work
    raw=$(go tool pprof -raw "$WORK/old-caller"/old-caller-"$pid"-*.pprof.gz 2>"$WORK/pprof.err") || {
      cat "$WORK/pprof.err"
      fail "old_caller: go tool pprof could not read the $who's profile"
    }
    grep -q "$expect" <<<"$raw" || fail "old_caller: $expect missing from the $who's profile"
    grep -q "thread name:\\[$who\\]" <<<"$raw" && grep -q "worker:\\[$worker\\]" <<<"$raw" ||
      fail "old_caller: the $who's profile lost its labels (thread name $who, worker $worker)"
    [ "$(grep -c 'old_caller_.*_work' <<<"$raw")" = 1 ] ||
      fail "old_caller: the $who's profile holds another process's samples"
    echo "  $who pid $pid: $expect with its labels"
  done
}
step "old caller (baseline header) against this library" old_caller

quickstart() {
  # The READMEs' C snippets are exactly examples/quickstart.c.
  local readme
  for readme in ffi/README.md README.md; do
    python3 -c 'import re, sys; b = re.findall(r"```c\n(.*?)```", open(sys.argv[1]).read(), re.S); sys.stdout.write(b[0] if b else "")' \
      "$readme" > "$WORK/readme_snippet.c"
    diff -u ffi/examples/quickstart.c "$WORK/readme_snippet.c" ||
      fail "the C block in $readme differs from ffi/examples/quickstart.c"
  done
  "$CC" "${CFLAGS[@]}" ffi/examples/quickstart.c "${SHARED[@]}" -o "$WORK/quickstart"
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
  "$CC" "${CFLAGS[@]}" -g ffi/examples/prefork_server.c "${SHARED[@]}" -o "$WORK/prefork_server"
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
  "$CC" "${CFLAGS[@]}" ffi/examples/log_callback.c "${SHARED[@]}" -o "$WORK/log_callback"
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

trace_context() {
  # A span's labels appended with forkprof_trace_labels and an endpoint registered after the
  # samples: the written profile has both, and the untraced sample neither.
  "$CC" "${CFLAGS[@]}" ffi/tests/trace_context.c "${SHARED[@]}" -o "$WORK/trace_context"
  timeout 60 "$WORK/trace_context" "$WORK/trace" | tee "$WORK/trace_context.out"
  grep -q "recorded 3 wrote 1 endpoints_dropped 0" "$WORK/trace_context.out" || fail "trace_context: unexpected output"
  local raw
  raw=$(go tool pprof -raw "$WORK"/trace/trace-c-*.pprof.gz 2>"$WORK/pprof.err") || {
    cat "$WORK/pprof.err"
    fail "trace_context: go tool pprof could not read the profile"
  }
  python3 - "$raw" <<'PY' || fail "trace_context: the profile's trace labels are wrong"
import re, sys
samples = re.findall(r"^ +1000: (\d+) \n((?: {16}.*\n)+)", sys.argv[1] + "\n", re.M)
names = dict(re.findall(r"^ +(\d+): 0x0 M=\d+ (\w+) ", sys.argv[1], re.M))
by_fn = {names[loc]: " ".join(body.split()) for loc, body in samples}
print("  " + "\n  ".join(f"{k}: {v}" for k, v in sorted(by_fn.items())))
traced, other, untraced = by_fn["traced_handler"], by_fn["other_request"], by_fn["untraced_work"]
assert "span id:[11]" in traced and "local root span id:[10]" in traced, traced
assert "trace id high:[81985529216486895]" in traced and "trace id low:[-81985529216486896]" in traced, traced
assert "trace endpoint:[GET /users]" in traced, traced
assert "span id:[21]" in other and "trace endpoint" not in other, other
assert untraced == "thread name:[worker-1]", untraced
PY
}
step "C trace context (span labels, late endpoint)" trace_context

step "CPython ctypes across fork" env FORKPROF_LIB="$PREFIX/lib/libforkprof.so.$MAJOR" \
  timeout 400 python3 tests/python/test_ctypes.py

summary
