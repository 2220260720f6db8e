"""Benchmark: a map over 1,000 items, unbatched against ``batchSize: 50``.

The agent is an async function with a fixed per-call latency (``--latency``,
20 ms by default: a small model behind a fast endpoint) plus a small per-item
cost (``--per-item``, 0.1 ms), and a price per item, so a batch of 50 costs
what 50 single calls cost.  Measured, in-process with the embedded runtime:

- wall time and agent calls of the whole run;
- CPU time of the process (orchestration: the engine, the runtime, the agent);
- under a budget (``maxCostUsd`` at 27% of the full run's cost): where
  the governor stopped the run and the overspend past the limit, which is
  bounded by the calls in flight — so it grows with the batch size.

Run from the repository root::

    .venv/bin/python -m benchmarks.batch [--items 1000] [--latency 0.02]

It prints a table and writes ``benchmarks/results/batch.json``.  Nothing here
asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flujo import Flujo, MapStep, Pipeline, Step, Usage
from flujo.agents.base import AgentOutput

RESULTS = Path(__file__).resolve().parent / "results" / "batch.json"
PRICE_PER_ITEM = 0.001


@dataclass
class Row:
    variant: str
    batch_size: int | None
    max_concurrency: int
    calls: int
    wall_s: float
    cpu_s: float
    status: str
    cost_usd: float
    limit_usd: float | None = None
    overspend_usd: float | None = None


def _agent(latency: float, per_item: float, counter: list[int]) -> Any:
    async def model(data: Any) -> AgentOutput:
        counter[0] += 1
        batch = data if isinstance(data, list) else [data]
        await asyncio.sleep(latency + per_item * len(batch))
        out = [x * 2 for x in batch]
        usage = Usage(
            input_tokens=10 * len(batch),
            output_tokens=2 * len(batch),
            cost_usd=PRICE_PER_ITEM * len(batch),
        )
        return AgentOutput(out if isinstance(data, list) else out[0], usage)

    return model


def run_variant(
    name: str,
    items: int,
    batch_size: int | None,
    concurrency: int,
    latency: float,
    per_item: float,
    limit: float | None = None,
) -> Row:
    counter = [0]
    step = MapStep(
        "each",
        "input",
        Step("model", _agent(latency, per_item, counter)),
        batch_size=batch_size,
        max_concurrency=concurrency,
        max_items=max(items, 1),
    )
    flujo = Flujo(
        Pipeline([step]), usage_limits={"maxCostUsd": limit} if limit is not None else None
    )
    wall, cpu = time.perf_counter(), time.process_time()
    result = flujo.run(list(range(items)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if limit is None:
        assert result.output == [2 * x for x in range(items)], "batched output differs"
    cost = result.outcome.usage.cost_usd
    return Row(
        variant=name,
        batch_size=batch_size,
        max_concurrency=concurrency,
        calls=counter[0],
        wall_s=round(wall, 4),
        cpu_s=round(cpu, 4),
        status=result.outcome.status,
        cost_usd=round(cost, 6),
        limit_usd=limit,
        overspend_usd=round(max(cost - limit, 0.0), 6) if limit is not None else None,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per call")
    parser.add_argument("--per-item", type=float, default=0.0001, help="seconds per item")
    args = parser.parse_args(argv)
    n, size, lat, per = args.items, args.batch_size, args.latency, args.per_item
    limit = round(n * PRICE_PER_ITEM * 0.27, 6)  # not a multiple of one call's price
    variants: list[tuple[str, int | None, int, float | None]] = [
        ("unbatched", None, 10, None),
        ("unbatched", None, 50, None),
        (f"batchSize {size}", size, 1, None),
        (f"batchSize {size}", size, 10, None),
        ("unbatched, budget", None, 10, limit),
        (f"batchSize {size}, budget", size, 2, limit),
    ]
    run_variant("warm-up", 20, 5, 2, 0.0, 0.0)  # imports, template compilation
    rows = [run_variant(v, n, b, c, lat, per, lim) for v, b, c, lim in variants]

    header = (
        f"{'variant':<24}{'maxConc':>8}{'calls':>7}{'wall s':>9}{'cpu s':>8}"
        f"{'status':>11}{'cost $':>9}{'over $':>8}"
    )
    print(f"map over {n} items, {lat * 1000:g} ms per call + {per * 1000:g} ms per item")
    print(header)
    print("-" * len(header))
    for r in rows:
        over = f"{r.overspend_usd:.3f}" if r.overspend_usd is not None else "-"
        print(
            f"{r.variant:<24}{r.max_concurrency:>8}{r.calls:>7}{r.wall_s:>9.3f}{r.cpu_s:>8.3f}"
            f"{r.status:>11}{r.cost_usd:>9.3f}{over:>8}"
        )
    report = {
        "benchmark": "batch",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "items": n,
        "latency_s": lat,
        "per_item_s": per,
        "price_per_item_usd": PRICE_PER_ITEM,
        "rows": [asdict(r) for r in rows],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
