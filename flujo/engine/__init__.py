"""The deterministic run state machine and its data: pure, no I/O, no clock."""

from flujo.engine.commands import AwaitApproval, CancelStep, Command, FinishRun, LaunchStep, Outcome
from flujo.engine.events import (
    ApprovalAnswered,
    ApprovalTimedOut,
    DeadlineReached,
    Event,
    RunCancelled,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepSucceeded,
    event_adapter,
)
from flujo.engine.machine import advance, describe_breach, new_run
from flujo.engine.state import Breach, RunState, StepState

__all__ = [
    "ApprovalAnswered",
    "ApprovalTimedOut",
    "AwaitApproval",
    "Breach",
    "CancelStep",
    "Command",
    "DeadlineReached",
    "Event",
    "FinishRun",
    "LaunchStep",
    "Outcome",
    "RunCancelled",
    "RunStarted",
    "RunState",
    "StepCancelled",
    "StepFailed",
    "StepState",
    "StepSucceeded",
    "advance",
    "describe_breach",
    "event_adapter",
    "new_run",
]
