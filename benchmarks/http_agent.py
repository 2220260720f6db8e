"""Benchmark: pooled HTTP client vs a new client per call, for the ``openai`` agent.

Why: a step that opens its own ``httpx.AsyncClient`` pays for building the
client (an SSL context), a TCP connect and a teardown on every call; the
shared :class:`~flujo.agents.pool.ClientPool` keeps connections alive across
steps.  The issue's target is pooled throughput >= 3x unpooled.

Both variants run the same agent code (``OpenAIAgent.run``) in the same run
against the local OpenAI-compatible test server, with the same concurrency;
they differ only in client lifetime:

- ``pooled``: one ``ClientPool`` for all calls;
- ``client per call``: a fresh ``ClientPool`` (so a fresh ``httpx.AsyncClient``)
  built and closed around every call.

Run from the repository root::

    .venv/bin/python -m benchmarks.http_agent [--calls 1000] [--concurrency 20]

It prints a table and writes ``benchmarks/results/http_agent.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from flujo.agents.base import AgentContext
from flujo.agents.openai import OpenAIAgent
from flujo.agents.pool import ClientPool
from flujo.spec.agent import AgentSpec
from tests.servers import OpenAIServer

RESULTS = Path(__file__).resolve().parent / "results" / "http_agent.json"
CONTEXT = AgentContext(step_path="bench", step_name="bench")
Call = Callable[[int], Awaitable[None]]


async def measure(call: Call, calls: int, concurrency: int) -> dict[str, float]:
    """Run ``calls`` calls, ``concurrency`` in flight; throughput and latency percentiles."""
    latencies: list[float] = []
    next_index = iter(range(calls))

    async def worker() -> None:
        for i in next_index:
            start = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "calls": len(latencies),
        "seconds": elapsed,
        "throughput_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


async def run_variants(spec: AgentSpec, calls: int, concurrency: int) -> dict[str, Any]:
    async with ClientPool() as pool:
        shared = OpenAIAgent("bench", spec, pool)

        async def pooled(i: int) -> None:
            await shared.run(f"call {i}", CONTEXT)

        async def client_per_call(i: int) -> None:
            async with ClientPool() as own:
                await OpenAIAgent("bench", spec, own).run(f"call {i}", CONTEXT)

        variants: dict[str, Call] = {"pooled": pooled, "client per call": client_per_call}
        for call in variants.values():  # warm up both paths (imports, first connections)
            await measure(call, 2 * concurrency, concurrency)
        return {name: await measure(call, calls, concurrency) for name, call in variants.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args(argv)

    with OpenAIServer() as server:
        spec = AgentSpec(type="openai", model="bench-model", endpoint=server.base_url)
        results = asyncio.run(run_variants(spec, args.calls, args.concurrency))
        connections = server.connections_opened
        failed = server.calls - server.successful

    pooled, unpooled = results["pooled"], results["client per call"]
    ratio = pooled["throughput_per_s"] / unpooled["throughput_per_s"]
    report = {
        "benchmark": "http_agent",
        "calls": args.calls,
        "concurrency": args.concurrency,
        "variants": results,
        "throughput_ratio_pooled_vs_per_call": ratio,
        "target_ratio": 3.0,
        "meets_target": ratio >= 3.0,
        "server_connections_opened": connections,
        "failed_calls": failed,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    print(f"openai agent, {args.calls} calls, {args.concurrency} in flight, local server")
    print(f"{'variant':<18}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in results.items():
        print(
            f"{name:<18}{row['throughput_per_s']:>10.0f}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}"
        )
    verdict = "meets" if ratio >= 3.0 else "MISSES"
    print(f"pooled / per-call throughput: {ratio:.1f}x ({verdict} the 3x target)")
    print(f"server connections opened: {connections}; failed calls: {failed}")
    print(f"written to {RESULTS}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["failed_calls"] == 0 else 1)
