"""Commands: what the run state machine asks its executor to do."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flujo.domain.usage import Usage

__all__ = ["AwaitApproval", "CancelStep", "Command", "FinishRun", "LaunchStep", "Outcome"]


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LaunchStep(_Command):
    """Call ``agent`` with ``input`` after ``delay_seconds`` (a retry backoff).

    ``call_index`` counts launches of this agent in the run, so scripted
    agents answer identically under any executor.
    """

    type: Literal["LaunchStep"] = "LaunchStep"
    path: str
    step: str
    agent: str
    input: Any = None
    attempt: int = 1
    delay_seconds: float = 0.0
    timeout_seconds: float | None = None
    call_index: int = 0


class AwaitApproval(_Command):
    """Ask a person to approve the step at ``path``; the answer comes back as an event.

    ``input`` is what is approved, ``message`` the rendered prompt, ``schema``
    the JSON Schema an answer's input must satisfy, ``timeout_seconds`` how
    long to wait before the executor reports ``ApprovalTimedOut``.  While the
    run waits for nothing else, an executor may stop holding it: nothing runs,
    nothing is spent.
    """

    type: Literal["AwaitApproval"] = "AwaitApproval"
    path: str
    step: str
    message: str
    input: Any = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    timeout_seconds: float | None = None


class CancelStep(_Command):
    """Stop the call running for ``path``; its late result will be ignored."""

    type: Literal["CancelStep"] = "CancelStep"
    path: str
    reason: str


class Outcome(BaseModel):
    """How a run ended."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["succeeded", "failed", "cancelled", "awaiting approval"]
    """``awaiting approval``: the run stopped, not ended (an executor's result, never
    a ``FinishRun``)."""
    output: Any = None
    reason: str | None = None
    """Machine-readable: None on success, else e.g. ``StepFailed``, ``UsageLimitExceeded``."""
    error_class: str | None = None
    message: str | None = None
    path: str | None = None
    """The step (or branch / iteration) that caused a failure."""
    usage: Usage = Field(default_factory=Usage)


class FinishRun(_Command):
    """The run is over; nothing more will be launched."""

    type: Literal["FinishRun"] = "FinishRun"
    outcome: Outcome


Command = Annotated[
    LaunchStep | AwaitApproval | CancelStep | FinishRun, Field(discriminator="type")
]
