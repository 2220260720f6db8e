"""Benchmark: the tool loop's overhead per round, beside a bare ``openai`` client loop.

Why: a model step with tools makes one model call and one tool call per
round; what Flujo adds around them (the agent registry, rate limiter and
breaker wrappers, the output guard, argument checks against the schema,
budget checks, the state machine around the step) must stay small beside the
calls themselves.  The issue's target is at most 1.2x a hand-written loop.

Both variants make exactly the same HTTP calls to the same local
OpenAI-compatible test server (``tests/servers``), one run at a time:

- ``flujo``: ``Flujo(pipeline).run_async`` of one ``openai`` step whose agent
  has an ``http`` tool (``echo``, the server's webhook);
- ``openai client``: the official ``openai.AsyncOpenAI`` client in a loop —
  ``chat.completions.create(tools=...)``, then the tool's webhook POSTed with
  one shared ``httpx.AsyncClient``, the result appended, until the answer.

The server answers each chat request with a tool call until the request holds
``--rounds`` tool results, then with the answer; so each run is ``rounds + 1``
model calls and ``rounds`` tool calls.  Figures are medians over ``--runs``
runs per variant (variants interleaved), per round.

Run from the repository root::

    .venv/bin/python -m benchmarks.tool_loop [--runs 30] [--rounds 8]

It prints a table and writes ``benchmarks/results/tool_loop.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
from flujo import AgentManifest, AgentRegistry, Flujo, Pipeline, Step
from tests.servers import (
    CHAT_PATH,
    HOOK_PATH,
    OpenAIServer,
    RecordedRequest,
    Reply,
    completion,
    tool_call,
)

RESULTS = Path(__file__).resolve().parent / "results" / "tool_loop.json"
TARGET = 1.2
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "echo",
            "description": "Echo the text.",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        },
    }
]


def responder(rounds: int) -> Any:
    def answer(record: RecordedRequest) -> Reply:
        body = record.body if isinstance(record.body, dict) else {}
        if record.path == HOOK_PATH:
            return Reply(json={"output": body.get("input")})
        assert record.path == CHAT_PATH
        done = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
        if done < rounds:
            return completion(
                None, tool_calls=[tool_call("echo", {"text": f"r{done}"}, f"c{done}")]
            )
        return completion(f"done after {done} rounds")

    return answer


def registry(server: OpenAIServer) -> AgentRegistry:
    reg = AgentRegistry()
    for name, spec in (
        (
            "assistant",
            {"type": "openai", "model": "m", "endpoint": server.base_url, "tools": ["echo"],
             "maxToolRounds": 100},
        ),
        (
            "echo",
            {"type": "http", "endpoint": server.hook_url, "description": "Echo the text.",
             "inputSchema": TOOLS[0]["function"]["parameters"]},  # type: ignore[index]
        ),
    ):  # fmt: skip
        reg.register_manifest(
            AgentManifest.model_validate({"metadata": {"name": name}, "spec": spec})
        )
    return reg


async def flujo_run(server: OpenAIServer, rounds: int) -> float:
    flujo = Flujo(Pipeline([Step("ask", "assistant")]), agent_registry=registry(server))
    start = time.perf_counter()
    result = await flujo.run_async("go")
    elapsed = time.perf_counter() - start
    assert result.output == f"done after {rounds} rounds", result.outcome.message
    return elapsed


async def bare_run(server: OpenAIServer, rounds: int) -> float:
    start = time.perf_counter()
    async with (
        openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
        httpx.AsyncClient() as http,
    ):
        messages: list[Any] = [{"role": "user", "content": "go"}]
        while True:
            answer = await client.chat.completions.create(
                model="m",
                messages=messages,
                tools=TOOLS,  # type: ignore[arg-type]
            )
            message = answer.choices[0].message
            if not message.tool_calls:
                break
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
                reply = await http.post(server.hook_url, json={"input": arguments})
                content = reply.json()["output"]
                messages.append({"role": "tool", "tool_call_id": call.id, "content": str(content)})
    elapsed = time.perf_counter() - start
    assert message.content == f"done after {rounds} rounds"
    return elapsed


async def measure(runs: int, rounds: int) -> dict[str, Any]:
    with OpenAIServer(responder=responder(rounds)) as server:
        times: dict[str, list[float]] = {"flujo": [], "openai client": []}
        for variant in ("flujo", "openai client"):  # warm-up: imports, first connections
            await (flujo_run if variant == "flujo" else bare_run)(server, rounds)
        for _ in range(runs):
            times["flujo"].append(await flujo_run(server, rounds))
            times["openai client"].append(await bare_run(server, rounds))
        calls = server.calls
    out: dict[str, Any] = {}
    for name, values in times.items():
        per_round = [t / rounds * 1000 for t in values]
        out[name] = {
            "median_run_ms": statistics.median(values) * 1000,
            "median_per_round_ms": statistics.median(per_round),
            "p90_per_round_ms": statistics.quantiles(per_round, n=10)[-1]
            if len(per_round) >= 10
            else max(per_round),
        }
    ratio = out["flujo"]["median_per_round_ms"] / out["openai client"]["median_per_round_ms"]
    return {"variants": out, "ratio_flujo_vs_client": ratio, "server_calls": calls}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="10 runs")
    args = parser.parse_args(argv)
    runs = 10 if args.quick else args.runs
    figures = asyncio.run(measure(runs, args.rounds))
    record = {
        "benchmark": "tool_loop",
        "runs": runs,
        "rounds": args.rounds,
        "target_ratio": TARGET,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        **figures,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"tool loop: {runs} runs of {args.rounds} rounds (1 model + 1 http tool call each)")
    print(f"{'variant':<16}{'per round p50':>16}{'p90':>10}{'run p50':>12}")
    for name, v in figures["variants"].items():
        print(
            f"{name:<16}{v['median_per_round_ms']:>13.2f} ms{v['p90_per_round_ms']:>7.2f} ms"
            f"{v['median_run_ms']:>9.1f} ms"
        )
    ratio = figures["ratio_flujo_vs_client"]
    print(f"flujo / openai client per round: {ratio:.2f}x (target ≤ {TARGET:g}x)")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
