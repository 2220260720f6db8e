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
light and executors can call the *executor hooks* below unconditionally: they
cost a context-variable lookup when nobody listens.

Why hooks at all: a :class:`~flujo.runtime.RunObserver` sees each event with
the commands it produced, which is enough for counts, usage and durations.
Three facts are known only inside the executor, at moments no event marks:

- how long ``advance()`` took (orchestration overhead) — :func:`record_advance`;
- when an agent call actually started, after the backoff delay, the task
  scheduling or the pod start (queueing time) — :func:`call_started`;
- how long a call waited for its rate-limit slot — :func:`rate_limit_waited`.

``record_advance`` stores the duration next to the event, in a context
variable, for observers to read while observing that same event.  The other
two run in agent tasks; an observer that wants them *binds* itself to the
run's context when the run starts (:func:`bind`), and asyncio copies that
context into every task the run creates — so concurrent runs, each in its own
task, never see each other's calls.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from flujo.engine.commands import LaunchStep

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from flujo.agents.registry import AgentRegistry
    from flujo.observability.metrics import FlujoMetrics, MetricsServer
    from flujo.runtime.runner import RunObserver

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


class ObservabilityWarning(RuntimeWarning):
    """Telemetry could not be delivered; the run goes on without it."""


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What telemetry needs to know about an agent: its kind and model.

    ``type`` is the agent kind (``openai``, ``http``, ``builtin``,
    ``scripted``, ``python`` for in-code callables); ``model`` the model name
    of LLM agents.  Both end up in metric labels and GenAI span attributes,
    so they come from configuration, never from call data.
    """

    type: str
    model: str | None = None

    @classmethod
    def of(cls, value: AgentInfo | tuple[str, str | None] | Mapping[str, Any]) -> AgentInfo:
        """Accept an ``AgentInfo``, a ``(type, model)`` pair or a ``{"type", "model"}`` dict."""
        if isinstance(value, AgentInfo):
            return value
        if isinstance(value, tuple):
            return cls(str(value[0]), None if value[1] is None else str(value[1]))
        model = value.get("model")
        return cls(str(value.get("type", "python")), None if model is None else str(model))


def agent_infos(registry: AgentRegistry) -> dict[str, AgentInfo]:
    """Agent name → kind and model, from a registry, without building any agent.

    ``${VAR}`` references in model names are expanded as the agent would
    expand them; an unset variable leaves the reference as written.
    """
    from flujo.agents.remote import expand_env
    from flujo.domain.errors import AgentError

    found: dict[str, AgentInfo] = {}
    for entry in registry.list():
        model = entry.spec.model if entry.spec is not None else None
        if model is not None and "${" in model:
            with suppress(AgentError):
                model = expand_env(entry.name, "model", model)
        found[entry.name] = AgentInfo(entry.type, model)
    return found


# --- executor hooks ---------------------------------------------------------------


class ExecutorSink(Protocol):
    """What a bound observer receives from executor hooks (see :func:`bind`)."""

    def call_started(self, key: Hashable, cmd: LaunchStep) -> None: ...

    def rate_limit_waited(self, key: Hashable, agent: str, seconds: float) -> None: ...


_ADVANCE: ContextVar[tuple[object, float] | None] = ContextVar("flujo_advance", default=None)
_SINKS: ContextVar[tuple[tuple[ExecutorSink, Hashable], ...]] = ContextVar(
    "flujo_sinks", default=()
)


def record_advance(event: object, seconds: float) -> None:
    """Executor: ``advance(state, event)`` took ``seconds``; call before the observers."""
    _ADVANCE.set((event, seconds))


def advance_seconds(event: object) -> float | None:
    """Observer: how long ``advance`` took for ``event``, if the executor said so."""
    found = _ADVANCE.get()
    if found is None or found[0] is not event:
        return None
    return found[1]


def bind(sink: ExecutorSink, key: Hashable) -> None:
    """Observer: receive this context's executor hooks for the run ``key``.

    Call while observing ``RunStarted`` — i.e. in the run's own task, before
    it creates the tasks of its agent calls, which inherit the binding.
    """
    _SINKS.set((*_SINKS.get(), (sink, key)))


def unbind(sink: ExecutorSink, key: Hashable) -> None:
    """Observer: stop receiving hooks for ``key`` (call when the run finishes)."""
    _SINKS.set(tuple(b for b in _SINKS.get() if b[0] is not sink or b[1] != key))


def call_started(cmd: LaunchStep) -> None:
    """Executor: the agent call for ``cmd`` starts now (after any backoff delay)."""
    for sink, key in _SINKS.get():
        try:
            sink.call_started(key, cmd)
        except Exception:  # telemetry never fails a call
            continue


def rate_limit_waited(agent: str, seconds: float) -> None:
    """Executor: a call to ``agent`` waited ``seconds`` for its rate-limit slot."""
    for sink, key in _SINKS.get():
        try:
            sink.rate_limit_waited(key, agent, seconds)
        except Exception:
            continue


# --- the embedded runtime's one-call setup -------------------------------------------


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
