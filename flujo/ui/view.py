"""What the web view shows of a run, whichever executor ran it.

An embedded run (the run store's journal replayed into a
:class:`~flujo.engine.RunState`) and a PipelineRun (its status, written by
the operator) become the same plain records: a :class:`RunSummary` per run
for the list, and a :class:`RunView` — the pipeline spec plus one
:class:`StepInfo` per step instance, keyed by path — for a run's page.
Values a user reads (inputs, outputs, messages) pass through the run's
:class:`~flujo.security.redaction.Redactor` before they get here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flujo.domain.usage import Usage
from flujo.domain.validation import walk_steps
from flujo.engine import RunState
from flujo.security.redaction import Redactor
from flujo.spec.pipeline import PipelineSpec, StepSpec

__all__ = [
    "FINISHED",
    "MISSING",
    "ActionError",
    "RunSummary",
    "RunView",
    "StepInfo",
    "age_text",
    "steps_of_state",
    "summary_of_state",
]

FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class ActionError(Exception):
    """An action or a look-up that cannot be done: one line for the user."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""A value the source does not have (a cluster run's outputs are in its step pods)."""


@dataclass
class StepInfo:
    """One step instance (an agent call or a container) at one path."""

    path: str
    name: str
    kind: str
    phase: str
    agent: str | None = None
    attempts: int = 0
    iteration: int = 0
    branch: str | None = None
    items: int | None = None
    error_class: str | None = None
    message: str | None = None
    usage: Usage | None = None
    input: Any = MISSING
    output: Any = MISSING
    pod: str | None = None


@dataclass
class RunSummary:
    """One row of the runs list, and the head of a run's page."""

    source: str
    """``local`` (the run store) or ``cluster``."""
    key: str
    """The run's id in its source: a store id, or ``NAMESPACE/NAME``."""
    pipeline: str
    phase: str
    progress: str = ""
    tokens: int = 0
    cost_usd: float = 0.0
    estimated: bool = False
    created: float | None = None
    updated: float | None = None
    launches: int = 0
    message: str = ""
    reason: str = ""
    awaiting: list[str] = field(default_factory=list)
    """Paths of steps waiting for an approval."""

    @property
    def finished(self) -> bool:
        return self.phase.lower() in FINISHED

    @property
    def phase_class(self) -> str:
        return css_class(self.phase)

    @property
    def age(self) -> str:
        return age_text(self.created)

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "phaseClass": self.phase_class,
            "progress": self.progress,
            "tokens": self.tokens,
            "cost": f"${self.cost_usd:.4f}{' (estimated)' if self.estimated else ''}",
            "launches": self.launches,
            "message": self.message,
            "finished": self.finished,
            "awaiting": self.awaiting,
        }


@dataclass
class RunView:
    summary: RunSummary
    spec: PipelineSpec
    steps: dict[str, StepInfo]
    input: Any = MISSING
    output: Any = MISSING

    def spec_steps(self) -> list[StepSpec]:
        """Every step of the pipeline, containers and their bodies, in document order."""
        return [step for step, _, _ in walk_steps(self.spec.steps)]


def css_class(phase: str) -> str:
    """A phase as a CSS class name: ``AwaitingApproval`` / ``awaiting approval`` → ``awaiting``."""
    lowered = phase.lower().replace(" ", "")
    if lowered.startswith("awaiting"):
        return "awaiting"
    return "".join(c for c in lowered if c.isalnum()) or "unknown"


def age_text(created: float | None, now: float | None = None) -> str:
    if created is None:
        return ""
    seconds = max(0, int((now if now is not None else time.time()) - created))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def progress_of(state: RunState) -> str:
    agents = [s for s in state.steps.values() if s.kind == "agent"]
    done = sum(1 for s in agents if s.phase == "succeeded") + state.forgotten_succeeded
    return f"{done}/{len(agents) + state.forgotten_steps}"


def steps_of_state(state: RunState, redactor: Redactor) -> dict[str, StepInfo]:
    """Every step instance the state still holds (old loop iterations are forgotten)."""
    out: dict[str, StepInfo] = {}
    for s in state.steps.values():
        waiting = state.awaiting.get(s.path)
        message = waiting if waiting is not None else s.message
        out[s.path] = StepInfo(
            path=s.path,
            name=s.name,
            kind=s.kind,
            phase="awaiting approval" if waiting is not None else s.phase,
            agent=s.agent,
            attempts=s.attempt,
            iteration=s.iteration,
            branch=s.branch,
            items=len(s.items) if s.items is not None else None,
            error_class=s.error_class,
            message=redactor.redact(message) if message else None,
            usage=s.usage,
            input=redactor.redact_data(s.input),
            output=redactor.redact_data(s.output),
        )
    return out


def summary_of_state(
    state: RunState, *, key: str, pipeline: str, phase: str, redactor: Redactor
) -> RunSummary:
    outcome = state.outcome
    return RunSummary(
        source="local",
        key=key,
        pipeline=pipeline,
        phase=phase,
        progress=progress_of(state),
        tokens=state.usage.total_tokens,
        cost_usd=state.usage.cost_usd,
        estimated=state.usage.estimated,
        launches=state.launches,
        message=redactor.redact(outcome.message or "") if outcome else "",
        reason=(outcome.reason or "") if outcome else "",
        awaiting=sorted(state.awaiting),
    )
