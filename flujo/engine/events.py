"""Events: everything the outside world tells the run state machine.

Time, ids and randomness arrive *in* events (``RunStarted.seed``), never from
the machine itself, so replaying an event log reproduces a run exactly.
Each event is plain JSON-serialisable data; an event log is a list of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from flujo.domain.usage import Usage

__all__ = [
    "ApprovalAnswered",
    "ApprovalTimedOut",
    "DeadlineReached",
    "Event",
    "RunCancelled",
    "RunStarted",
    "StepCancelled",
    "StepFailed",
    "StepSucceeded",
    "event_adapter",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunStarted(_Event):
    """The run begins with this input. ``seed`` feeds retry jitter."""

    type: Literal["RunStarted"] = "RunStarted"
    input: Any = None
    seed: int = 0


class StepSucceeded(_Event):
    """An agent call returned ``output`` (attempt ``attempt`` of step ``path``)."""

    type: Literal["StepSucceeded"] = "StepSucceeded"
    path: str
    attempt: int = 1
    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    tool_calls: list[dict[str, Any]] | None = Field(None, exclude_if=lambda v: v is None)
    """A tool loop's calls (round, tool, arguments, output or error); left out when none."""


class StepFailed(_Event):
    """An agent call failed with an error class from :mod:`flujo.domain.errors`."""

    type: Literal["StepFailed"] = "StepFailed"
    path: str
    attempt: int = 1
    error_class: str
    message: str = ""
    usage: Usage = Field(default_factory=Usage)
    retry_after: float | None = None
    tool_calls: list[dict[str, Any]] | None = Field(None, exclude_if=lambda v: v is None)
    """A tool loop's calls (round, tool, arguments, output or error); left out when none."""


class StepCancelled(_Event):
    """The executor reports the call stopped without a result (killed, deleted)."""

    type: Literal["StepCancelled"] = "StepCancelled"
    path: str
    attempt: int = 1
    usage: Usage = Field(default_factory=Usage)


class DeadlineReached(_Event):
    """The run's wall-clock budget ran out (the executor owns the clock)."""

    type: Literal["DeadlineReached"] = "DeadlineReached"


class RunCancelled(_Event):
    """Someone asked for the run to stop (Ctrl-C, PipelineRun deleted)."""

    type: Literal["RunCancelled"] = "RunCancelled"
    reason: str = "cancelled by user"


class ApprovalAnswered(_Event):
    """A person answered the approval step at ``path``.

    ``input`` (approve only) becomes the step's output when given; ``reason``
    says why (a rejection's message); ``by`` is who answered, as the executor
    knows it (the OS user, the API's field manager).
    """

    type: Literal["ApprovalAnswered"] = "ApprovalAnswered"
    path: str
    approved: bool
    input: Any = None
    reason: str | None = None
    by: str | None = None


class ApprovalTimedOut(_Event):
    """Nobody answered the approval step at ``path`` in time (the executor owns the clock)."""

    type: Literal["ApprovalTimedOut"] = "ApprovalTimedOut"
    path: str


Event = Annotated[
    RunStarted
    | StepSucceeded
    | StepFailed
    | StepCancelled
    | DeadlineReached
    | RunCancelled
    | ApprovalAnswered
    | ApprovalTimedOut,
    Field(discriminator="type"),
]
event_adapter: TypeAdapter[Event] = TypeAdapter(Event)
