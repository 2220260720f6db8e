"""Span shapes after the OpenTelemetry GenAI semantic conventions.

A step attempt is ``chat {model}`` for LLM agents and ``execute_tool {agent}``
for HTTP tools, built-ins and in-code callables; the run's outcome and totals
go on the run span as ``flujo.*`` attributes (not ``gen_ai.usage.*``, which
backends sum over spans).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from flujo.domain.usage import Usage
from flujo.engine import Event, LaunchStep, Outcome, StepCancelled, StepFailed, StepSucceeded
from flujo.observability.info import AgentInfo

__all__ = [
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
    "LLM_KINDS",
    "TRACER_NAME",
    "finish_step_span",
    "flujo_tracer",
    "outcome_attributes",
    "step_span_shape",
    "tool_span_attributes",
]

TRACER_NAME = "flujo"


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

LLM_KINDS = {"openai": "openai", "scripted": "flujo.scripted"}
"""Agent kinds that stand for an LLM call, with their ``gen_ai.provider.name``.

``openai`` agents speak the OpenAI API whatever serves it (vLLM, Ollama …), so
the provider is the protocol.  Scripted agents stand in for LLMs in tests."""


def flujo_tracer(provider: trace.TracerProvider | None) -> trace.Tracer:
    from flujo.version import __version__

    return (provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME, __version__)


def step_span_shape(
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
    provider = LLM_KINDS.get(info.type)
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


def tool_span_attributes(
    path: str, tool: str, agent: str, info: AgentInfo | None
) -> dict[str, Any]:
    """Attributes of one tool call of a model step's tool loop (``execute_tool {tool}``)."""
    kind = info.type if info is not None else "python"
    return {
        GEN_AI_OPERATION_NAME: "execute_tool",
        GEN_AI_TOOL_NAME: tool,
        GEN_AI_TOOL_TYPE: "extension" if kind in ("http", "mcp") else "function",
        "flujo.step.path": path,
        "flujo.agent.name": agent,
        "flujo.agent.type": kind,
    }


def _usage_attributes(span: Span, usage: Usage, llm: bool) -> None:
    if llm or usage.input_tokens:
        span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens)
    if llm or usage.output_tokens:
        span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens)
    if usage.cost_usd:
        span.set_attribute("flujo.usage.cost_usd", usage.cost_usd)


def finish_step_span(span: Span, event: Event, llm: bool) -> None:
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


def outcome_attributes(span: Span, outcome: Outcome, usage: Usage, launches: int) -> None:
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
