#!/usr/bin/env bash
# Records the ABI of the library as built now as the baseline of its major version:
# ffi/abi/v<major>/libforkprof.abi (abidw, pruned to what callers see) and
# ffi/abi/v<major>/forkprof.h (the header at that point, which ci/test-ffi.sh compiles the
# old-caller test against). ci/test-ffi.sh compares every build with every committed revision
# of the baseline of its major, so run this:
#   - in the commit that moves FORKPROF_ABI_VERSION_MAJOR (a new directory, v<major+1>);
#   - optionally at a minor release, so what it added is held to compatibility from then on.
# An x86_64 Linux build (the baseline describes that platform's layout), needs abigail-tools.
#
# Usage: ffi/abi/update-baseline.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build -p forkprof-ffi --locked
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
major=$(sed -n 's/^#define FORKPROF_ABI_VERSION_MAJOR \([0-9][0-9]*\)$/\1/p' ffi/include/forkprof.h)
[ -n "$major" ] || { echo "no FORKPROF_ABI_VERSION_MAJOR in ffi/include/forkprof.h" >&2; exit 1; }
[ "$(uname -sm)" = "Linux x86_64" ] || { echo "record the baseline on x86_64 Linux" >&2; exit 1; }

dir=ffi/abi/v$major
mkdir -p "$dir"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
abidw --no-corpus-path --no-comp-dir-path --short-locs --out-file "$tmp" "$target_dir/debug/libforkprof.so"
python3 ffi/abi/prune.py "$tmp" "$dir/libforkprof.abi"
cp ffi/include/forkprof.h "$dir/forkprof.h"
echo "recorded $dir: $(grep -c '<function-decl' "$dir/libforkprof.abi") functions"
