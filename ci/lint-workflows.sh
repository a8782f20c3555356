#!/usr/bin/env bash
# Lints .github/workflows: yamllint (from PyPI, in a venv under target/), then checks that
# every ci/ script a workflow runs exists and is executable, so the hosted CI calls what
# ci/test and .ci/run call. Runs actionlint too when it is on PATH (it is not on PyPI in an
# official build, and the Go module proxy is not reachable from every machine).
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh

VENV=target/ci-lint-venv
if [ ! -x "$VENV/bin/yamllint" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check yamllint
fi

lint() {
  # GitHub's `on:` key reads as a boolean to YAML 1.1 linters; documents need no `---`.
  "$VENV/bin/yamllint" --strict -d '{extends: default, rules: {truthy: {check-keys: false}, document-start: disable, line-length: {max: 100}}}' .github/workflows
  "$VENV/bin/python" - <<'PY'
import os, re, sys, yaml
bad = []
for name in sorted(os.listdir(".github/workflows")):
    path = os.path.join(".github/workflows", name)
    doc = yaml.safe_load(open(path))
    for job_id, job in doc.get("jobs", {}).items():
        if "runs-on" not in job or not job.get("steps"):
            bad.append(f"{path}: job {job_id} needs runs-on and steps")
        for step in job.get("steps", []):
            if ("uses" in step) == ("run" in step):
                bad.append(f"{path}: job {job_id}: a step needs exactly one of uses/run: {step}")
            for script in re.findall(r"(?<![\w/.])ci/[\w.-]+", step.get("run", "")):
                if not (os.path.isfile(script) and os.access(script, os.X_OK)):
                    bad.append(f"{path}: job {job_id} runs {script}, which is missing or not executable")
print("\n".join(bad) or f"workflows ok: {', '.join(sorted(os.listdir('.github/workflows')))}")
sys.exit(1 if bad else 0)
PY
  if command -v actionlint >/dev/null 2>&1; then actionlint; fi
}

step "lint workflows" lint
summary
