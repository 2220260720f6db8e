"""Observability: metrics, traces and cost anomalies, for both executors.

The submodules hold the heavy parts and import their libraries:

- :mod:`flujo.observability.metrics` — Prometheus metrics (``prometheus-client``):
  :class:`~flujo.observability.metrics.MetricsObserver` for runs, and the
  operator's own gauges and timers;
- :mod:`flujo.observability.tracing` — OpenTelemetry traces following the GenAI
  semantic conventions, and W3C ``traceparent`` propagation into step pods;
- :mod:`flujo.observability.anomaly` — a pure, serialisable per-pipeline cost
  baseline that flags unusually expensive runs.

This ``__init__`` imports none of those libraries, so ``import flujo`` stays
light.  It holds what ties the adapters to an embedded run
(:func:`start_observability`, :func:`agent_infos`) and re-exports the
executor hooks, which live below every layer that calls them, in
:mod:`flujo.hooks`.
"""

from __future__ import annotations

from flujo.hooks import (
    ExecutorSink,
    advance_seconds,
    bind,
    call_started,
    rate_limit_waited,
    record_advance,
    unbind,
)
from flujo.observability.info import AgentInfo, ObservabilityWarning, agent_infos
from flujo.observability.setup import Observability, start_observability

__all__ = [
    "AgentInfo",
    "ExecutorSink",
    "Observability",
    "ObservabilityWarning",
    "advance_seconds",
    "agent_infos",
    "bind",
    "call_started",
    "rate_limit_waited",
    "record_advance",
    "start_observability",
    "unbind",
]
