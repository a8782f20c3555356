# Helpers for ci/ scripts: dependency installation and step timing.
export CARGO_TERM_COLOR=never
export FORKPROF_REQUIRE_GO=1
export FORKPROF_REQUIRE_TEST_AGENT=1
export FORKPROF_REQUIRE_OTLP_PROTO=1
STEPS=()

step() {
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name: $*"
  "$@"
  STEPS+=("$name: $((SECONDS - t0)) s")
}

summary() {
  echo "=== timings"
  printf '  %s\n' "${STEPS[@]}"
}

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "=== apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install_deps() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    # chromium: cli/tests/flame_chromium.rs renders the demo's flame graph in it.
    # gdb: a fork or signal test that finds a hung child prints the child's backtrace.
    apt_install golang-go musl-tools pkg-config libzstd-dev valgrind chromium gdb
    export FORKPROF_REQUIRE_CHROMIUM=1
  fi
  # A minimal rustup toolchain lacks these; adding what is present is a no-op.
  if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null
  fi
  command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked
  bash ci/test-agent.sh
  bash ci/otlp-proto.sh
}
