"""``Step``: one agent call.

The names every DSL step shares (``BaseStep``, ``AgentSink``) live in
:mod:`flujo.domain.dsl.base` and are re-exported here, where they were first
defined.
"""

from __future__ import annotations

from typing import Any

from flujo.domain.dsl.approval import ApprovalStep
from flujo.domain.dsl.base import AgentRef, AgentSink, BaseStep, agent_ref
from flujo.spec.pipeline import RetrySpec, StepSpec

__all__ = ["AgentRef", "AgentSink", "BaseStep", "Step", "agent_ref"]


class Step(BaseStep):
    """Call one agent.

    ``input`` is a template (``"Review: {{ previous_step }}"``) or any JSON
    value containing templates; when omitted the previous step's output is
    passed unchanged.
    """

    kind = "agent"

    def __init__(
        self,
        name: str,
        agent: AgentRef,
        *,
        input: Any = None,
        retry: RetrySpec | dict[str, Any] | None = None,
        timeout: float | None = None,
        fallback: AgentRef | None = None,
        description: str | None = None,
    ) -> None:
        self.name = name
        self.agent = agent
        self.input = input
        self.retry = RetrySpec.model_validate(retry) if isinstance(retry, dict) else retry
        self.timeout = timeout
        self.fallback = fallback
        self.description = description

    @staticmethod
    def approval(name: str, **kwargs: Any) -> ApprovalStep:
        """A step that waits for a person: see :class:`~flujo.domain.dsl.approval.ApprovalStep`."""
        return ApprovalStep(name, **kwargs)

    @classmethod
    def from_callable(cls, fn: Any, name: str | None = None, **kwargs: Any) -> Step:
        """A step whose agent is ``fn``, named after it unless ``name`` is given."""
        return cls(name or fn.__name__, fn, **kwargs)

    def to_spec(self, sink: AgentSink) -> StepSpec:
        return StepSpec(
            name=self.name,
            description=self.description,
            agent=agent_ref(self.agent, sink),
            input=self.input,
            retry=self.retry,
            timeout_seconds=self.timeout,
            fallback=agent_ref(self.fallback, sink) if self.fallback is not None else None,
        )

    @classmethod
    def from_spec(cls, spec: StepSpec) -> Step:
        return cls(
            spec.name,
            spec.agent or "",
            input=spec.input,
            retry=spec.retry,
            timeout=spec.timeout_seconds,
            fallback=spec.fallback,
            description=spec.description,
        )
