"""Traces: one trace per run, a span per step attempt with GenAI attributes, propagation
into step pods through ``traceparent``, and graceful degradation without a collector."""

from __future__ import annotations

import json
import logging
import socket
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flujo import AgentError, AgentOutput, Flujo, Pipeline, Step, Usage
from flujo.domain import errors
from flujo.engine import LaunchStep, Outcome, StepFailed, StepSucceeded
from flujo.observability import ObservabilityWarning, agent_infos
from flujo.observability import tracing as tracing_module
from flujo.observability.tracing import (
    FlujoIdGenerator,
    TracingObserver,
    configure_tracing,
    context_from_traceparent,
    record_run_span,
    run_span_context,
    run_traceparent,
    traced_step_run,
    traceparent_of,
)
from flujo.runtime.step_runner import run_document
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.test_observability import SCRIPTED, load, load_example


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=FlujoIdGenerator())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def by_trace(finished: tuple[ReadableSpan, ...]) -> dict[int, list[ReadableSpan]]:
    traces: dict[int, list[ReadableSpan]] = {}
    for span in finished:
        assert span.context is not None
        traces.setdefault(span.context.trace_id, []).append(span)
    return traces


def root_of(group: list[ReadableSpan]) -> ReadableSpan:
    roots = [s for s in group if s.parent is None]
    assert len(roots) == 1
    return roots[0]


