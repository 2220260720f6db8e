"""MetricsObserver: a run's events and commands turned into metrics.

A :class:`~flujo.runtime.RunObserver` for the embedded runtime
(``Flujo(..., observers=[...])``) and, through :meth:`MetricsObserver.observe_run`
with each run's pipeline name and uid, for the operator.  It is also an
:class:`~flujo.hooks.ExecutorSink`: the executor's call-started and rate-limit
hooks reach it for queueing and waiting times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from flujo.engine import (
    CancelStep,
    Command,
    Event,
    FinishRun,
    LaunchStep,
    RunStarted,
    RunState,
    StepCancelled,
    StepFailed,
    StepSucceeded,
)
from flujo.hooks import advance_seconds, bind, unbind
from flujo.observability.anomaly import AnomalyDetector, Verdict
from flujo.observability.info import AgentInfo
from flujo.observability.metrics.registry import FlujoMetrics

__all__ = ["MetricsObserver"]


@dataclass(slots=True)
class _Launch:
    agent: str
    emitted: float
    delay: float
    started: bool = False


@dataclass(slots=True)
class _Run:
    pipeline: str
    started: float | None
    input_tokens: int
    output_tokens: int
    cost: float
    launches: dict[tuple[str, int], _Launch] = field(default_factory=dict)
    fallbacks: set[str] = field(default_factory=set)


class MetricsObserver:
    """Turns a run's events and commands into metrics; one instance serves many runs.

    ``pipeline`` labels the runs seen through :meth:`observe` (the embedded
    runtime: one ``Flujo`` runs one pipeline).  The operator calls
    :meth:`observe_run` with each run's pipeline name and uid instead.
    ``agents`` gives each agent's model for usage labels.  ``clock`` is the
    executor-side monotonic clock used for durations.  ``anomaly``, when
    given, scores each finished run's cost and tokens against its pipeline's
    baseline (and learns from succeeded runs).
    """

    max_tracked_runs = 10_000
    """Runs whose end was never observed (an operator restart) are forgotten past this."""

    def __init__(
        self,
        metrics: FlujoMetrics,
        pipeline: str = "unknown",
        *,
        agents: Mapping[str, AgentInfo | tuple[str, str | None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        anomaly: AnomalyDetector | None = None,
    ) -> None:
        self.metrics = metrics
        self.pipeline = pipeline
        self.agents = {name: AgentInfo.of(info) for name, info in (agents or {}).items()}
        self.clock = clock
        self.anomaly = anomaly
        self.verdicts: dict[Hashable, list[Verdict]] = {}
        """Finished runs' anomaly verdicts, by run key, for executors to act on (pop them)."""
        self._runs: dict[Hashable, _Run] = {}
        self._closed: dict[Hashable, _Run] = {}
        """Recently finished runs, for results that arrive after the run ended."""

    max_closed_runs = 1000

    # RunObserver
    def observe(self, event: Event, state: RunState, commands: Sequence[Command]) -> None:
        self.observe_run(event, state, commands, pipeline=self.pipeline, key=id(state))

    def observe_run(
        self,
        event: Event,
        state: RunState,
        commands: Sequence[Command],
        *,
        pipeline: str,
        key: Hashable,
    ) -> None:
        """Record one ``advance`` step of the run ``key`` of pipeline ``pipeline``."""
        now = self.clock()
        m = self.metrics
        run = self._runs.get(key)
        if run is None and not isinstance(event, RunStarted) and key in self._closed:
            # A late result of a finished run (a call that completed while the run was
            # stopping): its tokens were spent and the run's usage counts them.
            if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
                self._result(self._closed[key], event, state, now)
            return
        if isinstance(event, RunStarted) or run is None:
            run = self._open(key, pipeline, event, state, now)
        overhead = advance_seconds(event)
        if overhead is not None:
            m.observe("flujo_orchestration_overhead_seconds", overhead, pipeline=pipeline)
        if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
            self._result(run, event, state, now)
        for command in commands:
            if isinstance(command, LaunchStep):
                self._launched(run, command, state, now)
            elif isinstance(command, CancelStep):
                self._cancelled(run, command.path, state, now)
            elif isinstance(command, FinishRun):
                self._finished(key, run, command, state, now)

    def _open(
        self, key: Hashable, pipeline: str, event: Event, state: RunState, now: float
    ) -> _Run:
        usage = state.usage
        if isinstance(event, RunStarted):
            run = _Run(pipeline, now, 0, 0, 0.0)
            self.metrics.inc("flujo_runs_started", pipeline=pipeline)
            self.metrics.inc("flujo_runs_active", pipeline=pipeline)
            bind(self, key)
        else:
            # A run first seen mid-way (the operator restarted): assume this
            # event's usage is the part not yet counted.
            spent = getattr(event, "usage", None)
            run = _Run(
                pipeline,
                None,
                usage.input_tokens - (spent.input_tokens if spent else 0),
                usage.output_tokens - (spent.output_tokens if spent else 0),
                usage.cost_usd - (spent.cost_usd if spent else 0.0),
            )
        while len(self._runs) >= self.max_tracked_runs:
            del self._runs[next(iter(self._runs))]
        self._runs[key] = run
        return run

    def _agent_of(self, run: _Run, path: str, attempt: int, state: RunState) -> str:
        launch = run.launches.get((path, attempt))
        if launch is not None:
            return launch.agent
        step = state.steps.get(path)
        return (step.agent if step is not None else None) or "unknown"

    def _result(
        self,
        run: _Run,
        event: StepSucceeded | StepFailed | StepCancelled,
        state: RunState,
        now: float,
    ) -> None:
        m, pipeline = self.metrics, run.pipeline
        agent = self._agent_of(run, event.path, event.attempt, state)
        # Usage as the governor counted it: duplicates add nothing, late results of
        # cancelled attempts still add theirs.
        usage = state.usage
        d_in = max(0, usage.input_tokens - run.input_tokens)
        d_out = max(0, usage.output_tokens - run.output_tokens)
        d_cost = max(0.0, usage.cost_usd - run.cost)
        run.input_tokens, run.output_tokens, run.cost = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cost_usd,
        )
        model = self.agents.get(agent, AgentInfo("unknown")).model
        if d_in:
            m.inc(
                "flujo_tokens", d_in, pipeline=pipeline, agent=agent, model=model, direction="input"
            )
        if d_out:
            m.inc(
                "flujo_tokens",
                d_out,
                pipeline=pipeline,
                agent=agent,
                model=model,
                direction="output",
            )
        if d_cost:
            m.inc("flujo_cost_usd", d_cost, pipeline=pipeline, agent=agent, model=model)
        if event.usage.estimated and (d_in or d_out):
            m.inc(
                "flujo_estimated_tokens", d_in + d_out, pipeline=pipeline, agent=agent, model=model
            )
        launch = run.launches.pop((event.path, event.attempt), None)
        if launch is None:
            return  # a duplicate, a late result of a cancelled attempt, or unseen launch
        outcome = (
            "succeeded"
            if isinstance(event, StepSucceeded)
            else "failed"
            if isinstance(event, StepFailed)
            else "cancelled"
        )
        m.observe(
            "flujo_step_duration_seconds",
            max(0.0, now - launch.emitted),
            pipeline=pipeline,
            agent=agent,
            outcome=outcome,
        )
        if isinstance(event, StepFailed):
            m.inc(
                "flujo_step_failures", pipeline=pipeline, agent=agent, error_class=event.error_class
            )

    def _launched(self, run: _Run, cmd: LaunchStep, state: RunState, now: float) -> None:
        m, pipeline = self.metrics, run.pipeline
        m.inc("flujo_step_launches", pipeline=pipeline, agent=cmd.agent)
        step = state.steps.get(cmd.path)
        if step is not None and step.fallback_used and cmd.path not in run.fallbacks:
            run.fallbacks.add(cmd.path)
            m.inc("flujo_step_fallbacks", pipeline=pipeline, agent=cmd.agent)
        elif cmd.attempt > 1:
            m.inc("flujo_step_retries", pipeline=pipeline, agent=cmd.agent)
        run.launches[(cmd.path, cmd.attempt)] = _Launch(cmd.agent, now, cmd.delay_seconds)

    def _cancelled(self, run: _Run, path: str, state: RunState, now: float) -> None:
        step = state.steps.get(path)
        attempt = step.attempt if step is not None else 0
        launch = run.launches.pop((path, attempt), None)
        if launch is not None:
            self.metrics.observe(
                "flujo_step_duration_seconds",
                max(0.0, now - launch.emitted),
                pipeline=run.pipeline,
                agent=launch.agent,
                outcome="cancelled",
            )

    def _finished(
        self, key: Hashable, run: _Run, cmd: FinishRun, state: RunState, now: float
    ) -> None:
        m, pipeline, outcome = self.metrics, run.pipeline, cmd.outcome
        reason = outcome.reason or "Succeeded"
        m.inc("flujo_runs_finished", pipeline=pipeline, outcome=outcome.status, reason=reason)
        usage = state.usage
        m.observe("flujo_run_cost_usd", usage.cost_usd, pipeline=pipeline)
        m.observe("flujo_run_tokens", usage.total_tokens, pipeline=pipeline)
        if run.started is not None:
            m.observe(
                "flujo_run_duration_seconds",
                max(0.0, now - run.started),
                pipeline=pipeline,
                outcome=outcome.status,
            )
            m.inc("flujo_runs_active", -1, pipeline=pipeline)
        if state.breach is not None:
            m.inc("flujo_governor_breaches", pipeline=pipeline, limit=state.breach.limit)
        elif reason == "DeadlineExceeded":
            m.inc("flujo_governor_breaches", pipeline=pipeline, limit="seconds")
        if self.anomaly is not None:
            verdicts = self.anomaly.observe(
                pipeline,
                cost=usage.cost_usd,
                tokens=usage.total_tokens,
                learn=outcome.status == "succeeded",
            )
            self.verdicts[key] = verdicts
            for verdict in verdicts:
                m.set_gauge(
                    "flujo_run_anomaly_score",
                    verdict.score,
                    pipeline=pipeline,
                    metric=verdict.metric,
                )
                if verdict.anomalous:
                    m.inc("flujo_run_anomalies", pipeline=pipeline, metric=verdict.metric)
        self._runs.pop(key, None)
        self._closed[key] = run
        while len(self._closed) > self.max_closed_runs:
            del self._closed[next(iter(self._closed))]
        unbind(self, key)

    # ExecutorSink
    def call_started(self, key: Hashable, cmd: LaunchStep) -> None:
        run = self._runs.get(key)
        launch = run.launches.get((cmd.path, cmd.attempt)) if run is not None else None
        if run is None or launch is None or launch.started:
            return
        launch.started = True
        queued = self.clock() - launch.emitted - launch.delay
        self.metrics.step_queued(run.pipeline, launch.agent, queued)

    def rate_limit_waited(self, key: Hashable, agent: str, seconds: float) -> None:
        del key
        self.metrics.rate_limit_wait(agent, seconds)

    def tool_called(
        self,
        key: Hashable,
        path: str,
        attempt: int,
        tool: str,
        agent: str,
        seconds: float,
        error_class: str | None,
    ) -> None:
        del path, attempt, tool
        run = self._runs.get(key)
        pipeline = run.pipeline if run is not None else "unknown"
        outcome = "succeeded" if error_class is None else "failed"
        self.metrics.inc("flujo_tool_calls", pipeline=pipeline, agent=agent, outcome=outcome)
        self.metrics.observe("flujo_tool_call_duration_seconds", max(0.0, seconds), agent=agent)

    @property
    def tracked_runs(self) -> int:
        """Runs in progress as this observer sees them (bounded: see max_tracked_runs)."""
        return len(self._runs)
