#!/usr/bin/env bash
# Create (idempotently) the isolated virtualenvs that hold the peer engines measured by
# benchmarks/engine_overhead.py.  Each peer lives in its own venv under .bench/ (gitignored):
#
#   .bench/flujo0611   Flujo 0.6.11 from PyPI (an unrelated project that is also named `flujo`,
#                      so it can never share an interpreter with ours); needs Python >= 3.12 and
#                      opentelemetry-api/-sdk pinned to 1.39.1, otherwise `import flujo` fails.
#   .bench/langgraph   LangGraph 1.2.x.
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
    "$PYENV_ROOT_DIR/versions/3.13.0/bin/python3.13" python3.13 \
    "$PYENV_ROOT_DIR/versions/3.11.7/bin/python3.11" python3.11 python3)" || {
    echo "setup.sh: need a Python >= 3.11 for LangGraph (set PEER_PY_LANGGRAPH)" >&2
    exit 1
}

# ensure_venv NAME PYTHON IMPORT_CHECK REQUIREMENT...
ensure_venv() {
    local name="$1" python="$2" check="$3"
    shift 3
    local venv="$BENCH_DIR/$name"
    local marker="$venv/.flujo-bench-requirements"
    local wanted
    wanted="$("$python" -c 'import sys; print(sys.version.split()[0])') $*"
    if [[ -f "$marker" && "$(cat "$marker")" == "$wanted" ]] \
        && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
        echo "setup.sh: $name is up to date ($venv)"
        return 0
    fi
    echo "setup.sh: building $name in $venv with $python"
    rm -rf "$venv"
    mkdir -p "$BENCH_DIR"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    "$venv/bin/python" -c "$check"
    printf '%s' "$wanted" >"$marker"
    echo "setup.sh: $name ready"
}

ensure_venv flujo0611 "$PY_FLUJO" \
    "import flujo, importlib.metadata as m; assert m.version('flujo') == '0.6.11'" \
    "flujo==0.6.11" "opentelemetry-api==1.39.1" "opentelemetry-sdk==1.39.1"

ensure_venv langgraph "$PY_LANGGRAPH" \
    "import langgraph.graph, importlib.metadata as m; assert m.version('langgraph').startswith('1.2.')" \
    "langgraph>=1.2,<1.3"
