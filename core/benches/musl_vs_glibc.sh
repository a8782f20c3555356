#!/usr/bin/env bash
# The record / collector / serialize benches built for glibc and for musl and run one after
# the other in one invocation, then side by side with the musl/glibc ratio (goal: ≤ 1.5×;
# musl's allocator is the usual suspect). Figures are thread CPU time per sample.
# usage: core/benches/musl_vs_glibc.sh [criterion args, default: short runs]
set -euo pipefail
cd "$(dirname "$0")/../.."
MUSL=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$MUSL" || rustup target add "$MUSL"
command -v musl-gcc >/dev/null 2>&1 && export CC_x86_64_unknown_linux_musl=musl-gcc
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--warm-up-time 1 --measurement-time 3)
out=$(mktemp -d)
for libc in glibc musl; do
  target=()
  [ "$libc" = musl ] && target=(--target "$MUSL")
  rm -rf target/criterion
  cargo bench -q -p forkprof-core --bench record "${target[@]}" -- "${args[@]}" >/dev/null
  mkdir -p "$out/$libc" && cp -r target/criterion/. "$out/$libc/"
done
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def medians(libc):
    res = {}
    root = os.path.join(out, libc)
    for dirpath, _, files in os.walk(root):
        if dirpath.endswith("/new") and "estimates.json" in files:
            name = os.path.relpath(os.path.dirname(dirpath), root)
            per = 1000 if "1000" in name or name.startswith("serialize") else 1
            res[name] = json.load(open(os.path.join(dirpath, "estimates.json")))["median"]["point_estimate"] / per
    return res
g, m = medians("glibc"), medians("musl")
print(f"{'bench (ns per sample)':52s} {'glibc':>9s} {'musl':>9s} {'musl/glibc':>10s}")
worst = 0.0
for name in sorted(g):
    if name in m:
        r = m[name] / g[name]
        worst = max(worst, r)
        print(f"{name:52s} {g[name]:9.1f} {m[name]:9.1f} {r:9.2f}x")
print(f"worst ratio {worst:.2f}x (goal ≤ 1.5x)")
PY
