"""OpenTelemetry traces: one trace per run, one span per step attempt.

Spans follow the OpenTelemetry GenAI semantic conventions so that any
GenAI-aware backend shows model, token usage and operation without custom
mapping:

- the **run span** is ``invoke_workflow {pipeline}`` (``gen_ai.operation.name
  = invoke_workflow``, ``gen_ai.workflow.name``); its totals are ``flujo.usage.*``
  and not ``gen_ai.usage.*``, because backends sum ``gen_ai.usage`` over spans
  and would count every token twice;
- each **step attempt** is a child span: ``chat {model}`` for LLM agents
  (``gen_ai.operation.name``, ``gen_ai.provider.name`` and the older
  ``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens``), ``execute_tool {agent}`` for HTTP tools,
  built-ins and in-code callables (``gen_ai.tool.name``); a failure sets the
  span status and ``error.type`` to the error class;
- retries, fallbacks, cancellations, deadlines and governor breaches are
  **span events**, on the run span (and the step span they concern).

Prompts and outputs are never recorded: they may hold personal data, and a
span attribute is the wrong place for megabytes.

**One run is one trace across pods.**  The operator gives every step pod the
W3C ``traceparent`` of the run span (:func:`run_traceparent`, in env
``TRACEPARENT``); ``flujo step-run`` starts its step span from it
(:func:`traced_step_run`).  Trace and run-span ids are derived from the run's
uid, so they survive an operator restart; the operator emits the run span
itself once the run is over (:func:`record_run_span`), with those ids, so no
span is left open across a crash.

**Exporting** uses OTLP over HTTP configured by the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_EXPORTER``,
``OTEL_SDK_DISABLED`` …).  Telemetry must never break a run: when the exporter
package is missing or the collector cannot be reached, tracing degrades to a
no-op with one :class:`~flujo.observability.ObservabilityWarning`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from flujo.domain.usage import Usage
from flujo.engine import (
    CancelStep,
    Command,
    DeadlineReached,
    Event,
    FinishRun,
    LaunchStep,
    Outcome,
    RunCancelled,
    RunStarted,
    RunState,
    StepCancelled,
    StepFailed,
    StepSucceeded,
)
from flujo.observability.info import AgentInfo, ObservabilityWarning

__all__ = [
    "FlujoIdGenerator",
    "TracingObserver",
    "configure_tracing",
    "context_from_traceparent",
    "record_run_span",
    "run_span_context",
    "run_traceparent",
    "traced_step_run",
    "traceparent_of",
]

TRACER_NAME = "flujo"
TRACEPARENT_ENV = "TRACEPARENT"
DEFAULT_ENDPOINT = "http://localhost:4318"

# GenAI semantic conventions (written out: the Python constants module marks them
# as moved to the GenAI conventions repository and may drop them).
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_SYSTEM = "gen_ai.system"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
ERROR_TYPE = "error.type"

_LLM_KINDS = {"openai": "openai", "scripted": "flujo.scripted"}
"""Agent kinds that stand for an LLM call, with their ``gen_ai.provider.name``.

``openai`` agents speak the OpenAI API whatever serves it (vLLM, Ollama …), so
the provider is the protocol.  Scripted agents stand in for LLMs in tests."""

E = TypeVar("E")


# --- ids and trace context ------------------------------------------------------------

_FORCED_IDS: ContextVar[tuple[int, int] | None] = ContextVar("flujo_forced_ids", default=None)


class FlujoIdGenerator(RandomIdGenerator):
    """Random ids, except for run spans, whose ids derive from the run's id.

    Deterministic run-span ids are what let step pods name their parent
    before the run span exists, and the operator emit the run span after a
    restart with the ids the pods already used.
    """

    def generate_trace_id(self) -> int:
        forced = _FORCED_IDS.get()
        return forced[0] if forced is not None else super().generate_trace_id()

    def generate_span_id(self) -> int:
        forced = _FORCED_IDS.get()
        if forced is not None:
            _FORCED_IDS.set(None)  # only the run span itself
            return forced[1]
        return super().generate_span_id()


def _derive(kind: str, run_id: str, size: int) -> int:
    digest = hashlib.sha256(f"flujo/{kind}/{run_id}".encode()).digest()
    return int.from_bytes(digest[:size], "big") or 1  # all-zero ids are invalid


def run_span_context(run_id: str) -> trace.SpanContext:
    """The run span's context: trace id and span id derived from ``run_id``."""
    return trace.SpanContext(
        trace_id=_derive("trace", run_id, 16),
        span_id=_derive("run-span", run_id, 8),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )


