"""The tool loop in a step pod: the operator's launch document carries tools and budget.

A model step with tools runs its whole loop in its step pod, so a restarted
operator reads the pod's one result back and never re-runs a round.  These
tests build the pod with the operator's own builder and run its launch
document with ``flujo step-run``, as the pod's container does, against the
real protocol servers on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flujo.engine import LaunchStep, StepFailed, StepSucceeded
from flujo.runtime.envelope import decode_result
from flujo.spec.agent import AgentSpec

from flujo_operator.builders import ANNOTATION_LAUNCH, RunRef, build_step_pod
from flujo_operator.config import Config
from tests.servers import CHAT_PATH, HOOK_PATH, OpenAIServer, completion, tool_call
from tests.servers.mcp_server import McpTestServer

RUN = RunRef("run-1", "team-a", "uid-1")
PRICING = {"inputPer1k": 1.0, "outputPer1k": 1.0}


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as server:
        yield server


def specs(server: OpenAIServer, mcp: McpTestServer) -> dict[str, AgentSpec]:
    return {
        "assistant": AgentSpec.model_validate(
            {
                "type": "openai",
                "model": "m",
                "endpoint": server.base_url,
                "pricing": PRICING,
                "tools": ["weather", "calc"],
            }
        ),
        "weather": AgentSpec.model_validate(
            {
                "type": "http",
                "endpoint": server.hook_url,
                "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ),
        "calc": AgentSpec.model_validate({"type": "mcp", "endpoint": mcp.url}),
    }


def run_pod(
    tmp_path: Path, agents: dict[str, AgentSpec], budget: dict[str, float] | None = None
) -> tuple[StepSucceeded | StepFailed, dict[str, Any]]:
    cmd = LaunchStep(path="ask", step="ask", agent="assistant", input="?", attempt=1)
    tools = {k: v for k, v in agents.items() if k != "assistant"}
    pod, config_map = build_step_pod(
        RUN, cmd, agents["assistant"], Config(), tools=tools, budget=budget
    )
    assert config_map is None
    document = pod["metadata"]["annotations"][ANNOTATION_LAUNCH]
    launch, term = tmp_path / "launch.json", tmp_path / "termination-log"
    launch.write_text(document)
    argv = ["step-run", "--launch", str(launch), "--termination-log", str(term)]
    proc = subprocess.run(
        [sys.executable, "-m", "flujo", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode in (0, 3), proc.stderr
    return decode_result(term.read_text(), proc.stdout), json.loads(document)


def test_a_step_pod_runs_the_whole_tool_loop_with_http_and_mcp_tools(
    tmp_path: Path, openai_server: OpenAIServer, mcp_server: McpTestServer
) -> None:
    openai_server.script(
        completion(
            None,
            tool_calls=[
                tool_call("weather", {"city": "Oslo"}, "w"),
                tool_call("add", {"a": 1, "b": 2}, "a"),
            ],
        ),
    )
    openai_server.responder = lambda r: (
        completion("sunny; 3") if r.path == CHAT_PATH else None
    )  # the webhook echoes its input (the default)
    result, document = run_pod(tmp_path, specs(openai_server, mcp_server))
    assert isinstance(result, StepSucceeded), result
    assert result.output == "sunny; 3"
    assert result.usage.total_tokens == 30 and result.usage.cost_usd == pytest.approx(0.03)
    assert sorted(document["tools"]) == ["calc", "weather"]
    chats = [r.body for r in openai_server.requests if r.path == CHAT_PATH]
    results = {m["tool_call_id"]: m["content"] for m in chats[1]["messages"] if m["role"] == "tool"}
    assert results == {"w": '{"city": "Oslo"}', "a": '{"result": 3}'}
    assert [r.body for r in openai_server.requests if r.path == HOOK_PATH] == [
        {"input": {"city": "Oslo"}}
    ]


def test_the_pods_budget_stops_the_loop_between_rounds(
    tmp_path: Path, openai_server: OpenAIServer, mcp_server: McpTestServer
) -> None:
    ask = completion(None, tool_calls=[tool_call("weather", {"city": "Oslo"})])
    openai_server.script(ask, ask, ask)
    result, document = run_pod(tmp_path, specs(openai_server, mcp_server), budget={"costUsd": 0.02})
    assert document["budget"] == {"costUsd": 0.02}
    assert isinstance(result, StepSucceeded)
    assert result.output["partial"] is True
    assert "round 2 of 8" in result.output["stopped"]
    assert result.usage.cost_usd == pytest.approx(0.03)  # crossed: the governor stops the run
    assert sum(1 for r in openai_server.requests if r.path == CHAT_PATH) == 2


def test_a_stdio_mcp_server_is_refused_in_a_pod(
    tmp_path: Path, openai_server: OpenAIServer, mcp_server: McpTestServer
) -> None:
    agents = specs(openai_server, mcp_server)
    agents["calc"] = AgentSpec.model_validate({"type": "mcp", "command": ["mcp-server"]})
    result, _ = run_pod(tmp_path, agents)
    assert isinstance(result, StepFailed) and result.error_class == "config"
    assert "command (a stdio server) runs embedded only" in result.message
    assert openai_server.calls == 0
