"""The audit observer: a run's events, as ``run.*``, ``agent.call`` and ``governor.breach`` lines.

:class:`AuditObserver` is a ``RunObserver``: it watches each ``advance`` of
a run (event, state, commands) and writes the records of
:mod:`flujo.security.audit.records` to an :class:`~flujo.security.audit.log.AuditLog`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flujo.engine.commands import Command, FinishRun, LaunchStep
from flujo.engine.events import Event, RunStarted, StepCancelled, StepFailed, StepSucceeded
from flujo.engine.state import RunState
from flujo.security.audit.log import AuditLog
from flujo.security.audit.records import AgentCall, GovernorBreach, RunFinished, RunStartedAudit
from flujo.spec.agent import AgentSpec

__all__ = ["AgentDescription", "AuditObserver"]


def _json_size(value: Any) -> int:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return len(repr(value))
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass
class _Launch:
    agent: str
    step: str
    started: float
    input: Any = None


@dataclass
class _Run:
    run_id: str
    pipeline: str
    namespace: str | None
    started: float
    launches: dict[tuple[str, int], _Launch] = field(default_factory=dict)
    breach_reported: bool = False


AgentDescription = AgentSpec | tuple[str, str | None] | None
"""An agent's manifest, or ``(type, model)``, or None (a built-in preset or Python code)."""


