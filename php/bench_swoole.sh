#!/usr/bin/env bash
# forkprof-php's overhead under Swoole (a benchmark: figures printed, nothing asserted).
# php/bench/swoole_server.php (SWOOLE_PROCESS, 4 workers, coroutines off, a CPU-bound handler
# of about 1 ms) serves N requests, 8 at a time, from php/tests/swoole/client.go (keep-alive
# off), without and with the extension at the default 10 ms period, alternating, RUNS rounds.
# Per round and configuration, a second server that is started and stopped with no request
# gives the fixed cost (start-up, stop) to take away, so:
#   CPU per request = (server CPU with N requests - server CPU with none) / N
# where server CPU is user + system time of every process of the server and every thread
# (getrusage of the master and of its waited-for children). Medians over the rounds, side by
# side, with their ratio.
# Usage: php/bench_swoole.sh [RUNS] [N]   (RUNS defaults to 5, N to 3000; builds the release
#        cdylib and Swoole, as ci/test-php.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
N=${2:-3000}
cargo build -p forkprof-php --release --locked >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | php -n -r 'echo json_decode(stream_get_contents(STDIN), true)["target_directory"];')
SO="$TARGET_DIR/release/libforkprof_php.so"
SWOOLE_SO=$("$(cd "$(git rev-parse --show-toplevel)/.." && pwd)/shared/swoole/build.sh")
OUT=$(mktemp -d "${TMPDIR:-/tmp}/forkprof-php-bench-swoole.XXXXXX")
SERVER=""
cleanup() {
  [ -z "$SERVER" ] || kill -9 "$SERVER" 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT
go build -o "$OUT/client" php/tests/swoole/client.go

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# run CONFIG REQUESTS: prints "CPU_US ELAPSED_MS" of one server's life.
run() {
  local config=$1 n=$2 args=(php -n -d "extension=$SWOOLE_SO")
  [ "$config" = off ] || args+=(-d "extension=$SO" -d "forkprof.output_dir=$OUT/profiles")
  rm -f "$OUT/port" "$OUT/cpu"
  "${args[@]}" php/bench/swoole_server.php "$OUT/port" "$OUT/cpu" >"$OUT/server.log" 2>&1 &
  SERVER=$!
  local i
  for ((i = 0; i < 200; i++)); do [ -s "$OUT/port" ] && break; sleep 0.05; done
  [ -s "$OUT/port" ] || { cat "$OUT/server.log" >&2; echo "the server did not start" >&2; exit 1; }
  local elapsed=0
  if [ "$n" -gt 0 ]; then
    timeout 300 "$OUT/client" "http://127.0.0.1:$(cat "$OUT/port")/" "$n" 8 >"$OUT/client.out"
    elapsed=$(awk '$1 == "requests" { print $6 }' "$OUT/client.out")
  fi
  kill -TERM "$SERVER"
  timeout 60 tail --pid="$SERVER" -f /dev/null
  wait "$SERVER" || true
  SERVER=""
  [ -s "$OUT/cpu" ] || { cat "$OUT/server.log" >&2; echo "the server did not report its CPU time" >&2; exit 1; }
  echo "$(cat "$OUT/cpu") $elapsed"
}

for ((r = 0; r < RUNS; r++)); do
  for config in off on; do
    read -r busy elapsed < <(run "$config" "$N")
    read -r idle _ < <(run "$config" 0)
    echo "$(((busy - idle) / N)) $(echo "$N * 1000 / $elapsed" | bc -l)" >>"$OUT/$config"
    printf '  round %d %-3s %6d us CPU per request, %8.1f requests/s\n' "$r" "$config" \
      "$(((busy - idle) / N))" "$(echo "$N * 1000 / $elapsed" | bc -l)" >&2
  done
done
col() { awk -v c="$1" '{ print $c }' "$OUT/$2" | median; }
echo "Swoole HTTP server (SWOOLE_PROCESS, 4 workers, coroutines off, CPU-bound handler),"
echo "$N requests 8 at a time per run, $RUNS runs each, alternating, forkprof.period_ms=10 (the default)"
printf '  %-38s %12s %12s %8s\n' "" "without" "with" "ratio"
for row in "server CPU per request (us, median):1" "requests per second (median):2"; do
  what=${row%:*} c=${row##*:}
  off=$(col "$c" off) on=$(col "$c" on)
  printf '  %-38s %12.1f %12.1f %8.4f\n' "$what" "$off" "$on" "$(echo "$on / $off" | bc -l)"
done
echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (CPU time on a shared machine is noisy)"
