"""RunState: everything the state machine knows about one run, as plain data.

Steps are keyed by their *step path*: the step name prefixed by the scopes
it runs in (``review``, ``refine/iter-3/critic``, ``fanout/b/summarise``,
``each/item-0/summarise``).  A path is stable: the same pipeline and the same
events give the same paths, which is what makes pod names deterministic and
transcripts comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from flujo.domain.usage import ZERO, Usage
from flujo.engine.commands import Outcome
from flujo.spec.limits import UsageLimits
from flujo.spec.pipeline import PipelineSpec

__all__ = ["Breach", "DeferredLaunch", "RunPhase", "RunState", "StepPhase", "StepState"]

StepPhase = Literal["running", "succeeded", "failed", "cancelled"]
RunPhase = Literal["pending", "running", "succeeded", "failed", "cancelled"]


@dataclass(slots=True)
class StepState:
    """One step instance (an agent call or a container) at one path.

    A slotted dataclass rather than a pydantic model: one is created per step
    launch, and construction cost is orchestration overhead.  Pydantic still
    validates and serialises it as part of :class:`RunState`.
    """

    path: str
    name: str
    kind: str
    phase: StepPhase = "running"
    input: Any = None
    output: Any = None
    usage: Usage = ZERO
    # agent steps
    agent: str | None = None
    attempt: int = 0
    tries_on_agent: int = 0
    settled: int = 0
    """Highest attempt whose result event was received (usage counted once)."""
    fallback_used: bool = False
    error_class: str | None = None
    message: str | None = None
    # containers
    iteration: int = 0
    branch: str | None = None
    items: list[Any] | None = None
    scopes: list[str] = field(default_factory=list)
    """parallel/map: scope keys (branch names, ``item-N``, ``batch-K``) in declared order."""
    queued: list[str] = field(default_factory=list)
    """parallel/map: scope keys not started yet (maxConcurrency)."""
    results: dict[str, Any] = field(default_factory=dict)
    scope_phases: dict[str, str] = field(default_factory=dict)
    active: int = 0
    """parallel/map: scopes running now (kept as a count: fan-outs can be wide)."""


@dataclass(slots=True)
class DeferredLaunch:
    """An agent step waiting for budget: its worst-case cost does not fit yet."""

    path: str
    agent: str
    delay_seconds: float = 0.0


class Breach(BaseModel):
    """The governor's record of the first limit crossed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limit: Literal["cost", "tokens", "launches"]
    limit_value: float
    value: float
    path: str
    when: Literal["after", "before"]
    """``after`` a step's usage crossed it; ``before`` a launch found it reached."""


class RunState(BaseModel):
    """The whole run. ``advance`` updates it in place and returns it."""

    model_config = ConfigDict(extra="forbid")

    pipeline: PipelineSpec
    limits: UsageLimits = Field(default_factory=UsageLimits)
    phase: RunPhase = "pending"
    input: Any = None
    seed: int = 0
    steps: dict[str, StepState] = Field(default_factory=dict)
    running: dict[str, int] = Field(default_factory=dict)
    """Agent steps in flight: path → attempt."""
    awaiting: dict[str, str] = Field(default_factory=dict)
    """Approval steps waiting for a person: path → the message they were shown."""
    latest: dict[str, str] = Field(default_factory=dict)
    """Step name → path of its latest successful instance (for ``steps.NAME``)."""
    usage: Usage = Field(default_factory=Usage)
    launches: int = 0
    agent_calls: dict[str, int] = Field(default_factory=dict)
    agent_caps: dict[str, float] = Field(default_factory=dict)
    """Agent → declared maximum cost of one call (``pricing.maxCostPerCall``)."""
    reserved: dict[str, float] = Field(default_factory=dict)
    """Calls in flight → the cost reserved for them under ``maxCostUsd``."""
    deferred: list[DeferredLaunch] = Field(default_factory=list)
    """Launches waiting until reserved budget is released, in launch order."""
    breach: Breach | None = None
    outcome: Outcome | None = None
    forgotten_steps: int = 0
    """Agent steps of old loop iterations dropped from ``steps`` (see KEEP_ITERATIONS)."""
    forgotten_succeeded: int = 0
    ignored_events: int = 0
    """Stale or unknown events (late results of cancelled steps, duplicates)."""

    _plan: Any = PrivateAttr(default=None)
    _iterations: dict[str, list[str]] = PrivateAttr(default_factory=dict)
    """Loop iteration prefix (``refine/iter-3/``) → step paths created inside it."""

    @property
    def finished(self) -> bool:
        return self.phase in ("succeeded", "failed", "cancelled")

    def step(self, path: str) -> StepState | None:
        return self.steps.get(path)
