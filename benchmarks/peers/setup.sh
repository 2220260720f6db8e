#!/usr/bin/env bash
# Create (idempotently) the isolated virtualenvs that hold the peer engines measured by
# benchmarks/engine_overhead.py.  Each peer lives in its own venv under .bench/ (gitignored):
#
#   .bench/flujo0611   Flujo 0.6.11 from PyPI (an unrelated project that is also named `flujo`,
#                      so it can never share an interpreter with ours); needs Python >= 3.12 and
#                      opentelemetry-api/-sdk pinned to 1.39.1, otherwise `import flujo` fails.
#   .bench/langgraph   LangGraph 1.2.x, on Python 3.11 when available (the interpreter of our
#                      own .venv, so that ours/LangGraph compares engines, not interpreters).
#
# A venv is (re)built only when its marker file does not match the wanted requirements, so a
# second run is a fast no-op.  Override interpreters with PEER_PY312PLUS / PEER_PY_LANGGRAPH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_DIR="${FLUJO_BENCH_DIR:-$ROOT/.bench}"

find_python() {
    # Print the first interpreter that exists and is at least the given minor version of 3.x.
    local min_minor="$1"
    shift
    local candidate
    for candidate in "$@"; do
        if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1; then
            if "$candidate" -c "import sys; sys.exit(0 if sys.version_info >= (3, $min_minor) else 1)" \
                >/dev/null 2>&1; then
                command -v "$candidate"
                return 0
            fi
        fi
    done
    return 1
}

PYENV_ROOT_DIR="${PYENV_ROOT:-$HOME/.pyenv}"
PY_FLUJO="$(find_python 12 "${PEER_PY312PLUS:-}" \
    "$PYENV_ROOT_DIR/versions/3.13.0/bin/python3.13" python3.13 \
    "$PYENV_ROOT_DIR/versions/3.12.1/bin/python3.12" python3.12)" || {
    echo "setup.sh: need a Python >= 3.12 for Flujo 0.6.11 (set PEER_PY312PLUS)" >&2
    exit 1
}
PY_LANGGRAPH="$(find_python 11 "${PEER_PY_LANGGRAPH:-}" \
    "$PYENV_ROOT_DIR/versions/3.11.7/bin/python3.11" python3.11 \
    "$PYENV_ROOT_DIR/versions/3.13.0/bin/python3.13" python3.13 python3)" || {
    echo "setup.sh: need a Python >= 3.11 for LangGraph (set PEER_PY_LANGGRAPH)" >&2
    exit 1
}

# pip_quiet PYTHON ARGS...: pip install, minus the warnings about absent local indexes.
pip_quiet() {
    local python="$1"
    shift
    "$python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "^WARNING: Location '.*' is ignored" || true; }
}

# ensure_venv NAME PYTHON DISTRIBUTION IMPORT_CHECK REQUIREMENT...
# Fast path: the marker matches and DISTRIBUTION is installed (no heavy import).
# After a build: IMPORT_CHECK must pass.
ensure_venv() {
    local name="$1" python="$2" dist="$3" check="$4"
    shift 4
    local venv="$BENCH_DIR/$name"
    local marker="$venv/.flujo-bench-requirements"
    local wanted
    wanted="$("$python" -c 'import sys; print(sys.version.split()[0])') $*"
    if [[ -f "$marker" && "$(cat "$marker")" == "$wanted" ]] \
        && "$venv/bin/python" -I -c "import importlib.metadata as m; m.version('$dist')" \
            >/dev/null 2>&1; then
        echo "setup.sh: $name is up to date ($venv)"
        return 0
    fi
    echo "setup.sh: building $name in $venv with $python"
    rm -rf "$venv"
    mkdir -p "$BENCH_DIR"
    "$python" -m venv "$venv"
    pip_quiet "$venv/bin/python" --upgrade pip
    pip_quiet "$venv/bin/python" "$@"
    "$venv/bin/python" -I -c "$check"
    printf '%s' "$wanted" >"$marker"
    echo "setup.sh: $name ready"
}

ensure_venv flujo0611 "$PY_FLUJO" flujo \
    "import flujo, importlib.metadata as m; assert m.version('flujo') == '0.6.11'" \
    "flujo==0.6.11" "opentelemetry-api==1.39.1" "opentelemetry-sdk==1.39.1"

ensure_venv langgraph "$PY_LANGGRAPH" langgraph \
    "import langgraph.graph, importlib.metadata as m; assert m.version('langgraph').startswith('1.2.')" \
    "langgraph>=1.2,<1.3"
