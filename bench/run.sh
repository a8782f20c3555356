#!/usr/bin/env bash
# Reproduces every figure in BENCHMARKS.md: forkprof against libdd-profiling 1.0.0 (criterion,
# one run), fork overhead, host overhead, peak RSS. About 5 minutes on 2 cores once built.
# Output goes to the terminal and to target/forkprof-bench.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/forkprof-bench.txt
mkdir -p target
cargo build -p forkprof-bench --release --benches --bins
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
  echo "== fork overhead"
  cargo run -q -p forkprof-bench --release --bin fork_overhead
  echo "== host overhead"
  cargo run -q -p forkprof-bench --release --bin host_overhead
  echo "== peak RSS"
  cargo run -q -p forkprof-bench --release --bin peak_rss
} 2>&1 | tee "$out"
