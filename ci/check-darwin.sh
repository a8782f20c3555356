#!/usr/bin/env bash
# macOS, checked without a Mac: `cargo check` and `cargo clippy -D warnings` of the whole
# workspace (tests and benches included) for aarch64-apple-darwin and x86_64-apple-darwin.
# Nothing is linked or run: that is the macos-latest CI job's part.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh

TARGETS=(aarch64-apple-darwin x86_64-apple-darwin)

# zstd-sys compiles libzstd's C sources for the target, which needs an Apple SDK. For a
# check-only build it can describe the host's libzstd instead (found through pkg-config,
# Debian's libzstd-dev): nothing is linked, so the library's architecture never matters.
export ZSTD_SYS_USE_PKG_CONFIG=1 PKG_CONFIG_ALLOW_CROSS=1

# forkprof-php builds against the PHP headers of the host (bindgen): no Apple PHP here.
EXCLUDES=(--exclude forkprof-php)
# The libdatadog comparison benchmark links libdatadog's C-heavy dependency tree, which cannot
# be built for Apple targets without an SDK; it compares against Linux numbers only anyway.
if cargo metadata --format-version 1 --no-deps 2>/dev/null | grep -q '"name":"forkprof-bench"'; then
  EXCLUDES+=(--exclude forkprof-bench)
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt_install pkg-config libzstd-dev
fi
# Idempotent: a no-op when the targets are already installed.
rustup target add "${TARGETS[@]}" >/dev/null

for t in "${TARGETS[@]}"; do
  step "check ($t)" cargo check --workspace --all-targets --locked --target "$t" "${EXCLUDES[@]}"
  step "clippy ($t)" cargo clippy --workspace --all-targets --locked --target "$t" "${EXCLUDES[@]}" -- -D warnings
done
summary
