"""The embedded runtime's one-call setup of metrics and tracing for a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flujo.observability.info import agent_infos

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from flujo.agents.registry import AgentRegistry
    from flujo.observability.metrics import FlujoMetrics, MetricsServer
    from flujo.runtime.runner import RunObserver

__all__ = ["Observability", "start_observability"]


class Observability:
    """The observers of a ``flujo run`` process, and what must be closed after it."""

    def __init__(self) -> None:
        self.observers: list[RunObserver] = []
        self.metrics: FlujoMetrics | None = None
        """The metrics, when served."""
        self.server: MetricsServer | None = None
        """The ``/metrics`` endpoint, when served."""
        self.tracer_provider: TracerProvider | None = None
        """The provider exporting this process's spans, when tracing is on."""

    def close(self) -> None:
        """Stop serving metrics and flush pending spans (bounded by the exporter's timeout)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
            self.tracer_provider = None


def start_observability(
    pipeline: str,
    registry: AgentRegistry,
    *,
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
    tracing: bool | None = None,
) -> Observability:
    """Metrics (served on ``metrics_port``) and tracing for one embedded pipeline.

    ``tracing`` None follows the standard OpenTelemetry variables (on when an
    OTLP endpoint is set); True forces it on (default endpoint
    ``http://localhost:4318``); False turns it off.  Breaker transitions of
    the registry's agents are counted too.
    """
    obs = Observability()
    infos = agent_infos(registry)
    if metrics_port is not None:
        from flujo.observability.metrics import FlujoMetrics, MetricsObserver, serve_metrics

        metrics = FlujoMetrics()
        # Serve first: a port in use fails here, before anything is attached.
        obs.server = serve_metrics(metrics_port, metrics.registry, addr=metrics_addr)
        obs.metrics = metrics
        registry.breakers.add_listener(metrics.circuit_changed)
        obs.observers.append(MetricsObserver(metrics, pipeline, agents=infos))
    if tracing is not False:
        from flujo.observability.tracing import TracingObserver, configure_tracing

        provider = configure_tracing(enabled=tracing)
        if provider is not None:
            obs.tracer_provider = provider
            obs.observers.append(TracingObserver(pipeline, infos, tracer_provider=provider))
    return obs
