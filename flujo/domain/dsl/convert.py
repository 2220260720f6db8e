"""Spec → DSL: the inverse of every ``to_spec``, used by ``Pipeline.from_spec``."""

from __future__ import annotations

from flujo.domain.dsl.conditional import ConditionalStep
from flujo.domain.dsl.loop import LoopStep
from flujo.domain.dsl.map import MapStep
from flujo.domain.dsl.parallel import ParallelStep
from flujo.domain.dsl.step import BaseStep, Step
from flujo.spec.pipeline import StepSpec

__all__ = ["step_from_spec"]


def step_from_spec(spec: StepSpec) -> BaseStep:
    def body(steps: list[StepSpec]) -> list[BaseStep]:
        return [step_from_spec(s) for s in steps]

    if spec.loop is not None:
        return LoopStep(
            spec.name,
            body(spec.loop.steps),
            max_iterations=spec.loop.max_iterations,
            exit_when=spec.loop.exit_when,
            on_max_iterations=spec.loop.on_max_iterations,
            description=spec.description,
        )
    if spec.conditional is not None:
        return ConditionalStep(
            spec.name,
            spec.conditional.condition,
            {b.name: body(b.steps) for b in spec.conditional.branches},
            default=spec.conditional.default,
            description=spec.description,
        )
    if spec.parallel is not None:
        return ParallelStep(
            spec.name,
            {b.name: body(b.steps) for b in spec.parallel.branches},
            merge=spec.parallel.merge,
            on_branch_failure=spec.parallel.on_branch_failure,
            max_concurrency=spec.parallel.max_concurrency,
            description=spec.description,
        )
    if spec.map is not None:
        return MapStep(
            spec.name,
            spec.map.items,
            body(spec.map.steps),
            max_concurrency=spec.map.max_concurrency,
            on_item_failure=spec.map.on_item_failure,
            max_items=spec.map.max_items,
            batch_size=spec.map.batch_size,
            description=spec.description,
        )
    return Step(
        spec.name,
        spec.agent or "",
        input=spec.input,
        retry=spec.retry,
        timeout=spec.timeout_seconds,
        fallback=spec.fallback,
        description=spec.description,
    )
