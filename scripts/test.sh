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

echo "== ruff"
.venv/bin/ruff check flujo operator tests benchmarks
.venv/bin/ruff format --check flujo operator tests benchmarks
echo "== mypy --strict"
.venv/bin/mypy
echo "== import-linter"
.venv/bin/lint-imports
echo "== benchmark regression guard"
.venv/bin/python -m benchmarks.guard
echo "== pytest"
set +e
.venv/bin/python -m pytest -q "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