def traceparent_of(context: trace.SpanContext) -> str:
    """The W3C ``traceparent`` header value of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def run_traceparent(run_id: str) -> str:
    """The ``traceparent`` of a run (PipelineRun uid): store it in the status, pass it
    to step pods as ``TRACEPARENT``."""
    return traceparent_of(run_span_context(run_id))


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """An OpenTelemetry context whose current span is the remote parent, or None if invalid."""
    if not traceparent:
        return None
    ctx = TraceContextTextMapPropagator().extract({"traceparent": traceparent.strip()})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


# --- exporter set-up -------------------------------------------------------------------

_missing_warned = False


def _warn(message: str) -> None:
    warnings.warn(message, ObservabilityWarning, stacklevel=3)


class _GuardedExporter(SpanExporter):
    """Delegates to the OTLP exporter; when the collector is unreachable or refuses,
    drops spans instead, warning once.

    The OTLP exporter alone retries with backoff for up to its timeout on
    every batch and logs each attempt; a quick TCP probe first makes an
    absent collector cost a refused connection, not seconds.  After a failure
    exports are skipped for ``retry_seconds``, then tried again silently.
    """

    retry_seconds = 30.0

    def __init__(
        self,
        inner: SpanExporter,
        url: str,
        *,
        probe_timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.url = url
        self.probe_timeout = probe_timeout
        self.clock = clock
        self.failures = 0
        self._down_until: float | None = None
        self._warned = False

    def _address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.hostname or "localhost", port

    def _reachable(self) -> str | None:
        try:
            with socket.create_connection(self._address(), timeout=self.probe_timeout):
                return None
        except OSError as exc:
            return exc.strerror or type(exc).__name__

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._down_until is not None and self.clock() < self._down_until:
            return SpanExportResult.FAILURE
        problem = self._reachable()
        if problem is None:
            try:
                result = self.inner.export(spans)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if result is SpanExportResult.SUCCESS:
                    self._down_until = None
                    return result
                problem = "the collector did not accept the spans"
        self._trip(problem)
        return SpanExportResult.FAILURE

    def _trip(self, problem: str) -> None:
        self.failures += 1
        self._down_until = self.clock() + self.retry_seconds
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"tracing: cannot export spans to {self.url} ({problem}); runs go on "
                "without traces (further export failures are not reported)",
                ObservabilityWarning,
                stacklevel=2,
            )

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _traces_url(env: Mapping[str, str]) -> str:
    specific = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if specific:
        return specific
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT
    return base.rstrip("/") + "/v1/traces"


def configure_tracing(
    *,
    enabled: bool | None = None,
    service_name: str = "flujo",
    env: Mapping[str, str] | None = None,
) -> TracerProvider | None:
    """A tracer provider exporting as the standard variables say, or None when off.

    ``enabled`` None: on only if an OTLP endpoint or ``OTEL_TRACES_EXPORTER``
    is set — tracing nobody collects would only cost.  True: on, with the
    default endpoint ``http://localhost:4318`` if none is set.  False or
    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``: off.
    Supported exporters: ``otlp`` (HTTP/protobuf) and ``console``.
    """
    global _missing_warned
    env = os.environ if env is None else env
    if enabled is False or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip().lower()
    endpoint_set = bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    if exporter_name == "none" or (
        enabled is None and not endpoint_set and "OTEL_TRACES_EXPORTER" not in env
    ):
        return None
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        if protocol != "http/protobuf":
            _warn(
                f"tracing disabled: OTLP protocol {protocol!r} is not supported; use http/protobuf"
            )
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            if not _missing_warned:
                _missing_warned = True
                _warn(
                    "tracing disabled: the OTLP exporter is not installed "
                    "(pip install 'flujo[otlp]' or opentelemetry-exporter-otlp-proto-http)"
                )
            return None
        url = _traces_url(env)
        exporter = _GuardedExporter(OTLPSpanExporter(endpoint=url), url)
    else:
        _warn(f"tracing disabled: OTEL_TRACES_EXPORTER={exporter_name!r} is not supported")
        return None
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes), id_generator=FlujoIdGenerator())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


# --- span building blocks -----------------------------------------------------------------


def _tracer(provider: trace.TracerProvider | None) -> trace.Tracer:
    from flujo.version import __version__

    return (provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME, __version__)


def _step_span_shape(
    cmd: LaunchStep, info: AgentInfo | None
) -> tuple[str, SpanKind, dict[str, Any]]:
    """Name, kind and attributes of a step attempt's span, per the GenAI conventions."""
    info = info or AgentInfo("python")
    attributes: dict[str, Any] = {
        "flujo.step.path": cmd.path,
        "flujo.step.name": cmd.step,
        "flujo.step.attempt": cmd.attempt,
        "flujo.agent.name": cmd.agent,
        "flujo.agent.type": info.type,
    }
    if cmd.delay_seconds:
        attributes["flujo.retry.delay_seconds"] = cmd.delay_seconds
    provider = _LLM_KINDS.get(info.type)
    if provider is not None:
        attributes[GEN_AI_OPERATION_NAME] = "chat"
        attributes[GEN_AI_PROVIDER_NAME] = provider
        attributes[GEN_AI_SYSTEM] = provider
        if info.model:
            attributes[GEN_AI_REQUEST_MODEL] = info.model
        name = f"chat {info.model or cmd.agent}"
    else:
        attributes[GEN_AI_OPERATION_NAME] = "execute_tool"
        attributes[GEN_AI_TOOL_NAME] = cmd.agent
        attributes[GEN_AI_TOOL_TYPE] = "extension" if info.type == "http" else "function"
        name = f"execute_tool {cmd.agent}"
    kind = SpanKind.CLIENT if info.type in ("openai", "http") else SpanKind.INTERNAL
    return name, kind, attributes


