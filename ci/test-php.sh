#!/usr/bin/env bash
# forkprof's PHP extension (php/, crate forkprof-php) end to end on Debian's PHP 8.2: lint and
# unit tests, then the extension loaded into the real `php` and `php-fpm`, its profiles read
# back by `go tool pprof`:
#   settings   bad values warn, name the setting and leave PHP running; --ri shows the state,
#              every directive with its default; ini_get() returns the value in effect (INI,
#              else the DD_* environment); sample types named as Datadog's PHP profiler does
#   names      Class::method, {closure:LINE}, {main}, {include}, the depth cap's "[N frames omitted]";
#              the `trace endpoint` label (the script's path)
#   allocations  upscaled alloc-size per function within 10% of what it allocated; off: no hook
#   exceptions exact throw counts per class and function at distance 1, within 10% at 10; off
#   timeline   every GC run and compiled file is an event; every sample has a timestamp; off
#   composer   Debian's composer dump-autoload, every type on: identical output and autoloader,
#              Composer\ classes in its profile
#   blocking   usleep and file_get_contents are sampled while they block
#   trace      forkprof_set_trace_context(): the span's labels on the samples taken under it,
#              none after it is cleared, and the endpoint registered after them
#   fork       pcntl_fork: parent, 4 children, a nested and an immediate grandchild each
#              profile themselves, into their own files, with only their own samples
#   ffi fork   fork() through FFI (no wrapper sees it), two levels, long and short work: each
#              process profiles itself, into its own files, with only its own samples
#   fork loop  300 short-lived children forked one after another while sampling at 1 ms
#   fpm        a static pool of 4 workers, 500 requests: every worker's profile holds its
#              own requests; SIGUSR2 reload and SIGQUIT stop finish within bounds
#   short      one worker, 100 requests of 4 ms spaced by idle time: ticks and samples match
#              its time inside requests / period
#   pools      two php-fpm pools, each with its own service and period (php_admin_value,
#              php_value): each worker's files, ini_get() and endpoint label
#   swoole     Swoole (built by ../shared/swoole/build.sh, cached) forks from C: SWOOLE_PROCESS
#              and SWOOLE_BASE, coroutines off and on, 4 workers recycled every 40 requests,
#              2 task workers, a reload half-way through 1050 requests, SIGTERM: every worker
#              and task worker pid that served work wrote a profile with its own handler and
#              nobody else's; the master's holds what it ran before start()
#   otlp       forkprof.endpoint=otlp+http://..., OTEL_EXPORTER_OTLP_ENDPOINT and
#              OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT: each request, sent to a local receiver,
#              decodes with the reference bindings with the script's function and service.name;
#              an agent upload names the library forkprof-php and the family php
#   stalled    php-fpm and fork.php with forkprof.endpoint on a server that accepts and never answers,
#              and 300 forks while uploads to it are in flight:
#              timings printed next to the runs without the extension (measured, not asserted)
#
# Usage: ci/test-php.sh   (as root it installs php8.2-dev php8.2-cli php8.2-fpm libfcgi-bin
#                          libclang-dev golang-go g++ make composer valgrind with apt)
#        FORKPROF_PHP_PROFILE=release ci/test-php.sh   to test the release build
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt_install php8.2-dev php8.2-cli php8.2-fpm libfcgi-bin libclang-dev golang-go g++ make composer valgrind
fi
for tool in php-config php php-fpm8.2 cgi-fcgi go composer valgrind; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool is missing (see the packages above)" >&2; exit 1; }
done

PROFILE=${FORKPROF_PHP_PROFILE:-debug}
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | php -n -r 'echo json_decode(stream_get_contents(STDIN), true)["target_directory"];')
SO="$TARGET_DIR/$PROFILE/libforkprof_php.so"
TESTS=$PWD/php/tests
WORK=$(mktemp -d "${TMPDIR:-/tmp}/forkprof-php.XXXXXX")
PIDS_TO_KILL=()
# PID's children, grandchildren..., deepest first.
descendants() {
  local c
  for c in $(pgrep -P "$1" || true); do
    descendants "$c"
    echo "$c"
  done
}
cleanup() {
  local p
  # With its descendants: a Swoole server that failed a check still has its manager and
  # workers, which a SIGKILL of the master alone would leave running.
  for p in "${PIDS_TO_KILL[@]}"; do kill -9 $(descendants "$p") "$p" 2>/dev/null || true; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Runs a command under a watchdog: a hang fails the test with a message, never the whole CI.
watch() {
  local secs=$1 what=$2; shift 2
  local rc=0
  timeout -k 5 "$secs" "$@" || rc=$?
  case $rc in
    0) ;;
    124 | 137) fail "$what: still running after ${secs}s (watchdog)" ;;
    *) fail "$what: exit status $rc" ;;
  esac
}

# The tests below check what each process wrote at its exit. forkprof.shutdown_timeout_ms (the
# most an exit waits for its last profile to be encoded and written, 250 ms by default) is a
# bound chosen for production; on this shared 2-core machine a debug build's exit took from
# 75 ms to 1.4 s for the same 50 ms script, and 2 of 30 such runs wrote nothing at 250 ms (0 of
# 30 at 5 s). What is checked here is which process wrote what, so the bound is 5 s;
# php/bench_exit.sh and the stalled-agent step time the exits at the default. (A script that
# takes no sample writes no profile at all: at load average 20 a 50 ms script's tick thread
# can miss its whole run, which no bound helps. So every script here whose profile is checked
# runs until it has taken its samples, not for a fixed time: see UNTIL_SAMPLED and the spin
# functions of fork.php and ffi_fork.php.)
PHP=(php -n -d "extension=$SO" -d forkprof.shutdown_timeout_ms=5000)

# A script for `php -r` that sleeps until the extension has taken a sample (forkprof_stats()
# counts them), so that it writes a profile whatever the machine's load; under `watch`.
UNTIL_SAMPLED='while (forkprof_stats()["samples"] < 1) usleep(5000);'

# The function names in pprof FILE..., one a line, from `go tool pprof -traces`: after each
# "-----" separator come the sample's labels ("key:  value"), then "VALUE   NAME", then
# "   NAME" lines (names may hold spaces, file names too, so -raw's location lines are not
# used).
functions() {
  go tool pprof -traces -sample_index=sample "$@" 2>/dev/null | awk '
    /^-+\+-+$/ { in_trace = 1; first = 1; next }
    !in_trace { next }
    # Label lines ("trace endpoint:  /x") come before a trace'"'"'s first frame line.
    first && $0 !~ /^ *[0-9]/ { next }
    {
      line = $0
      sub(/^ +/, "", line)
      if (first) { sub(/^[^ ]+ +/, "", line); first = 0 }
      if (line != "") print line
    }' | sort -u
}
has_fn() {
  local name=$1 fns; shift
  fns=$(functions "$@")
  grep -qxF -- "$name" <<<"$fns"
}
# The `trace endpoint` label values of the samples in pprof FILE... (those through function
# FOCUS, a regexp, if given), one "VALUE PERCENT" a line, by sample count.
endpoints() {
  local focus=""
  [ "$1" = --focus ] && { focus=$2; shift 2; }
  go tool pprof -tags -sample_index=sample ${focus:+-focus="$focus"} "$@" 2>/dev/null |
    awk '/^ *trace endpoint:/ { on = 1; next } /^ *[^ ].*: Total/ { on = 0 } on && NF { sub(/^ *[0-9.]+ *\( *[0-9.]+%\): /, ""); print }'
}

# Flat wall time, in ms, of function NAME in FILE.
flat_wall_ms() {
  go tool pprof -top -sample_index=wall-time -unit=ms "$2" 2>/dev/null |
    awk -v n="$1" '$6 == n { sub(/ms$/, "", $1); print int($1); found = 1 } END { if (!found) print 0 }'
}

if [ "$PROFILE" = release ]; then
  step "build forkprof-php (release)" cargo build -p forkprof-php --release --locked
else
  step "build forkprof-php" cargo build -p forkprof-php --locked
fi
step "clippy (forkprof-php)" cargo clippy -p forkprof-php --all-targets --locked -- -D warnings
step "unit tests (forkprof-php)" cargo test -p forkprof-php --locked

