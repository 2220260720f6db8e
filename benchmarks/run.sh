#!/usr/bin/env bash
# The one command that runs every benchmark from a clean clone, then prints one summary
# table (also written to benchmarks/results/summary.md and summary.json):
#
#   bash benchmarks/run.sh                 # full, peers included: about 11 minutes on 2 cores
#   bash benchmarks/run.sh --quick         # about 4 minutes (1 with --skip-peers)
#   bash benchmarks/run.sh --skip-peers    # no Flujo 0.6.11 / LangGraph
#   bash benchmarks/run.sh --only memory,guard
#
# In order: engine_overhead, memory, store, template_bombs, http_agent, tool_loop,
# operator_load, operator_latency, operator_isolation, governor, batch, guard.  The times
# above do not include store, template_bombs and operator_isolation (not yet timed as
# part of this run).
#
# Creates .venv and installs the project (-e ".[dev]") when .venv/bin/python is missing,
# as scripts/test.sh does; the peers' virtualenvs (.bench/) are created by
# engine_overhead.py, memory.py and store.py themselves through benchmarks/peers/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $PYTHON and installing -e .[dev]"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
fi
exec .venv/bin/python -m benchmarks "$@"