def _usage_attributes(span: Span, usage: Usage, llm: bool) -> None:
    if llm or usage.input_tokens:
        span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens)
    if llm or usage.output_tokens:
        span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens)
    if usage.cost_usd:
        span.set_attribute("flujo.usage.cost_usd", usage.cost_usd)


def _finish_step_span(span: Span, event: Event, llm: bool) -> None:
    """Record an attempt's result on its span (the caller ends it)."""
    if isinstance(event, StepSucceeded):
        _usage_attributes(span, event.usage, llm)
        span.set_attribute("flujo.step.outcome", "succeeded")
        span.set_status(Status(StatusCode.OK))
    elif isinstance(event, StepFailed):
        _usage_attributes(span, event.usage, llm)
        span.set_attribute("flujo.step.outcome", "failed")
        span.set_attribute(ERROR_TYPE, event.error_class)
        span.set_status(Status(StatusCode.ERROR, f"{event.error_class}: {event.message}"[:300]))
    elif isinstance(event, StepCancelled):
        _usage_attributes(span, event.usage, llm)
        span.set_attribute("flujo.step.outcome", "cancelled")
        span.add_event("flujo.step.cancelled", {"flujo.cancel.reason": "the executor stopped it"})


def _outcome_attributes(span: Span, outcome: Outcome, usage: Usage, launches: int) -> None:
    span.set_attribute("flujo.run.outcome", outcome.status)
    span.set_attribute("flujo.run.reason", outcome.reason or "Succeeded")
    span.set_attribute("flujo.usage.input_tokens", usage.input_tokens)
    span.set_attribute("flujo.usage.output_tokens", usage.output_tokens)
    span.set_attribute("flujo.usage.cost_usd", usage.cost_usd)
    span.set_attribute("flujo.run.launches", launches)
    if outcome.status == "succeeded":
        span.set_status(Status(StatusCode.OK))
    elif outcome.status == "failed":
        span.set_attribute(ERROR_TYPE, outcome.error_class or outcome.reason or "failed")
        if outcome.path:
            span.set_attribute("flujo.run.failed_path", outcome.path)
        span.set_status(Status(StatusCode.ERROR, (outcome.message or outcome.reason or "")[:300]))


# --- the embedded observer ------------------------------------------------------------------


@dataclass
class _TracedRun:
    span: Span
    context: Context
    steps: dict[str, tuple[int, Span, bool]] = field(default_factory=dict)
    """path → (attempt, span, is LLM) of the attempt in flight."""
    fallbacks: set[str] = field(default_factory=set)


