"""Tool loops in the cluster: the operator launches the step pod with the tool agents.

A real kopf operator against the API emulator, kubectl applying the
manifests, step pods run by the local kubelet as ``flujo step-run``; the model
and the webhook tool are the OpenAI-compatible test server, the MCP tools a
real ``mcp`` SDK server, all on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operatorkit import ROOT, running_operator, wait_phase
from tests.servers import CHAT_PATH, HOOK_PATH, OpenAIServer, Reply, completion, tool_call
from tests.servers.mcp_server import McpTestServer
from tests.test_tool_loop import Model


def echo(data: Any) -> Reply:
    return Reply(json={"output": data})


@pytest.fixture
def cluster(kubeconfig: Path, kubectl: Any, local_kubelet: Any) -> Any:
    kubectl("apply", "-f", str(ROOT / "crds"))
    return kubectl


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as server:
        yield server


def agents(server: OpenAIServer, mcp: McpTestServer) -> str:
    return f"""
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: assistant}}
spec:
  type: openai
  model: m
  endpoint: "{server.base_url}"
  tools: [weather, calc]
  pricing: {{inputPer1k: 1.0, outputPer1k: 1.0}}
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: weather}}
spec:
  type: http
  endpoint: "{server.hook_url}"
  inputSchema: {{type: object, properties: {{city: {{type: string}}}}, required: [city]}}
---
apiVersion: flujo.dev/v1alpha1
kind: Agent
metadata: {{name: calc}}
spec: {{type: mcp, endpoint: "{mcp.url}", denyTools: [secret]}}
"""


def run(name: str, limits: str = "") -> str:
    return f"""
---
apiVersion: flujo.dev/v1alpha1
kind: PipelineRun
metadata: {{name: {name}}}
spec:
  input: "weather in Oslo, and 2 + 3?"
  {limits}
  pipeline:
    steps:
      - {{name: ask, agent: assistant}}
"""


def test_a_model_step_calls_an_http_and_an_mcp_tool_in_its_step_pod(
    cluster: Any,
    kubeconfig: Path,
    tmp_path: Path,
    openai_server: OpenAIServer,
    mcp_server: McpTestServer,
) -> None:
    Model(
        openai_server,
        completion(
            None,
            tool_calls=[
                tool_call("weather", {"city": "Oslo"}, "w"),
                tool_call("add", {"a": 2, "b": 3}, "a"),
            ],
        ),
        completion("Oslo: as asked; 2 + 3 = 5"),
        hook=echo,
    )
    with running_operator(kubeconfig, tmp_path) as op:
        cluster.apply(agents(openai_server, mcp_server) + run("tools-1"))
        status = wait_phase(cluster, "tools-1", "Succeeded", op)
    assert status["output"] == {"value": "Oslo: as asked; 2 + 3 = 5"}
    assert status["usage"]["inputTokens"] == 20 and status["usage"]["outputTokens"] == 10
    chats = [r.body for r in openai_server.requests if r.path == CHAT_PATH]
    assert len(chats) == 2
    results = {m["tool_call_id"]: m["content"] for m in chats[1]["messages"] if m["role"] == "tool"}
    assert results == {"w": '{"city": "Oslo"}', "a": '{"result": 5}'}
    assert [r.body for r in openai_server.requests if r.path == HOOK_PATH] == [
        {"input": {"city": "Oslo"}}
    ]
    assert ("add", {"a": 2, "b": 3}) in mcp_server.calls


def test_a_cost_limit_crossed_mid_loop_stops_the_pods_loop(
    cluster: Any,
    kubeconfig: Path,
    tmp_path: Path,
    openai_server: OpenAIServer,
    mcp_server: McpTestServer,
) -> None:
    ask = completion(None, tool_calls=[tool_call("weather", {"city": "Oslo"})])
    Model(openai_server, ask, ask, ask, completion("never"), hook=echo)
    with running_operator(kubeconfig, tmp_path) as op:
        cluster.apply(
            agents(openai_server, mcp_server) + run("tools-2", "usageLimits: {maxCostUsd: 0.02}")
        )
        status = wait_phase(cluster, "tools-2", "Failed", op)
    assert status["reason"] == "UsageLimitExceeded"
    assert status["message"] == "cost limit $0.02 exceeded at ask: $0.03 spent"
    assert status["steps"]["ask"]["phase"] == "succeeded"  # its partial results are kept
    assert sum(1 for r in openai_server.requests if r.path == CHAT_PATH) == 2
