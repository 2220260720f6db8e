"""``LoopStep``: repeat a body until a condition holds, within a hard bound."""

from __future__ import annotations

from typing import Literal

from flujo.domain.dsl.base import AgentSink, BaseStep, Body, as_steps, steps_from_spec
from flujo.spec.pipeline import LoopSpec, StepSpec

__all__ = ["LoopStep"]


class LoopStep(BaseStep):
    """Run ``body`` repeatedly; each iteration's output feeds the next.

    ``exit_when`` is a Jinja expression evaluated after every iteration with
    ``output`` and ``iteration`` in scope, e.g. ``"'APPROVED' in output"``.
    ``max_iterations`` is mandatory: an unbounded loop is a budget leak.
    """

    kind = "loop"

    def __init__(
        self,
        name: str,
        body: Body,
        *,
        max_iterations: int,
        exit_when: str | None = None,
        on_max_iterations: Literal["fail", "succeed"] = "fail",
        description: str | None = None,
    ) -> None:
        self.name = name
        self.body = as_steps(body)
        self.max_iterations = max_iterations
        self.exit_when = exit_when
        self.on_max_iterations = on_max_iterations
        self.description = description

    def to_spec(self, sink: AgentSink) -> StepSpec:
        return StepSpec(
            name=self.name,
            description=self.description,
            loop=LoopSpec(
                max_iterations=self.max_iterations,
                exit_when=self.exit_when,
                on_max_iterations=self.on_max_iterations,
                steps=[s.to_spec(sink) for s in self.body],
            ),
        )

    @classmethod
    def from_spec(cls, spec: StepSpec) -> LoopStep:
        assert spec.loop is not None
        return cls(
            spec.name,
            steps_from_spec(spec.loop.steps),
            max_iterations=spec.loop.max_iterations,
            exit_when=spec.loop.exit_when,
            on_max_iterations=spec.loop.on_max_iterations,
            description=spec.description,
        )
