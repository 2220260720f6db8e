#!/usr/bin/env bash
# Install everything the test suite needs into .venv, then run every check:
# ruff, mypy --strict, import-linter layer contracts, and pytest.
# This is the README's test command and what CI (.ci/run) runs.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
bash scripts/install-tools.sh
export PATH="$PWD/.tools/bin:$PATH"

# The real-cluster tier (tests/realcluster/): etcd, kube-apiserver, kube-controller-manager
# and kubectl built from the Go module proxy into a cache keyed by version. Warm, the
# build is a no-op; cold (tests/k8s/README.md has the times) it runs in the background at
# the lowest CPU priority while the checks and the other tests run, and the tier runs
# last. The tests start the control plane themselves (one per pytest session). Without
# Go, or when the build fails, the tier skips and says why; once built it must run.
CP_LOG=$(mktemp -t flujo-control-plane-build.XXXXXX)
CP_PID=
if [ "${FLUJO_SKIP_REAL_CLUSTER:-0}" = 1 ]; then
  echo "== control plane: FLUJO_SKIP_REAL_CLUSTER=1, the realcluster tests will skip"
elif ! command -v go >/dev/null 2>&1; then
  echo "== control plane: no Go toolchain on PATH, the realcluster tests will skip" >&2
else
  echo "== control plane: building in the background (log: $CP_LOG)"
  CP_STARTED=$SECONDS
  # A process group of its own, so a build past its time can be stopped as a whole.
  setsid nice -n 19 bash scripts/control-plane.sh build >"$CP_LOG" 2>&1 &
  CP_PID=$!
fi
# After the other tests, wait at most FLUJO_CONTROL_PLANE_WAIT seconds (default 1200) for
# a cold build; past that it is stopped (what it compiled stays cached for the next run)
# and the tier skips, saying so.
wait_for_control_plane() {
  [ -n "$CP_PID" ] || return 0
  local status=0 deadline=$((SECONDS + ${FLUJO_CONTROL_PLANE_WAIT:-1200}))
  while kill -0 "$CP_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
    sleep 2
  done
  if kill -0 "$CP_PID" 2>/dev/null; then
    kill -TERM -- "-$CP_PID" 2>/dev/null || true
    echo "warning: the control plane build was still running after its time; stopped it" >&2
  fi
  wait "$CP_PID" || status=$?
  cat "$CP_LOG"
  if [ "$status" -eq 0 ]; then
    echo "== control plane: binaries ready $((SECONDS - CP_STARTED))s after the build started"
    export FLUJO_REQUIRE_REAL_CLUSTER=1
  else
    echo "warning: the control plane did not build (exit $status); the realcluster tests will skip" >&2
  fi
  CP_PID=
}
# Prometheus and promtool (Debian's package) for the monitoring tests.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing prometheus (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
      >/dev/null
  else
    echo "warning: prometheus/promtool missing and cannot apt-get; their tests will skip" >&2
  fi
fi

# Chromium (Debian's package) for the browser tests of flujo ui (tests/test_ui*.py);
# Playwright drives it and never downloads a browser of its own.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: /usr/bin/chromium missing and cannot apt-get; the browser tests will skip" >&2
  fi
fi

echo "== ruff"
.venv/bin/ruff check flujo operator tests benchmarks
.venv/bin/ruff format --check flujo operator tests benchmarks
echo "== mypy --strict"
.venv/bin/mypy
echo "== import-linter"
.venv/bin/lint-imports
echo "== benchmark regression guard"
.venv/bin/python -m benchmarks.guard
JUNIT_DIR=$(mktemp -d -t flujo-junit.XXXXXX)
run_pytest() {
  local status=0
  .venv/bin/python -m pytest -q --junitxml="$JUNIT_DIR/$(date +%s%N).xml" "$@" || status=$?
  if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    status=1
  fi
  return "$status"
}
if [ "$#" -gt 0 ]; then
  # Chosen tests: one run, after the control plane build (they may include the tier).
  wait_for_control_plane
  echo "== pytest"
  run_pytest "$@"
  exit $?
fi
echo "== pytest (all but the real-cluster tier, two workers)"
status=0
# Two pytest-xdist workers: most tests wait on processes they start (the operator, step
# pods, flujo), so two keep both cores busy. worksteal evens out the long tests.
run_pytest -m "not realcluster" -n 2 --dist worksteal || status=$?
wait_for_control_plane
echo "== pytest: the real-cluster tier (tests/realcluster)"
tier_started=$SECONDS
tier=0
run_pytest tests/realcluster || tier=$?
echo "== the real-cluster tier took $((SECONDS - tier_started))s"
[ "$status" -ne 0 ] || status=$tier
# One closing line for both pytest runs.
.venv/bin/python - "$JUNIT_DIR" <<'PY'
import pathlib
import sys
import xml.etree.ElementTree as ET

totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.xml")):
    root = ET.parse(path).getroot()
    for suite in root.iter("testsuite"):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print(f"total: {passed} passed, {failed} failed, {totals['skipped']} skipped")
PY
exit "$status"
