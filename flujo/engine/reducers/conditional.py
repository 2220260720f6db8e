"""Conditional steps: evaluate the condition and start the branch it names (or the
default); the branch's end or failure is the conditional's (the walk's default)."""

from __future__ import annotations

from typing import Any

from flujo.domain import errors
from flujo.engine.reducers.batch import Batch
from flujo.engine.reducers.scope import evaluate_at
from flujo.engine.reducers.walk import node_failed, start_seq
from flujo.engine.state import StepState
from flujo.spec.pipeline import StepSpec

__all__ = ["start"]


def start(b: Batch, s: StepState, spec: StepSpec, data: Any) -> None:
    cond = spec.conditional
    assert cond is not None
    branches = {br.name: br for br in cond.branches}
    ok, value = evaluate_at(b, s, cond.condition, data)
    if not ok:
        return
    chosen = str(value).lower() if isinstance(value, bool) else str(value)
    if chosen not in branches:
        if cond.default is None or cond.default not in branches:
            node_failed(
                b,
                s,
                errors.CONFIG,
                f"condition gave {chosen!r}, which names no branch "
                f"({', '.join(branches)}) and there is no default",
                s.path,
            )
            return
        chosen = cond.default
    s.branch = chosen
    start_seq(b, f"{s.path}/{chosen}", branches[chosen].steps, data)
