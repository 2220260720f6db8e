"""FlujoMetrics: the catalogue's families in a dedicated registry, label values bounded.

It owns a ``CollectorRegistry`` — never prometheus-client's global one — so
that tests, several runtimes in one process and the operator never collide.
Beside the generic ``inc``/``observe``/``set_gauge`` it has the calls the
executors and the operator make for what is their own: reconcile durations,
API errors and throttling, pending runs and pods, breaker transitions, rate
limit waits and queueing (:func:`pod_queue_seconds` measures a step pod's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from flujo.observability.metrics.catalogue import (
    CATALOGUE,
    LABEL_DOMAINS,
    OTHER,
    MetricDef,
    api_error_class,
)

__all__ = ["FlujoMetrics", "pod_queue_seconds"]

_CIRCUIT_VALUE = {"closed": 0.0, "half-open": 1.0, "open": 2.0}


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
