"""What the run controller keeps in memory about one PipelineRun: its session.

A session is the run's :class:`~flujo.engine.RunState` plus the bookkeeping
around it (the journal, the step results already seen, the launches waiting
for capacity).  Every room of the run controller reads and updates it, always
under the run's lock; nothing here talks to the API server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from flujo.engine import LaunchStep, RunState
from flujo.spec.agent import AgentSpec

from flujo_operator.builders import RunRef

__all__ = ["TERMINAL", "Session", "spec_ref_pipeline"]

TERMINAL = {"Succeeded", "Failed", "Cancelled"}
"""Phases after which a run is never opened again."""


@dataclass
class Session:
    ref: RunRef
    state: RunState
    agents: dict[str, AgentSpec | None]
    journal: list[dict[str, Any]] = field(default_factory=list)
    seen: set[tuple[str, int]] = field(default_factory=set)
    deleting: set[str] = field(default_factory=set)
    waiting: list[LaunchStep] = field(default_factory=list)
    listed: set[str] = field(default_factory=set)
    """Step paths the status lists now: a merge patch must null the ones it drops."""
    pipeline: str = "inline"
    """``namespace/name`` of the Pipeline, the metrics label of this run."""
    started_at: str = ""
    finished_at: str | None = None
    deadline: asyncio.TimerHandle | None = None
    waits: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Approval steps waited on: path → since, message, timeoutSeconds, schema."""
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    """Approval timeouts armed in this process."""


def spec_ref_pipeline(session: Session) -> str | None:
    """The ``namespace/name`` of the run's Pipeline; None for inline pipelines."""
    return None if session.pipeline == "inline" else session.pipeline
