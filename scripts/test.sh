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

echo "== ruff"
.venv/bin/ruff check flujo operator tests benchmarks
.venv/bin/ruff format --check flujo operator tests benchmarks
echo "== mypy --strict"
.venv/bin/mypy
echo "== import-linter"
.venv/bin/lint-imports
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