class TracingObserver:
    """Spans for runs seen through :meth:`observe` (a :class:`~flujo.runtime.RunObserver`).

    ``agents`` maps agent names to their kind and model (an
    :class:`~flujo.observability.AgentInfo` or a ``(type, model)`` pair) for
    the GenAI attributes.  ``run_id``, when given, makes the run span's ids
    derive from it (with a provider using :class:`FlujoIdGenerator`), as the
    operator's do; leave it None when one observer serves many runs.
    """

    def __init__(
        self,
        pipeline: str = "unknown",
        agents: Mapping[str, AgentInfo | tuple[str, str | None]] | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        run_id: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.agents = {name: AgentInfo.of(info) for name, info in (agents or {}).items()}
        self.tracer = _tracer(tracer_provider)
        self.run_id = run_id
        self._runs: dict[Hashable, _TracedRun] = {}

    def observe(self, event: Event, state: RunState, commands: Sequence[Command]) -> None:
        key = id(state)
        run = self._runs.get(key)
        if isinstance(event, RunStarted):
            run = self._start(key)
        if run is None:
            return
        if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
            found = run.steps.get(event.path)
            if found is not None and found[0] == event.attempt:
                del run.steps[event.path]
                _finish_step_span(found[1], event, found[2])
                found[1].end()
        elif isinstance(event, DeadlineReached):
            run.span.add_event("flujo.run.deadline_reached")
        elif isinstance(event, RunCancelled):
            run.span.add_event("flujo.run.cancelled", {"flujo.cancel.reason": event.reason})
        for command in commands:
            if isinstance(command, LaunchStep):
                self._launch(run, command, state)
            elif isinstance(command, CancelStep):
                self._cancel(run, command)
            elif isinstance(command, FinishRun):
                self._finish(key, run, command.outcome, state)

    def _start(self, key: Hashable) -> _TracedRun:
        attributes = {
            GEN_AI_OPERATION_NAME: "invoke_workflow",
            GEN_AI_WORKFLOW_NAME: self.pipeline,
            "flujo.pipeline.name": self.pipeline,
        }
        token = None
        if self.run_id is not None:
            attributes["flujo.run.id"] = self.run_id
            ids = run_span_context(self.run_id)
            token = _FORCED_IDS.set((ids.trace_id, ids.span_id))
        try:
            span = self.tracer.start_span(
                f"invoke_workflow {self.pipeline}", context=Context(), attributes=attributes
            )
        finally:
            if token is not None:
                _FORCED_IDS.reset(token)
        run = _TracedRun(span, trace.set_span_in_context(span))
        self._runs[key] = run
        return run

    def _launch(self, run: _TracedRun, cmd: LaunchStep, state: RunState) -> None:
        info = self.agents.get(cmd.agent)
        name, kind, attributes = _step_span_shape(cmd, info)
        attributes["flujo.pipeline.name"] = self.pipeline
        previous = run.steps.pop(cmd.path, None)
        if previous is not None:  # not expected: an attempt superseded without a result
            previous[1].end()
        span = self.tracer.start_span(name, context=run.context, kind=kind, attributes=attributes)
        step = state.steps.get(cmd.path)
        details: dict[str, AttributeValue] = {
            "flujo.step.path": cmd.path,
            "flujo.step.attempt": cmd.attempt,
        }
        if step is not None and step.fallback_used and cmd.path not in run.fallbacks:
            run.fallbacks.add(cmd.path)
            details["flujo.fallback.agent"] = cmd.agent
            span.set_attribute("flujo.step.fallback", True)
            span.add_event("flujo.step.fallback", details)
            run.span.add_event("flujo.step.fallback", details)
        elif cmd.attempt > 1:
            details["flujo.retry.delay_seconds"] = cmd.delay_seconds
            if step is not None and step.error_class:
                details["flujo.retry.after_error"] = step.error_class
            span.add_event("flujo.step.retry", details)
            run.span.add_event("flujo.step.retry", details)
        run.steps[cmd.path] = (cmd.attempt, span, info is not None and info.type in _LLM_KINDS)

    def _cancel(self, run: _TracedRun, cmd: CancelStep) -> None:
        found = run.steps.pop(cmd.path, None)
        details: dict[str, AttributeValue] = {
            "flujo.step.path": cmd.path,
            "flujo.cancel.reason": cmd.reason,
        }
        run.span.add_event("flujo.step.cancelled", details)
        if found is not None:
            found[1].set_attribute("flujo.step.outcome", "cancelled")
            found[1].add_event("flujo.step.cancelled", details)
            found[1].end()

    def _finish(self, key: Hashable, run: _TracedRun, outcome: Outcome, state: RunState) -> None:
        for _, span, _ in run.steps.values():
            span.end()
        if state.breach is not None:
            run.span.add_event(
                "flujo.governor.breach",
                {
                    "flujo.limit": state.breach.limit,
                    "flujo.limit.value": state.breach.limit_value,
                    "flujo.limit.reached": state.breach.value,
                    "flujo.step.path": state.breach.path,
                },
            )
        _outcome_attributes(run.span, outcome, state.usage, state.launches)
        run.span.end()
        del self._runs[key]


# --- the operator's run span and the step pod's span ---------------------------------------


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000_000)


