"""``ParallelStep``: run named branches concurrently and merge their outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from flujo.domain.dsl.base import AgentSink, BaseStep, Body, as_steps, steps_from_spec
from flujo.spec.pipeline import BranchSpec, ParallelSpec, StepSpec

__all__ = ["ParallelStep"]


class ParallelStep(BaseStep):
    """Every branch receives the same input; ``merge`` combines the outputs.

    ``on_branch_failure``: ``failFast`` cancels the other branches at once,
    ``wait`` lets them finish before failing, ``ignore`` merges the branches
    that succeeded.
    """

    kind = "parallel"

    def __init__(
        self,
        name: str,
        branches: Mapping[str, Body],
        *,
        merge: Literal["dict", "list", "concat", "merge", "first"] = "dict",
        on_branch_failure: Literal["failFast", "wait", "ignore"] = "failFast",
        max_concurrency: int | None = None,
        description: str | None = None,
    ) -> None:
        self.name = name
        self.branches = {k: as_steps(v) for k, v in branches.items()}
        self.merge = merge
        self.on_branch_failure = on_branch_failure
        self.max_concurrency = max_concurrency
        self.description = description

    def to_spec(self, sink: AgentSink) -> StepSpec:
        return StepSpec(
            name=self.name,
            description=self.description,
            parallel=ParallelSpec(
                merge=self.merge,
                on_branch_failure=self.on_branch_failure,
                max_concurrency=self.max_concurrency,
                branches=[
                    BranchSpec(name=k, steps=[s.to_spec(sink) for s in v])
                    for k, v in self.branches.items()
                ],
            ),
        )

    @classmethod
    def from_spec(cls, spec: StepSpec) -> ParallelStep:
        assert spec.parallel is not None
        return cls(
            spec.name,
            {b.name: steps_from_spec(b.steps) for b in spec.parallel.branches},
            merge=spec.parallel.merge,
            on_branch_failure=spec.parallel.on_branch_failure,
            max_concurrency=spec.parallel.max_concurrency,
            description=spec.description,
        )
