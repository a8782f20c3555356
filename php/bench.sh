#!/usr/bin/env bash
# forkprof-php's overhead and sample cost (a benchmark: figures printed, nothing asserted).
#   1. bench/cpu.php, a CPU-bound script, RUNS times with and without the extension at the
#      default 10 ms period, alternating; the medians of its wall time and of the process's CPU
#      time (every thread: the tick and forkprof's threads count), side by side.
#   2. The cost of one sample (stack walk + record + clock reads) with 20- and 100-frame
#      stacks, as the extension measures it (median over a run at a 1 ms period).
# Usage: php/bench.sh [RUNS]   (builds the release cdylib; needs php8.2-cli, as ci/test-php.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-11}
cargo build -p forkprof-php --release --locked >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | php -n -r 'echo json_decode(stream_get_contents(STDIN), true)["target_directory"];')
SO="$TARGET_DIR/release/libforkprof_php.so"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/forkprof-php-bench.XXXXXX")
trap 'rm -rf "$OUT"' EXIT

now_ns() { date +%s%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

php -n php/bench/cpu.php >/dev/null # warm the page cache
for ((i = 0; i < RUNS; i++)); do
  php -n php/bench/cpu.php >>"$OUT/off"
  php -n -d "extension=$SO" -d "forkprof.output_dir=$OUT/profiles" php/bench/cpu.php >>"$OUT/on"
done
col() { awk -v c="$1" '{ print $c }' "$2" | median; }
row() {
  local what=$1 c=$2 off on
  off=$(col "$c" "$OUT/off") on=$(col "$c" "$OUT/on")
  printf '  %-46s %9.1f ms %9.1f ms %8.4f\n' "$what" "$off" "$on" "$(echo "$on / $off" | bc -l)"
}
echo "cpu.php, $RUNS runs each, alternating, forkprof.period_ms=10 (the default)"
printf '  %-46s %12s %12s %8s\n' "" "without" "with" "ratio"
row "script wall time, hrtime (median)" 1
row "process CPU during the workload (median)" 2
row "process CPU from exec, incl. loading (median)" 3
echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (wall time on a shared machine is noisy; CPU time less so)"

echo "cost of one sample (walk + record + 2 clock reads), median over a 2 s run at period_ms=1"
printf '  %-8s %8s %12s %12s\n' "frames" "samples" "median ns" "mean ns"
for depth in 20 100; do
  read -r d n med mean < <(php -n -d "extension=$SO" -d "forkprof.output_dir=$OUT/profiles" \
    -d forkprof.period_ms=1 -d forkprof.max_depth=128 php/bench/depth.php "$depth" 2)
  printf '  %-8s %8s %12s %12s\n' "$d" "$n" "$med" "$mean"
done

# Instruction counts do not move with the machine's load: the same comparison under callgrind
# (whole process, every thread, start-up included), on a quarter of the workload. Valgrind
# runs the script ~50x slower while the tick stays at 10 ms of wall time, so this takes ~50x
# more samples per instruction than a native run: an upper bound for the sampling's share.
if command -v valgrind >/dev/null 2>&1; then
  echo "instructions, callgrind, cpu.php at scale 0.25"
  ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 | sed -n 's/.*Collected : //p'; }
  off=$(ir php -n php/bench/cpu.php 0.25)
  loaded=$(ir php -n -d "extension=$SO" -d forkprof.enabled=0 php/bench/cpu.php 0.25)
  hooks=$(ir php -n -d "extension=$SO" -d "forkprof.output_dir=$OUT/profiles" -d forkprof.period_ms=1000 php/bench/cpu.php 0.25)
  on=$(ir php -n -d "extension=$SO" -d "forkprof.output_dir=$OUT/profiles" php/bench/cpu.php 0.25)
  printf '  %-52s %14s %8s\n' "" "instructions" "ratio"
  printf '  %-52s %14d %8.4f\n' "without the extension" "$off" 1 \
    "loaded, forkprof.enabled=0" "$loaded" "$(echo "$loaded / $off" | bc -l)" \
    "hooks installed, profiler running, period_ms=1000" "$hooks" "$(echo "$hooks / $off" | bc -l)" \
    "profiling at period_ms=10 (the default)" "$on" "$(echo "$on / $off" | bc -l)"
fi
