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

Where each part lives:

- :mod:`~flujo.observability.metrics.catalogue` — the families, their labels and
  the labels' vocabularies (:data:`CATALOGUE`, :data:`LABEL_DOMAINS`);
- :mod:`~flujo.observability.metrics.registry` — :class:`FlujoMetrics`, the
  registry with bounded label values and the operator's own timers and gauges;
- :mod:`~flujo.observability.metrics.observer` — :class:`MetricsObserver`;
- :mod:`~flujo.observability.metrics.server` — the ``/metrics`` endpoint.
"""

from __future__ import annotations

from flujo.observability.metrics.catalogue import (
    ALLOWED_LABELS,
    ANOMALY_METRICS,
    API_ERROR_CLASSES,
    API_VERBS,
    CATALOGUE,
    CIRCUIT_STATES,
    DIRECTIONS,
    LABEL_DOMAINS,
    LIMITS,
    OTHER,
    RESOURCES,
    RUN_OUTCOMES,
    RUN_REASONS,
    MetricDef,
    api_error_class,
)
from flujo.observability.metrics.observer import MetricsObserver
from flujo.observability.metrics.registry import FlujoMetrics, pod_queue_seconds
from flujo.observability.metrics.server import MetricsServer, serve_metrics

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
    "FlujoMetrics",
    "MetricDef",
    "MetricsObserver",
    "MetricsServer",
    "api_error_class",
    "pod_queue_seconds",
    "serve_metrics",
]
