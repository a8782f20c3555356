#!/usr/bin/env bash
# Runs the README's shell blocks as written, the way the doc tests run its Rust: every line of
# every ```sh block, from the repository root, except `ci/test` itself (this script is one of
# its steps). A block's commands run in one shell, in order; a failing command fails the step
# and names the block. Blocks fenced ```shell are set-up a reader runs on their own machine
# (installing the PHP extension system-wide, reloading a service) and are not run here: run
# in CI they would change the machine every later step uses. What they write (demo profiles, ./profiles) is removed afterwards.
# apt-get lines run only as root (CI is root; a developer has installed the packages).
set -euo pipefail
cd "$(dirname "$0")/.."

blocks=$(mktemp -d)
created=()
trap 'rm -rf "$blocks" "${created[@]}"' EXIT
for d in forkprof-demo-profiles profiles; do
  [ -e "$d" ] || created+=("$PWD/$d")
done
created+=("$PWD/flame.svg")

# Split the README's ```sh blocks into files, one per block, joining continued lines.
awk -v dir="$blocks" '
  /^```(sh|bash)$/ { n++; f = sprintf("%s/%02d.sh", dir, n); start[n] = NR; inb = 1; next }
  /^```/ && inb { inb = 0; next }
  inb { print > f }
' README.md
count=0
for f in "$blocks"/*.sh; do
  script=$(grep -v -E '^ci/test( |$)' "$f" | sed -E 's/[[:space:]]+#[^"'"'"']*$//')
  if [ "$(id -u)" != 0 ]; then script=$(printf '%s\n' "$script" | grep -v '^apt-get '); fi
  [ -n "$(printf '%s' "$script" | tr -d '[:space:]')" ] || continue
  echo "--- README block $(basename "$f" .sh):"
  printf '%s\n' "$script" | sed 's/^/    /'
  if ! timeout -k 5 900 bash -euo pipefail -c "$script" > "$f.log" 2>&1; then
    tail -30 "$f.log"
    echo "FAIL: README block $(basename "$f" .sh) did not run as written" >&2
    exit 1
  fi
  count=$((count + 1))
done
[ -f flame.svg ] && mv flame.svg "$blocks/" 2>/dev/null || true
echo "README: $count shell blocks ran as written"
