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
no-op with one :class:`~flujo.observability.ObservabilityWarnin

Where each part lives: :mod:`~flujo.observability.tracing.propagation` (run-derived
ids, ``traceparent``), :mod:`~flujo.observability.tracing.genai` (span names and
attributes), :mod:`~flujo.observability.tracing.observer` (run and step spans),
:mod:`~flujo.observability.tracing.export` (the guarded exporter); this module
switches tracing on from the environment (:func:`configure_tracing`) and traces a
step pod (:func:`traced_step_run`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Status, StatusCode

from flujo.engine import LaunchStep, StepCancelled, StepFailed, StepSucceeded
from flujo.observability.info import AgentInfo, ObservabilityWarning
from flujo.observability.tracing.export import GuardedExporter
from flujo.observability.tracing.genai import (
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_SYSTEM,
    GEN_AI_TOOL_NAME,
    GEN_AI_TOOL_TYPE,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_WORKFLOW_NAME,
    LLM_KINDS,
    TRACER_NAME,
    finish_step_span,
    flujo_tracer,
    step_span_shape,
)
from flujo.observability.tracing.observer import TracingObserver, record_run_span
from flujo.observability.tracing.propagation import (
    TRACEPARENT_ENV,
    FlujoIdGenerator,
    context_from_traceparent,
    run_span_context,
    run_traceparent,
    traceparent_of,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "ERROR_TYPE",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_SYSTEM",
    "GEN_AI_TOOL_NAME",
    "GEN_AI_TOOL_TYPE",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "GEN_AI_WORKFLOW_NAME",
    "TRACEPARENT_ENV",
    "TRACER_NAME",
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

DEFAULT_ENDPOINT = "http://localhost:4318"

_GuardedExporter = GuardedExporter
"""The exporter's name from before the split (tests reach for it)."""

E = TypeVar("E")

# --- exporter set-up -------------------------------------------------------------------

_missing_warned = False


def _warn(message: str) -> None:
    warnings.warn(message, ObservabilityWarning, stacklevel=3)


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
        exporter = GuardedExporter(OTLPSpanExporter(endpoint=url), url)
    else:
        _warn(f"tracing disabled: OTEL_TRACES_EXPORTER={exporter_name!r} is not supported")
        return None
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes), id_generator=FlujoIdGenerator())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


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
    name, kind, attributes = step_span_shape(cmd, info)
    attributes["flujo.run.name"] = str(document.get("run", ""))
    parent = context_from_traceparent(env.get(TRACEPARENT_ENV)) or Context()
    span = flujo_tracer(provider).start_span(name, context=parent, kind=kind, attributes=attributes)
    if cmd.attempt > 1:
        span.add_event(
            "flujo.step.retry",
            {"flujo.step.attempt": cmd.attempt, "flujo.retry.delay_seconds": cmd.delay_seconds},
        )
    try:
        event = run(text)
        if isinstance(event, StepSucceeded | StepFailed | StepCancelled):
            finish_step_span(span, event, info.type in LLM_KINDS)
        return event
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()
        if owned:
            provider.shutdown()