def test_each_run_is_one_trace_with_a_child_span_per_step(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    manifest, registry = load(SCRIPTED)
    observer = TracingObserver("review", agent_infos(registry), tracer_provider=provider)
    flujo = Flujo(manifest, agent_registry=registry, observers=[observer])
    assert flujo.run("a").success and flujo.run("b").success
    traces = by_trace(exporter.get_finished_spans())
    assert len(traces) == 2
    for group in traces.values():
        run = root_of(group)
        assert run.name == "invoke_workflow review"
        assert run.attributes is not None and run.context is not None
        assert run.attributes["gen_ai.operation.name"] == "invoke_workflow"
        assert run.attributes["flujo.run.outcome"] == "succeeded"
        assert run.attributes["flujo.usage.input_tokens"] == 110
        assert "gen_ai.usage.input_tokens" not in run.attributes  # no double counting
        steps = sorted((s for s in group if s is not run), key=lambda s: s.start_time or 0)
        assert [s.name for s in steps] == ["chat gpt-test", "chat critic-model"]
        for step in steps:
            assert step.parent is not None and step.parent.span_id == run.context.span_id
        writer = steps[0].attributes
        assert writer is not None
        assert writer["gen_ai.operation.name"] == "chat"
        assert writer["gen_ai.request.model"] == "gpt-test"
        assert writer["gen_ai.provider.name"] == writer["gen_ai.system"] == "flujo.scripted"
        assert writer["gen_ai.usage.input_tokens"] == 100
        assert writer["gen_ai.usage.output_tokens"] == 50
        assert writer["flujo.usage.cost_usd"] == 0.01
        assert writer["flujo.step.path"] == "write"


def test_tools_are_execute_tool_spans(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    manifest, registry = load_example("linear.yaml")
    observer = TracingObserver("linear", agent_infos(registry), tracer_provider=provider)
    assert Flujo(manifest, agent_registry=registry, observers=[observer]).run("hi").success
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == [
        "execute_tool builtin.strip",
        "execute_tool builtin.upper",
        "execute_tool headline",
        "invoke_workflow linear",
    ]
    tool = next(s for s in exporter.get_finished_spans() if s.name.endswith("headline"))
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.name"] == "headline"
    assert "gen_ai.request.model" not in tool.attributes


def test_retries_fallbacks_and_failures_are_span_events(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    calls = {"n": 0}

    def flaky(data: Any) -> AgentOutput:
        calls["n"] += 1
        if calls["n"] == 1:
            raise AgentError(errors.RATE_LIMITED, "slow down")
        return AgentOutput("ok", Usage(input_tokens=1))

    def broken(data: Any) -> str:
        raise AgentError(errors.PERMANENT, "bad request")

    def backup(data: Any) -> str:
        return "backup"

    pipeline = Pipeline(
        [
            Step("a", flaky, retry={"maxAttempts": 2, "backoffSeconds": 0}),
            Step("b", broken, fallback=backup),
        ]
    )
    observer = TracingObserver(
        "p", {"flaky": ("openai", "gpt-x")}, tracer_provider=provider, run_id="run-uid-1"
    )
    assert Flujo(pipeline, observers=[observer]).run("x").success
    finished = exporter.get_finished_spans()
    run = next(s for s in finished if s.parent is None)
    assert run.context is not None
    # run_id given: the run span has the ids derived from it, as the operator's does.
    assert run.context.trace_id == run_span_context("run-uid-1").trace_id
    assert run.context.span_id == run_span_context("run-uid-1").span_id
    assert [e.name for e in run.events] == ["flujo.step.retry", "flujo.step.fallback"]
    attempts = [s for s in finished if s.attributes and s.attributes.get("flujo.step.path") == "a"]
    assert [s.attributes["flujo.step.attempt"] for s in attempts if s.attributes] == [1, 2]
    first, second = attempts
    assert first.status.status_code == trace.StatusCode.ERROR
    assert first.attributes is not None and first.attributes["error.type"] == "rate_limited"
    assert first.kind == trace.SpanKind.CLIENT
    assert [e.name for e in second.events] == ["flujo.step.retry"]
    assert second.events[0].attributes is not None
    assert second.events[0].attributes["flujo.retry.after_error"] == "rate_limited"
    fallback = next(s for s in finished if s.name == "execute_tool backup")
    assert fallback.attributes is not None and fallback.attributes["flujo.step.fallback"] is True


def test_cancellation_and_governor_breach_are_recorded(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    manifest, registry = load(SCRIPTED)
    observer = TracingObserver("review", agent_infos(registry), tracer_provider=provider)
    result = Flujo(
        manifest, agent_registry=registry, observers=[observer], usage_limits={"maxTokens": 120}
    ).run("x")
    assert result.outcome.reason == "UsageLimitExceeded"
    run = next(s for s in exporter.get_finished_spans() if s.parent is None)
    assert run.status.status_code == trace.StatusCode.ERROR
    breach = next(e for e in run.events if e.name == "flujo.governor.breach")
    assert breach.attributes is not None and breach.attributes["flujo.limit"] == "tokens"
    assert run.attributes is not None and run.attributes["error.type"] == "usage_limit"


# --- propagation ----------------------------------------------------------------------------


def test_traceparent_round_trip() -> None:
    header = run_traceparent("5f0c-uid")
    assert header == run_traceparent("5f0c-uid")  # stable across operator restarts
    assert header != run_traceparent("other-uid")
    version, trace_id, span_id, flags = header.split("-")
    assert (version, flags, len(trace_id), len(span_id)) == ("00", "01", 32, 16)
    ctx = context_from_traceparent(header)
    assert ctx is not None
    parent = trace.get_current_span(ctx).get_span_context()
    assert parent.is_remote and traceparent_of(parent) == header
    assert context_from_traceparent("garbage") is None
    assert context_from_traceparent(None) is None


def launch_document(agent: dict[str, Any] | None, attempt: int = 1) -> str:
    cmd = LaunchStep(path="loop/iter-2/write", step="write", agent="writer", attempt=attempt)
    return json.dumps({"run": "demo", "launch": cmd.model_dump(mode="json"), "agent": agent})


def test_a_step_pod_span_joins_the_run_trace_and_the_run_span_closes_it(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    uid = "7d1e2f-run-uid"
    agent = {
        "type": "scripted",
        "model": "gpt-pod",
        "responses": [{"output": "done", "usage": {"inputTokens": 12, "outputTokens": 4}}],
    }
    env = {"TRACEPARENT": run_traceparent(uid)}
    event = traced_step_run(
        launch_document(agent, attempt=2), run_document, env=env, tracer_provider=provider
    )
    assert isinstance(event, StepSucceeded)
    started = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    record_run_span(
        uid,
        "refine",
        started_at=started,
        finished_at=started + timedelta(seconds=42),
        outcome=Outcome(status="succeeded"),
        usage=Usage(input_tokens=12, output_tokens=4),
        launches=2,
        tracer_provider=provider,
    )
    step, run = exporter.get_finished_spans()
    assert step.context is not None and run.context is not None and step.parent is not None
    assert step.context.trace_id == run.context.trace_id  # one trace across pods
    assert step.parent.span_id == run.context.span_id
    assert run.parent is None
    assert (run.end_time or 0) - (run.start_time or 0) == 42 * 10**9
    assert step.attributes is not None
    assert step.name == "chat gpt-pod"
    assert step.attributes["gen_ai.usage.input_tokens"] == 12
    assert step.attributes["flujo.step.attempt"] == 2
    assert [e.name for e in step.events] == ["flujo.step.retry"]


def test_a_failing_step_pod_span_has_the_error_class(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    agent = {"type": "scripted", "responses": [{"error": {"class": "auth", "message": "no key"}}]}
    event = traced_step_run(launch_document(agent), run_document, env={}, tracer_provider=provider)
    assert isinstance(event, StepFailed)
    (span,) = exporter.get_finished_spans()
    assert span.parent is None  # no TRACEPARENT: a trace of its own
    assert span.status.status_code == trace.StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "auth"


def test_without_tracing_configured_the_step_runs_untraced() -> None:
    agent = {"type": "scripted", "responses": [{"output": "x"}]}
    event = traced_step_run(launch_document(agent), run_document, env={})
    assert isinstance(event, StepSucceeded)


# --- configuration and degradation -------------------------------------------------------------


def test_configure_tracing_follows_the_standard_variables() -> None:
    assert configure_tracing(env={}) is None  # nothing asked for
    assert configure_tracing(env={"OTEL_SDK_DISABLED": "true"}, enabled=True) is None
    assert configure_tracing(env={"OTEL_TRACES_EXPORTER": "none"}, enabled=True) is None
    provider = configure_tracing(env={"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(provider, TracerProvider)
    assert isinstance(provider.id_generator, FlujoIdGenerator)
    provider.shutdown()
    with pytest.warns(ObservabilityWarning, match="grpc"):
        assert (
            configure_tracing(
                env={
                    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                }
            )
            is None
        )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


def test_an_unreachable_collector_costs_one_warning_and_no_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    manifest, registry = load(SCRIPTED)
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        provider = configure_tracing()
        assert provider is not None
        observer = TracingObserver("review", agent_infos(registry), tracer_provider=provider)
        flujo = Flujo(manifest, agent_registry=registry, observers=[observer])
        for _ in range(3):
            assert flujo.run("x").success
            provider.force_flush()  # three export attempts
        provider.shutdown()
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert issubclass(caught[0].category, ObservabilityWarning)
    assert "cannot export spans" in str(caught[0].message)
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == []


def test_a_missing_exporter_package_costs_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    monkeypatch.setattr(tracing_module, "_missing_warned", False)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert configure_tracing(env=env) is None
        assert configure_tracing(env=env) is None
    assert len(caught) == 1 and "not installed" in str(caught[0].message)


def test_the_exporter_recovers_silently_when_the_collector_comes_back() -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    class Inner(InMemorySpanExporter):
        pass

    now = [0.0]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    inner = Inner()
    guarded = tracing_module._GuardedExporter(
        inner, f"http://127.0.0.1:{port}/v1/traces", clock=lambda: now[0]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert guarded.export([]) is SpanExportResult.FAILURE  # not listening yet
        listener.listen()
        assert guarded.export([]) is SpanExportResult.FAILURE  # still backing off
        now[0] += guarded.retry_seconds + 1
        assert guarded.export([]) is SpanExportResult.SUCCESS
    listener.close()
    assert len(caught) == 1 and guarded.failures == 1