class AuditObserver:
    """A ``RunObserver`` that writes ``run.*``, ``agent.call`` and ``governor.breach`` events.

    ``agents`` describes the agents by name (type and model for the events);
    ``run_id`` names the next run (default: a random UUID per run).  The
    operator calls :meth:`observe_run` with each PipelineRun's uid, pipeline
    and namespace instead of :meth:`observe`.
    """

    max_tracked_runs = 10_000

    def __init__(
        self,
        log: AuditLog,
        pipeline: str = "unknown",
        *,
        agents: Mapping[str, AgentDescription] | None = None,
        run_id: str | None = None,
        namespace: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.pipeline = pipeline
        self.agents = dict(agents or {})
        self.run_id = run_id
        self.namespace = namespace
        self.clock = clock
        self._runs: dict[Hashable, _Run] = {}
        self._closed: dict[Hashable, _Run] = {}
        """Recently finished runs, for results that arrive after the run ended."""

    def observe(self, event: Event, state: RunState, commands: Sequence[Command]) -> None:
        run_id = self.run_id
        if isinstance(event, RunStarted):
            self.run_id = None  # a fixed id names one run only
        self.observe_run(
            event,
            state,
            commands,
            run_id=run_id,
            pipeline=self.pipeline,
            namespace=self.namespace,
            key=id(state),
        )

    def observe_run(
        self,
        event: Event,
        state: RunState,
        commands: Sequence[Command],
        *,
        run_id: str | None,
        pipeline: str,
        namespace: str | None = None,
        key: Hashable | None = None,
        agents: Mapping[str, AgentDescription] | None = None,
    ) -> None:
        """Record one ``advance`` step of a run (the operator's entry point).

        ``agents`` describes the agents this run can call, when they differ
        per run (the operator: each namespace has its own Agents).
        """
        now = self.clock()
        key = key if key is not None else run_id
        run = self._runs.get(key)
        if run is None and not isinstance(event, RunStarted) and key in self._closed:
            # A late result of a finished run: the call happened and spent tokens.
            if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
                self._call(self._closed[key], event, state, now, agents)
            return
        if run is None or isinstance(event, RunStarted):
            if len(self._runs) >= self.max_tracked_runs:
                self._runs.pop(next(iter(self._runs)))
            run = _Run(run_id or uuid.uuid4().hex, pipeline, namespace, now)
            self._runs[key] = run
            if isinstance(event, RunStarted):
                self._started(run, event, state)
        if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
            self._call(run, event, state, now, agents)
        if state.breach is not None and not run.breach_reported:
            run.breach_reported = True
            breach = state.breach
            self.log.emit(
                GovernorBreach(
                    time=self.log.now(),
                    run_id=run.run_id,
                    pipeline=run.pipeline,
                    namespace=run.namespace,
                    limit=breach.limit,
                    limit_value=breach.limit_value,
                    value=breach.value,
                    path=breach.path,
                    when=breach.when,
                )
            )
        for command in commands:
            if isinstance(command, LaunchStep):
                run.launches[(command.path, command.attempt)] = _Launch(
                    command.agent, command.step, now, command.input
                )
            elif isinstance(command, FinishRun):
                self._finished(run, command, state, now)
                self._runs.pop(key, None)
                self._closed[key] = run
                while len(self._closed) > self.max_tracked_runs // 10:
                    self._closed.pop(next(iter(self._closed)))

    def _describe(
        self, name: str, agents: Mapping[str, AgentDescription] | None = None
    ) -> tuple[str, str | None]:
        known = self.agents if agents is None else agents
        info = known.get(name)
        if isinstance(info, AgentSpec):
            return info.type, info.model
        if isinstance(info, tuple):
            return info
        if name.startswith("builtin."):
            return "builtin", None
        return ("python", None) if name in known else ("unknown", None)

    def _started(self, run: _Run, event: RunStarted, state: RunState) -> None:
        content = self.log.include_content
        limits = {
            k: float(v) for k, v in state.limits.model_dump(by_alias=True).items() if v is not None
        }
        self.log.emit(
            RunStartedAudit(
                time=self.log.now(),
                run_id=run.run_id,
                pipeline=run.pipeline,
                namespace=run.namespace,
                input_bytes=_json_size(event.input),
                limits=limits,
                input=event.input if content else None,
            )
        )

    def _call(
        self,
        run: _Run,
        event: StepSucceeded | StepFailed | StepCancelled,
        state: RunState,
        now: float,
        agents: Mapping[str, AgentDescription] | None = None,
    ) -> None:
        launch = run.launches.pop((event.path, event.attempt), None)
        step = state.steps.get(event.path)
        agent = launch.agent if launch else (step.agent if step and step.agent else "unknown")
        agent_type, model = self._describe(agent, agents)
        content = self.log.include_content
        outcome: Literal["succeeded", "failed", "cancelled"] = (
            "succeeded"
            if isinstance(event, StepSucceeded)
            else "failed"
            if isinstance(event, StepFailed)
            else "cancelled"
        )
        self.log.emit(
            AgentCall(
                time=self.log.now(),
                run_id=run.run_id,
                pipeline=run.pipeline,
                namespace=run.namespace,
                step=event.path,
                step_name=launch.step if launch else (step.name if step else event.path),
                agent=agent,
                agent_type=agent_type,
                model=model,
                attempt=event.attempt,
                outcome=outcome,
                error_class=event.error_class if isinstance(event, StepFailed) else None,
                input_tokens=event.usage.input_tokens,
                output_tokens=event.usage.output_tokens,
                cost_usd=event.usage.cost_usd,
                duration_ms=round((now - launch.started) * 1000, 3) if launch else None,
                input=launch.input if content and launch else None,
                output=event.output if content and isinstance(event, StepSucceeded) else None,
                message=event.message if content and isinstance(event, StepFailed) else None,
            )
        )

    def _finished(self, run: _Run, command: FinishRun, state: RunState, now: float) -> None:
        outcome = command.outcome
        content = self.log.include_content
        usage = state.usage
        self.log.emit(
            RunFinished(
                time=self.log.now(),
                run_id=run.run_id,
                pipeline=run.pipeline,
                namespace=run.namespace,
                status=outcome.status,
                reason=outcome.reason,
                error_class=outcome.error_class,
                failed_path=outcome.path,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=usage.cost_usd,
                launches=state.launches,
                duration_ms=round((now - run.started) * 1000, 3),
                message=outcome.message if content else None,
                output=outcome.output if content else None,
            )
        )
