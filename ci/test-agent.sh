#!/usr/bin/env bash
# Installs the Datadog test agent (ddapm-test-agent, from PyPI) that tests/export_datadog.rs
# starts on a free loopback port, and checks that it runs. Skips the install when it is
# already on PATH. Callers then set FORKPROF_REQUIRE_TEST_AGENT=1 so a missing agent fails
# the export tests instead of skipping them.
set -euo pipefail

t0=$SECONDS
if command -v ddapm-test-agent >/dev/null 2>&1; then
  echo "ddapm-test-agent already installed: $(command -v ddapm-test-agent)"
else
  echo "installing ddapm-test-agent (pip, quiet)"
  python3 -m pip install --quiet --disable-pip-version-check ddapm-test-agent \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages ddapm-test-agent
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
if ! ddapm-test-agent --help >/dev/null 2>&1; then
  echo "ddapm-test-agent does not run; see the pip output above" >&2
  exit 1
fi
echo "ddapm-test-agent ready ($((SECONDS - t0)) s)"
