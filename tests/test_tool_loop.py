"""Model steps that call tools: http and MCP tools, in parallel, failing, bounded, governed.

Every test runs a real pipeline against real protocol servers on 127.0.0.1:
the OpenAI-compatible test server plays the model (its replies scripted by
round) and the webhook tool; a real ``mcp`` SDK server serves MCP tools.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flujo import AgentManifest, AgentRegistry, Flujo, Pipeline, Step
from flujo.domain.usage import Usage
from flujo.runtime.runner import PipelineValidationError
from flujo.security.policy import SecurityPolicy
from flujo.spec.loader import load_documents
from flujo.transcript.render import transcript_of

from tests.servers import (
    CHAT_PATH,
    HOOK_PATH,
    OpenAIServer,
    RecordedRequest,
    Reply,
    completion,
    tool_call,
)
from tests.servers import error as error_reply
from tests.servers.mcp_server import McpTestServer

PRICING = {"inputPer1k": 1.0, "outputPer1k": 1.0}
ROUND = Usage(input_tokens=10, output_tokens=5, cost_usd=0.015)
"""What each scripted model answer costs: 10 + 5 tokens at $1 per 1k."""
ASK = Pipeline([Step("ask", "assistant")])


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as server:
        yield server


class Model:
    """Scripted model rounds (chat requests, in order) and a webhook tool, by route."""

    def __init__(self, server: OpenAIServer, *rounds: Reply, hook: Callable[[Any], Reply]) -> None:
        self.rounds = list(rounds)
        self.hook = hook
        server.responder = self.answer

    def answer(self, record: RecordedRequest) -> Reply:
        if record.path == HOOK_PATH:
            return self.hook(record.body["input"])
        assert record.path == CHAT_PATH
        return self.rounds.pop(0) if self.rounds else error_reply(500, "no more rounds scripted")


def weather(data: Any) -> Reply:
    return Reply(json={"output": f"sunny in {data['city']}"})


def manifest(name: str, spec: dict[str, Any]) -> AgentManifest:
    return AgentManifest.model_validate({"metadata": {"name": name}, "spec": spec})


def registry_for(
    server: OpenAIServer, mcp: McpTestServer | None, tools: list[str], **model: Any
) -> AgentRegistry:
    registry = AgentRegistry()
    spec = {"type": "openai", "model": "m", "endpoint": server.base_url, "pricing": PRICING}
    registry.register_manifest(manifest("assistant", {**spec, "tools": tools, **model}))
    registry.register_manifest(
        manifest(
            "weather",
            {
                "type": "http",
                "endpoint": server.hook_url,
                "description": "The weather in a city.",
                "inputSchema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        )
    )
    if mcp is not None:
        registry.register_manifest(
            manifest("calc", {"type": "mcp", "endpoint": mcp.url, "denyTools": ["secret"]})
        )
    return registry


def chat_requests(server: OpenAIServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path == CHAT_PATH]


def tool_messages(request: dict[str, Any]) -> dict[str, str]:
    return {m["tool_call_id"]: m["content"] for m in request["messages"] if m["role"] == "tool"}


def test_a_model_step_calls_an_http_tool_and_an_mcp_tool(
    openai_server: OpenAIServer, mcp_server: McpTestServer
) -> None:
    Model(
        openai_server,
        completion(
            None,
            tool_calls=[
                tool_call("weather", {"city": "Oslo"}, "c1"),
                tool_call("add", {"a": 2, "b": 3}, "c2"),
            ],
        ),
        completion("Oslo is sunny and 2 + 3 = 5"),
        hook=weather,
    )
    registry = registry_for(openai_server, mcp_server, ["weather", "calc"])
    result = Flujo(Pipeline([Step("ask", "assistant")]), agent_registry=registry).run(
        "weather in Oslo, and 2 + 3?"
    )
    assert result.success, result.outcome.message
    assert result.output == "Oslo is sunny and 2 + 3 = 5"
    first, second = chat_requests(openai_server)
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert sorted(offered) == ["add", "explode", "shout", "weather"]  # secret is denied
    assert offered["weather"]["description"] == "The weather in a city."
    assert offered["weather"]["parameters"]["required"] == ["city"]
    assert offered["add"]["parameters"]["required"] == ["a", "b"]  # the server's own schema
    assert second["messages"][-3]["tool_calls"][0]["function"]["name"] == "weather"
    assert tool_messages(second) == {"c1": "sunny in Oslo", "c2": '{"result": 5}'}
    assert ("add", {"a": 2, "b": 3}) in mcp_server.calls
    hooks = [r for r in openai_server.requests if r.path == HOOK_PATH]
    assert hooks[0].body == {"input": {"city": "Oslo"}}
    assert hooks[0].headers["x-flujo-step"] == "ask"
    assert result.usage == ROUND + ROUND  # both model calls; the tools reported none


def test_parallel_tool_calls_run_at_the_same_time(openai_server: OpenAIServer) -> None:
    """Each tool waits for the other to start: called one after the other, both would time out."""
    started = {"left": asyncio.Event(), "right": asyncio.Event()}

    def meeting(me: str, other: str) -> Callable[[dict[str, Any]], Any]:
        async def tool(data: dict[str, Any]) -> str:
            started[me].set()
            await asyncio.wait_for(started[other].wait(), 20)
            return f"{me} met {other}"

        tool.__name__ = me
        return tool

    Model(
        openai_server,
        completion(None, tool_calls=[tool_call("left", {}, "l"), tool_call("right", {}, "r")]),
        completion("they met"),
        hook=weather,
    )
    registry = registry_for(openai_server, None, ["left", "right"])
    registry.register("left", meeting("left", "right"))
    registry.register("right", meeting("right", "left"))
    result = Flujo(Pipeline([Step("ask", "assistant")]), agent_registry=registry).run("meet")
    assert result.output == "they met"
    assert tool_messages(chat_requests(openai_server)[1]) == {
        "l": "left met right",
        "r": "right met left",
    }


def test_a_failing_tool_goes_back_to_the_model_as_its_result(
    openai_server: OpenAIServer, mcp_server: McpTestServer
) -> None:
    Model(
        openai_server,
        completion(
            None,
            tool_calls=[
                tool_call("weather", {"city": "Nowhere"}, "w"),
                tool_call("explode", {"reason": "testing"}, "e"),
                tool_call("weather", {"town": "Oslo"}, "bad"),
                tool_call("nosuchtool", {}, "none"),
            ],
        ),
        completion("the tools failed, sorry"),
        hook=lambda data: error_reply(503, "weather service down"),
    )
    registry = registry_for(openai_server, mcp_server, ["weather", "calc"])
    result = Flujo(Pipeline([Step("ask", "assistant")]), agent_registry=registry).run("?")
    assert result.success and result.output == "the tools failed, sorry"
    results = tool_messages(chat_requests(openai_server)[1])
    assert results["w"].startswith("error (transient): http agent 'weather': HTTP 503")
    assert "weather service down" in results["w"]
    assert results["e"].startswith("error (permanent): mcp agent 'calc': tool 'explode' failed")
    assert "boom: testing" in results["e"]
    assert results["bad"].startswith("error (schema): the arguments do not match the schema")
    assert "'city' is a required property" in results["bad"]
    assert results["none"].startswith("error (config): no tool named 'nosuchtool'")
    assert all("\n" not in text for text in results.values())


def test_max_tool_rounds_reached_fails_the_step_naming_it(openai_server: OpenAIServer) -> None:
    asks = [completion(None, tool_calls=[tool_call("weather", {"city": "Oslo"})])] * 3
    Model(openai_server, *asks, hook=weather)
    registry = registry_for(openai_server, None, ["weather"], maxToolRounds=2)
    result = Flujo(Pipeline([Step("ask", "assistant")]), agent_registry=registry).run("?")
    assert result.status == "failed"
    assert result.outcome.error_class == "loop_exhausted"
    message = result.outcome.message or ""
    assert "maxToolRounds=2" in message and "step 'ask' round 2 of 2" in message
    assert len(chat_requests(openai_server)) == 2
    assert sum(1 for r in openai_server.requests if r.path == HOOK_PATH) == 1
    assert result.usage == ROUND + ROUND  # the failed step's spend is counted


def test_a_cost_limit_crossed_mid_loop_stops_between_rounds_keeping_partial_results(
    openai_server: OpenAIServer,
) -> None:
    asks = [
        completion(None, tool_calls=[tool_call("weather", {"city": c}, c)])
        for c in ("Oslo", "Rome", "Lima")
    ]
    Model(openai_server, *asks, completion("done"), hook=weather)
    registry = registry_for(openai_server, None, ["weather"])
    flujo = Flujo(
        Pipeline([Step("ask", "assistant")]),
        agent_registry=registry,
        usage_limits={"maxCostUsd": 0.02},
    )
    result = flujo.run("?")
    assert result.status == "failed"
    assert result.outcome.reason == "UsageLimitExceeded"
    assert result.outcome.message == "cost limit $0.02 exceeded at ask: $0.03 spent"
    assert len(chat_requests(openai_server)) == 2  # round 3 was never asked for
    assert [r.body for r in openai_server.requests if r.path == HOOK_PATH] == [
        {"input": {"city": "Oslo"}}
    ]
    partial = result.steps["ask"].output
    assert partial["partial"] is True
    assert partial["stopped"].startswith("cost limit crossed in step 'ask' round 2 of 8")
    assert partial["toolCalls"] == [
        {"round": 1, "tool": "weather", "arguments": {"city": "Oslo"}, "output": "sunny in Oslo"}
    ]


def test_a_limit_reached_exactly_makes_no_further_model_call(openai_server: OpenAIServer) -> None:
    Model(
        openai_server,
        completion(None, tool_calls=[tool_call("weather", {"city": "Oslo"})]),
        completion("done"),
        hook=weather,
    )
    registry = registry_for(openai_server, None, ["weather"])
    flujo = Flujo(
        Pipeline([Step("ask", "assistant")]),
        agent_registry=registry,
        usage_limits={"maxTokens": 15},
    )
    result = flujo.run("?")
    assert result.status == "failed" and result.outcome.error_class == "usage_limit"
    message = result.outcome.message or ""
    assert "tokens limit is reached after step 'ask' round 1 of 8" in message
    assert "no further model call is made" in message
    assert len(chat_requests(openai_server)) == 1
    assert result.usage == ROUND


def test_a_server_without_usage_is_counted_by_estimate_and_stopped(
    openai_server: OpenAIServer,
) -> None:
    """Without usage the run would record $0 and never stop; the estimate makes the governor act."""
    asks = [
        completion(None, usage=False, tool_calls=[tool_call("weather", {"city": "Oslo" * 50})])
    ] * 5
    Model(openai_server, *asks, hook=weather)
    registry = registry_for(openai_server, None, ["weather"])
    flujo = Flujo(
        Pipeline([Step("ask", "assistant")]),
        agent_registry=registry,
        usage_limits={"maxTokens": 400},
    )
    result = flujo.run("?")
    assert result.outcome.reason == "UsageLimitExceeded"
    assert result.usage.estimated and result.usage.total_tokens > 400
    assert result.to_dict()["usage"]["estimated"] is True
    assert result.steps["ask"].usage.estimated
    assert len(chat_requests(openai_server)) < 5


def test_a_budget_crossed_inside_a_streamed_answer_cuts_it(openai_server: OpenAIServer) -> None:
    words = " ".join(f"word{i}" for i in range(400))
    openai_server.script(completion(words, usage=False))
    registry = registry_for(openai_server, None, [], stream=True)
    flujo = Flujo(
        Pipeline([Step("ask", "assistant")]),
        agent_registry=registry,
        usage_limits={"maxTokens": 100},
    )
    result = flujo.run("write a lot")
    assert result.outcome.reason == "UsageLimitExceeded"
    kept = result.steps["ask"].output
    assert isinstance(kept, str) and kept and words.startswith(kept) and kept != words
    assert result.usage.estimated and result.usage.total_tokens > 100


def test_a_streamed_tool_loop_equals_the_unstreamed_one(
    openai_server: OpenAIServer, mcp_server: McpTestServer
) -> None:
    def script() -> None:
        Model(
            openai_server,
            completion(None, tool_calls=[tool_call("shout", {"text": "hey"}, "s")]),
            completion("HEY is what it said"),
            hook=weather,
        )

    pipeline = Pipeline([Step("ask", "assistant")])
    script()
    plain = Flujo(pipeline, agent_registry=registry_for(openai_server, mcp_server, ["calc"])).run(
        "shout hey"
    )
    script()
    pieces: list[tuple[str, str]] = []
    streamed = Flujo(
        pipeline,
        agent_registry=registry_for(openai_server, mcp_server, ["calc"]),
        on_token=lambda path, text: pieces.append((path, text)),
    ).run("shout hey")
    assert streamed.output == plain.output == "HEY is what it said"
    assert "".join(t for _, t in pieces) == "HEY is what it said"
    assert {p for p, _ in pieces} == {"ask"} and len(pieces) > 1
    assert streamed.usage == plain.usage == ROUND + ROUND
    assert transcript_of(streamed) == transcript_of(plain)
    bodies = chat_requests(openai_server)
    assert [b.get("stream") for b in bodies] == [None, None, True, True]
    assert bodies[2]["stream_options"] == {"include_usage": True}
    assert json.loads(bodies[3]["messages"][-2]["tool_calls"][0]["function"]["arguments"]) == {
        "text": "hey"
    }


def test_an_unknown_tool_is_a_validation_error_naming_it(openai_server: OpenAIServer) -> None:
    registry = registry_for(openai_server, None, ["wether"])
    with pytest.raises(PipelineValidationError) as raised:
        Flujo(Pipeline([Step("ask", "assistant")]), agent_registry=registry)
    text = str(raised.value)
    assert "agent 'assistant': spec.tools: unknown agent 'wether' (did you mean 'weather'?)" in text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "http", "endpoint": "http://x/", "tools": ["a"]}, "only an openai (or scripted)"),
        ({"type": "mcp"}, "exactly one of endpoint and command"),
        ({"type": "mcp", "endpoint": "http://x/mcp", "command": ["srv"]}, "exactly one of"),
        ({"type": "openai", "model": "m", "endpoint": "http://x", "maxToolRounds": 0}, "greater"),
    ],
)
def test_bad_tool_fields_are_one_line_errors(spec: dict[str, Any], message: str) -> None:
    doc = {"apiVersion": "flujo.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "a"}}
    problems = load_documents(json.dumps({**doc, "spec": spec}), "agents.yaml").problems
    assert len(problems) == 1
    text = str(problems[0])
    assert message in text and "\n" not in text and text.startswith("agents.yaml:")


def test_the_security_policy_checks_tool_agents_at_validation(openai_server: OpenAIServer) -> None:
    """A tool's endpoint goes through the same allowlist as a step's agent, before any call."""
    registry = registry_for(openai_server, None, ["weather", "runner"])
    registry.register_manifest(manifest("runner", {"type": "mcp", "command": ["mcp-server"]}))
    policy = SecurityPolicy.embedded(allowed_hosts=["api.example.com"])
    policy = policy.model_copy(update={"allow_python_callables": False})
    with pytest.raises(PipelineValidationError) as raised:
        Flujo(ASK, agent_registry=registry, security_policy=policy)
    problems = [str(p) for p in raised.value.problems]
    assert any("agent 'weather': " in p and "spec.endpoint" in p for p in problems), problems
    assert any(
        "agent 'runner': spec.command: a stdio MCP server (command) runs embedded only" in p
        for p in problems
    ), problems
    assert openai_server.calls == 0


def test_import_flujo_stays_light() -> None:
    """The mcp SDK, the openai client and the tool loop load only when an agent needs them."""
    code = (
        "import sys, flujo, flujo.runtime.runner, flujo.agents.registry; "
        "print(sorted(m for m in ('mcp', 'openai', 'flujo.agents.tools', 'flujo.agents.mcp') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
