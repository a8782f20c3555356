#!/usr/bin/env bash
# forkprof-php's overhead and sample cost (a benchmark: figures printed, nothing asserted).
#   1. bench/cpu.php, a CPU-bound script, RUNS times with and without the extension at the
#      default 10 ms period, alternating; the medians of its wall time and of the process's CPU
#      time (every thread: the tick and forkprof's threads count), side by side.
#   2. The cost of one sample (stack walk + record + clock reads) with 20- and 100-frame
#      stacks, as the extension measures it (median over a run at a 1 ms period).
#   3. Instructions (callgrind: the machine's load does not move them) of bench/cpu.php and
#      of a real program (Debian's composer, dump-autoload -o over 800 generated classes),
#      each without the extension, with wall + CPU time only, with each other profile type
#      added alone, with every type on (the defaults), and under Excimer (Debian's
#      php-excimer) started from an auto_prepend_file at the same 10 ms period; and a PHP
#      process's fixed start + exit (`php -r ''`), the same ways.
#   4. A PHP process's fixed start + exit in wall time: `php -r ''` without and with the
#      extension (every type on), 41 interleaved pairs, medians and the median of the
#      per-pair differences.
# Usage: php/bench.sh [RUNS]   (builds the release cdylib; needs php8.2-cli, as ci/test-php.sh,
#                              and valgrind, composer and php-excimer for 3.)
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

# 3. Each profile type's own cost, and Excimer's, in instructions. The configurations:
if command -v valgrind >/dev/null 2>&1 && command -v composer >/dev/null 2>&1 && [ -f "$(php -n -r 'echo ini_get("extension_dir");')/excimer.so" ]; then
  FP=(-d "extension=$SO" -d "forkprof.output_dir=$OUT/profiles")
  WALL_CPU=(-d forkprof.allocation_enabled=0 -d forkprof.exception_enabled=0 -d forkprof.timeline_enabled=0)
  CONFIGS=(
    "without a profiler|"
    "forkprof: wall + CPU time only|${FP[*]} ${WALL_CPU[*]}"
    "forkprof: wall + CPU + allocations|${FP[*]} -d forkprof.exception_enabled=0 -d forkprof.timeline_enabled=0"
    "forkprof: wall + CPU + exceptions|${FP[*]} -d forkprof.allocation_enabled=0 -d forkprof.timeline_enabled=0"
    "forkprof: wall + CPU + timeline|${FP[*]} -d forkprof.allocation_enabled=0 -d forkprof.exception_enabled=0"
    "forkprof: every type (the defaults)|${FP[*]}"
    "Excimer: wall-clock profile, 10 ms|-d extension=excimer -d auto_prepend_file=$PWD/php/bench/excimer_prepend.php"
  )
  export EXCIMER_OUT="$OUT/excimer.log" EXCIMER_PERIOD=0.01
  # The real program's project: 800 classes for composer's optimized class map.
  mkdir -p "$OUT/composer/src/Model" "$OUT/composer/src/Service"
  cp php/tests/composer/composer.json "$OUT/composer/"
  for ((i = 1; i <= 400; i++)); do
    printf '<?php\nnamespace Shop\\Model;\n\nclass Item%d\n{\n    public function id(): int { return %d; }\n}\n' $i $i >"$OUT/composer/src/Model/Item$i.php"
    printf '<?php\nnamespace Shop\\Service;\n\ninterface Service%d {}\nfinal class Handler%d implements Service%d\n{\n    public function handle(): string { return "%d"; }\n}\n' \
      $i $i $i $i >"$OUT/composer/src/Service/Handler$i.php"
  done
  export COMPOSER_ALLOW_SUPERUSER=1 COMPOSER_HOME="$OUT/composer-home" COMPOSER_DISABLE_NETWORK=1 COMPOSER_NO_INTERACTION=1
  COMPOSER=(-d extension=iconv -d extension=mbstring "$(command -v composer)" --no-ansi --quiet dump-autoload -o)
  ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 | sed -n 's/.*Collected : //p'; }
  for workload in cpu composer exit; do
    case $workload in
      cpu) echo "instructions, callgrind, php/bench/cpu.php at scale 0.25 (whole process, every thread)"; args=(php/bench/cpu.php 0.25) ;;
      composer) echo "instructions, callgrind, composer dump-autoload -o (800 classes; whole process, every thread)"; args=("${COMPOSER[@]}") ;;
      exit) echo "instructions, callgrind, a PHP process's start + exit (php -r '')"; args=(-r '') ;;
    esac
    printf '  %-44s %14s %8s\n' "" "instructions" "ratio"
    base=""
    for c in "${CONFIGS[@]}"; do
      name=${c%%|*} flags=${c#*|}
      # shellcheck disable=SC2086 # the flags are words
      n=$(cd "$([ $workload = composer ] && echo "$OUT/composer" || pwd)" && ir php -n $flags "${args[@]}")
      [ -n "$base" ] || base=$n
      printf '  %-44s %14d %8.4f\n' "$name" "$n" "$(echo "$n / $base" | bc -l)"
    done
  done
fi

# 4. Start + exit in wall time, interleaved pairs (the machine's noise hits both of a pair).
pairs=41
: >"$OUT/exit-pairs"
for ((i = 0; i < pairs; i++)); do
  t0=$(now_ns); php -n -r '' ; t1=$(now_ns)
  php -n -d "extension=$SO" -d "forkprof.output_dir=$OUT/profiles" -r ''; t2=$(now_ns)
  echo "$(( (t1 - t0) / 1000 )) $(( (t2 - t1) / 1000 ))" >>"$OUT/exit-pairs"
done
echo "php -r '' (start + exit), $pairs interleaved pairs, wall time in µs"
printf '  %-34s %10s %10s %18s\n' "" "without" "with" "median difference"
printf '  %-34s %10s %10s %18s\n' "median" "$(awk '{ print $1 }' "$OUT/exit-pairs" | median)" \
  "$(awk '{ print $2 }' "$OUT/exit-pairs" | median)" "$(awk '{ print $2 - $1 }' "$OUT/exit-pairs" | median)"
