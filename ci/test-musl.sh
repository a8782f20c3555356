#!/usr/bin/env bash
# The whole test suite on real musl (x86_64-unknown-linux-musl: static binaries, musl 1.2.5),
# plus clippy for the target. Called by ci/test and by the hosted Alpine job.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh

TARGET=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
# C dependencies (zstd-sys) are built with musl-gcc from Debian's musl-tools; on Alpine the
# system cc is already musl.
if command -v musl-gcc >/dev/null 2>&1; then
  export CC_x86_64_unknown_linux_musl=musl-gcc
fi

step "clippy (musl)" cargo clippy --workspace --exclude forkprof-bench --exclude forkprof-php --all-targets --locked --target "$TARGET" -- -D warnings
step "tests (musl)" cargo nextest run --workspace --exclude forkprof-bench --exclude forkprof-php --locked --profile ci --target "$TARGET"
step "torture (musl)" ci/torture.sh --target "$TARGET"
summary