def record_run_span(
    run_id: str,
    pipeline: str,
    *,
    started_at: datetime,
    finished_at: datetime,
    outcome: Outcome,
    usage: Usage,
    launches: int = 0,
    tracer_provider: TracerProvider | None = None,
) -> None:
    """Emit a finished run's span with the ids its step pods used as parent.

    For the operator, once the run is over: the span is created and ended
    in one go, with the run's recorded start and end times, so an operator
    restart mid-run loses nothing.  Needs a provider using
    :class:`FlujoIdGenerator` (as :func:`configure_tracing` makes) for the ids.
    """
    ids = run_span_context(run_id)
    token = _FORCED_IDS.set((ids.trace_id, ids.span_id))
    try:
        span = _tracer(tracer_provider).start_span(
            f"invoke_workflow {pipeline}",
            context=Context(),
            start_time=_ns(started_at),
            attributes={
                GEN_AI_OPERATION_NAME: "invoke_workflow",
                GEN_AI_WORKFLOW_NAME: pipeline,
                "flujo.pipeline.name": pipeline,
                "flujo.run.id": run_id,
            },
        )
    finally:
        _FORCED_IDS.reset(token)
    _outcome_attributes(span, outcome, usage, launches)
    span.end(end_time=_ns(finished_at))


def _agent_info(agent: Any) -> AgentInfo:
    """The kind and model of the agent a launch document carries (None: a built-in preset)."""
    if not isinstance(agent, Mapping):
        return AgentInfo("builtin")
    info = AgentInfo.of(agent)
    if info.model and "${" in info.model:
        from flujo.agents.remote import expand_env
        from flujo.domain.errors import AgentError

        try:
            return AgentInfo(info.type, expand_env("agent", "model", info.model))
        except AgentError:
            return info
    return info


def traced_step_run(
    text: str,
    run: Callable[[str], E],
    *,
    env: Mapping[str, str] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> E:
    """Run a step pod's launch document inside a step span parented by ``TRACEPARENT``.

    For ``flujo step-run``: ``event = traced_step_run(text, run_document)``.
    Without tracing configured this is just ``run(text)``.  The provider it
    configures itself is shut down (flushed) before returning, since the pod
    exits right after.
    """
    env = os.environ if env is None else env
    provider = tracer_provider
    owned = False
    if provider is None:
        provider = configure_tracing(env=env, service_name="flujo-step")
        owned = provider is not None
    if provider is None:
        return run(text)
    try:
        document = json.loads(text)
        cmd = LaunchStep.model_validate(document["launch"])
        info = _agent_info(document.get("agent"))
    except Exception:  # not a launch document: the runner reports it
        if owned:
            provider.shutdown()
        return run(text)
    name, kind, attributes = _step_span_shape(cmd, info)
    attributes["flujo.run.name"] = str(document.get("run", ""))
    parent = context_from_traceparent(env.get(TRACEPARENT_ENV)) or Context()
    span = _tracer(provider).start_span(name, context=parent, kind=kind, attributes=attributes)
    if cmd.attempt > 1:
        span.add_event(
            "flujo.step.retry",
            {"flujo.step.attempt": cmd.attempt, "flujo.retry.delay_seconds": cmd.delay_seconds},
        )
    try:
        event = run(text)
        if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
            _finish_step_span(span, event, info.type in _LLM_KINDS)
        return event
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()
        if owned:
            provider.shutdown()
