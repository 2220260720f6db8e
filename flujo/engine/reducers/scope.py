"""Templates at a step path: the variables visible there, and evaluating an expression
there (a template problem fails the step)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flujo.domain import errors
from flujo.domain.templates import TemplateProblem, evaluate
from flujo.engine.reducers.batch import Batch
from flujo.engine.reducers.walk import node_failed
from flujo.engine.state import RunState, StepState
from flujo.spec.pipeline import MapSpec

__all__ = ["evaluate_at", "map_input", "scope_vars"]


class _StepsView(Mapping[str, Mapping[str, Any]]):
    """``steps.NAME.output`` in templates: the latest successful instance of NAME."""

    __slots__ = ("_state",)

    def __init__(self, state: RunState) -> None:
        self._state = state

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        path = self._state.latest[name]
        s = self._state.steps[path]
        return {"output": s.output, "path": path, "input": s.input}

    def __iter__(self) -> Iterator[str]:
        return iter(self._state.latest)

    def __len__(self) -> int:
        return len(self._state.latest)


def map_input(owner: StepState, mp: MapSpec, key: str) -> tuple[int, Any]:
    """A map scope's ``index`` and body input: ``item-N`` → the item, ``batch-K`` → the
    batch's list of items."""
    assert owner.items is not None
    if mp.batch_size is None:
        index = int(key[5:])
        return index, owner.items[index]
    index = int(key[6:])
    start = index * mp.batch_size
    return index, owner.items[start : start + mp.batch_size]


def scope_vars(b: Batch, path: str, data: Any) -> dict[str, Any]:
    """Template variables visible at ``path``: run input, previous output, scopes."""
    st = b.state
    scope: dict[str, Any] = {
        "input": st.input,
        "previous_step": data,
        "output": data,
        "steps": _StepsView(st),
    }
    segments = path.split("/")
    # Walk container/scope pairs from the outside in; inner scopes win.
    for i in range(1, len(segments) - 1, 2):
        owner = st.steps.get("/".join(segments[:i]))
        key = segments[i]
        if owner is None:
            continue
        if owner.kind == "loop":
            scope["iteration"] = int(key[5:])
        elif owner.kind == "map" and owner.items is not None:
            mp = b.plan.nodes[owner.name].spec.map
            assert mp is not None
            scope["index"], scope["item"] = map_input(owner, mp, key)
        else:
            scope["branch"] = key
    return scope


def evaluate_at(b: Batch, s: StepState, expression: str, data: Any) -> tuple[bool, Any]:
    """``(True, value)`` of ``expression`` in the scope of step ``s``; ``(False, None)``
    after failing ``s`` if the expression has a template problem."""
    try:
        return True, evaluate(expression, scope_vars(b, s.path, data))
    except TemplateProblem as exc:
        node_failed(b, s, errors.TEMPLATE, str(exc), s.path)
        return False, None
