"""``ApprovalStep`` (``Step.approval(...)``): wait for a person to approve or reject."""

from __future__ import annotations

from typing import Any, Literal

from flujo.domain.dsl.base import AgentRef, AgentSink, BaseStep, agent_ref
from flujo.spec.pipeline import ApprovalSpec, StepSpec

__all__ = ["ApprovalStep"]


class ApprovalStep(BaseStep):
    """Pause the run until a person answers (``flujo approve ID`` / ``flujo reject ID``).

    ``message`` is a template shown to the person; ``schema`` a JSON Schema the
    answer's input must satisfy.  Approved, the answer's input (else the step's
    input) is the step's output; rejected, the step fails with error class
    ``rejected`` and ``fallback`` runs if given.  Without an answer within
    ``timeout`` seconds, ``on_timeout`` decides.
    """

    kind = "approval"

    def __init__(
        self,
        name: str,
        *,
        message: str = "Approve {{ previous_step }}?",
        input: Any = None,
        schema: dict[str, Any] | None = None,
        timeout: float | None = None,
        on_timeout: Literal["reject", "approve", "fail"] = "reject",
        fallback: AgentRef | None = None,
        description: str | None = None,
    ) -> None:
        self.name = name
        self.message = message
        self.input = input
        self.schema = schema
        self.timeout = timeout
        self.on_timeout = on_timeout
        self.fallback = fallback
        self.description = description

    def to_spec(self, sink: AgentSink) -> StepSpec:
        return StepSpec(
            name=self.name,
            description=self.description,
            input=self.input,
            fallback=agent_ref(self.fallback, sink) if self.fallback is not None else None,
            approval=ApprovalSpec(
                message=self.message,
                input_schema=self.schema,
                timeout_seconds=self.timeout,
                on_timeout=self.on_timeout,
            ),
        )

    @classmethod
    def from_spec(cls, spec: StepSpec) -> ApprovalStep:
        assert spec.approval is not None
        return cls(
            spec.name,
            message=spec.approval.message,
            input=spec.input,
            schema=spec.approval.input_schema,
            timeout=spec.approval.timeout_seconds,
            on_timeout=spec.approval.on_timeout,
            fallback=spec.fallback,
            description=spec.description,
        )