settings() {
  local out
  out=$("${PHP[@]}" --ri forkprof)
  for want in "version => " "backend => linux-glibc" "state => running" "pcntl_fork => wrapped"; do
    grep -qF "$want" <<<"$out" || { echo "$out"; fail "php --ri forkprof lacks '$want'"; }
  done
  local case setting value dir
  for case in "forkprof.period_ms=fast" "forkprof.period_ms=0" "forkprof.endpoint=localhost:8126" \
      "forkprof.enabled=maybe" "forkprof.max_depth=1"; do
    setting=${case%%=*} value=${case#*=}
    dir="$WORK/settings-$setting-$value"
    out=$(watch 30 "php with $case" "${PHP[@]}" -d "$case" -d "forkprof.output_dir=$dir" \
      -r 'echo "still runs\n";' 2>&1)
    grep -q "Warning: .*forkprof: $setting: \`$value\`" <<<"$out" || { echo "$out"; fail "$case: no warning naming $setting"; }
    grep -qx "still runs" <<<"$out" || { echo "$out"; fail "$case: the script did not run"; }
    [ ! -e "$dir" ] || fail "$case: profiling should be off, yet $dir exists"
    out=$("${PHP[@]}" -d "$case" --ri forkprof 2>/dev/null)
    grep -q "state => off (bad setting)" <<<"$out" || fail "$case: --ri does not say the extension is off"
    echo "  $case: warning names $setting, script ran, profiling off"
  done
  out=$(DD_PROFILING_ENABLED=nope "${PHP[@]}" -r 'echo "still runs\n";' 2>&1)
  grep -q "DD_PROFILING_ENABLED: \`nope\`" <<<"$out" || { echo "$out"; fail "DD_PROFILING_ENABLED=nope: no warning"; }
  dir="$WORK/settings-disabled"
  DD_PROFILING_ENABLED=false "${PHP[@]}" -d "forkprof.output_dir=$dir" -r 'echo 1;' >/dev/null
  [ ! -e "$dir" ] || fail "DD_PROFILING_ENABLED=false still wrote profiles"
  grep -q "state => off (forkprof.enabled)" <<<"$(DD_PROFILING_ENABLED=false "${PHP[@]}" --ri forkprof)" ||
    fail "DD_PROFILING_ENABLED=false: --ri does not say the extension is off"
  # Environment fallbacks: DD_SERVICE names the files unless forkprof.service is set.
  dir="$WORK/settings-env"
  # The scripts run until a sample is taken, not for a fixed time: a script that takes none
  # writes no profile, and at load average 20 a 50 ms script's tick thread can miss its whole
  # run (2 of 4 such runs did).
  watch 30 "DD_SERVICE=from-env" env DD_SERVICE=from-env DD_ENV=ci DD_TAGS="team,zone:b c" "${PHP[@]}" \
    -d "forkprof.output_dir=$dir" -r "$UNTIL_SAMPLED"
  ls "$dir"/from-env-*.pprof.gz >/dev/null 2>&1 || fail "DD_SERVICE did not name the profile ($(ls "$dir"))"
  out=$(go tool pprof -raw "$dir"/from-env-*.pprof.gz 2>/dev/null)
  grep -q "Comment: env:ci" <<<"$out" || fail "DD_ENV is not a profile tag"
  # DD_TAGS as the tracers read it: a bare key is a tag with an empty value (which a file's
  # comments write `team:`), not an error.
  grep -qx "Comment: team:" <<<"$out" && grep -qx "Comment: zone:b c" <<<"$out" ||
    { echo "$out"; fail "DD_TAGS=team,zone:b c: the profile lacks the tags team and zone:b c"; }
  watch 30 "forkprof.service=from-ini" env DD_SERVICE=from-env "${PHP[@]}" -d "forkprof.service=from-ini" \
    -d "forkprof.output_dir=$dir" -r "$UNTIL_SAMPLED"
  ls "$dir"/from-ini-*.pprof.gz >/dev/null 2>&1 || fail "forkprof.service did not win over DD_SERVICE"
  echo "  env fallbacks: DD_SERVICE, DD_ENV, DD_TAGS (bare key team); INI wins over env"
  # Sample types named as Datadog's PHP profiler names them; wall-time is the one pprof shows
  # by default ([dflt]), as `go tool pprof -top` with no -sample_index does.
  grep -qx "sample/count wall-time/nanoseconds\[dflt\] cpu-time/nanoseconds alloc-samples/count alloc-size/bytes exception-samples/count timeline/nanoseconds" \
    <<<"$(go tool pprof -raw "$dir"/from-ini-*.pprof.gz 2>/dev/null)" ||
    fail "sample types are not sample, wall-time, cpu-time, alloc-samples, alloc-size, exception-samples, timeline"
  grep -q "^Type: wall-time" <<<"$(go tool pprof -top "$dir"/from-ini-*.pprof.gz 2>/dev/null)" ||
    fail "go tool pprof -top does not show wall-time by default"
  # Every directive is listed with its value in effect and its default; ini_get() returns the
  # value in effect, the environment's when INI does not set it.
  out=$("${PHP[@]}" -d forkprof.period_ms=7 --ri forkprof)
  local e
  for e in enabled service env version tags output_dir endpoint period_ms export_period_s max_depth shutdown_timeout_ms \
      endpoint_collection_enabled; do
    grep -q "^forkprof\.$e => .* => " <<<"$out" || { echo "$out"; fail "php --ri forkprof does not list forkprof.$e"; }
  done
  for want in "forkprof.period_ms => 7 => 7" "forkprof.period_ms => 10 => none" "forkprof.max_depth => 128 => 128" \
      "forkprof.service => php => DD_SERVICE" "forkprof.endpoint => no value => DD_TRACE_AGENT_URL, DD_AGENT_HOST, DD_TRACE_AGENT_PORT, OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT"; do
    grep -qxF "$want" <<<"$out" || { echo "$out"; fail "php --ri forkprof lacks '$want'"; }
  done
  out=$(DD_SERVICE=env-svc DD_AGENT_HOST=agent.example DD_TRACE_AGENT_PORT=9126 DD_PROFILING_ENABLED=0 "${PHP[@]}" \
    -r 'foreach (["enabled", "service", "endpoint", "period_ms", "output_dir"] as $k) echo $k, "=", ini_get("forkprof.$k"), "\n";')
  [ "$out" = "$(printf '%s\n' enabled=0 service=env-svc endpoint=http://agent.example:9126 period_ms=10 output_dir=/tmp/forkprof)" ] ||
    { echo "$out"; fail "ini_get() does not return the values in effect"; }
  out=$(DD_TRACE_AGENT_URL=http://url:1 DD_AGENT_HOST=host DD_PROFILING_ENABLED=0 "${PHP[@]}" -d forkprof.service=ini-svc \
    -r 'echo ini_get("forkprof.endpoint"), " ", ini_get("forkprof.service");')
  [ "$out" = "http://url:1 ini-svc" ] || fail "DD_TRACE_AGENT_URL should win over DD_AGENT_HOST, INI over DD_SERVICE: $out"
  out=$(OTEL_EXPORTER_OTLP_ENDPOINT=http://otel:4318 DD_PROFILING_ENABLED=0 "${PHP[@]}" -r 'echo ini_get("forkprof.endpoint");')
  [ "$out" = "otlp+http://otel:4318" ] || fail "OTEL_EXPORTER_OTLP_ENDPOINT should show as otlp+http://otel:4318: $out"
  out=$(OTEL_EXPORTER_OTLP_ENDPOINT=http://otel:4318 DD_AGENT_HOST=host DD_PROFILING_ENABLED=0 "${PHP[@]}" -r 'echo ini_get("forkprof.endpoint");')
  [ "$out" = "http://host:8126" ] || fail "DD_AGENT_HOST should win over OTEL_EXPORTER_OTLP_ENDPOINT: $out"
  echo "  php --ri lists every directive with its default; ini_get() returns the values in effect"
}
step "settings and php --ri" settings

names() {
  local dir="$WORK/names" f
  watch 60 "deep.php" "${PHP[@]}" -d forkprof.output_dir="$dir" -d forkprof.max_depth=64 \
    -d forkprof.period_ms=5 "$TESTS/deep.php"
  f=("$dir"/php-*.pprof.gz)
  local fns
  fns=$(functions "${f[@]}")
  for want in "Deep::down" "Deep::{closure:7}"; do
    grep -qxF -- "$want" <<<"$fns" || { echo "$fns"; fail "deep.php: $want missing"; }
  done
  grep -qxE '\[2[0-9]{2} frames omitted\]' <<<"$fns" || { echo "$fns"; fail "deep.php: no truncation frame"; }
  grep -qxF "{main}" <<<"$fns" && fail "deep.php: {main} should be cut by the depth cap"
  local depth
  depth=$(go tool pprof -traces "${f[@]}" 2>/dev/null | awk '/^-----/ { if (n > max) max = n; n = 0; next } /^[^ ].*:  / { next } NF { n++ } END { print max }')
  echo "  Deep::down, Deep::{closure:7}, $(grep -E 'frames omitted' <<<"$fns"); deepest trace $depth lines"
  local ep
  ep=$(endpoints "${f[@]}")
  [ "$ep" = "$TESTS/deep.php" ] || fail "deep.php: every sample's trace endpoint should be the script path, found: $ep"
  echo "  trace endpoint of every sample: $ep"
  watch 60 "include.php" "${PHP[@]}" -d forkprof.output_dir="$dir-include" "$TESTS/include.php"
  fns=$(functions "$dir"-include/php-*.pprof.gz)
  grep -qxF "{include}" <<<"$fns" && grep -qxF "{main}" <<<"$fns" || { echo "$fns"; fail "include.php: {main} / {include} missing"; }
  echo "  include.php: {main} and {include}"
}
step "frame names and the depth cap" names

# Allocation profiling: php/tests/alloc.php allocates ~200 MB from each of three functions in strings of
# known sizes (1 KB, 30 KB, 1 MB); at a 64 KiB mean sampling distance each function gets
# thousands of samples, so the upscaled alloc-size per function must be within 10% of what it
# allocated (measured here: 1-3%; one standard deviation is under 2%). Off, the heap has no
# handler of ours and the profile no allocation types.
allocations() {
  local dir="$WORK/alloc" f fn truth got pct
  watch 120 "alloc.php" "${PHP[@]}" -d forkprof.output_dir="$dir" -d forkprof.allocation_sampling_distance=65536 \
    "$TESTS/alloc.php" 200 >"$WORK/alloc.out"
  grep -q "^stats alloc_hooks_installed 1 .* record_errors 0$" "$WORK/alloc.out" || { cat "$WORK/alloc.out"; fail "alloc.php: hooks not installed or record errors"; }
  f=("$dir"/php-*.pprof.gz)
  grep -q "^sample/count wall-time/nanoseconds\[dflt\] cpu-time/nanoseconds alloc-samples/count alloc-size/bytes" <<<"$(go tool pprof -raw "${f[@]}" 2>/dev/null)" ||
    fail "alloc.php: the profile lacks alloc-samples / alloc-size"
  local top
  top=$(go tool pprof -top -cum -sample_index=alloc-size -unit=B "${f[@]}" 2>/dev/null)
  while read -r _ fn truth; do
    got=$(awk -v n="$fn" '$6 == n { sub(/B$/, "", $4); print $4 }' <<<"$top")
    [ -n "$got" ] || { echo "$top"; fail "alloc.php: $fn has no allocation samples"; }
    pct=$(( (got - truth) * 1000 / truth ))
    echo "  $fn: allocated $truth B, upscaled alloc-size $got B ($((pct / 10)).$(( (pct < 0 ? -pct : pct) % 10 ))%)"
    [ "${pct#-}" -le 100 ] || fail "alloc.php: $fn's upscaled total is off by more than 10%"
  done < <(grep '^truth ' "$WORK/alloc.out")
  grep -qxF str_repeat <<<"$(functions "${f[@]}")" || fail "alloc.php: the allocating internal function is not on the stacks"
  echo "  $(grep '^stats' "$WORK/alloc.out")"
  # Off: no handler installed, no allocation types.
  watch 60 "alloc.php (off)" "${PHP[@]}" -d forkprof.output_dir="$dir-off" -d forkprof.allocation_enabled=0 \
    "$TESTS/alloc.php" 1000 >"$WORK/alloc-off.out"
  grep -q "^stats alloc_hooks_installed 0 alloc_samples 0 " "$WORK/alloc-off.out" || { cat "$WORK/alloc-off.out"; fail "allocation_enabled=0 still installs handlers"; }
  grep -q "^sample/count wall-time/nanoseconds\[dflt\] cpu-time/nanoseconds exception-samples/count timeline/nanoseconds\$" \
    <<<"$(go tool pprof -raw "$dir"-off/php-*.pprof.gz 2>/dev/null)" ||
    fail "allocation_enabled=0: the profile still has allocation types"
  echo "  allocation_enabled=0: no handler installed, no allocation types"
  # Chained: USE_ZEND_ALLOC=0 gives the request heap the engine's malloc-backed handlers, which
  # ours call. Under valgrind's memcheck nothing reads, writes or frees what it should not
  # (ours installed over theirs, and theirs put back at RSHUTDOWN); natively the totals hold.
  local vg
  vg=$(USE_ZEND_ALLOC=0 watch 600 "alloc.php (chained, valgrind)" valgrind -q --error-exitcode=99 \
    "${PHP[@]}" -d forkprof.output_dir="$dir-vg" -d forkprof.allocation_sampling_distance=4096 "$TESTS/alloc.php" 5 2>&1) ||
    { echo "$vg"; fail "alloc.php chained to USE_ZEND_ALLOC=0's handlers: valgrind found errors"; }
  grep -q "^stats alloc_hooks_installed 1 " <<<"$vg" || { echo "$vg"; fail "USE_ZEND_ALLOC=0: our handlers were not installed over the engine's"; }
  USE_ZEND_ALLOC=0 watch 120 "alloc.php (chained)" "${PHP[@]}" -d forkprof.output_dir="$dir-chained" \
    -d forkprof.allocation_sampling_distance=16384 "$TESTS/alloc.php" 50 >"$WORK/alloc-chained.out"
  top=$(go tool pprof -top -cum -sample_index=alloc-size -unit=B "$dir"-chained/php-*.pprof.gz 2>/dev/null)
  while read -r _ fn truth; do
    got=$(awk -v n="$fn" '$6 == n { sub(/B$/, "", $4); print $4 }' <<<"$top")
    [ -n "$got" ] || { echo "$top"; fail "alloc.php (chained): $fn has no allocation samples"; }
    pct=$(( (got - truth) * 1000 / truth ))
    [ "${pct#-}" -le 100 ] || fail "alloc.php (chained): $fn's upscaled total $got is off by more than 10% from $truth"
    echo "  chained to USE_ZEND_ALLOC=0's handlers: $fn $truth B allocated, $got B upscaled"
  done < <(grep '^truth ' "$WORK/alloc-chained.out")
  echo "  chained under valgrind memcheck: no errors"
}
step "allocation profiling: upscaled totals per function, off removes the hooks" allocations

# tag_values FILE SAMPLE_INDEX KEY: "VALUE AMOUNT" per value of label KEY (go tool pprof -tags).
tag_values() {
  go tool pprof -tags -sample_index="$2" "$1" 2>/dev/null | awk -v key="$3" '
    $0 ~ "^ *" key ": Total" { on = 1; next }
    /: Total/ { on = 0 }
    on && NF { amount = $1; sub(/^ *[^ ]+ *(\( *[0-9.]+%\))?: /, ""); print $0, amount }'
}

# Exception profiling: php/tests/exceptions.php throws CartFull from add_to_cart and (from the engine)
# DivisionByZeroError in divide, known numbers of each. Every throw sampled (distance 1): the
# counts per class and per function are exact. One in 10 (60000 throws): within 10% (about 4
# standard deviations). Off: no hook, no type.
exceptions() {
  local dir="$WORK/exc" f want got cls n
  watch 60 "exceptions.php" "${PHP[@]}" -d forkprof.output_dir="$dir-1" -d forkprof.exception_sampling_distance=1 \
    "$TESTS/exceptions.php" 1 >"$WORK/exc-1.out"
  grep -qx "stats exception_samples 500 record_errors 0 hook 1" "$WORK/exc-1.out" || { cat "$WORK/exc-1.out"; fail "exceptions.php: expected 500 sampled throws"; }
  f=$(ls "$dir"-1/php-*.pprof.gz)
  grep -q "^sample/count wall-time/nanoseconds\[dflt\] .* exception-samples/count" <<<"$(go tool pprof -raw "$f" 2>/dev/null)" || fail "no exception-samples type"
  for want in "CartFull 300.0" "DivisionByZeroError 200.0"; do
    grep -qxF "$want" <<<"$(tag_values "$f" exception-samples "exception type")" ||
      { tag_values "$f" exception-samples "exception type"; fail "distance 1: exception type counts lack '$want'"; }
  done
  local top
  top=$(go tool pprof -top -cum -sample_index=exception-samples "$f" 2>/dev/null)
  for want in "add_to_cart 300" "divide 200" "intdiv 200"; do
    got=$(awk -v n="${want% *}" '$6 == n { print $4 }' <<<"$top")
    [ "$got" = "${want#* }" ] || { echo "$top"; fail "distance 1: ${want% *} should hold ${want#* } throws, has $got"; }
  done
  echo "  distance 1: 300 CartFull in add_to_cart, 200 DivisionByZeroError in intdiv < divide: exact"
  watch 120 "exceptions.php (distance 10)" "${PHP[@]}" -d forkprof.output_dir="$dir-10" -d forkprof.exception_sampling_distance=10 \
    "$TESTS/exceptions.php" 120 >"$WORK/exc-10.out"
  f=$(ls "$dir"-10/php-*.pprof.gz)
  while read -r _ _ cls n; do
    got=$(tag_values "$f" exception-samples "exception type" | awk -v c="$cls" '$1 == c { print int($2) }')
    [ -n "$got" ] || fail "distance 10: no $cls samples"
    echo "  distance 10: $cls thrown $n times, upscaled exception-samples $got"
    [ $(( (got - n) * 100 / n )) -le 10 ] && [ $(( (n - got) * 100 / n )) -le 10 ] || fail "distance 10: $cls off by more than 10%"
  done < <(grep '^truth ' "$WORK/exc-10.out")
  watch 60 "exceptions.php (off)" "${PHP[@]}" -d forkprof.output_dir="$dir-off" -d forkprof.exception_enabled=0 \
    "$TESTS/exceptions.php" 1 >"$WORK/exc-off.out"
  grep -qx "stats exception_samples 0 record_errors 0 hook 0" "$WORK/exc-off.out" || fail "exception_enabled=0 still samples, or its hook is installed"
  grep -q "exception-samples" <<<"$(go tool pprof -raw "$dir"-off/php-*.pprof.gz 2>/dev/null)" && fail "exception_enabled=0: the profile has exception-samples"
  echo "  exception_enabled=0: no hook, nothing sampled, no type"
}
step "exception profiling: counts per class and function, sampling distance, off" exceptions

# Timeline: php/tests/timeline.php makes cyclic garbage (automatic collections and 3 gc_collect_cycles()
# calls) and includes two files written at run time. Every engine GC run is a timeline event
# (the engine's own count is the truth), labelled gc with its reason; each compiled file
# (the script and the two includes; opcache is not loaded) is a compilation event with its
# file; every sample has a timestamp. Off: none of it.
timeline_events() {
  local dir="$WORK/timeline" f out
  out=$(watch 60 "timeline.php" "${PHP[@]}" -d forkprof.output_dir="$dir" "$TESTS/timeline.php")
  local runs
  runs=$(awk '{ print $3 }' <<<"$out")
  grep -qE "^stats gc_runs $runs automatic [1-9][0-9]* timeline_gc_runs $runs timeline_compilations 3 record_errors 0 hooks 2\$" <<<"$out" ||
    fail "timeline.php: expected $runs GC events (the engine's count), some automatic, and 3 compilations: $out"
  f=$(ls "$dir"/php-*.pprof.gz)
  grep -q "^sample/count wall-time/nanoseconds\[dflt\] .* timeline/nanoseconds\$" <<<"$(go tool pprof -raw "$f" 2>/dev/null)" || fail "no timeline type"
  local events reasons files
  events=$(tag_values "$f" timeline event | awk '{ print $1 }' | sort | paste -sd' ')
  reasons=$(tag_values "$f" timeline "gc reason" | awk '{ print $1 }' | sort | paste -sd' ')
  files=$(tag_values "$f" timeline filename | awk '{ print $1 }' | sed 's|.*/||' | sort | paste -sd' ')
  [ "$events" = "compilation gc" ] || fail "timeline events: $events"
  [ "$reasons" = "engine induced" ] || fail "gc reasons: $reasons"
  [ "$files" = "one.php timeline.php two.php" ] || fail "compiled files: $files"
  # Every CPU/wall sample carries its time: as many timestamps as samples.
  local samples stamps
  samples=$(go tool pprof -raw -sample_index=sample "$f" 2>/dev/null | awk '/^Samples:/ { on = 1; getline; next } /^Locations/ { on = 0 } on && $1 ~ /^[0-9]+$/ { n += $1 } END { print n + 0 }')
  stamps=$(tag_values "$f" sample end_timestamp_ns | awk '{ n += $2 } END { print n + 0 }')
  [ "$samples" -gt 0 ] && [ "$samples" = "$stamps" ] || fail "timeline: $samples samples but $stamps timestamps"
  echo "  $out"
  echo "  events: $events; gc reasons: $reasons; compiled: $files; $samples samples, each with a timestamp"
  out=$(watch 60 "timeline.php (off)" "${PHP[@]}" -d forkprof.output_dir="$dir-off" -d forkprof.timeline_enabled=0 "$TESTS/timeline.php")
  grep -q "timeline_gc_runs 0 timeline_compilations 0 record_errors 0 hooks 0\$" <<<"$out" || fail "timeline_enabled=0 still records events or has its hooks: $out"
  grep -q "timeline/nanoseconds\|end_timestamp_ns" <<<"$(go tool pprof -raw "$dir"-off/php-*.pprof.gz 2>/dev/null)" && fail "timeline_enabled=0: timeline type or timestamps in the profile"
  echo "  timeline_enabled=0: no hooks, no events, no timestamps"
}
step "timeline: GC runs and compilations as events, timestamps on samples, off" timeline_events

# A real program: Debian's composer (2.5) runs `dump-autoload -o` offline over a project of 800
# generated classes (php/tests/composer/composer.json), with and without the extension, every
# profile type on (the defaults; a 1 ms period for enough samples in a half-second run). Its
# output and the autoload files it generates must be identical, and its profiles must hold
# Composer's own namespaced classes, in the wall-time and in the allocation samples.
real_program() {
  local dir="$WORK/composer" run i
  export COMPOSER_ALLOW_SUPERUSER=1 COMPOSER_HOME="$dir/home" COMPOSER_DISABLE_NETWORK=1 COMPOSER_NO_INTERACTION=1
  for run in plain profiled; do
    mkdir -p "$dir/$run/src/Model" "$dir/$run/src/Service"
    cp "$TESTS/composer/composer.json" "$dir/$run/"
    for ((i = 1; i <= 400; i++)); do
      printf '<?php\nnamespace Shop\\Model;\n\nclass Item%d\n{\n    public function id(): int { return %d; }\n}\n' $i $i >"$dir/$run/src/Model/Item$i.php"
      printf '<?php\nnamespace Shop\\Service;\n\ninterface Service%d {}\nfinal class Handler%d implements Service%d\n{\n    public function handle(): string { return "%d"; }\n}\n' \
        $i $i $i $i >"$dir/$run/src/Service/Handler$i.php"
    done
  done
  local composer=(-d extension=iconv -d extension=mbstring "$(command -v composer)" --no-ansi dump-autoload -o)
  if ! (cd "$dir/plain" && watch 120 "composer (plain)" php -n "${composer[@]}") >"$dir/plain.out" 2>&1; then
    cat "$dir/plain.out"; fail "composer failed without the extension"
  fi
  if ! (cd "$dir/profiled" && watch 120 "composer (profiled)" "${PHP[@]}" -d forkprof.output_dir="$dir/profiles" \
    -d forkprof.service=composer -d forkprof.period_ms=1 "${composer[@]}") >"$dir/profiled.out" 2>&1; then
    cat "$dir/profiled.out"; fail "composer failed with the extension"
  fi
  grep -q "containing 801 classes" "$dir/plain.out" || { cat "$dir/plain.out"; fail "composer did not generate the autoloader"; }
  diff "$dir/plain.out" "$dir/profiled.out" || fail "composer's output differs with the extension"
  diff -r "$dir/plain/vendor" "$dir/profiled/vendor" || fail "composer's generated autoload files differ with the extension"
  local files=("$dir"/profiles/composer-*.pprof.gz) fns wall alloc
  [ -e "${files[0]}" ] || fail "composer: no profile"
  fns=$(functions "${files[@]}")
  wall=$(grep -c '^Composer\\' <<<"$fns" || true)
  [ "$wall" -ge 5 ] || { echo "$fns"; fail "composer: only $wall Composer\\ functions in the samples"; }
  alloc=$(go tool pprof -top -cum -sample_index=alloc-size "${files[@]}" 2>/dev/null | awk '$6 ~ /^Composer\\/' | wc -l)
  [ "$alloc" -ge 1 ] || fail "composer: no Composer\\ function on the allocation samples"
  echo "  output and 801-class autoloader identical with and without the extension; ${#files[@]} profile(s): $wall Composer\\ functions sampled, $alloc on allocation stacks"
  echo "  $(grep -c . <<<"$fns") functions; e.g. $(grep '^Composer\\' <<<"$fns" | head -3 | paste -sd' ')"
}
step "a real program: composer dump-autoload, every profile type on, identical output" real_program

# The stalled agent: started once, shared by the blocking and stalled-agent tests.
start_stalled_server() {
  php -n "$TESTS/stalled_server.php" "$WORK/stalled.port" 900 &
  PIDS_TO_KILL+=($!)
  disown $! # killed by cleanup(): no job notice
  local i
  for ((i = 0; i < 100; i++)); do [ -s "$WORK/stalled.port" ] && break; sleep 0.1; done
  [ -s "$WORK/stalled.port" ] || fail "the stalled server did not start"
  STALLED_PORT=$(cat "$WORK/stalled.port")
}
start_stalled_server

blocking() {
  local dir="$WORK/blocking" f usleep_ms fgc_ms
  watch 60 "blocking.php" "${PHP[@]}" -d forkprof.output_dir="$dir" "$TESTS/blocking.php" "$STALLED_PORT"
  f=$(ls "$dir"/php-*.pprof.gz)
  usleep_ms=$(flat_wall_ms usleep "$f")
  fgc_ms=$(flat_wall_ms file_get_contents "$f")
  echo "  flat wall time: usleep(300 ms) ${usleep_ms} ms, file_get_contents(0.3 s timeout) ${fgc_ms} ms"
  [ "$usleep_ms" -ge 200 ] || fail "usleep should carry most of its 300 ms, has ${usleep_ms} ms"
  [ "$fgc_ms" -ge 200 ] || fail "file_get_contents should carry most of its 300 ms, has ${fgc_ms} ms"
  has_fn sleepy "$f" && has_fn fetch_stalled "$f" && has_fn "{main}" "$f" ||
    fail "blocking.php: callers of the blocking functions missing"
}
step "blocking internal functions" blocking

trace_context() {
  local dir="$WORK/trace" f
  watch 60 "trace_context.php" "${PHP[@]}" -d forkprof.output_dir="$dir" "$TESTS/trace_context.php" >/dev/null
  f=("$dir"/php-*.pprof.gz)
  # Exact ids from -raw (-traces prints numbers as floats); which stack has which labels
  # from -traces.
  local raw
  raw=$(go tool pprof -raw "${f[@]}" 2>/dev/null)
  for want in "span id:[-6101065172474983726]" "local root span id:[42]" \
      "trace id high:[790211418057950173]" "trace id low:[-8914616934935285348]"; do
    grep -qF "$want" <<<"$raw" || fail "trace_context.php: '$want' missing from the profile"
  done
  go tool pprof -traces -sample_index=sample "${f[@]}" 2>/dev/null | python3 -c '
import re, sys
blocks = sys.stdin.read().split("-----------+")[1:]
seen = {"traced_work": 0, "untraced_work": 0}
for b in blocks:
    labels = dict(re.findall(r"^ *([a-z ]+?):  (.+)$", b, re.M))
    for fn in seen:
        if re.search(r"\b" + fn + r"$", b, re.M):
            seen[fn] += 1
            traced = fn == "traced_work"
            assert ("span id" in labels) == traced, (fn, labels)
            if traced:
                assert labels.get("trace endpoint") == "GET /checkout", labels
                assert labels.get("local root span id") == "42", labels
assert all(seen.values()), seen
print("  stacks: %d traced (span, root 42, endpoint GET /checkout), %d untraced (no span)" % (seen["traced_work"], seen["untraced_work"]))
' || fail "trace_context.php: the samples' trace labels are wrong"
}
step "trace context from userland (span labels, late endpoint)" trace_context

# check_procs OUT DIR SERVICE BEFORE ROLE=FUNCTION...: checks the output OUT of a script that
# forks (one "role pid ..." line per process) and the profiles in DIR: each process's own
# file(s) hold its own work FUNCTION and none of the others', nor BEFORE (what the parent ran
# before its first fork), which only the role "parent" may hold.
check_procs() {
  local out=$1 dir=$2 service=$3 before=$4 role pid rest own kv
  shift 4
  local -A expect=()
  local all=$before
  for kv in "$@"; do
    expect[${kv%%=*}]=${kv#*=}
    all+=" ${kv#*=}"
  done
  local seen=0
  while read -r role pid rest; do
    [ -n "${expect[$role]:-}" ] || continue
    seen=$((seen + 1))
    grep -q "tick_thread_starts=1 running=1" <<<"$rest" || fail "$role ($pid): $rest"
    local files=("$dir"/"$service"-"$pid"-*.pprof.gz)
    [ -e "${files[0]}" ] || fail "$role (pid $pid): no profile in $dir ($rest)"
    own=${expect[$role]}
    local fns
    fns=$(functions "${files[@]}")
    grep -qxF "$own" <<<"$fns" || fail "$role (pid $pid): $own missing from its profile"
    local other
    for other in $all; do
      [ "$other" = "$own" ] && continue
      [ "$role" = parent ] && [ "$other" = "$before" ] && continue
      grep -qxF "$other" <<<"$fns" && fail "$role (pid $pid): holds $other, another process's samples"
    done
    echo "  $role pid $pid: ${#files[@]} profile(s), $own, nobody else's; $rest"
  done <"$out"
  [ "$seen" = $# ] || fail "expected $# processes in $out, saw $seen"
}

fork_case() {
  local name=$1; shift
  local dir="$WORK/$name"
  watch 120 "fork.php ($name)" "${PHP[@]}" -d forkprof.output_dir="$dir" -d forkprof.service=forktest \
    "$@" "$TESTS/fork.php" >"$WORK/$name.out"
  check_procs "$WORK/$name.out" "$dir" forktest parent_before_fork parent=parent_work \
    child_0=child_work_0 child_1=child_work_1 child_2=child_work_2 child_3=child_work_3 \
    grandchild=grandchild_work early_grandchild=early_grandchild_work
}
step "pcntl_fork: parent, children, nested and immediate grandchildren" fork_case fork

# fork() through FFI: no wrapper sees it; the atfork handlers do. No warning on stderr.
ffi_fork() {
  local dir="$WORK/ffi-fork"
  watch 120 "ffi_fork.php" "${PHP[@]}" -d extension=ffi -d ffi.enable=1 -d forkprof.output_dir="$dir" \
    -d forkprof.service=ffitest "$TESTS/ffi_fork.php" >"$WORK/ffi-fork.out" 2>"$WORK/ffi-fork.err"
  [ ! -s "$WORK/ffi-fork.err" ] || { cat "$WORK/ffi-fork.err"; fail "ffi_fork.php wrote to stderr"; }
  check_procs "$WORK/ffi-fork.out" "$dir" ffitest ffi_parent_before_fork parent=ffi_parent_work \
    child_long=ffi_child_long child_short=ffi_child_short grandchild_short=ffi_grandchild_short \
    grandchild_long=ffi_grandchild_long
}
step "FFI fork(): parent, children, grandchildren, long and short work" ffi_fork

fork_loop() {
  local out
  # posix (for posix_kill of a hung child) is a shared module in Debian's PHP.
  out=$(watch 300 "fork_loop.php" "${PHP[@]}" -d extension=posix -d forkprof.output_dir="$WORK/fork-loop" \
    -d forkprof.period_ms=1 "$TESTS/fork_loop.php" 300)
  echo "  $out; $(find "$WORK/fork-loop" -name '*.pprof.gz' | wc -l) profiles"
}
step "pcntl_fork loop: 300 children while sampling at 1 ms" fork_loop

# ---- php-fpm ----
FPM_TIMINGS=()

# fpm_run LABEL [INI_LINE...]: starts a pool with those php.ini lines, serves 4 x 125 requests, reloads it (SIGUSR2), serves
# 40 more, stops it (SIGQUIT), and checks the profiles when the extension writes files.
fpm_run() {
  local label=$1; shift
  local dir="$WORK/fpm-$label"
  mkdir -p "$dir"
  sed "s|@DIR@|$dir|g" "$TESTS/fpm/pool.conf.in" >"$dir/pool.conf"
  cp "$TESTS/fpm/app.php" "$dir/app.php"
  # A php.ini of its own rather than -d flags: php-fpm's reload re-executes with an argv
  # that has lost some of them. Debian's conf.d (opcache among others) is still scanned.
  printf '%s\n' "opcache.enable=1" "$@" >"$dir/php.ini"
  php-fpm8.2 -R -F -y "$dir/pool.conf" -c "$dir/php.ini" >"$dir/stdout" 2>&1 &
  local master=$!
  PIDS_TO_KILL+=("$master")
  local i
  for ((i = 0; i < 200; i++)); do [ -S "$dir/fpm.sock" ] && break; sleep 0.05; done
  [ -S "$dir/fpm.sock" ] || { cat "$dir/stdout" "$dir/fpm.log" 2>/dev/null; fail "fpm ($label): no socket after 10 s"; }

  local t0 t1
  t0=$(now_ms)
  local c
  for c in 0 1 2 3; do
    timeout -k 5 120 "$TESTS/fpm/client.sh" "$dir/fpm.sock" "$dir/app.php" 125 >"$dir/gen1-$c.out" &
  done
  local failed=0
  for c in 0 1 2 3; do wait -n || failed=1; done
  [ "$failed" = 0 ] || fail "fpm ($label): a client failed or hung (120 s watchdog)"
  t1=$(now_ms)
  local served
  served=$(cat "$dir"/gen1-*.out | wc -l)
  [ "$served" = 500 ] || fail "fpm ($label): $served of 500 requests answered"
  local gen1
  gen1=$(pgrep -P "$master" | sort)
  [ "$(wc -l <<<"$gen1")" = 4 ] || fail "fpm ($label): expected 4 workers, found: $gen1"
  local req_ms=$((t1 - t0))

  # Graceful reload: the master stops its workers (SIGQUIT), re-executes, forks 4 new ones.
  t0=$(now_ms)
  kill -USR2 "$master"
  local gen2=""
  for ((i = 0; i < 400; i++)); do
    gen2=$(pgrep -P "$master" | sort || true)
    if [ "$(grep -c . <<<"$gen2")" = 4 ] && [ -z "$(comm -12 <(echo "$gen1") <(echo "$gen2"))" ] &&
      [ -S "$dir/fpm.sock" ]; then
      break
    fi
    sleep 0.05
  done
  t1=$(now_ms)
  [ "$(grep -c . <<<"$gen2")" = 4 ] && [ -z "$(comm -12 <(echo "$gen1") <(echo "$gen2"))" ] ||
    { cat "$dir/fpm.log"; fail "fpm ($label): reload did not replace the 4 workers within 20 s (now: $gen2)"; }
  local reload_ms=$((t1 - t0))
  # 50 requests per client: each worker then has ~200 ms inside requests, ~20 samples, so
  # every worker of the new generation has a profile (the period carries over across idle
  # time, but a worker with 2 requests could still hold less than one period).
  for c in 0 1 2 3; do
    timeout -k 5 60 "$TESTS/fpm/client.sh" "$dir/fpm.sock" "$dir/app.php" 50 >"$dir/gen2-$c.out" &
  done
  for c in 0 1 2 3; do wait -n || failed=1; done
  [ "$failed" = 0 ] || fail "fpm ($label): a client failed after the reload"

  # Graceful stop.
  t0=$(now_ms)
  kill -QUIT "$master"
  for ((i = 0; i < 400; i++)); do kill -0 "$master" 2>/dev/null || break; sleep 0.05; done
  t1=$(now_ms)
  if kill -0 "$master" 2>/dev/null; then
    cat "$dir/fpm.log"
    fail "fpm ($label): SIGQUIT did not stop the pool within 20 s; workers: $(pgrep -P "$master" | tr '\n' ' ')"
  fi
  wait "$master" 2>/dev/null || true
  local stop_ms=$((t1 - t0))
  if grep -Eiq "signal (11|6|7)|segfault|forkprof: " "$dir/fpm.log"; then
    cat "$dir/fpm.log"; fail "fpm ($label): the log shows a crash or a forkprof warning"
  fi
  FPM_TIMINGS+=("$(printf '%-22s 500 requests %6d ms   reload %5d ms   stop %5d ms' "$label" "$req_ms" "$reload_ms" "$stop_ms")")
  echo "  ${FPM_TIMINGS[-1]}"

  [ -d "$dir/profiles" ] || return 0
  # Every worker of both generations: its own profile, holding its own requests only.
  local pid all_pids
  all_pids=$(cat "$dir"/gen1-*.out "$dir"/gen2-*.out | awk '{ print $2 }' | sort -u)
  local gen1_served=0
  for pid in $gen1 $gen2; do
    local n
    n=$(cat "$dir"/gen*-*.out | grep -cx "pid $pid" || true)
    local files=("$dir"/profiles/fpm-"$pid"-*.pprof.gz)
    if [ "$n" = 0 ]; then
      grep -q "$pid" <<<"$gen1" && fail "fpm ($label): worker $pid served none of the 500 requests"
      continue
    fi
    grep -q "$pid" <<<"$gen1" && gen1_served=$((gen1_served + 1))
    [ -e "${files[0]}" ] || fail "fpm ($label): worker $pid served $n requests but wrote no profile"
    local fns
    fns=$(functions "${files[@]}")
    grep -qxF "served_by_$pid" <<<"$fns" || fail "fpm ($label): worker $pid's profile lacks served_by_$pid"
    grep -qxF handle_request <<<"$fns" || fail "fpm ($label): worker $pid's profile lacks handle_request"
    local other
    for other in $all_pids; do
      [ "$other" = "$pid" ] && continue
      grep -qxF "served_by_$other" <<<"$fns" && fail "fpm ($label): worker $pid holds worker $other's samples"
    done
    echo "  worker $pid: $n requests, ${#files[@]} profile(s) with served_by_$pid and no other worker's"
  done
  [ "$gen1_served" = 4 ] || fail "fpm ($label): $gen1_served of the 4 first workers have profiles"
  ls "$dir"/profiles/fpm-"$master"-* >/dev/null 2>&1 && fail "fpm ($label): the master (serving no request) wrote a profile"
  return 0
}

FPM_EXT=("extension=$SO" forkprof.service=fpm)
step "php-fpm: 4 workers, 500 requests, reload, stop (files)" \
  fpm_run "files" "${FPM_EXT[@]}" "forkprof.output_dir=$WORK/fpm-files/profiles" forkprof.export_period_s=1

# Short requests spaced by idle time: one worker serves 100 requests of ~4 ms (shorter than the
# 10 ms period), 20 ms apart. The tick period runs on request time and carries its remainder
# across idle time, so the worker's ticks and samples must be about its time inside requests /
# period (a period restarted at each request gave next to none).
short_requests() {
  local dir="$WORK/fpm-short"
  mkdir -p "$dir/profiles"
  sed -e "s|@DIR@|$dir|g" -e 's/^pm.max_children = 4$/pm.max_children = 1/' \
    "$TESTS/fpm/pool.conf.in" >"$dir/pool.conf"
  grep -qx "pm.max_children = 1" "$dir/pool.conf" || fail "short requests: pool.conf.in changed"
  cp "$TESTS/fpm/app.php" "$TESTS/fpm/stats.php" "$dir/"
  printf '%s\n' "extension=$SO" forkprof.service=short "forkprof.output_dir=$dir/profiles" >"$dir/php.ini"
  php-fpm8.2 -R -F -y "$dir/pool.conf" -c "$dir/php.ini" >"$dir/stdout" 2>&1 &
  local master=$! i
  PIDS_TO_KILL+=("$master")
  for ((i = 0; i < 200; i++)); do [ -S "$dir/fpm.sock" ] && break; sleep 0.05; done
  [ -S "$dir/fpm.sock" ] || { cat "$dir/stdout" "$dir/fpm.log" 2>/dev/null; fail "short requests: no socket after 10 s"; }
  watch 120 "short requests: 100 requests" "$TESTS/fpm/client.sh" "$dir/fpm.sock" "$dir/app.php" 100 0.02 >"$dir/requests.out"
  local stats
  stats=$(SCRIPT_FILENAME="$dir/stats.php" SCRIPT_NAME=/stats.php REQUEST_METHOD=GET \
    timeout -k 5 30 cgi-fcgi -bind -connect "$dir/fpm.sock" | tr -d '\r')
  kill -QUIT "$master"
  for ((i = 0; i < 400; i++)); do kill -0 "$master" 2>/dev/null || break; sleep 0.05; done
  wait "$master" 2>/dev/null || true
  local ticks samples req_ns errors
  ticks=$(awk '$1 == "ticks" { print $2 }' <<<"$stats")
  samples=$(awk '$1 == "samples" { print $2 }' <<<"$stats")
  req_ns=$(awk '$1 == "request_time_ns" { print $2 }' <<<"$stats")
  errors=$(awk '$1 == "record_errors" { print $2 }' <<<"$stats")
  [ -n "$ticks" ] && [ -n "$samples" ] && [ -n "$req_ns" ] || { echo "$stats"; fail "short requests: no counters from stats.php"; }
  local expected=$((req_ns / 10000000))
  echo "  100 requests: $((req_ns / 1000000)) ms inside requests, $expected ticks expected at 10 ms; $ticks ticks, $samples samples, $errors record errors"
  # Generous bounds: a tick thread woken late by more than a period on a loaded machine skips
  # rather than bursts; a tick after a request's last interrupt check waits for the next one.
  [ "$expected" -ge 20 ] || fail "short requests: only $((req_ns / 1000000)) ms inside requests, expected about 400"
  [ "$ticks" -ge $((expected * 6 / 10)) ] && [ "$ticks" -le $((expected * 14 / 10 + 2)) ] ||
    fail "short requests: $ticks ticks for $expected periods of request time"
  [ "$samples" -ge $((ticks * 8 / 10 - 2)) ] && [ "$samples" -le $((ticks + 1)) ] ||
    fail "short requests: $samples samples for $ticks ticks"
  [ "$errors" = 0 ] || fail "short requests: $errors record errors"
  local files=("$dir"/profiles/short-*.pprof.gz)
  [ -e "${files[0]}" ] || fail "short requests: the worker wrote no profile"
  has_fn handle_request "${files[@]}" || fail "short requests: handle_request missing from the profile"
}
step "php-fpm: short requests spaced by idle time are sampled" short_requests

# Two pools, each with its own service (php_admin_value) and one with its own period
# (php_value): every worker profiles under its pool's service, into files named after it,
# and ini_get() in the worker returns the pool's values. The master's php.ini sets neither.
fpm_pools() {
  local dir="$WORK/fpm-pools"
  mkdir -p "$dir/profiles"
  sed "s|@DIR@|$dir|g" "$TESTS/fpm/pools.conf.in" >"$dir/pool.conf"
  cp "$TESTS/fpm/app.php" "$TESTS/fpm/ini.php" "$dir/"
  printf '%s\n' "extension=$SO" "forkprof.output_dir=$dir/profiles" forkprof.export_period_s=1 >"$dir/php.ini"
  php-fpm8.2 -R -F -y "$dir/pool.conf" -c "$dir/php.ini" >"$dir/stdout" 2>&1 &
  local master=$! i pool
  PIDS_TO_KILL+=("$master")
  for ((i = 0; i < 200; i++)); do [ -S "$dir/shop.sock" ] && [ -S "$dir/admin.sock" ] && break; sleep 0.05; done
  [ -S "$dir/shop.sock" ] && [ -S "$dir/admin.sock" ] || { cat "$dir/stdout" "$dir/fpm.log" 2>/dev/null; fail "fpm pools: no sockets after 10 s"; }
  for pool in shop admin; do
    for ((i = 0; i < 60; i++)); do
      SCRIPT_FILENAME="$dir/ini.php" SCRIPT_NAME=/ini.php REQUEST_METHOD=GET \
        timeout -k 5 30 cgi-fcgi -bind -connect "$dir/$pool.sock" | tr -d '\r' | grep -a -e '^pid ' -e '^service ' |
        paste -sd' ' >>"$dir/$pool.out" || fail "fpm pools: request $i to $pool failed"
    done
  done
  kill -QUIT "$master"
  for ((i = 0; i < 400; i++)); do kill -0 "$master" 2>/dev/null || break; sleep 0.05; done
  wait "$master" 2>/dev/null || true
  grep -Eiq "signal (11|6|7)|segfault|forkprof: " "$dir/fpm.log" && { cat "$dir/fpm.log"; fail "fpm pools: crash or warning in the log"; }
  local want period pid other n
  for pool in shop admin; do
    want=$pool-pool other=$([ $pool = shop ] && echo admin-pool || echo shop-pool)
    period=$([ $pool = shop ] && echo 10 || echo 5)
    n=$(grep -c "service $want period $period running 1\$" "$dir/$pool.out" || true)
    [ "$n" = 60 ] || { cat "$dir/$pool.out"; fail "fpm pools: $pool: $n of 60 requests saw service $want, period $period, running"; }
    for pid in $(awk '{ print $2 }' "$dir/$pool.out" | sort -u); do
      ls "$dir"/profiles/"$want"-"$pid"-*.pprof.gz >/dev/null 2>&1 ||
        fail "fpm pools: $pool worker $pid wrote no $want-$pid-* profile ($(ls "$dir/profiles" | tr '\n' ' '))"
      ls "$dir"/profiles/"$other"-"$pid"-*.pprof.gz >/dev/null 2>&1 && fail "fpm pools: $pool worker $pid wrote $other profiles"
      has_fn "served_by_$pid" "$dir"/profiles/"$want"-"$pid"-*.pprof.gz || fail "fpm pools: $pool worker $pid's profile lacks served_by_$pid"
      local ep
      ep=$(endpoints "$dir"/profiles/"$want"-"$pid"-*.pprof.gz)
      [ "$ep" = /ini.php ] || fail "fpm pools: $pool worker $pid: trace endpoint should be /ini.php (SCRIPT_NAME), found: $ep"
      echo "  pool $pool: worker $pid profiles as $want (period $period ms): $(ls "$dir"/profiles/"$want"-"$pid"-*.pprof.gz | wc -l) file(s) with served_by_$pid, trace endpoint $ep"
    done
  done
  ls "$dir"/profiles/php-* >/dev/null 2>&1 && fail "fpm pools: profiles under the default service: $(ls "$dir"/profiles/php-*)"
  return 0
}
step "php-fpm: two pools, each profiling under its own service (php_admin_value, php_value)" fpm_pools

# ---- Swoole ----
# Each sample's stack in pprof FILE..., one a line, leaf first, frames joined by ";".
traces() {
  go tool pprof -traces -sample_index=sample "$@" 2>/dev/null | awk '
    /^-+\+-+$/ { if (t != "") print t; t = ""; in_trace = 1; first = 1; next }
    !in_trace { next }
    # Label lines ("trace endpoint:  /x") come before a trace'"'"'s first frame line.
    first && $0 !~ /^ *[0-9]/ { next }
    {
      line = $0
      sub(/^ +/, "", line)
      if (first) { sub(/^[^ ]+ +/, "", line); first = 0 }
      if (line != "") t = (t == "" ? line : t ";" line)
    }
    END { if (t != "") print t }'
}

SWOOLE_SO=""
SWOOLE_CLIENT="$WORK/swoole-client"
swoole_build() {
  # The Swoole source and its build script sit in shared/swoole beside the repository's root;
  # the script caches its build in ~/.cache.
  local build
  build="$(cd "$(git rev-parse --show-toplevel)/.." && pwd)/shared/swoole/build.sh"
  [ -x "$build" ] || fail "$build is missing"
  SWOOLE_SO=$(watch 1200 "building Swoole" "$build")
  [ -f "$SWOOLE_SO" ] || fail "Swoole's build printed no swoole.so ($SWOOLE_SO)"
  php -n -d extension="$SWOOLE_SO" -r 'echo "  Swoole ", SWOOLE_VERSION, " at '"$SWOOLE_SO"'\n";'
  watch 300 "building the Swoole test client" go build -o "$SWOOLE_CLIENT" "$TESTS/swoole/client.go"
}

# swoole_case MODE COROUTINE: php/tests/swoole/server.php (4 workers recycled every 40
# requests, 2 task workers every 20 tasks) serves 1050 requests, 8 at a time, with a reload
# (SIGUSR1, once the server is quiet: see reload.sh) half-way, then SIGTERM stops it. Checked: every worker and task worker pid that
# served work wrote a profile (at its exit: the export period is longer than the run) holding
# its own handler's functions and nobody else's; the master's holds master_before_start;
# every handler stack ends where that pid's requests start (a coroutine's own root with
# coroutines on), so no sample holds another coroutine's frames.
SWOOLE_SUMMARY=()
swoole_case() {
  local mode=$1 co=$2
  local dir="$WORK/swoole-$mode-co$co"
  mkdir -p "$dir"
  "${PHP[@]}" -d extension="$SWOOLE_SO" -d forkprof.output_dir="$dir/profiles" -d forkprof.service=swoole \
    -d forkprof.period_ms=1 "$TESTS/swoole/server.php" "$mode" "$co" "$dir" >"$dir/stdout" 2>&1 &
  local master=$! i
  PIDS_TO_KILL+=("$master")
  for ((i = 0; i < 200; i++)); do [ -s "$dir/port" ] && break; sleep 0.05; done
  [ -s "$dir/port" ] || { cat "$dir/stdout"; fail "swoole $mode: no port after 10 s"; }
  local rc=0
  timeout -k 5 120 "$SWOOLE_CLIENT" "http://127.0.0.1:$(cat "$dir/port")/orders/list?id=7" 1050 8 \
    "$TESTS/swoole/reload.sh $master $mode $dir" \
    >"$dir/client.out" 2>"$dir/client.err" || rc=$?
  case $rc in
    0) ;;
    124 | 137) fail "swoole $mode: the client still ran after 120 s (watchdog)" ;;
    *)
      # SWOOLE_BASE resets some connections a worker accepted but had not read when it
      # exits at its max_request or reload (measured without forkprof too: 17-22 of 1000
      # here). Those are the only failures allowed, and only in that mode.
      if [ "$mode" != base ] || grep -v -e "connection reset by peer" -e ': EOF$' -e "requests failed$" "$dir/client.err" | grep -q .; then
        cat "$dir/client.err"; fail "swoole $mode: requests failed"
      fi
      ;;
  esac
  local dropped
  dropped=$(grep -c -e "connection reset by peer" -e ': EOF$' "$dir/client.err" || true)
  [ "$dropped" -le 50 ] || fail "swoole $mode: $dropped of 1050 connections dropped"
  local answered reloads
  answered=$(awk '$1 == "requests" { print $2 }' "$dir/client.out")
  [ "$answered" -ge 1000 ] || fail "swoole $mode: $answered requests answered, expected at least 1000"
  # Stop: the master, its manager, workers and task workers all gone, each worker having
  # written its last profile on the way out.
  local t0 t1
  t0=$(now_ms)
  kill -TERM "$master"
  for ((i = 0; i < 400; i++)); do pgrep -f -- "server.php $mode $co $dir" >/dev/null || break; sleep 0.05; done
  t1=$(now_ms)
  if pgrep -f -- "server.php $mode $co $dir" >/dev/null; then
    fail "swoole $mode: still running 20 s after SIGTERM: $(pgrep -f -- "server.php $mode $co $dir" | tr '\n' ' ')"
  fi
  rc=0
  wait "$master" || rc=$?
  [ "$rc" = 0 ] || { cat "$dir/stdout"; fail "swoole $mode: the master exited with status $rc"; }
  [ -s "$dir/master.out" ] || fail "swoole $mode: the master did not reach the end of its script"
  if grep -Eiq "warning|forkprof|fatal|segfault" "$dir/stdout"; then
    cat "$dir/stdout"; fail "swoole $mode: PHP or forkprof complained"
  fi
  if grep -Eq "signal=(6|7|11)|signal (6|7|11)" "$dir/swoole.log"; then
    cat "$dir/swoole.log"; fail "swoole $mode: a process crashed"
  fi
  reloads=$(grep -c "Server is reloading all workers now" "$dir/swoole.log" || true)
  [ "$reloads" = 1 ] || { cat "$dir/swoole.log"; fail "swoole $mode: $reloads reloads in the log, expected 1"; }

  local workers tasks
  workers=$(awk '$1 == "pid" { print $2 }' "$dir/client.out")
  tasks=$(awk '$1 == "task" { print $2 }' "$dir/tasks.log" | sort -u)
  local n_workers n_tasks
  n_workers=$(grep -c . <<<"$workers")
  n_tasks=$(grep -c . <<<"$tasks" || true)
  # More pids than processes at once: workers were recycled and reloaded during the run.
  [ "$n_workers" -ge 12 ] || fail "swoole $mode: only $n_workers worker pids answered; were they recycled?"
  [ "$n_tasks" -ge 4 ] || fail "swoole $mode: only $n_tasks task worker pids ran tasks"
  # Where a handler's stack starts: in a worker with coroutines on, at the root of the
  # request's own coroutine (Swoole's nameless entry frame); else inside $server->start(),
  # called from the script's {main}. Task workers run without coroutines.
  local root co_root='\{internal\}' start_root='Swoole\\Server::start;\{main\}'
  # In SWOOLE_BASE a worker told to stop by the reload can still hold connections when
  # max_wait_time runs out, and Swoole's master then kills it with SIGKILL (it logs which):
  # seen without forkprof as well. Nothing is written at a SIGKILL; those pids are counted,
  # not required to have a profile. Anywhere else, a SIGKILL is a failure.
  local killed
  killed=$(sed -nE 's/.*force kill worker process\(pid=([0-9]+),.*/\1/p' "$dir/swoole.log" | sort -u)
  if [ -n "$killed" ] && [ "$mode" != base ]; then
    cat "$dir/swoole.log"; fail "swoole $mode: Swoole killed workers with SIGKILL: $killed"
  fi
  local pid with_profile=0 tasks_with_profile=0 n_killed=0 starved=0 fns tr own about
  for pid in $workers $tasks; do
    local files=("$dir"/profiles/swoole-"$pid"-*.pprof.gz)
    if grep -qx "$pid" <<<"$workers"; then
      own=served_by_$pid
      about=$(grep "^pid $pid " "$dir/client.out" | awk '{ $1 = $2 = ""; print }')
    else
      own=task_by_$pid
      about="$(grep -c "^task $pid " "$dir/tasks.log") tasks, at the last one: $(grep "^task $pid " "$dir/tasks.log" | tail -1 | cut -d' ' -f3-)"
    fi
    root=$start_root
    [ "$co" = 1 ] && [ "$own" = "served_by_$pid" ] && root=$co_root
    if [ ! -e "${files[0]}" ] && grep -qx "$pid" <<<"$killed"; then
      n_killed=$((n_killed + 1))
      echo "  pid $pid: killed by Swoole with SIGKILL (max_wait_time after the reload), no profile ($about)"
      continue
    fi
    if grep -qE "samples 0 .*tick_wakeups 0\$" <<<"$about" &&
      { [ ! -e "${files[0]}" ] || ! functions "${files[@]}" | grep -qxF "$own"; }; then
      # The child's tick thread had not run once by the end of its last piece of work (a few
      # ms, in a worker started near the end): a starved machine, as fork.php's check allows
      # for. With no sample there is no profile to write.
      starved=$((starved + 1))
      echo "  pid $pid: its tick thread was not scheduled during its work ($about)"
      continue
    fi
    [ -e "${files[0]}" ] || fail "swoole $mode: $own: pid $pid served work and wrote no profile ($about)"
    fns=$(functions "${files[@]}")
    grep -qxF "$own" <<<"$fns" || fail "swoole $mode: pid $pid's profile lacks $own ($about)"
    if [ "$own" = "served_by_$pid" ]; then with_profile=$((with_profile + 1)); else tasks_with_profile=$((tasks_with_profile + 1)); fi
    # Swoole's request handler is a request: every sample inside it carries that request's
    # URI without its query string; a task (no request) carries the script's path.
    local ep want_ep=/orders/list
    [ "$own" = "served_by_$pid" ] || want_ep=$TESTS/swoole/server.php
    ep=$(endpoints --focus "^${own}\$" "${files[@]}")
    [ "$ep" = "$want_ep" ] || fail "swoole $mode: pid $pid: samples in $own should carry trace endpoint $want_ep, found: $ep"
    # Each stack through a handler: this pid's, once, then what Swoole called it from.
    tr=$(traces "${files[@]}" | grep -E '(^|;)(served_by|task_by)_[0-9]+(;|$)' || true)
    [ -n "$tr" ] || fail "swoole $mode: pid $pid: no stack through its handler"
    if grep -Ev "(^|;)${own};\{closure:[0-9]+\};$root\$" <<<"$tr" | grep -q .; then
      grep -Ev "(^|;)${own};\{closure:[0-9]+\};$root\$" <<<"$tr" | head -5
      fail "swoole $mode: pid $pid holds a handler stack that is not its own (above)"
    fi
  done
  [ "$starved" -le 2 ] || fail "swoole $mode: $starved pids took no sample"
  # Every profile, the manager's included: only its own pid's functions.
  local f p bad
  for f in "$dir"/profiles/*.pprof.gz; do
    p=$(basename "$f" | sed -E 's/^swoole-([0-9]+)-.*/\1/')
    fns=$(functions "$f")
    bad=$(grep -E '^(served_by|task_by)_[0-9]+$' <<<"$fns" | grep -vxE "(served_by|task_by)_$p" || true)
    [ -z "$bad" ] || fail "swoole $mode: pid $p holds another process's functions: $bad"
    if [ "$p" != "$master" ] && grep -qxF master_before_start <<<"$fns"; then
      fail "swoole $mode: pid $p holds master_before_start, the master's"
    fi
  done
  fns=$(functions "$dir"/profiles/swoole-"$master"-*.pprof.gz)
  grep -qxF master_before_start <<<"$fns" || fail "swoole $mode: the master's profile lacks master_before_start"
  local pids_with_files
  pids_with_files=$(ls "$dir"/profiles | sed -E 's/^swoole-([0-9]+)-.*/\1/' | sort -u | wc -l)
  SWOOLE_SUMMARY+=("$(printf '%-7s coroutines %-3s %4d requests (%d dropped), %d reload; worker pids %d, with a profile %d, SIGKILLed by Swoole %d; task worker pids %d, with a profile %d; tick thread not yet run %d; %d pids wrote profiles; stop %d ms' \
    "$mode" "$([ "$co" = 1 ] && echo on || echo off)" "$answered" "$dropped" "$reloads" "$n_workers" "$with_profile" "$n_killed" "$n_tasks" "$tasks_with_profile" "$starved" "$pids_with_files" $((t1 - t0)))")
  echo "  ${SWOOLE_SUMMARY[-1]}"
}
swoole() {
  swoole_build
  local mode co
  for mode in process base; do
    for co in 0 1; do
      swoole_case "$mode" "$co"
    done
  done
}
step "Swoole: SWOOLE_PROCESS and SWOOLE_BASE, coroutines off and on, recycling, reload, SIGTERM" swoole

# OTLP: forkprof.endpoint=otlp+http://..., then OTEL_EXPORTER_OTLP_ENDPOINT (a base URL) and
# OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT (the whole URL), each to a local receiver; every request
# decodes with the reference bindings (ci/otlp-proto.sh's venv) and holds the script's PHP
# function and the service name.
otlp() {
  local py=${FORKPROF_OTLP_PYTHON:-$HOME/.cache/forkprof/otlp-venv/bin/python3}
  [ -x "$py" ] || bash ci/otlp-proto.sh
  local dir="$WORK/otlp" port i n=0 how want_path
  python3 php/tests/otlp_receiver.py "$dir" &
  PIDS_TO_KILL+=($!)
  disown $!
  for ((i = 0; i < 100; i++)); do [ -s "$dir/port" ] && break; sleep 0.1; done
  [ -s "$dir/port" ] || fail "the OTLP receiver did not start"
  port=$(cat "$dir/port")
  local script='function otlp_work() { while (forkprof_stats()["samples"] < 1) usleep(5000); } otlp_work();'
  for how in ini base whole; do
    local env=() ini=()
    case $how in
      ini) ini=(-d "forkprof.endpoint=otlp+http://127.0.0.1:$port"); want_path=/v1development/profiles ;;
      base) env=("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$port"); want_path=/v1development/profiles ;;
      whole) env=("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT=http://127.0.0.1:$port/custom/profiles"); want_path=/custom/profiles ;;
    esac
    watch 30 "php to OTLP ($how)" env "${env[@]}" DD_SERVICE="otlp-$how" "${PHP[@]}" "${ini[@]}" -r "$script"
    # The exit handed its profile over (shutdown_timeout_ms bounds it), so the request has
    # arrived or is arriving: wait for the receiver to have written it.
    n=$((n + 1))
    for ((i = 0; i < 100; i++)); do [ -e "$dir/$n.path" ] && break; sleep 0.1; done
    [ -e "$dir/$n.path" ] || fail "OTLP ($how): no request reached the receiver"
    [ "$(cat "$dir/$n.path")" = "$want_path" ] || fail "OTLP ($how): request to $(cat "$dir/$n.path"), expected $want_path"
    local decoded
    decoded=$("$py" tests/python/otlp_decode.py "$dir/$n.body") || fail "OTLP ($how): the request does not decode"
    python3 -c '
