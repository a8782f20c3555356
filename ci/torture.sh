#!/usr/bin/env bash
# The fork torture run: a release build of the CLI, then 2000 forks from 4 threads at once
# while 2 host threads record and the upload is stalled on a loopback endpoint, compared with
# the same forks and no profiler. Non-zero on any failed child, lost parent sample or
# DEADLOCK (exit 3); then the fork-chaos run (threads starting and exiting, stderr, the
# environment, the resolver and the allocator busy while 4 threads fork); then signal sampling
# (samples recorded from a SIGPROF handler while threads churn malloc and 3 threads fork 2000
# children that re-arm their timers, record and stop) and a 2000-generation process line
# whose mappings, thread stacks and descriptors must not grow. Roughly 2 min on 2 cores from a
# warm cache.
# Usage: ci/torture.sh [--target TRIPLE] [extra forkprof torture options]
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh

target_args=()
bin=./target/release/forkprof
if [ "${1:-}" = "--target" ]; then
  target_args=(--target "$2")
  bin="./target/$2/release/forkprof"
  shift 2
fi

step "build forkprof (release ${target_args[*]:-host})" cargo build --release --locked -p forkprof-cli "${target_args[@]}"
step "torture (restart)" "$bin" torture --forks 2000 --threads 4 "$@"
step "torture (disable)" "$bin" torture --forks 2000 --threads 4 --policy disable "$@"
step "torture --chaos" "$bin" torture --chaos --forks 2000 --threads 4
step "torture --signals" "$bin" torture --signals --forks 2000 --threads 3
step "torture --line" "$bin" torture --line 2000
summary
