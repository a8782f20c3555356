#!/usr/bin/env bash
# Installs the reference Python bindings of OpenTelemetry profiles (PyPI opentelemetry-proto,
# pinned: its v1development messages change between releases) into a venv of their own, so
# they do not clash with the older opentelemetry-proto that ddapm-test-agent pulls in.
# tests/export_otlp.rs decodes what the OTLP exporter sent with this venv's python
# (FORKPROF_OTLP_PYTHON, default below); callers set FORKPROF_REQUIRE_OTLP_PROTO=1 so a
# missing venv fails the test instead of skipping it.
set -euo pipefail

# 1.45.2 is generated from opentelemetry-proto 1.10.0, the version forkprof writes.
version=1.45.2
venv=${FORKPROF_OTLP_VENV:-$HOME/.cache/forkprof/otlp-venv}
t0=$SECONDS
if "$venv/bin/python3" -c "import importlib.metadata as m, sys; sys.exit(m.version('opentelemetry-proto') != '$version')" 2>/dev/null; then
  echo "opentelemetry-proto $version already in $venv"
else
  echo "installing opentelemetry-proto $version into $venv (pip, quiet)"
  python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "opentelemetry-proto==$version"
fi
"$venv/bin/python3" -c "from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2"
echo "opentelemetry-proto ready ($((SECONDS - t0)) s)"
