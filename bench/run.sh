#!/usr/bin/env bash
# Reproduces every figure in BENCHMARKS.md: forkprof against libdd-profiling 1.0.0 (criterion,
# one run), instruction counts (callgrind), fork overhead, host overhead, peak RSS. About 7
# minutes on 2 cores once built (the first build of libdd-profiling's tree takes ~12 more).
# Output goes to the terminal and to target/forkprof-bench.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/forkprof-bench.txt
mkdir -p target
# One build serves everything: the bins run under the same `bench` profile as criterion
# (release + debug info), so libdd-profiling's dependency tree is compiled once.
cargo bench -p forkprof-bench --no-run
cargo build -p forkprof-bench --profile bench --bins
{
  echo "== machine"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "rustc: $(rustc --version)"
  echo "kernel: $(uname -r)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "== per-sample costs (criterion)"
  cargo bench -p forkprof-bench --bench compare -- \
    --warm-up-time 1 --measurement-time 3 --sample-size 30 --noplot
  echo "== instructions per sample (callgrind, load-independent)"
  cargo run -q -p forkprof-bench --profile bench --bin icount
  echo "== fork overhead"
  cargo run -q -p forkprof-bench --profile bench --bin fork_overhead
  echo "== string table: the longest wait a fork's prepare handler meets"
  cargo run -q -p forkprof-bench --profile bench --bin intern_worst
  echo "== host overhead"
  cargo run -q -p forkprof-bench --profile bench --bin host_overhead
  echo "== peak RSS"
  cargo run -q -p forkprof-bench --profile bench --bin peak_rss
} 2>&1 | tee "$out"
