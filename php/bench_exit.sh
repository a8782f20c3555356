#!/usr/bin/env bash
# How long PHP takes to stop with forkprof-php, against without it (a benchmark: figures
# printed, nothing asserted). Three configurations, alternating (each round starting with the
# next one), RUNS times each, medians side by side with their ratio to "without":
#   none      php / php-fpm without the extension
#   files     the extension, file export (the default)
#   stalled   the extension, forkprof.endpoint on a loopback server that accepts every
#             connection and never answers (a hung Datadog agent)
# Figures:
#   CLI exit           php/bench/exit.php: from the script's last statement to the process's
#                      exit as the shell sees it (RSHUTDOWN, MSHUTDOWN, the last profile)
#   CLI run            the same run, exec to exit
#   pcntl_fork run     php/tests/fork.php: 7 processes in 3 generations, each exiting with a
#                      last profile, the parent waiting for all
#   php-fpm SIGQUIT    a static pool of 4 workers that served 40 requests: from the signal to
#                      the master's exit (each worker stops its profiler on the way)
# Usage: php/bench_exit.sh [RUNS]   (RUNS defaults to 11; needs php8.2-cli, php8.2-fpm,
#        libfcgi-bin as ci/test-php.sh)
#        FORKPROF_PHP_PROFILE=debug php/bench_exit.sh   to measure the debug build
#        FORKPROF_PHP_SO=/path/libforkprof_php.so php/bench_exit.sh   to measure a build made
#        elsewhere (an older commit's, for a before/after comparison)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-11}
PROFILE=${FORKPROF_PHP_PROFILE:-release}
if [ -n "${FORKPROF_PHP_SO:-}" ]; then
  SO=$FORKPROF_PHP_SO
  PROFILE="given: $SO"
else
  if [ "$PROFILE" = release ]; then
    cargo build -p forkprof-php --release --locked >&2
  else
    cargo build -p forkprof-php --locked >&2
  fi
  TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | php -n -r 'echo json_decode(stream_get_contents(STDIN), true)["target_directory"];')
  SO="$TARGET_DIR/$PROFILE/libforkprof_php.so"
fi
OUT=$(mktemp -d "${TMPDIR:-/tmp}/forkprof-php-exit.XXXXXX")
SERVER=""
cleanup() {
  [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT

now_us() { date +%s%6N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

php -n php/tests/stalled_server.php "$OUT/stalled.port" 3600 &
SERVER=$!
for ((i = 0; i < 100; i++)); do [ -s "$OUT/stalled.port" ] && break; sleep 0.1; done
[ -s "$OUT/stalled.port" ] || { echo "the stalled server did not start" >&2; exit 1; }
URL="http://127.0.0.1:$(cat "$OUT/stalled.port")"
# fork.php calls forkprof_stats(); without the extension a stub stands in.
cat >"$OUT/stub.php" <<'PHP'
<?php
function forkprof_stats() { return ['samples' => 0, 'ticks' => 0, 'tick_thread_starts' => 1, 'running' => 1]; }
PHP

# The php arguments of each configuration.
php_args() {
  case $1 in
    none) echo "-n" ;;
    files) echo "-n -d extension=$SO -d forkprof.output_dir=$OUT/profiles-$2" ;;
    stalled) echo "-n -d extension=$SO -d forkprof.endpoint=$URL" ;;
  esac
}
ini_lines() {
  case $1 in
    none) ;;
    files) printf '%s\n' "extension=$SO" "forkprof.output_dir=$OUT/profiles-fpm" ;;
    stalled) printf '%s\n' "extension=$SO" "forkprof.endpoint=$URL" ;;
  esac
}

cli_run() {
  local mode=$1 t0 end t1
  # shellcheck disable=SC2046
  t0=$(now_us)
  end=$(php $(php_args "$mode" cli) php/bench/exit.php)
  t1=$(now_us)
  echo "$((t1 - end)) $((t1 - t0))" >>"$OUT/res-cli-$mode"
}

fork_run() {
  local mode=$1 t0 t1 extra=()
  [ "$mode" = none ] && extra=(-d auto_prepend_file="$OUT/stub.php")
  t0=$(now_us)
  # shellcheck disable=SC2046
  timeout -k 5 120 php $(php_args "$mode" fork) "${extra[@]}" php/tests/fork.php >/dev/null
  t1=$(now_us)
  echo "$((t1 - t0))" >>"$OUT/res-fork-$mode"
}

fpm_run() {
  local mode=$1 dir="$OUT/fpm-$1" i c
  rm -rf "$dir" && mkdir -p "$dir"
  sed "s|@DIR@|$dir|g" php/tests/fpm/pool.conf.in >"$dir/pool.conf"
  cp php/tests/fpm/app.php "$dir/app.php"
  { echo "opcache.enable=1"; ini_lines "$mode"; } >"$dir/php.ini"
  php-fpm8.2 -R -F -y "$dir/pool.conf" -c "$dir/php.ini" >"$dir/stdout" 2>&1 &
  local master=$!
  for ((i = 0; i < 200; i++)); do [ -S "$dir/fpm.sock" ] && break; sleep 0.05; done
  [ -S "$dir/fpm.sock" ] || { cat "$dir/stdout"; echo "php-fpm ($mode) did not start" >&2; exit 1; }
  for c in 0 1 2 3; do
    timeout -k 5 60 php/tests/fpm/client.sh "$dir/fpm.sock" "$dir/app.php" 10 >/dev/null &
  done
  for c in 0 1 2 3; do wait -n; done
  local t0 t1
  t0=$(now_us)
  kill -QUIT "$master"
  wait "$master" || true
  t1=$(now_us)
  echo "$((t1 - t0))" >>"$OUT/res-fpm-$mode"
}

php -n php/bench/exit.php >/dev/null # warm the page cache
MODES=(none files stalled)
for ((r = 0; r < RUNS; r++)); do
  # Each round starts with the next configuration: none of them always runs first or last.
  for ((m = 0; m < 3; m++)); do
    mode=${MODES[$(((r + m) % 3))]}
    cli_run "$mode"
    fork_run "$mode"
    fpm_run "$mode"
  done
done

col() { awk -v c="$1" '{ print $c }' "$2" | median; }
row() {
  local what=$1 file=$2 c=$3 none files stalled
  none=$(col "$c" "$OUT/res-$file-none") files=$(col "$c" "$OUT/res-$file-files") stalled=$(col "$c" "$OUT/res-$file-stalled")
  printf '  %-34s %10.1f %10.1f %10.1f %8.3f %8.3f\n' "$what" "$(echo "$none / 1000" | bc -l)" \
    "$(echo "$files / 1000" | bc -l)" "$(echo "$stalled / 1000" | bc -l)" \
    "$(echo "$files / $none" | bc -l)" "$(echo "$stalled / $none" | bc -l)"
}
echo "stopping PHP, $RUNS runs of each, alternating ($PROFILE build; medians in ms)"
printf '  %-34s %10s %10s %10s %8s %8s\n' "" "none" "files" "stalled" "files/" "stalled/"
printf '  %-34s %10s %10s %10s %8s %8s\n' "" "" "" "" "none" "none"
row "CLI exit (script end to exit)" cli 1
row "CLI run (exec to exit)" cli 2
row "pcntl_fork run (fork.php, 7 procs)" fork 1
row "php-fpm SIGQUIT (4 workers)" fpm 1
echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
