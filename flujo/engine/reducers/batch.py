"""One ``advance`` call's working set: the run state, its plan, the commands it produces.

(A batch of *commands*, not a map's ``batchSize`` batches.)  It also carries the
table of step-kind reducers (:class:`Reducers`), filled in by the dispatcher
(``flujo.engine.machine``), so the tree walk can reach the reducer of any kind
without importing it: the reducers import the walk, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flujo.engine.commands import AwaitApproval, CancelStep, Command, FinishRun, LaunchStep
from flujo.engine.plan import Plan
from flujo.engine.state import RunState, StepState
from flujo.spec.pipeline import StepSpec

__all__ = ["Batch", "BodyDone", "BodyFailed", "Reducers", "Start", "plan_of"]

Start = Callable[["Batch", StepState, StepSpec, Any], None]
"""Start a step: ``(batch, its fresh state, its spec, its input)``."""
BodyDone = Callable[["Batch", StepState, StepSpec, str, Any], None]
"""A body of a container succeeded: ``(batch, owner, owner's spec, scope key, output)``."""
BodyFailed = Callable[["Batch", StepState, StepSpec, str, str, str, str], None]
"""A body of a container failed: ``(batch, owner, owner's spec, scope key, error class,
message, path of the step that failed first)``."""


@dataclass(frozen=True, slots=True)
class Reducers:
    """Step kind (``StepSpec.kind``) → what it does.

    ``body_done`` and ``body_failed`` name only the containers that do more than
    end (fail) with their body; the walk does that for the others.
    """

    start: Mapping[str, Start]
    body_done: Mapping[str, BodyDone]
    body_failed: Mapping[str, BodyFailed]


def plan_of(state: RunState) -> Plan:
    plan: Plan | None = state._plan
    if plan is None or plan.spec is not state.pipeline:
        plan = Plan(state.pipeline)
        state._plan = plan
    return plan


class Batch:
    """Commands produced by one ``advance`` call, before ordering."""

    __slots__ = ("approvals", "cancels", "finish", "launches", "plan", "reducers", "state")

    def __init__(self, state: RunState, reducers: Reducers) -> None:
        self.state = state
        self.plan = plan_of(state)
        self.reducers = reducers
        self.cancels: dict[str, CancelStep] = {}
        self.launches: dict[str, LaunchStep] = {}
        self.approvals: dict[str, AwaitApproval] = {}
        self.finish: FinishRun | None = None

    def commands(self) -> list[Command]:
        out: list[Command] = [self.cancels[p] for p in sorted(self.cancels)]
        out.extend(self.launches[p] for p in sorted(self.launches))
        out.extend(self.approvals[p] for p in sorted(self.approvals))
        if self.finish is not None:
            out.append(self.finish)
        return out
