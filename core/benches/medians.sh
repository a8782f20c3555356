#!/bin/sh
# Prints criterion's median and mean per bench of the last run, per element (sample):
# on a shared 2-vCPU machine the median resists preemption outliers better than the mean.
# usage: core/benches/medians.sh [target-dir]
dir="${1:-target}/criterion"
for f in $(find "$dir" -path '*/new/estimates.json' | sort); do
    name=$(echo "$f" | sed "s|$dir/||; s|/new/estimates.json||")
    python3 - "$f" "$name" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
name = sys.argv[2]
per = 1000 if "serialize" in name else 1
med, mean = e["median"]["point_estimate"] / per, e["mean"]["point_estimate"] / per
print(f"{name:55s} median {med:9.1f} ns/sample   mean {mean:9.1f} ns/sample")
PY
done
