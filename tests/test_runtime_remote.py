"""Remote agents inside real runs: pooling, breakers with fallbacks, no leaked connections."""

from __future__ import annotations

from typing import Any

from flujo import AgentManifest, AgentRegistry, Flujo, Pipeline, Step
from flujo.resilience import BreakerRegistry

from tests.servers import OpenAIServer, completion, error


def llm_registry(server: OpenAIServer, **kwargs: Any) -> AgentRegistry:
    registry = AgentRegistry(**kwargs)
    registry.register_manifest(
        AgentManifest.model_validate(
            {
                "apiVersion": "flujo.dev/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": "llm"},
                "spec": {
                    "type": "openai",
                    "model": "m",
                    "endpoint": server.base_url,
                    "pricing": {"inputPer1k": 1.0, "outputPer1k": 2.0},
                },
            }
        )
    )
    return registry


def test_a_run_reuses_connections_and_closes_them_at_the_end(openai_server: OpenAIServer) -> None:
    openai_server.script(*[completion(f"answer {i}") for i in range(5)])
    p = Pipeline([Step(f"s{i}", "llm") for i in range(5)])
    result = Flujo(p, agent_registry=llm_registry(openai_server)).run("q")
    assert result.output == "answer 4"
    assert result.usage.cost_usd == 5 * (10 * 1.0 + 5 * 2.0) / 1000
    assert openai_server.connections_opened == 1
    assert openai_server.wait_until(lambda: openai_server.open_connections == 0)


def test_open_circuit_sends_steps_to_the_fallback_without_calling(
    openai_server: OpenAIServer,
) -> None:
    openai_server.script(error(500, "down"), error(500, "down"))
    registry = llm_registry(openai_server, breakers=BreakerRegistry(fail_max=2, reset_timeout=60))
    p = Pipeline([Step("ask", "llm", fallback="builtin.upper")])
    first = Flujo(p, agent_registry=registry).run("q")
    second = Flujo(p, agent_registry=registry).run("q")
    # each 500 is retried by nobody (no retry policy) and answered by the fallback
    assert first.output == "Q" and second.output == "Q"
    assert [e.error_class for e in first.events if hasattr(e, "error_class")] == ["transient"]
    assert openai_server.calls == 2  # two failures opened the circuit
    third = Flujo(p, agent_registry=registry).run("q")
    assert third.output == "Q" and openai_server.calls == 2
    assert third.steps["ask"].fallback_used and third.steps["ask"].agent == "builtin.upper"
    failures = [e for e in third.events if getattr(e, "error_class", None) == "circuit_open"]
    assert len(failures) == 1
