"""``ConditionalStep``: evaluate an expression and run the branch it names."""

from __future__ import annotations

from collections.abc import Mapping

from flujo.domain.dsl.base import AgentSink, BaseStep, Body, as_steps, steps_from_spec
from flujo.spec.pipeline import BranchSpec, ConditionalSpec, StepSpec

__all__ = ["ConditionalStep"]


class ConditionalStep(BaseStep):
    """Route to one named branch.

    ``condition`` is a Jinja expression over ``previous_step``, ``input`` and
    ``steps``; its value (``True``/``False`` become ``"true"``/``"false"``)
    names the branch.  ``default`` is taken when no branch matches.
    """

    kind = "conditional"

    def __init__(
        self,
        name: str,
        condition: str,
        branches: Mapping[str, Body],
        *,
        default: str | None = None,
        description: str | None = None,
    ) -> None:
        self.name = name
        self.condition = condition
        self.branches = {k: as_steps(v) for k, v in branches.items()}
        self.default = default
        self.description = description

    def to_spec(self, sink: AgentSink) -> StepSpec:
        return StepSpec(
            name=self.name,
            description=self.description,
            conditional=ConditionalSpec(
                condition=self.condition,
                default=self.default,
                branches=[
                    BranchSpec(name=k, steps=[s.to_spec(sink) for s in v])
                    for k, v in self.branches.items()
                ],
            ),
        )

    @classmethod
    def from_spec(cls, spec: StepSpec) -> ConditionalStep:
        assert spec.conditional is not None
        return cls(
            spec.name,
            spec.conditional.condition,
            {b.name: steps_from_spec(b.steps) for b in spec.conditional.branches},
            default=spec.conditional.default,
            description=spec.description,
        )
