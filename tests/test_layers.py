"""The code's rooms: one-way layers, no import circles, modules a reader can hold.

The layers contract itself is import-linter's (``pyproject.toml``, run by
``lint-imports`` in CI); these tests keep it honest: every package of
``flujo`` is named in it, nothing imports upwards or in a circle (imports
under ``TYPE_CHECKING`` and inside functions count), and no module grows
past the size the rooms rule allows.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600
"""A module past this is split by concern (CONTRIBUTING.md, the rooms rule)."""
STILL_TO_SPLIT: set[str] = set()
"""Modules over the limit today; each split removes its line, and none may join."""


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["importlinter"]["contracts"])


def _layers() -> list[str]:
    (layers,) = [c["layers"] for c in _contracts() if c["type"] == "layers"]
    assert isinstance(layers, list)
    return [str(name) for name in layers]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # No cache: a stale one could hide a circle made a moment ago.
    return grimp.build_graph(
        "flujo", "flujo_operator", include_external_packages=False, cache_dir=None
    )


def _cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_circle_and_nothing_else() -> None:
    edges = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": [], "e": ["d"]}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": ["b"], "b": []}) == []


def test_no_module_of_flujo_or_the_operator_sits_in_an_import_circle(
    graph: grimp.ImportGraph,
) -> None:
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert _cycles(edges) == []


def test_every_package_of_flujo_is_a_named_layer(graph: grimp.ImportGraph) -> None:
    children = set(graph.find_children("flujo"))
    assert children - set(_layers()) == set(), "name every package of flujo in the layers"
    assert set(_layers()) - children == set(), "a layer names a package that does not exist"


def test_no_module_imports_a_higher_layer(graph: grimp.ImportGraph) -> None:
    """The same rule lint-imports checks, stated directly over the import graph."""
    layers = _layers()
    rank = {name: len(layers) - i for i, name in enumerate(layers)}

    def layer_of(module: str) -> str | None:
        parts = module.split(".")
        return ".".join(parts[:2]) if parts[0] == "flujo" and len(parts) > 1 else None

    upward = []
    for module in sorted(graph.modules):
        here = layer_of(module)
        if here is None:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            there = layer_of(imported)
            if there is not None and rank[there] > rank[here]:
                upward.append(f"{module} -> {imported}")
    assert upward == []


def test_flujo_never_imports_the_operator(graph: grimp.ImportGraph) -> None:
    leaks = [
        f"{m} -> {i}"
        for m in graph.find_descendants("flujo")
        for i in graph.find_modules_directly_imported_by(m)
        if i.startswith("flujo_operator")
    ]
    assert leaks == []


def test_lint_imports_keeps_every_contract() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "broken" in done.stdout and " 0 broken" in done.stdout


def test_no_module_is_past_the_size_a_reader_can_hold() -> None:
    sources = [*(ROOT / "flujo").rglob("*.py"), *(ROOT / "operator").rglob("*.py")]
    assert sources
    too_long = {
        str(p.relative_to(ROOT)): n
        for p in sources
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert set(too_long) <= STILL_TO_SPLIT, too_long
    assert set(too_long) >= STILL_TO_SPLIT, "split: remove it from STILL_TO_SPLIT"


def test_every_module_of_the_operator_is_named_in_its_layers(graph: grimp.ImportGraph) -> None:
    (contract,) = [c for c in _contracts() if c["type"] == "operator_layers"]
    layers = contract["layers"]
    assert isinstance(layers, list)
    named = {m.strip() for layer in layers for m in str(layer).split("|")}
    modules = set(graph.find_children("flujo_operator"))
    assert modules - named == set(), "name every module of flujo_operator in its layers"
    assert named - modules == set(), "a layer names a module that does not exist"
