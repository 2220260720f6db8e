"""What Flujo exports: every metric family, its labels and their bounded vocabularies.

:data:`CATALOGUE` is the single list of the families
(:class:`~flujo.observability.metrics.registry.FlujoMetrics` builds them, dashboards
and rules are checked against it); :data:`LABEL_DOMAINS` is every label any of
them may carry, with its closed vocabulary or None for the capped names of
configured things (pipeline, agent, model).  Buckets are chosen for what each
histogram measures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from flujo.domain.errors import ERROR_CLASSES

__all__ = [
    "ALLOWED_LABELS",
    "ANOMALY_METRICS",
    "API_ERROR_CLASSES",
    "API_VERBS",
    "CATALOGUE",
    "CIRCUIT_STATES",
    "DIRECTIONS",
    "LABEL_DOMAINS",
    "LIMITS",
    "OTHER",
    "RESOURCES",
    "RUN_OUTCOMES",
    "RUN_REASONS",
    "MetricDef",
    "api_error_class",
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
    # tool loops
    MetricDef(
        "flujo_tool_calls",
        "counter",
        "Tool calls made by model steps' tool loops, by the tool's agent and outcome.",
        ("pipeline", "agent", "outcome"),
    ),
    MetricDef(
        "flujo_tool_call_duration_seconds",
        "histogram",
        "Duration of each tool call of a tool loop (its agent's rate-limit wait included).",
        ("agent",),
        _STEP_SECONDS,
    ),
    MetricDef(
        "flujo_estimated_tokens",
        "counter",
        "Tokens counted by estimate from the text because the server reported no usage "
        "(also in flujo_tokens).",
        ("pipeline", "agent", "model"),
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
