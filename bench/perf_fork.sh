#!/bin/bash
# Kernel time per fork by phase (perf cpu-clock samples with call graphs), interpreter-sized
# process, phases interleaved: what BENCHMARKS.md's dup_mmap breakdown comes from. Needs
# `perf` with kernel symbols and the bench bins built (`cargo build -p forkprof-bench --profile bench --bins`).
cd "$(dirname "$0")/.."
for r in 1 2; do for ph in profiled-0k profiled-100k host; do
  perf record -q -e cpu-clock -g -o ${TMPDIR:-/tmp}/forkprof-perf.data -- target/release/fork_overhead --footprint --phase $ph --forks 1000 >/dev/null 2>&1
  perf report -i ${TMPDIR:-/tmp}/forkprof-perf.data --children --stdio --comms fork_overhead --sort sym -g none 2>/dev/null > ${TMPDIR:-/tmp}/forkprof-perf.txt
  total=$(grep "Event count" ${TMPDIR:-/tmp}/forkprof-perf.txt | grep -o "[0-9]*")
  line="round $r $ph:"
  for s in kernel_clone dup_mmap copy_page_range anon_vma_fork exc_page_fault; do
    pct=$(grep -E "\[k\] $s\$" ${TMPDIR:-/tmp}/forkprof-perf.txt | awk '{print $1}' | tr -d %)
    us=$(python3 -c "print(round(${pct:-0}/100*$total/1000/1000,1))")
    line="$line $s ${us}us/fork"
  done
  echo "$line"
done; done
