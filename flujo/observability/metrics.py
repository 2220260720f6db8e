"""Prometheus metrics: runs, steps, usage, resilience, and the operator's health.

Everything lives in a :class:`FlujoMetrics`, which owns a dedicated
``CollectorRegistry`` — never prometheus-client's global one — so that tests,
several runtimes in one process and the operator never collide.

:class:`MetricsObserver` is a :class:`~flujo.runtime.RunObserver`: it turns
the events and commands of runs into metrics, for the embedded runtime
(``Flujo(..., observers=[...])``) and for the operator (``observe_run`` with
the run's pipeline name and uid).  The operator also calls the
``FlujoMetrics`` methods for what is its own: reconcile durations, pending
runs and pods, API errors, breaker transitions.

**Cardinality is bounded by construction.**  Every label name must be in
:data:`LABEL_DOMAINS`.  Labels with a closed vocabulary (outcome, reason,
limit, error class, …) map anything unknown to ``other``; the labels naming
configured things (pipeline, agent, model) keep at most ``max_label_values``
distinct values each, then report ``other``.  Run ids, step paths and free
text never become labels: they are unbounded (every loop iteration makes a
new path), and one series per run would grow Prometheus' memory without
limit.  Per-run figures are histograms instead (``flujo_run_cost_usd``), from
which PromQL derives cost per run, tokens per run and success rate (see
``docs/observability.md``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from flujo.domain.errors import ERROR_CLASSES
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

__all__ = [
    "ALLOWED_LABELS",
    "CATALOGUE",
    "LABEL_DOMAINS",
    "FlujoMetrics",
    "MetricDef",
    "MetricsObserver",
    "MetricsServer",
    "pod_queue_seconds",
    "serve_metrics",
]

OTHER = "other"
"""The label value that stands for anything outside a label's domain or cap."""

RUN_OUTCOMES = ("succeeded", "failed", "cancelled")
RUN_REASONS = (
    "Succeeded",
    "StepFailed",
    "UsageLimitExceeded",
    "DeadlineExceeded",
    "Cancelled",
    "InternalError",
)
LIMITS = ("cost", "tokens", "launches", "seconds")
DIRECTIONS = ("input", "output")
CIRCUIT_STATES = ("closed", "half-open", "open")
API_VERBS = ("get", "list", "watch", "create", "patch", "update", "delete", "log")
API_ERROR_CLASSES = (
    "conflict",
    "not_found",
    "unauthorized",
    "forbidden",
    "invalid",
    "throttled",
    "server_error",
    "timeout",
    "connection",
)
RESOURCES = ("pipelinerun", "pod", "agent", "pipeline")
ANOMALY_METRICS = ("cost", "tokens")

LABEL_DOMAINS: Mapping[str, frozenset[str] | None] = {
    # Names of configured objects: open vocabulary, capped per FlujoMetrics.
    "pipeline": None,
    "agent": None,
    "model": None,
    # Closed vocabularies.
    "outcome": frozenset(RUN_OUTCOMES),
    "reason": frozenset(RUN_REASONS),
    "limit": frozenset(LIMITS),
    "error_class": frozenset(ERROR_CLASSES) | frozenset(API_ERROR_CLASSES),
    "direction": frozenset(DIRECTIONS),
    "state": frozenset(CIRCUIT_STATES),
    "verb": frozenset(API_VERBS),
    "resource": frozenset(RESOURCES),
    "metric": frozenset(ANOMALY_METRICS),
}
"""Every label any Flujo metric may carry, with its domain (None: capped names)."""
ALLOWED_LABELS = frozenset(LABEL_DOMAINS)

_CIRCUIT_VALUE = {"closed": 0.0, "half-open": 1.0, "open": 2.0}

