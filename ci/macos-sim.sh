#!/usr/bin/env bash
# The macOS-semantics suite (tests/macos_semantics.rs) at soak size: fork loops of
# FORKPROF_MACOS_SIM_FORKS forks from two threads, and FORKPROF_MACOS_SIM_PROCESSES fresh
# processes, for the macOS strategy and the atfork strategy, under the LD_PRELOAD simulation of
# macOS's atfork lock (tests/macos_sim/macos_sim.c), plus the naive-barrier negative control.
# The default-size run is part of the normal test suite; this one looks for rare interleavings.
# glibc only: the simulation interposes glibc's symbols.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh

export FORKPROF_MACOS_SIM_FORKS=${FORKPROF_MACOS_SIM_FORKS:-2000}
export FORKPROF_MACOS_SIM_PROCESSES=${FORKPROF_MACOS_SIM_PROCESSES:-100}
step "macOS semantics (forks=$FORKPROF_MACOS_SIM_FORKS, processes=$FORKPROF_MACOS_SIM_PROCESSES)" \
  cargo test --locked --test macos_semantics -- --nocapture --test-threads=1
summary