import json, sys
req, = json.loads(sys.argv[1])
service, how = sys.argv[2], sys.argv[3]
got = req["resource"].get("service.name")
assert got == service, f"{how}: service.name {got}, expected {service}"
names = {f.split("@")[0] for p in req["profiles"] for s in p["samples"] for f in s["stack"]}
assert "otlp_work" in names, f"{how}: otlp_work is not on any stack: {sorted(names)}"
types = sorted(p["type"] for p in req["profiles"])
samples = sum(len(p["samples"]) for p in req["profiles"])
print(f"  {how}: service.name {service}, {samples} samples, functions {sorted(names)}, types {types}")
' "$decoded" "otlp-$how" "$how" || fail "OTLP ($how): the request lacks the service or the function"
  done
  # The same receiver as a Datadog agent: the upload names the PHP family and library.
  watch 30 "php to the agent" "${PHP[@]}" -d "forkprof.endpoint=http://127.0.0.1:$port" -r "$script"
  n=$((n + 1))
  for ((i = 0; i < 100; i++)); do [ -e "$dir/$n.path" ] && break; sleep 0.1; done
  [ -e "$dir/$n.path" ] || fail "agent: no upload reached the receiver"
  [ "$(cat "$dir/$n.path")" = /profiling/v1/input ] || fail "agent: upload to $(cat "$dir/$n.path")"
  grep -qx "DD-EVP-ORIGIN: forkprof-php" "$dir/$n.headers" || { cat "$dir/$n.headers"; fail "agent: DD-EVP-ORIGIN is not forkprof-php"; }
  grep -qa '"family":"php"' "$dir/$n.body" || fail "agent: the event's family is not php"
  echo "  agent upload: DD-EVP-ORIGIN forkprof-php $(grep -i '^DD-EVP-ORIGIN-VERSION' "$dir/$n.headers" | cut -d' ' -f2 | tr -d '\r'), family php"
}
step "OTLP: otlp+http:// and the OTEL_EXPORTER_OTLP_* variables, decoded with the reference bindings; the agent upload's library and family" otlp

