"""Loop steps: the first iteration, and after each one ``exitWhen``, ``maxIterations``
or the next iteration (forgetting iterations older than ``KEEP_ITERATIONS``)."""

from __future__ import annotations

from typing import Any

from flujo.domain import errors
from flujo.domain.templates import TemplateProblem, evaluate
from flujo.engine.reducers.batch import Batch
from flujo.engine.reducers.iterations import KEEP_ITERATIONS, forget
from flujo.engine.reducers.scope import scope_vars
from flujo.engine.reducers.walk import node_done, node_failed, start_seq
from flujo.engine.state import StepState
from flujo.spec.pipeline import StepSpec

__all__ = ["iteration_done", "start"]


def start(b: Batch, s: StepState, spec: StepSpec, data: Any) -> None:
    loop = spec.loop
    assert loop is not None
    s.iteration = 1
    start_seq(b, f"{s.path}/iter-1", loop.steps, data)


def iteration_done(b: Batch, s: StepState, spec: StepSpec, key: str, output: Any) -> None:
    loop = spec.loop
    assert loop is not None
    done = False
    if loop.exit_when:
        scope = scope_vars(b, s.path, output)
        scope["iteration"] = s.iteration
        try:
            done = bool(evaluate(loop.exit_when, scope))
        except TemplateProblem as exc:
            node_failed(b, s, errors.TEMPLATE, f"exitWhen: {exc}", s.path)
            return
    if done:
        node_done(b, s, output)
    elif s.iteration >= loop.max_iterations:
        if loop.on_max_iterations == "succeed":
            node_done(b, s, output)
        else:
            node_failed(
                b,
                s,
                errors.LOOP_EXHAUSTED,
                f"loop reached maxIterations={loop.max_iterations} before exitWhen held",
                s.path,
            )
    else:
        s.iteration += 1
        if s.iteration > KEEP_ITERATIONS:
            forget(b.state, f"{s.path}/iter-{s.iteration - KEEP_ITERATIONS}/")
        start_seq(b, f"{s.path}/iter-{s.iteration}", loop.steps, output)
