"""A tool loop's calls in metrics and OpenTelemetry spans (GenAI ``execute_tool`` spans)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flujo import Flujo
from flujo.observability import agent_infos
from flujo.observability.metrics import FlujoMetrics, MetricsObserver
from flujo.observability.tracing import FlujoIdGenerator, TracingObserver
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.servers import OpenAIServer, completion, tool_call
from tests.servers.mcp_server import McpTestServer
from tests.test_tool_loop import ASK, Model, registry_for
from tests.test_tool_loop import weather as weather_hook


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as server:
        yield server


def value(metrics: FlujoMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_tool_calls_are_counted_and_traced_as_execute_tool_spans(
    openai_server: OpenAIServer, mcp_server: McpTestServer
) -> None:
    Model(
        openai_server,
        completion(
            None,
            tool_calls=[
                tool_call("weather", {"city": "Oslo"}, "w"),
                tool_call("add", {"a": 1, "b": 1}, "a"),
                tool_call("explode", {"reason": "x"}, "e"),
            ],
        ),
        completion("ok", usage=False),
        hook=weather_hook,
    )
    registry = registry_for(openai_server, mcp_server, ["weather", "calc"])
    metrics = FlujoMetrics()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=FlujoIdGenerator())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    infos = agent_infos(registry)
    observers = [
        MetricsObserver(metrics, "ask", agents=infos),
        TracingObserver("ask", infos, tracer_provider=provider),
    ]
    result = Flujo(ASK, agent_registry=registry, observers=observers).run("?")
    assert result.success and result.output == "ok"

    calls = "flujo_tool_calls_total"
    assert value(metrics, calls, pipeline="ask", agent="weather", outcome="succeeded") == 1
    assert value(metrics, calls, pipeline="ask", agent="calc", outcome="succeeded") == 1
    assert value(metrics, calls, pipeline="ask", agent="calc", outcome="failed") == 1
    assert value(metrics, "flujo_tool_call_duration_seconds_count", agent="calc") == 2
    estimated = value(
        metrics, "flujo_estimated_tokens_total", pipeline="ask", agent="assistant", model="m"
    )
    assert result.usage.estimated and estimated > 0

    spans = exporter.get_finished_spans()
    (step,) = [s for s in spans if s.name == "chat m"]
    tools = sorted((s for s in spans if s.name.startswith("execute_tool")), key=lambda s: s.name)
    assert [s.name for s in tools] == [
        "execute_tool add",
        "execute_tool explode",
        "execute_tool weather",
    ]
    for span in tools:
        assert span.parent is not None and step.context is not None
        assert span.parent.span_id == step.context.span_id
        assert span.attributes is not None
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert span.attributes["flujo.step.path"] == "ask"
    add, explode, weather = tools
    assert add.attributes is not None and add.attributes["gen_ai.tool.name"] == "add"
    assert add.attributes["flujo.agent.name"] == "calc"
    assert add.attributes["gen_ai.tool.type"] == "extension"
    assert explode.status.is_ok is False
    assert explode.attributes is not None and explode.attributes["error.type"] == "permanent"
    assert weather.status.is_ok and weather.attributes is not None
    assert weather.attributes["flujo.agent.type"] == "http"
    provider.shutdown()