# Buckets, chosen for what each measures.
_STEP_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
"""Built-in transforms take milliseconds, LLM calls seconds to minutes."""
_RUN_SECONDS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_RUN_COST = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50, 100)
_RUN_TOKENS = (100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000)
_OVERHEAD = (1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05)
"""advance() costs ~15 µs a step; the top buckets catch pathological pipelines."""
_QUEUE = (0.0001, 0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
"""Embedded: sub-millisecond task scheduling; operator: seconds of pod start."""
_WAIT = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_RECONCILE = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class MetricDef:
    """One metric family: the catalogue is the single list of what Flujo exports."""

    name: str
    """Family name; counters are exposed with ``_total`` appended."""
    kind: Literal["counter", "gauge", "histogram"]
    doc: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    def sample_names(self) -> tuple[str, ...]:
        """The series names Prometheus sees for this family."""
        if self.kind == "counter":
            return (f"{self.name}_total", f"{self.name}_created")
        if self.kind == "histogram":
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_sum", "_count", "_created"))
        return (self.name,)


CATALOGUE: tuple[MetricDef, ...] = (
    # runs
    MetricDef("flujo_runs_started", "counter", "Runs started.", ("pipeline",)),
    MetricDef(
        "flujo_runs_finished",
        "counter",
        "Runs finished, by outcome and machine-readable reason.",
        ("pipeline", "outcome", "reason"),
    ),
    MetricDef("flujo_runs_active", "gauge", "Runs in progress.", ("pipeline",)),
    MetricDef(
        "flujo_run_duration_seconds",
        "histogram",
        "Wall-clock duration of finished runs (executor clock).",
        ("pipeline", "outcome"),
        _RUN_SECONDS,
    ),
    MetricDef(
        "flujo_run_cost_usd",
        "histogram",
        "Cost of each finished run in USD: _sum/_count is the cost per run.",
        ("pipeline",),
        _RUN_COST,
    ),
    MetricDef(
        "flujo_run_tokens",
        "histogram",
        "Tokens (input + output) of each finished run.",
        ("pipeline",),
        _RUN_TOKENS,
    ),
    # steps
    MetricDef("flujo_step_launches", "counter", "Agent calls launched.", ("pipeline", "agent")),
    MetricDef(
        "flujo_step_duration_seconds",
        "histogram",
        "From LaunchStep to the attempt's result (executor clock), by outcome.",
        ("pipeline", "agent", "outcome"),
        _STEP_SECONDS,
    ),
    MetricDef(
        "flujo_step_failures",
        "counter",
        "Failed agent calls, by error class.",
        ("pipeline", "agent", "error_class"),
    ),
    MetricDef(
        "flujo_step_retries",
        "counter",
        "Launches that retry the same agent (attempt > 1, the fallback switch excluded).",
        ("pipeline", "agent"),
    ),
    MetricDef(
        "flujo_step_fallbacks",
        "counter",
        "Steps handed to their fallback agent (labelled with the fallback agent).",
        ("pipeline", "agent"),
    ),
    MetricDef(
        "flujo_step_queue_seconds",
        "histogram",
        "From LaunchStep to the agent call starting, minus the requested backoff delay.",
        ("pipeline", "agent"),
        _QUEUE,
    ),
    MetricDef(
        "flujo_orchestration_overhead_seconds",
        "histogram",
        "Time spent in the state machine's advance() per event.",
        ("pipeline",),
        _OVERHEAD,
    ),
    # usage
    MetricDef(
        "flujo_tokens",
        "counter",
        "Tokens consumed, as the governor counts them (each attempt once).",
        ("pipeline", "agent", "model", "direction"),
    ),
    MetricDef(
        "flujo_cost_usd",
        "counter",
        "Money spent in USD, as the governor counts it.",
        ("pipeline", "agent", "model"),
    ),
    MetricDef(
        "flujo_governor_breaches",
        "counter",
        "Runs stopped by a usage limit (seconds: the run deadline).",
        ("pipeline", "limit"),
    ),
    # resilience
    MetricDef(
        "flujo_circuit_state",
        "gauge",
        "Circuit breaker state per agent: 0 closed, 1 half-open, 2 open.",
        ("agent",),
    ),
    MetricDef(
        "flujo_circuit_transitions",
        "counter",
        "Circuit breaker transitions, by the state entered.",
        ("agent", "state"),
    ),
    MetricDef(
        "flujo_rate_limit_wait_seconds",
        "histogram",
        "Time calls waited for their agent's outbound rate-limit slot.",
        ("agent",),
        _WAIT,
    ),
    # anomalies
    MetricDef(
        "flujo_run_anomaly_score",
        "gauge",
        "Robust z-score of the last finished run against its pipeline's baseline.",
        ("pipeline", "metric"),
    ),
    MetricDef(
        "flujo_run_anomalies",
        "counter",
        "Finished runs flagged as anomalously expensive.",
        ("pipeline", "metric"),
    ),
    # operator
    MetricDef(
        "flujo_operator_reconcile_duration_seconds",
        "histogram",
        "Operator handler durations, by resource and outcome.",
        ("resource", "outcome"),
        _RECONCILE,
    ),
    MetricDef(
        "flujo_operator_runs_pending",
        "gauge",
        "PipelineRuns waiting to start (queued, missing agents or pipeline).",
    ),
    MetricDef(
        "flujo_operator_pods_pending",
        "gauge",
        "Step pods created and not yet running.",
    ),
    MetricDef(
        "flujo_operator_launches_waiting",
        "gauge",
        "Step launches waiting for pod capacity (maxRunningPods).",
    ),
    MetricDef(
        "flujo_operator_api_errors",
        "counter",
        "Kubernetes API calls that failed, by verb and error class.",
        ("verb", "error_class"),
    ),
    MetricDef(
        "flujo_operator_api_throttle_seconds",
        "histogram",
        "Time API requests waited for the operator's API or pod-creation budget, by verb.",
        ("verb",),
        _WAIT,
    ),
)


def _check_catalogue() -> None:
    for metric in CATALOGUE:
        unknown = set(metric.labels) - ALLOWED_LABELS
        if unknown:  # a programming error, caught by the test suite at import
            raise ValueError(f"{metric.name}: labels {sorted(unknown)} are not allowed")


_check_catalogue()


def api_error_class(status: int | None) -> str:
    """Map an HTTP status (None: no response) onto an API error class."""
    if status is None:
        return "connection"
    return {
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        408: "timeout",
        409: "conflict",
        410: "not_found",
        422: "invalid",
        400: "invalid",
        429: "throttled",
        504: "timeout",
    }.get(status, "server_error" if status >= 500 else OTHER)


class FlujoMetrics:
    """Every Flujo metric, in one dedicated registry, with label values bounded.

    ``max_label_values`` caps each open label (pipeline, agent, model): past
    it, new names report as ``other``.  ``clock`` (monotonic seconds) times the
    operator's reconciles; tests inject one.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_label_values: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.max_label_values = max_label_values
        self.clock = clock
        self._seen: dict[str, set[str]] = {name: set() for name in LABEL_DOMAINS}
        self._families: dict[str, Any] = {}
        for metric in CATALOGUE:
            self._families[metric.name] = self._make(metric)

    def _make(self, metric: MetricDef) -> Any:
        labels = list(metric.labels)
        if metric.kind == "counter":
            return Counter(metric.name, metric.doc, labels, registry=self.registry)
        if metric.kind == "gauge":
            return Gauge(metric.name, metric.doc, labels, registry=self.registry)
        return Histogram(
            metric.name, metric.doc, labels, registry=self.registry, buckets=metric.buckets
        )

    # --- label values ---------------------------------------------------------

    def label(self, name: str, value: object) -> str:
        """The bounded value reported for label ``name``."""
        domain = LABEL_DOMAINS[name]
        text = "" if value is None else str(value)
        if domain is not None:
            return text if text in domain else OTHER
        text = text.strip()[:128]
        if not text:
            return "" if name == "model" else "unknown"
        seen = self._seen[name]
        if text in seen:
            return text
        if len(seen) >= self.max_label_values:
            return OTHER
        seen.add(text)
        return text

    def _child(self, name: str, /, **labels: object) -> Any:
        family = self._families[name]
        if not labels:
            return family
        return family.labels(**{k: self.label(k, v) for k, v in labels.items()})

    def inc(self, name: str, amount: float = 1.0, /, **labels: object) -> None:
        self._child(name, **labels).inc(amount)

    def observe(self, name: str, value: float, /, **labels: object) -> None:
        self._child(name, **labels).observe(value)

    def set_gauge(self, name: str, value: float, /, **labels: object) -> None:
        self._child(name, **labels).set(value)

    def sample_names(self) -> set[str]:
        """Every series name these metrics can expose (for dashboards and rules)."""
        return {name for metric in CATALOGUE for name in metric.sample_names()}

    # --- operator and executor API --------------------------------------------

    @contextmanager
    def reconcile(self, resource: str) -> Iterator[None]:
        """Time one operator handler call; an exception counts it as failed."""
        started = self.clock()
        outcome = "failed"
        try:
            yield
            outcome = "succeeded"
        finally:
            self.observe(
                "flujo_operator_reconcile_duration_seconds",
                max(0.0, self.clock() - started),
                resource=resource,
                outcome=outcome,
            )

    @contextmanager
    def api_call(self, verb: str) -> Iterator[None]:
        """Count a Kubernetes API call that raises, by verb and status; re-raise."""
        try:
            yield
        except Exception as exc:
            status = getattr(exc, "status", None)
            self.api_error(verb, status if isinstance(status, int) and status else None)
            raise

    def api_error(self, verb: str, status: int | None) -> None:
        self.inc("flujo_operator_api_errors", verb=verb, error_class=api_error_class(status))

    def api_throttled(self, verb: str, seconds: float) -> None:
        self.observe("flujo_operator_api_throttle_seconds", max(0.0, seconds), verb=verb)

    def set_runs_pending(self, count: int) -> None:
        self.set_gauge("flujo_operator_runs_pending", count)

    def set_pods_pending(self, count: int) -> None:
        self.set_gauge("flujo_operator_pods_pending", count)

    def set_launches_waiting(self, count: int) -> None:
        self.set_gauge("flujo_operator_launches_waiting", count)

    def circuit_changed(self, name: str, old: str, new: str) -> None:
        """A :data:`~flujo.resilience.breaker.StateChangeListener`: count and set the state.

        The operator names breakers ``namespace/agent``; that name is the
        agent label (it identifies a configured Agent, so stays bounded).
        """
        del old
        self.inc("flujo_circuit_transitions", agent=name, state=new)
        self.set_circuit_state(name, new)

    def set_circuit_state(self, agent: str, state: str) -> None:
        """Set the gauge without counting a transition (state restored after a restart)."""
        self.set_gauge("flujo_circuit_state", _CIRCUIT_VALUE.get(state, 0.0), agent=agent)

    def rate_limit_wait(self, agent: str, seconds: float) -> None:
        self.observe("flujo_rate_limit_wait_seconds", max(0.0, seconds), agent=agent)

    def step_queued(self, pipeline: str, agent: str, seconds: float) -> None:
        """Queueing time measured by the executor (the operator: pod created → started)."""
        self.observe("flujo_step_queue_seconds", max(0.0, seconds), pipeline=pipeline, agent=agent)


# --- the observer ---------------------------------------------------------------------


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

    @property
    def tracked_runs(self) -> int:
        """Runs in progress as this observer sees them (bounded: see max_tracked_runs)."""
        return len(self._runs)


# --- operator helpers and the HTTP endpoint -----------------------------------------


def _timestamp(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def pod_queue_seconds(pod: Mapping[str, Any]) -> float | None:
    """A step pod's queueing time: created → its container started, or None if not yet.

    Both timestamps come from the cluster (API server and kubelet), so the
    operator's own clock does not skew it; the resolution is one second.
    """
    created = _timestamp((pod.get("metadata") or {}).get("creationTimestamp"))
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    state = (statuses[0].get("state") or {}) if statuses else {}
    started = None
    for phase in ("running", "terminated"):
        if isinstance(state.get(phase), Mapping):
            started = _timestamp(state[phase].get("startedAt"))
            break
    if created is None or started is None:
        return None
    return max(0.0, (started - created).total_seconds())


class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    def __init__(self, server: Any, thread: Any) -> None:
        self._server = server
        self._thread = thread
        self.port: int = int(server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    port: int, registry: CollectorRegistry, *, addr: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``registry`` on ``http://addr:port/metrics`` from a daemon thread.

    Loopback by default: metrics name pipelines and agents, and exposing them
    on every interface is a choice the caller makes explicitly (the operator's
    pod passes ``0.0.0.0``).  ``port`` 0 picks a free port (see ``.port``).
    """
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server, thread)