stalled() {
  local url="http://127.0.0.1:$STALLED_PORT" t0 t1 mode
  echo "  stalled agent at $url (accepts, never answers)"
  fpm_run "no-extension"
  fpm_run "stalled-agent" "${FPM_EXT[@]}" "forkprof.endpoint=$url"
  local -a cli=()
  for mode in none files stalled; do
    local args=()
    case $mode in
      none) args=(php -n) ;;
      files) args=("${PHP[@]}" -d forkprof.output_dir="$WORK/cli-files") ;;
      stalled) args=("${PHP[@]}" -d forkprof.endpoint="$url") ;;
    esac
    t0=$(now_ms)
    if [ $mode = none ]; then
      # pcntl is built into Debian's CLI; forkprof_stats() is the extension's: stub it.
      args+=(-d auto_prepend_file="$WORK/stub.php")
    fi
    watch 120 "fork.php ($mode)" "${args[@]}" "$TESTS/fork.php" >"$WORK/fork-$mode.out"
    t1=$(now_ms)
    cli+=("$(printf '%-22s fork.php (7 processes) %6d ms   pcntl_fork in the parent: %s' "$mode" \
      $((t1 - t0)) "$(grep '^fork_latency_us' "$WORK/fork-$mode.out" | cut -d' ' -f2-) us")")
  done
  # Forks while an upload to the hung agent is in flight (a profile every second), and
  # children that exit without waiting for theirs.
  local loop
  t0=$(now_ms)
  loop=$(watch 300 "fork_loop.php (stalled agent)" "${PHP[@]}" -d extension=posix \
    -d forkprof.endpoint="$url" -d forkprof.export_period_s=1 -d forkprof.shutdown_timeout_ms=0 \
    -d forkprof.period_ms=1 "$TESTS/fork_loop.php" 300)
  t1=$(now_ms)
  cli+=("$(printf '%-22s fork_loop.php, uploads in flight: %s, %d ms' stalled "$loop" $((t1 - t0)))")
  echo "=== timings, side by side (this run; not asserted)"
  printf '  %s\n' "${FPM_TIMINGS[@]}" "${cli[@]}"
}
cat >"$WORK/stub.php" <<'EOF'
<?php
// Each call counts one more sample: fork.php's work runs until a sample has been taken.
function forkprof_stats() { static $n = 0; return ['samples' => ++$n, 'ticks' => 0, 'tick_thread_starts' => 1, 'running' => 1]; }
EOF
step "stalled agent: php-fpm and pcntl_fork with and without the extension" stalled

summary
